//! Cheap fitness: how many search items each candidate answers (`task.budget`), and the final
//! re-scoring that keeps a cheap search from exporting a model chosen on noise.
//!
//! The coordinator gives each queued trial a [`Plan`] (stored on its journal row, so whoever
//! claims it evaluates the same items): every item (`full`, and the first generations of `irt`),
//! a fixed seeded subset (`subset`), a race against the incumbent (`racing`), or the IRT anchors
//! (`irt`). A plan depends only on the recipe and the finished rows of earlier generations, so the
//! trial records stay the same whoever evaluates and whatever is killed. Once a phase's trials are
//! done, its top `task.rescore` candidates that did not answer every item are queued again on the
//! full search set (rows with `rescore_of`), and `best/` is chosen on those full-set scores.

pub mod irt;
pub mod racing;
pub mod spec;

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use irt::IrtModel;
pub use spec::{Budget, RacingSpec};

use crate::error::{EvolveError, Result};
use crate::fitness::Task;
use crate::journal::{Claim, Journal, PhaseKind, TrialOutcome, TrialRecord, TrialStatus};
use crate::phase::Phase;

/// Which items one trial answers and how its fitness is formed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Plan {
    /// Every search item; the fitness is their mean.
    #[default]
    Full,
    /// These items; the fitness is their mean.
    Items { items: Vec<usize> },
    /// A race against trial `against` (which answered every item).
    Race { against: u64 },
    /// The IRT anchors of the phase's model (study key `irt.<phase>`); the fitness is the p-IRT
    /// estimate of the full-set score.
    Irt,
}

impl Plan {
    /// The journal's text for the plan (`None` for `Full`, which old rows also read as).
    pub fn to_column(&self) -> Option<String> {
        (*self != Plan::Full).then(|| serde_json::to_string(self).unwrap_or_default())
    }
    pub fn from_column(text: Option<&str>) -> std::result::Result<Plan, String> {
        match text {
            None => Ok(Plan::Full),
            Some(t) => serde_json::from_str(t).map_err(|e| format!("unreadable plan {t:?}: {e}")),
        }
    }
}

/// The budget of a search, resolved against its task.
pub struct Budgeter {
    pub budget: Budget,
    /// Candidates re-scored on the full search set at the end of each phase.
    pub rescore: usize,
    items: usize,
    subset: Vec<usize>,
    /// The race's item order (the same for every candidate: the comparisons are paired).
    order: Vec<usize>,
    irt: RefCell<BTreeMap<&'static str, IrtModel>>,
}

impl Budgeter {
    /// Resolve the recipe's budget for `task` (seeded by the optimiser's seed).
    pub fn new(task: &Task, seed: u64) -> Result<Budgeter> {
        let budget = task.spec.budget.clone();
        let items = task.items.len();
        let subset = match &budget {
            Budget::Subset { items: n, stratify } => {
                if *n >= items {
                    return Err(EvolveError::recipe(
                        "task.budget.subset",
                        format!("{n} items is not a subset: the search set has {items}; use `full` or fewer items"),
                    ));
                }
                let labels = match stratify {
                    None => vec![String::new(); items],
                    Some(field) => task
                        .items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| {
                            item.labels.get(field).cloned().ok_or_else(|| {
                                EvolveError::recipe("task.budget.stratify", format!("search item {i} has no field `{field}`"))
                            })
                        })
                        .collect::<Result<Vec<_>>>()?,
                };
                stratified_subset(&labels, *n, seed)
            }
            Budget::Irt { anchors, .. } if *anchors >= items => {
                return Err(EvolveError::recipe(
                    "task.budget.irt",
                    format!("{anchors} anchors is not fewer than the {items} search items; use `full` or fewer anchors"),
                ))
            }
            _ => Vec::new(),
        };
        Ok(Budgeter { budget, rescore: task.spec.rescore, items, subset, order: racing::permutation(items, seed), irt: RefCell::new(BTreeMap::new()) })
    }

    /// The search-set size.
    pub fn items(&self) -> usize {
        self.items
    }

    /// Whether a phase ends with the full re-scoring of its best candidates.
    pub fn rescores(&self) -> bool {
        !self.budget.is_full() && self.rescore > 0
    }

    /// The plan of generation `generation` of a phase whose trials so far are `earlier` (finished
    /// rows of this phase, in trial order). Coordinator only; a pure function of the journal.
    pub fn plan(&self, journal: &Journal, kind: PhaseKind, generation: u64, earlier: &[TrialRecord]) -> Result<Plan> {
        Ok(match &self.budget {
            Budget::Full => Plan::Full,
            Budget::Subset { .. } => Plan::Items { items: self.subset.clone() },
            Budget::Racing(_) => match incumbent(earlier) {
                Some(t) => Plan::Race { against: t.trial },
                None => Plan::Full,
            },
            Budget::Irt { anchors, calibration } => {
                if generation < *calibration {
                    return Ok(Plan::Full);
                }
                if self.irt_model(journal, kind)?.is_none() {
                    let rows: Vec<Vec<f64>> = earlier
                        .iter()
                        .filter(|t| answered_everything(t))
                        .filter_map(|t| t.item_scores.clone())
                        .filter(|s| s.len() == self.items)
                        .collect();
                    if rows.len() < 2 {
                        // Calibrate on more generations until two candidates answered everything.
                        return Ok(Plan::Full);
                    }
                    let model = IrtModel::calibrate(&rows, *anchors);
                    let text = serde_json::to_string(&model).map_err(|e| EvolveError::Fitness(e.to_string()))?;
                    journal.set_study_value(&irt_key(kind), &text)?;
                    tracing::info!("{} phase: IRT model fitted on {} candidates; anchors {:?}", kind.as_str(), rows.len(), model.anchors);
                }
                Plan::Irt
            }
        })
    }

    fn irt_model(&self, journal: &Journal, kind: PhaseKind) -> Result<Option<IrtModel>> {
        if let Some(m) = self.irt.borrow().get(kind.as_str()) {
            return Ok(Some(m.clone()));
        }
        let Some(text) = journal.study_value(&irt_key(kind))? else { return Ok(None) };
        let model: IrtModel =
            serde_json::from_str(&text).map_err(|e| EvolveError::Fitness(format!("the journal's IRT model is unreadable: {e}")))?;
        if model.a.len() != self.items {
            return Err(EvolveError::Fitness(format!("the journal's IRT model has {} items, the task {}", model.a.len(), self.items)));
        }
        self.irt.borrow_mut().insert(kind.as_str(), model.clone());
        Ok(Some(model))
    }

    /// Evaluate a claimed trial by its plan: set the candidate, answer the plan's items.
    pub fn execute(&self, phase: &mut dyn Phase, journal: &Journal, claim: &Claim) -> Result<TrialOutcome> {
        let set_seconds = phase.set_candidate(&claim.genome)?;
        let outcome = match &claim.plan {
            Plan::Full => phase.score_items(None)?,
            Plan::Items { items } => phase.score_items(Some(items))?.answered(items.clone()),
            Plan::Race { against } => self.race(phase, journal, *against)?,
            Plan::Irt => {
                let model = self
                    .irt_model(journal, claim.phase)?
                    .ok_or_else(|| EvolveError::Fitness("an IRT trial was queued before its model was fitted".into()))?;
                let outcome = phase.score_items(Some(&model.anchors))?;
                let estimate = model.estimate(&outcome.item_scores);
                TrialOutcome { fitness: estimate, ..outcome.answered(model.anchors.clone()) }
            }
        };
        Ok(TrialOutcome { merge_seconds: set_seconds, ..outcome })
    }

    fn race(&self, phase: &mut dyn Phase, journal: &Journal, against: u64) -> Result<TrialOutcome> {
        let Budget::Racing(spec) = &self.budget else {
            return Err(EvolveError::Fitness("a racing trial in a search whose budget is not racing".into()));
        };
        let incumbent = journal
            .trial(against)?
            .and_then(|t| t.item_scores.filter(|s| s.len() == self.items && t.status == TrialStatus::Complete))
            .ok_or_else(|| EvolveError::Fitness(format!("the race's incumbent, trial {against}, has no score for every item")))?;
        let mut race = racing::Race::new(*spec, &incumbent);
        let (mut tokens, mut truncated) = (0, 0);
        for batch in self.order.chunks(spec.batch.max(1)) {
            let o = phase.score_items(Some(batch))?;
            tokens += o.generated_tokens;
            truncated += o.truncated;
            race.observe(batch, &o.item_scores);
            if let Some(estimate) = race.dropped() {
                let (ids, scores) = race.into_answers();
                return Ok(TrialOutcome { fitness: estimate, item_scores: scores, item_ids: Some(ids), generated_tokens: tokens, truncated, merge_seconds: 0.0 });
            }
        }
        // A survivor answered every item: its scores go back into item order, its fitness is exact.
        let (ids, scores) = race.into_answers();
        let mut by_item = vec![f64::NAN; self.items];
        for (i, s) in ids.into_iter().zip(scores) {
            by_item[i] = s;
        }
        let fitness = by_item.iter().sum::<f64>() / self.items as f64;
        Ok(TrialOutcome { fitness, item_scores: by_item, item_ids: None, generated_tokens: tokens, truncated, merge_seconds: 0.0 })
    }
}

fn irt_key(kind: PhaseKind) -> String {
    format!("irt.{}", kind.as_str())
}

/// Whether a finished trial answered every search item (its fitness is then exact).
pub fn answered_everything(t: &TrialRecord) -> bool {
    t.status == TrialStatus::Complete && t.item_ids.is_none() && t.fitness.is_some()
}

/// The best trial that answered every item (lowest trial number on ties).
pub fn incumbent(earlier: &[TrialRecord]) -> Option<&TrialRecord> {
    highest_fitness(earlier.iter().filter(|t| answered_everything(t)))
}

/// The trial with the highest fitness; on ties the one that comes first.
pub fn highest_fitness<T: std::borrow::Borrow<TrialRecord>>(trials: impl IntoIterator<Item = T>) -> Option<T> {
    trials.into_iter().fold(None, |best: Option<T>, t| match best {
        Some(b) if b.borrow().fitness >= t.borrow().fitness => Some(b),
        _ => Some(t),
    })
}

/// `n` of the items, seeded; with labels, each label gets its share (largest remainders, then
/// label order) and its items are drawn from a seeded permutation. Sorted ascending.
pub fn stratified_subset(labels: &[String], n: usize, seed: u64) -> Vec<usize> {
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, l) in labels.iter().enumerate() {
        groups.entry(l.as_str()).or_default().push(i);
    }
    let total = labels.len() as f64;
    let mut quota: Vec<(usize, f64)> = groups
        .values()
        .map(|g| {
            let exact = n as f64 * g.len() as f64 / total;
            (exact.floor() as usize, exact - exact.floor())
        })
        .collect();
    let mut left = n - quota.iter().map(|q| q.0).sum::<usize>();
    let mut by_remainder: Vec<usize> = (0..quota.len()).collect();
    by_remainder.sort_by(|&x, &y| quota[y].1.total_cmp(&quota[x].1).then(x.cmp(&y)));
    for &g in by_remainder.iter().cycle().take(quota.len() * 2) {
        if left == 0 {
            break;
        }
        let size = groups.values().nth(g).map_or(0, Vec::len);
        if quota[g].0 < size {
            quota[g].0 += 1;
            left -= 1;
        }
    }
    let mut chosen = Vec::with_capacity(n);
    for (g, (items, (take, _))) in groups.values().zip(&quota).enumerate() {
        let order = racing::permutation(items.len(), seed.wrapping_add(g as u64));
        chosen.extend(order.iter().take(*take).map(|&k| items[k]));
    }
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_are_seeded_and_stratified() {
        let labels: Vec<String> = (0..100).map(|i| if i < 70 { "a".to_string() } else { "b".to_string() }).collect();
        let s = stratified_subset(&labels, 10, 1);
        assert_eq!(s.len(), 10);
        assert_eq!(s.iter().filter(|&&i| i < 70).count(), 7);
        assert_eq!(s, stratified_subset(&labels, 10, 1));
        assert_ne!(s, stratified_subset(&labels, 10, 2));
        let plain = stratified_subset(&vec![String::new(); 100], 10, 1);
        assert_eq!(plain.len(), 10);
        assert!(plain.windows(2).all(|w| w[0] < w[1]));
        // Odd shares: 3 labels of 5 items, 4 chosen.
        let odd: Vec<String> = (0..15).map(|i| (i / 5).to_string()).collect();
        assert_eq!(stratified_subset(&odd, 4, 0).len(), 4);
    }

    #[test]
    fn plans_round_trip_through_the_journal_column() {
        for plan in [Plan::Full, Plan::Items { items: vec![1, 5] }, Plan::Race { against: 3 }, Plan::Irt] {
            assert_eq!(Plan::from_column(plan.to_column().as_deref()).unwrap(), plan);
        }
        assert_eq!(Plan::Full.to_column(), None);
        assert!(Plan::from_column(Some("{\"kind\":\"nope\"}")).is_err());
    }
}
