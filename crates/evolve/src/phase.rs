//! One search phase over the journal: CMA-ES asks a whole generation; its candidates are queued in
//! the journal (`pending`) and evaluated by this process, by `evomerge worker` processes, or both
//! (`running`, then `complete`/`failed`); once all are finished the generation is told back in
//! candidate order, so the trial records do not depend on who evaluated what. The optimiser is rebuilt by replaying the journal: the same seed asks the same
//! candidates, finished trials are told their recorded fitness, and only what is missing is
//! evaluated. So a search killed at any point and started again records exactly what an
//! uninterrupted one would have. A parameter-space and a data-flow-space phase run through the same
//! loop (PS+DFS: one after the other, numbering trials on from where the first ended).

use std::path::Path;
use std::time::Duration;

use evomerge_cmaes::{CmaEs, Config as CmaConfig};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::budget::{answered_everything, Budgeter, Plan};
use crate::error::{EvolveError, Result};
use crate::export;
use crate::genome::SearchSpace;
use crate::journal::{worker_id, Journal, NewTrial, PhaseKind, TrialOutcome, TrialRecord, TrialStatus};
use crate::work::{evaluate_claim, Heartbeat};

/// What a phase searches and how it scores and exports a candidate.
pub trait Phase {
    fn kind(&self) -> PhaseKind;
    /// The genes.
    fn space(&self) -> &dyn SearchSpace;
    /// What the journal records beside the params: a data-flow candidate's layer path.
    fn describe(&self, _x: &[f64]) -> Option<String> {
        None
    }
    /// Load what evaluating needs beyond what exporting does (the live model on its device); an
    /// error here stops the process instead of failing trials. Called before the first evaluation.
    fn prepare_evaluation(&mut self) -> Result<()> {
        Ok(())
    }
    /// Make candidate `x` the live model (merge it, or set its path); the seconds it took. An
    /// error fails the trial; the search goes on.
    fn set_candidate(&mut self, x: &[f64]) -> Result<f64>;
    /// Score the live candidate on search items `items` (in that order; `None`: every item).
    fn score_items(&mut self, items: Option<&[usize]>) -> Result<TrialOutcome>;
    /// Score candidate `x` on every search item.
    fn evaluate(&mut self, x: &[f64]) -> Result<TrialOutcome> {
        let seconds = self.set_candidate(x)?;
        Ok(TrialOutcome { merge_seconds: seconds, ..self.score_items(None)? })
    }
    /// Write `record`'s candidate as `out/best/` (and its plot under `out/plots/`).
    fn export_best(&mut self, out: &Path, record: &TrialRecord) -> Result<()>;
}

/// The optimiser settings of one phase.
#[derive(Debug, Clone)]
pub struct PhaseSettings {
    pub sigma0: f64,
    /// 0: CMA-ES's default.
    pub population: usize,
    pub seed: u64,
    /// Trials of this phase.
    pub max_trials: u64,
    /// The journal's number of this phase's first trial.
    pub first_trial: u64,
    pub progress: bool,
    pub metric: &'static str,
    /// Evaluate queued candidates in this process too (false: `--workers 0`, workers do it all).
    pub evaluate: bool,
    /// How long a claim holds without a heartbeat.
    pub lease_seconds: f64,
}

/// What a phase did.
#[derive(Debug, Clone)]
pub struct PhaseReport {
    /// The number the next phase's first trial gets.
    pub next_trial: u64,
    /// Trials evaluated by this process.
    pub evaluated: u64,
    /// Why CMA-ES ended the phase before `max_trials`, if it did.
    pub stopped: Option<String>,
}

/// Run (or resume) `phase`. `best` is the best trial of the whole search so far (earlier phases
/// included): `best/` is replaced only when a trial beats it. With a cheap budget the phase ends by
/// re-scoring its top candidates on the full search set, and its best is chosen on those scores.
pub fn run_phase(
    phase: &mut dyn Phase,
    budget: &Budgeter,
    journal: &Journal,
    out: &Path,
    settings: &PhaseSettings,
    best: &mut Option<TrialRecord>,
    mut after_generation: impl FnMut(&Journal, Option<&TrialRecord>) -> Result<()>,
) -> Result<PhaseReport> {
    let kind = phase.kind();
    let space = phase.space();
    let mut cma = CmaConfig::new(space.x0(), settings.sigma0)
        .with_bounds(space.lower(), space.upper())
        .with_seed(settings.seed);
    if settings.population > 0 {
        cma = cma.with_popsize(settings.population);
    }
    let mut es = CmaEs::new(cma)?;
    let prior_best = best.clone();
    let end = settings.first_trial + settings.max_trials;
    let mut trial = settings.first_trial;
    let mut stopped = None;
    let worker = worker_id();
    if settings.evaluate {
        phase.prepare_evaluation()?;
    }
    let heartbeat = if settings.evaluate { Some(Heartbeat::start(journal.location().clone(), worker.clone(), settings.lease_seconds)) } else { None };
    let mut queue = Queue {
        budget,
        journal,
        settings,
        heartbeat: heartbeat.as_ref(),
        worker: &worker,
        bar: progress_bar(settings.progress, settings.max_trials, kind),
        evaluated: 0,
        waiting_told: false,
    };
    let mut generation = 0u64;
    while trial < end {
        if es.is_stopped() {
            stopped = es.stop_reason().map(|r| format!("{r:?}"));
            break;
        }
        let candidates = es.ask()?;
        let n = candidates.len().min((end - trial) as usize);
        let plan = if budget.budget.is_full() {
            Plan::Full
        } else {
            budget.plan(journal, kind, generation, &journal.trial_range(settings.first_trial, trial)?)?
        };
        // Queue the generation (a resumed run finds its rows and checks they are these candidates).
        let mut fresh = false;
        for (c, x) in candidates.iter().take(n).enumerate() {
            let t = trial + c as u64;
            match journal.trial(t)? {
                Some(r) => check_row(journal, &r, kind, generation, x, &plan)?,
                None => {
                    let described = phase.describe(x);
                    let params = phase.space().params(x);
                    let row = NewTrial { path: described.as_deref(), plan: &plan, ..NewTrial::new(t, kind, generation, c as u64, x, &params) };
                    journal.enqueue(&row)?;
                    fresh = true;
                }
            }
        }
        let (records, waited) = queue.finish(phase, trial, n)?;
        fresh |= waited;
        let mut told = Vec::with_capacity(n);
        for record in records {
            if record.fitness.is_some_and(|f| best.as_ref().and_then(|b| b.fitness).is_none_or(|b| f > b)) {
                *best = Some(record.clone());
            }
            told.push(record.fitness);
        }
        // best/ follows the search once it runs past what an earlier run already finished.
        if fresh {
            if let Some(b) = best.as_ref().filter(|b| b.phase == kind) {
                ensure_best(phase, out, b)?;
            }
        }
        queue.bar.set_message(format!(
            "gen {generation} best {}",
            best.as_ref().and_then(|b| b.fitness).map_or("-".into(), |f| format!("{f:.4}")),
        ));
        trial += n as u64;
        if n < candidates.len() {
            break;
        }
        es.tell(&cma_fitness(&told))?;
        generation += 1;
        after_generation(journal, best.as_ref())?;
    }
    if budget.rescores() {
        let (phase_best, next) = rescore(phase, &mut queue, settings.first_trial, trial, kind)?;
        trial = next;
        *best = match (prior_best, phase_best) {
            (Some(p), Some(b)) if p.fitness >= b.fitness => Some(p),
            (p, None) => p,
            (_, b) => b,
        };
        after_generation(journal, best.as_ref())?;
    }
    queue.bar.finish_and_clear();
    if let Some(b) = best.as_ref().filter(|b| b.phase == kind) {
        ensure_best(phase, out, b)?;
    }
    Ok(PhaseReport { next_trial: trial, evaluated: queue.evaluated, stopped })
}

/// Queued rows of this process's search: evaluates them here (unless `--workers 0`) or waits for
/// workers to.
struct Queue<'a> {
    budget: &'a Budgeter,
    journal: &'a Journal,
    settings: &'a PhaseSettings,
    heartbeat: Option<&'a Heartbeat>,
    worker: &'a str,
    bar: ProgressBar,
    evaluated: u64,
    waiting_told: bool,
}

impl Queue<'_> {
    /// Evaluate (or wait for workers to) until rows `from..from + n` are all finished; also says
    /// whether anything was left to do.
    fn finish(&mut self, phase: &mut dyn Phase, from: u64, n: usize) -> Result<(Vec<TrialRecord>, bool)> {
        let (journal, kind) = (self.journal, phase.kind());
        let mut pause = POLL_MIN;
        let mut waited = false;
        loop {
            let rows = journal.trial_range(from, from + n as u64)?;
            let done = rows.iter().filter(|r| r.status.is_finished()).count();
            self.bar.set_position((from + done as u64).saturating_sub(self.settings.first_trial).min(self.settings.max_trials));
            if rows.len() == n && done == n {
                return Ok((rows, waited));
            }
            waited = true;
            journal.requeue_dead_local_workers()?;
            if let Some(heartbeat) = self.heartbeat {
                if let Some(claim) = journal.claim(Some(kind), self.worker, self.settings.lease_seconds)? {
                    if evaluate_claim(phase, self.budget, journal, &claim, self.worker, heartbeat)? {
                        self.evaluated += 1;
                    }
                    pause = POLL_MIN;
                    continue;
                }
            } else if !self.waiting_told && self.settings.progress {
                self.waiting_told = true;
                eprintln!(
                    "coordinator: {} candidates queued in {}; start workers with `evomerge worker --journal {}`",
                    n - done,
                    journal.path().display(),
                    journal.location().display()
                );
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(POLL_MAX);
        }
    }
}

/// The final re-scoring of a phase whose search trials are `first..end`: its top `rescore`
/// candidates by search fitness that did not answer every item are queued again on the full search
/// set (rows `end..`, `rescore_of` naming the trial). Returns the best of the top candidates by
/// full-set fitness (a re-scoring row, or a trial that answered everything) and the next free trial.
fn rescore(phase: &mut dyn Phase, queue: &mut Queue, first: u64, end: u64, kind: PhaseKind) -> Result<(Option<TrialRecord>, u64)> {
    let journal = queue.journal;
    let rows = journal.trial_range(first, end)?;
    let mut ranked: Vec<&TrialRecord> = rows.iter().filter(|r| r.status == TrialStatus::Complete && r.fitness.is_some()).collect();
    ranked.sort_by(|a, b| b.fitness.unwrap_or(f64::NEG_INFINITY).total_cmp(&a.fitness.unwrap_or(f64::NEG_INFINITY)).then(a.trial.cmp(&b.trial)));
    let top: Vec<&TrialRecord> = ranked.into_iter().take(queue.budget.rescore).collect();
    let again: Vec<&TrialRecord> = top.iter().copied().filter(|r| !answered_everything(r)).collect();
    let generation = rows.iter().map(|r| r.generation + 1).max().unwrap_or(0);
    for (c, r) in again.iter().enumerate() {
        let t = end + c as u64;
        match journal.trial(t)? {
            Some(row) if row.rescore_of == Some(r.trial) && row.genome == r.genome => {}
            Some(row) => {
                return Err(journal_mismatch(
                    journal,
                    format!("trial {t} should re-score trial {} on the full search set, but holds {}", r.trial, describe_row(&row)),
                ))
            }
            None => journal.enqueue(&NewTrial {
                path: r.path.as_deref(),
                rescore_of: Some(r.trial),
                ..NewTrial::new(t, kind, generation, c as u64, &r.genome, &r.params)
            })?,
        }
    }
    let (rescored, _) = queue.finish(phase, end, again.len())?;
    let full_set = top.iter().map(|r| {
        if answered_everything(r) {
            Some((*r).clone())
        } else {
            rescored.iter().find(|s| s.rescore_of == Some(r.trial) && s.status == TrialStatus::Complete).cloned()
        }
    });
    // Ranked order: among equal full-set fitness the better-ranked (then lower-numbered) trial wins.
    let best = crate::budget::highest_fitness(full_set.flatten());
    if let Some(b) = &best {
        tracing::info!(
            "{} phase: re-scored {} of the top {} candidates on the full search set; best: trial {} ({:.6})",
            kind.as_str(),
            again.len(),
            top.len(),
            b.rescore_of.unwrap_or(b.trial),
            b.fitness.unwrap_or(f64::NAN)
        );
    }
    Ok((best, end + again.len() as u64))
}

fn describe_row(r: &TrialRecord) -> String {
    match r.rescore_of {
        Some(t) => format!("the re-scoring of trial {t}"),
        None => format!("candidate {} of generation {} of the {} phase", r.candidate, r.generation, r.phase.as_str()),
    }
}

/// Waits between looks at the journal while others evaluate.
const POLL_MIN: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(250);

/// A row already in the journal must be this phase's candidate `x` of `generation`.
fn check_row(journal: &Journal, r: &TrialRecord, kind: PhaseKind, generation: u64, x: &[f64], plan: &Plan) -> Result<()> {
    if let Some(of) = r.rescore_of {
        return Err(journal_mismatch(
            journal,
            format!(
                "trial {} is the final re-scoring of trial {of}: this search has ended and cannot be given more trials; \
                 start a new --out directory (or database) to search longer",
                r.trial
            ),
        ));
    }
    if r.phase != kind {
        return Err(journal_mismatch(
            journal,
            format!(
                "trial {} belongs to the {} phase, but the {} phase wants it: once a later phase has begun, an earlier \
                 one cannot be given more trials",
                r.trial,
                r.phase.as_str(),
                kind.as_str()
            ),
        ));
    }
    if r.genome != x || r.generation != generation || r.plan != *plan {
        return Err(journal_mismatch(
            journal,
            format!(
                "trial {} in the journal is not the candidate this recipe and seed ask for; the journal was written by \
                 another version or recipe",
                r.trial
            ),
        ));
    }
    Ok(())
}

/// Export `record` unless `best/` already holds it.
fn ensure_best(phase: &mut dyn Phase, out: &Path, record: &TrialRecord) -> Result<()> {
    if export::read_best(out).is_some_and(|b| b.trial == record.trial) {
        return Ok(());
    }
    phase.export_best(out, record)
}

fn journal_mismatch(journal: &Journal, message: String) -> EvolveError {
    EvolveError::Journal { path: journal.path().to_path_buf(), message }
}

/// CMA-ES minimises: tell the negated fitness; a failed candidate is told a value worse than every
/// finished one of its generation (a pure function of the journal, so a resumed run tells the same).
fn cma_fitness(told: &[Option<f64>]) -> Vec<f64> {
    let worst = told.iter().flatten().map(|f| -f).fold(f64::NEG_INFINITY, f64::max);
    let fail = if worst.is_finite() { worst + 1.0 + worst.abs() } else { 1e30 };
    told.iter().map(|f| f.map_or(fail, |v| -v)).collect()
}

fn progress_bar(enabled: bool, total: u64, kind: PhaseKind) -> ProgressBar {
    if !(enabled && std::io::IsTerminal::is_terminal(&std::io::stderr())) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let template = format!("evolve {} {{bar:30}} trial {{pos}}/{{len}} {{msg}} eta {{eta}}", kind.as_str());
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}


#[cfg(test)]
mod tests {
    use super::cma_fitness;

    #[test]
    fn failed_candidates_are_told_worse_than_every_finished_one() {
        let told = cma_fitness(&[Some(0.5), None, Some(-2.0)]);
        assert_eq!(told[0], -0.5);
        assert_eq!(told[2], 2.0);
        assert!(told[1] > 2.0);
        assert!(cma_fitness(&[None, None]).iter().all(|&v| v == 1e30));
    }
}
