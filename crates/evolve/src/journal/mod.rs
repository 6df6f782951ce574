//! The trial journal: the truth of a search. It lives in a database — the embedded SQLite file of
//! the search directory (`DIR/journal.sqlite`, WAL mode) on one machine, or a PostgreSQL server
//! across machines — and holds the recipe and every trial. A trial's row is a work item: the
//! coordinator queues it (`pending`), one process claims it under a lease (`running`) and heartbeats
//! while it evaluates, and its result is committed once (`complete`/`failed`). A lease that expires
//! (worker killed, node lost) puts the row back in the queue; a result from a process that lost its
//! lease is not recorded. The optimiser's state is rebuilt from the finished rows on resume, so a
//! process killed at any moment loses at most the evaluation it was running, which is then run
//! again, never counted twice.

mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use store::Location;
use store::{Row, Store, Value};

use crate::budget::Plan;
use crate::error::{EvolveError, Result};

/// Schema version written into the study table (2: the work queue's columns and `pending`; 3: the
/// evaluation plan of cheap fitness, the items a trial answered, final re-scorings).
const FORMAT: &str = "3";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialStatus {
    /// Queued by the coordinator, not claimed yet.
    Pending,
    Running,
    Complete,
    Failed,
}

impl TrialStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TrialStatus::Pending => "pending",
            TrialStatus::Running => "running",
            TrialStatus::Complete => "complete",
            TrialStatus::Failed => "failed",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(TrialStatus::Pending),
            "running" => Some(TrialStatus::Running),
            "complete" => Some(TrialStatus::Complete),
            "failed" => Some(TrialStatus::Failed),
            _ => None,
        }
    }
    /// Complete or failed: the result is recorded for good.
    pub fn is_finished(self) -> bool {
        matches!(self, TrialStatus::Complete | TrialStatus::Failed)
    }
}
/// Which search a trial belongs to: parameter space, or data flow space (a PS+DFS recipe runs both,
/// in one journal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PhaseKind {
    #[default]
    Ps,
    Dfs,
}

impl PhaseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseKind::Ps => "ps",
            PhaseKind::Dfs => "dfs",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "ps" => Some(PhaseKind::Ps),
            "dfs" => Some(PhaseKind::Dfs),
            _ => None,
        }
    }
}

/// One row of the trial table, as `evomerge trials` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// 0-based, in the order the optimiser asked for candidates.
    pub trial: u64,
    #[serde(default)]
    pub phase: PhaseKind,
    /// Of its phase's CMA-ES.
    pub generation: u64,
    /// Position in its generation.
    pub candidate: u64,
    /// Gene name → value.
    pub params: BTreeMap<String, f64>,
    /// Higher is better; `None` unless complete.
    pub fitness: Option<f64>,
    pub status: TrialStatus,
    pub seconds: Option<f64>,
    /// Of `seconds`, those spent merging the candidate into the live model.
    pub merge_seconds: Option<f64>,
    pub generated_tokens: Option<u64>,
    /// Answers that ran into `max_new_tokens`.
    pub truncated: Option<u64>,
    pub items: Option<u64>,
    pub error: Option<String>,
    /// The optimiser's raw vector (exact), checked on resume.
    pub genome: Vec<f64>,
    /// Per-item scores, in item order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item_scores: Option<Vec<f64>>,
    pub worker: Option<String>,
    /// A data-flow trial's layer path (`0,5:0.75,2`: pool layer, `:scale` when not 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Seconds between being queued and being claimed (by the process that finished it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_seconds: Option<f64>,
    /// Which items the trial answers and how its fitness is formed (`task.budget`).
    #[serde(default, skip_serializing_if = "is_full_plan")]
    pub plan: Plan,
    /// The items answered, in the order of `item_scores`; `None`: every search item, in item order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_ids: Option<Vec<usize>>,
    /// A final re-scoring on the full search set of this earlier trial's candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescore_of: Option<u64>,
}

fn is_full_plan(p: &Plan) -> bool {
    *p == Plan::Full
}

/// What a finished evaluation reports.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialOutcome {
    pub fitness: f64,
    pub item_scores: Vec<f64>,
    pub generated_tokens: u64,
    pub truncated: u64,
    /// Of the trial's seconds, those spent merging the candidate into the live model.
    pub merge_seconds: f64,
    /// The items answered, in the order of `item_scores`; `None`: every item, in item order.
    pub item_ids: Option<Vec<usize>>,
}

impl TrialOutcome {
    /// This outcome's scores are of `items` (in that order), not of every item.
    pub fn answered(self, items: Vec<usize>) -> TrialOutcome {
        TrialOutcome { item_ids: Some(items), ..self }
    }
}

/// A candidate to queue: trial `trial` is candidate `candidate` of `generation` of `phase`.
#[derive(Debug, Clone)]
pub struct NewTrial<'a> {
    pub trial: u64,
    pub phase: PhaseKind,
    pub generation: u64,
    pub candidate: u64,
    pub genome: &'a [f64],
    pub params: &'a BTreeMap<String, f64>,
    /// A data-flow candidate's layer path.
    pub path: Option<&'a str>,
    pub plan: &'a Plan,
    /// Set for the full re-scoring of an earlier trial's candidate.
    pub rescore_of: Option<u64>,
}

impl<'a> NewTrial<'a> {
    /// Candidate `candidate` of `generation`, answering every item.
    pub fn new(trial: u64, phase: PhaseKind, generation: u64, candidate: u64, genome: &'a [f64], params: &'a BTreeMap<String, f64>) -> Self {
        NewTrial { trial, phase, generation, candidate, genome, params, path: None, plan: &Plan::Full, rescore_of: None }
    }
}

/// A trial a process has claimed: evaluate `genome` in `phase`, then [`Journal::finish_trial`].
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub trial: u64,
    pub phase: PhaseKind,
    pub genome: Vec<f64>,
    pub plan: Plan,
}

pub struct Journal {
    store: Store,
    location: Location,
    /// For messages: the file, or the redacted URL.
    shown: PathBuf,
}

impl Journal {
    /// Open (creating if needed) the SQLite journal at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Self::connect(&Location::Sqlite(path.to_path_buf()))
    }

    /// Connect to a journal (creating its tables if needed).
    pub fn connect(location: &Location) -> Result<Self> {
        let shown = PathBuf::from(location.display());
        let store = Store::open(location).map_err(|message| EvolveError::Journal { path: shown.clone(), message })?;
        Ok(Journal { store, location: location.clone(), shown })
    }

    /// Open an existing journal (for reading a search, possibly while it runs, or joining it).
    pub fn open_existing(path: &Path) -> Result<Self> {
        Self::connect_existing(&Location::Sqlite(path.to_path_buf()))
    }

    /// Connect to a journal that holds a search.
    pub fn connect_existing(location: &Location) -> Result<Self> {
        if let Location::Sqlite(path) = location {
            if !path.is_file() {
                return Err(EvolveError::Journal {
                    path: path.to_path_buf(),
                    message: "no journal here (is this the --out directory of an `evomerge evolve` run?)".into(),
                });
            }
        }
        let journal = Self::connect(location)?;
        // A SQLite file is created by the search itself (which may not have stored its recipe yet:
        // that reads as no trials); a database holding no search is most likely the wrong one.
        if matches!(location, Location::Postgres(_)) && journal.study_value("identity")?.is_none() {
            return Err(journal.error("this journal holds no search yet (start `evomerge evolve ... --journal` first)"));
        }
        Ok(journal)
    }

    /// The file, or the URL without its password (for messages).
    pub fn path(&self) -> &Path {
        &self.shown
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    fn error(&self, message: impl Into<String>) -> EvolveError {
        EvolveError::Journal { path: self.shown.clone(), message: message.into() }
    }

    fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        self.store.query(sql, params).map_err(|m| self.error(m))
    }

    fn execute(&self, sql: &str, params: &[Value]) -> Result<u64> {
        self.store.execute(sql, params).map_err(|m| self.error(m))
    }

    /// A value of the study table (`recipe`, `identity`, `format`, ...).
    pub fn study_value(&self, key: &str) -> Result<Option<String>> {
        let rows = self.query("SELECT value FROM study WHERE key = ?1", &[key.into()])?;
        Ok(rows.first().and_then(|r| r[0].text().map(str::to_string)))
    }

    /// Bind the journal to a recipe: a new journal stores it; an existing one must hold the same
    /// recipe identity, or the search is refused.
    pub fn bind_recipe(&mut self, identity: &str, recipe_yaml: &str) -> Result<()> {
        // The first writer of `identity` wins; everyone then compares with what is stored.
        self.execute("INSERT INTO study (key, value) VALUES ('identity', ?1) ON CONFLICT (key) DO NOTHING", &[identity.into()])?;
        match self.study_value("identity")? {
            Some(s) if s == identity => {}
            _ => {
                let place = match &self.location {
                    Location::Sqlite(p) => p.parent().map_or_else(|| p.display().to_string(), |d| d.display().to_string()),
                    Location::Postgres(_) => self.shown.display().to_string(),
                };
                return Err(EvolveError::OutputDir(format!(
                    "{place} holds the journal of another recipe (or another seed); use a new --out directory \
                     (or another database), or run the recipe stored there (`evomerge trials {place} --recipe` prints it)"
                )));
            }
        }
        for (key, value) in [("format", FORMAT.to_string()), ("recipe", recipe_yaml.to_string()), ("created_at", now().to_string())] {
            self.execute("INSERT INTO study (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING", &[key.into(), value.into()])?;
        }
        Ok(())
    }

    /// Set a study value (e.g. the genome's gene names).
    pub fn set_study_value(&self, key: &str, value: &str) -> Result<()> {
        self.execute(
            "INSERT INTO study (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[key.into(), value.into()],
        )
        .map(|_| ())
    }

    pub fn trial(&self, trial: u64) -> Result<Option<TrialRecord>> {
        let rows = self.query(&format!("{SELECT} WHERE trial = ?1"), &[trial.into()])?;
        rows.first().map(|r| self.record(r)).transpose()
    }

    /// Every trial in trial order.
    pub fn trials(&self) -> Result<Vec<TrialRecord>> {
        self.query(&format!("{SELECT} ORDER BY trial"), &[])?.iter().map(|r| self.record(r)).collect()
    }

    /// Trials `from..to`, in trial order (those in the journal).
    pub fn trial_range(&self, from: u64, to: u64) -> Result<Vec<TrialRecord>> {
        self.query(&format!("{SELECT} WHERE trial >= ?1 AND trial < ?2 ORDER BY trial"), &[from.into(), to.into()])?
            .iter()
            .map(|r| self.record(r))
            .collect()
    }

    /// Queue a candidate (nothing happens if its row exists: a resumed coordinator finds its earlier
    /// generation queued, running or finished, and checks the row instead).
    pub fn enqueue(&self, t: &NewTrial) -> Result<()> {
        let genome_json = serde_json::to_string(t.genome).map_err(|e| EvolveError::Fitness(e.to_string()))?;
        let params_json = serde_json::to_string(t.params).map_err(|e| EvolveError::Fitness(e.to_string()))?;
        self.execute(
            "INSERT INTO trials (trial, generation, candidate, genome, params, status, phase, path, queued_at, plan, rescore_of)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?8, ?9, ?10) ON CONFLICT (trial) DO NOTHING",
            &[
                t.trial.into(),
                t.generation.into(),
                t.candidate.into(),
                genome_json.into(),
                params_json.into(),
                t.phase.as_str().into(),
                t.path.into(),
                now().into(),
                t.plan.to_column().into(),
                t.rescore_of.into(),
            ],
        )?;
        Ok(())
    }

    /// Claim the lowest pending trial (of `phase`, if given), or one whose lease has expired, for
    /// `worker` until `lease_seconds` from now. Atomic: two processes never claim the same row.
    pub fn claim(&self, phase: Option<PhaseKind>, worker: &str, lease_seconds: f64) -> Result<Option<Claim>> {
        let now = now();
        let lock = if self.store.is_postgres() { "FOR UPDATE SKIP LOCKED" } else { "" };
        let phase_filter = if phase.is_some() { "AND phase = ?4" } else { "" };
        let sql = format!(
            "UPDATE trials SET status = 'running', worker = ?1, started_at = ?2, lease_until = ?3,
               wait_seconds = ?2 - queued_at
             WHERE trial = (SELECT trial FROM trials
                            WHERE (status = 'pending' OR (status = 'running' AND lease_until < ?2)) {phase_filter}
                            ORDER BY trial LIMIT 1 {lock})
             RETURNING trial, phase, genome, plan"
        );
        let mut params: Vec<Value> = vec![worker.into(), now.into(), (now + lease_seconds).into()];
        if let Some(p) = phase {
            params.push(p.as_str().into());
        }
        let rows = self.query(&sql, &params)?;
        let Some(row) = rows.first() else { return Ok(None) };
        let trial = row[0].int().ok_or_else(|| self.error("a claimed row has no trial number"))? as u64;
        let phase_text = row[1].text().unwrap_or("");
        let phase = PhaseKind::parse(phase_text).ok_or_else(|| self.error(format!("trial {trial}: unknown phase {phase_text:?}")))?;
        let genome = serde_json::from_str(row[2].text().unwrap_or(""))
            .map_err(|e| self.error(format!("trial {trial}: unreadable genome: {e}")))?;
        let plan = Plan::from_column(row[3].text()).map_err(|e| self.error(format!("trial {trial}: {e}")))?;
        Ok(Some(Claim { trial, phase, genome, plan }))
    }

    /// Extend `worker`'s lease on `trial`; false if it no longer holds it.
    pub fn heartbeat(&self, trial: u64, worker: &str, lease_seconds: f64) -> Result<bool> {
        let n = self.execute(
            "UPDATE trials SET lease_until = ?3 WHERE trial = ?1 AND worker = ?2 AND status = 'running'",
            &[trial.into(), worker.into(), (now() + lease_seconds).into()],
        )?;
        Ok(n == 1)
    }

    /// Put back in the queue the rows claimed by processes of this machine that no longer exist
    /// (a killed worker's lease need not run out when its death can be seen).
    pub fn requeue_dead_local_workers(&self) -> Result<u64> {
        let host = format!("{}:", hostname());
        let rows = self.query("SELECT trial, worker FROM trials WHERE status = 'running'", &[])?;
        let mut requeued = 0;
        for row in rows {
            let (Some(trial), Some(worker)) = (row[0].int(), row[1].text()) else { continue };
            let Some(pid) = worker.strip_prefix(&host).and_then(|p| p.parse::<u32>().ok()) else { continue };
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            requeued += self.execute(
                "UPDATE trials SET status = 'pending', lease_until = NULL WHERE trial = ?1 AND worker = ?2 AND status = 'running'",
                &[trial.into(), worker.into()],
            )?;
        }
        Ok(requeued)
    }

    /// Record the result of a trial `worker` holds (exactly once). Returns false, recording nothing,
    /// when the worker lost its lease and another process took the trial over, or it is finished.
    pub fn finish_trial(&self, trial: u64, worker: &str, result: std::result::Result<&TrialOutcome, &str>, seconds: f64) -> Result<bool> {
        let changed = match result {
            Ok(o) => {
                let scores = serde_json::to_string(&o.item_scores).map_err(|e| EvolveError::Fitness(e.to_string()))?;
                let ids = o.item_ids.as_ref().map(serde_json::to_string).transpose().map_err(|e| EvolveError::Fitness(e.to_string()))?;
                self.execute(
                    "UPDATE trials SET status = 'complete', fitness = ?3, item_scores = ?4, items = ?5, seconds = ?6,
                     generated_tokens = ?7, truncated = ?8, finished_at = ?9, merge_seconds = ?10, lease_until = NULL,
                     item_ids = ?11
                     WHERE trial = ?1 AND worker = ?2 AND status = 'running'",
                    &[
                        trial.into(),
                        worker.into(),
                        o.fitness.into(),
                        scores.into(),
                        (o.item_scores.len() as u64).into(),
                        seconds.into(),
                        o.generated_tokens.into(),
                        o.truncated.into(),
                        now().into(),
                        o.merge_seconds.into(),
                        ids.into(),
                    ],
                )?
            }
            Err(message) => self.execute(
                "UPDATE trials SET status = 'failed', error = ?3, seconds = ?4, finished_at = ?5, lease_until = NULL
                 WHERE trial = ?1 AND worker = ?2 AND status = 'running'",
                &[trial.into(), worker.into(), message.into(), seconds.into(), now().into()],
            )?,
        };
        Ok(changed == 1)
    }

    /// Rows queued or running (of `phase`, if given).
    pub fn unfinished(&self, phase: Option<PhaseKind>) -> Result<u64> {
        let rows = match phase {
            Some(p) => self.query(
                "SELECT COUNT(*) FROM trials WHERE status IN ('pending', 'running') AND phase = ?1",
                &[p.as_str().into()],
            )?,
            None => self.query("SELECT COUNT(*) FROM trials WHERE status IN ('pending', 'running')", &[])?,
        };
        Ok(rows.first().and_then(|r| r[0].int()).unwrap_or(0) as u64)
    }

    /// The phase of the lowest queued (or lease-expired) trial, if any.
    pub fn next_queued_phase(&self) -> Result<Option<PhaseKind>> {
        let rows = self.query(
            "SELECT phase FROM trials WHERE status = 'pending' OR (status = 'running' AND lease_until < ?1) ORDER BY trial LIMIT 1",
            &[now().into()],
        )?;
        Ok(rows.first().and_then(|r| r[0].text().and_then(PhaseKind::parse)))
    }

    fn record(&self, r: &Row) -> Result<TrialRecord> {
        let text = |i: usize| r[i].text().map(str::to_string);
        let trial = r[0].int().unwrap_or(-1);
        let bad = |what: &str, e: String| self.error(format!("trial {trial}: unreadable {what}: {e}"));
        let phase = text(15).unwrap_or_default();
        let status = text(5).unwrap_or_default();
        Ok(TrialRecord {
            trial: trial as u64,
            phase: PhaseKind::parse(&phase).ok_or_else(|| bad("phase", phase.clone()))?,
            generation: r[1].int().unwrap_or(0) as u64,
            candidate: r[2].int().unwrap_or(0) as u64,
            genome: serde_json::from_str(&text(3).unwrap_or_default()).map_err(|e| bad("genome", e.to_string()))?,
            params: serde_json::from_str(&text(4).unwrap_or_default()).map_err(|e| bad("params", e.to_string()))?,
            status: TrialStatus::parse(&status).ok_or_else(|| bad("status", status.clone()))?,
            fitness: r[6].real(),
            item_scores: text(7).map(|s| serde_json::from_str(&s)).transpose().map_err(|e| bad("item scores", e.to_string()))?,
            items: r[8].int().map(|v| v as u64),
            seconds: r[9].real(),
            generated_tokens: r[10].int().map(|v| v as u64),
            truncated: r[11].int().map(|v| v as u64),
            error: text(12),
            worker: text(13),
            merge_seconds: r[14].real(),
            path: text(16),
            wait_seconds: r[17].real(),
            plan: Plan::from_column(r[18].text()).map_err(|e| bad("plan", e))?,
            item_ids: text(19).map(|s| serde_json::from_str(&s)).transpose().map_err(|e| bad("item ids", e.to_string()))?,
            rescore_of: r[20].int().map(|v| v as u64),
        })
    }
}

const SELECT: &str = "SELECT trial, generation, candidate, genome, params, status, fitness, item_scores, items, seconds,
    generated_tokens, truncated, error, worker, merge_seconds, phase, path, wait_seconds, plan, item_ids, rescore_of FROM trials";

/// This process's name in the journal's `worker` column: `host:pid`.
pub fn worker_id() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "localhost".into())
}

pub(crate) fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trials_are_queued_claimed_and_recorded_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sqlite");
        let mut j = Journal::open(&path).unwrap();
        j.bind_recipe("id-1", "recipe: 1").unwrap();
        j.bind_recipe("id-1", "recipe: 1").unwrap();
        assert!(j.bind_recipe("id-2", "recipe: 2").unwrap_err().to_string().contains("another recipe"));
        let genome = vec![0.1 + 0.2, 1.0 / 3.0];
        let params: BTreeMap<String, f64> = [("a.weight".to_string(), genome[0])].into();
        j.enqueue(&NewTrial::new(0, PhaseKind::Ps, 0, 0, &genome, &params)).unwrap();
        j.enqueue(&NewTrial::new(1, PhaseKind::Ps, 0, 1, &genome, &params)).unwrap();
        // Queuing again changes nothing.
        j.enqueue(&NewTrial::new(0, PhaseKind::Ps, 0, 0, &[9.0], &params)).unwrap();
        assert_eq!(j.trial(0).unwrap().unwrap().status, TrialStatus::Pending);
        assert_eq!(j.unfinished(None).unwrap(), 2);
        assert!(j.claim(Some(PhaseKind::Dfs), "w1", 60.0).unwrap().is_none());
        let c = j.claim(Some(PhaseKind::Ps), "w1", 60.0).unwrap().unwrap();
        assert_eq!((c.trial, c.genome.clone()), (0, genome.clone()));
        // A live lease is not claimed twice; the next row goes to the next claimer.
        assert_eq!(j.claim(None, "w2", 60.0).unwrap().unwrap().trial, 1);
        assert!(j.claim(None, "w3", 60.0).unwrap().is_none());
        let outcome =
            TrialOutcome { fitness: -0.125, item_scores: vec![0.5, -0.75], generated_tokens: 7, truncated: 1, merge_seconds: 0.25, item_ids: None };
        // Only the holder records the result, once.
        assert!(!j.finish_trial(0, "w2", Ok(&outcome), 1.5).unwrap());
        assert!(j.heartbeat(0, "w1", 60.0).unwrap());
        assert!(j.finish_trial(0, "w1", Ok(&outcome), 1.5).unwrap());
        assert!(!j.finish_trial(0, "w1", Err("boom"), 1.0).unwrap());
        assert!(!j.heartbeat(0, "w1", 60.0).unwrap());
        let t = j.trial(0).unwrap().unwrap();
        assert_eq!(t.genome, genome);
        assert_eq!(t.fitness, Some(-0.125));
        assert_eq!(t.status, TrialStatus::Complete);
        assert_eq!(t.item_scores, Some(vec![0.5, -0.75]));
        assert_eq!(t.worker.as_deref(), Some("w1"));
        assert!(t.wait_seconds.is_some_and(|w| w >= 0.0));
        // An expired lease goes back to the queue: w2 lost trial 1 to w3.
        j.execute("UPDATE trials SET lease_until = 0 WHERE trial = 1", &[]).unwrap();
        assert_eq!(j.next_queued_phase().unwrap(), Some(PhaseKind::Ps));
        assert_eq!(j.claim(None, "w3", 60.0).unwrap().unwrap().trial, 1);
        assert!(!j.finish_trial(1, "w2", Err("late"), 0.5).unwrap());
        assert!(j.finish_trial(1, "w3", Err("NaN logits"), 0.5).unwrap());
        let all = Journal::open_existing(&path).unwrap().trials().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].status, TrialStatus::Failed);
        assert_eq!(all[1].error.as_deref(), Some("NaN logits"));
        assert_eq!(j.unfinished(None).unwrap(), 0);
    }

    #[test]
    fn rows_of_dead_local_processes_are_requeued() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("journal.sqlite")).unwrap();
        let params = BTreeMap::new();
        for t in 0..2 {
            j.enqueue(&NewTrial::new(t, PhaseKind::Ps, 0, t, &[0.0], &params)).unwrap();
        }
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        j.claim(None, &format!("{}:{dead}", hostname()), 600.0).unwrap().unwrap();
        j.claim(None, &worker_id(), 600.0).unwrap().unwrap();
        assert_eq!(j.requeue_dead_local_workers().unwrap(), 1);
        assert_eq!(j.trial(0).unwrap().unwrap().status, TrialStatus::Pending);
        assert_eq!(j.trial(1).unwrap().unwrap().status, TrialStatus::Running);
    }

    #[test]
    fn a_first_format_journal_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sqlite");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE study (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE trials (trial INTEGER PRIMARY KEY, generation INTEGER NOT NULL, candidate INTEGER NOT NULL,
               genome TEXT NOT NULL, params TEXT NOT NULL,
               status TEXT NOT NULL CHECK (status IN ('running', 'complete', 'failed')),
               fitness REAL, item_scores TEXT, items INTEGER, seconds REAL, merge_seconds REAL, generated_tokens INTEGER,
               truncated INTEGER, error TEXT, started_at REAL, finished_at REAL, worker TEXT);
             INSERT INTO study VALUES ('identity', 'x');
             INSERT INTO trials (trial, generation, candidate, genome, params, status, fitness)
               VALUES (0, 0, 0, '[0.5]', '{}', 'complete', 0.25);",
        )
        .unwrap();
        drop(conn);
        let j = Journal::open_existing(&path).unwrap();
        let t = j.trial(0).unwrap().unwrap();
        assert_eq!((t.phase, t.fitness, t.genome), (PhaseKind::Ps, Some(0.25), vec![0.5]));
        j.enqueue(&NewTrial::new(1, PhaseKind::Ps, 1, 0, &[0.0], &BTreeMap::new())).unwrap();
        assert_eq!(j.trial(1).unwrap().unwrap().status, TrialStatus::Pending);
    }
}
