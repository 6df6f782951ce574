//! The trial journal: an embedded SQLite database (`DIR/journal.sqlite`, WAL mode) holding the
//! recipe and every trial. It is the truth of a search: the optimiser's state is rebuilt from it on
//! resume, `evomerge trials` reads it while the search runs, and a trial is `complete` only once
//! its result is committed, so a process killed at any moment loses at most the trial it was running
//! (which is then run again, not counted twice).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::error::{EvolveError, Result};

/// Schema version written into the study table.
const FORMAT: &str = "1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialStatus {
    Running,
    Complete,
    Failed,
}

impl TrialStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TrialStatus::Running => "running",
            TrialStatus::Complete => "complete",
            TrialStatus::Failed => "failed",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(TrialStatus::Running),
            "complete" => Some(TrialStatus::Complete),
            "failed" => Some(TrialStatus::Failed),
            _ => None,
        }
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
}

pub struct Journal {
    conn: Connection,
    path: PathBuf,
}

impl Journal {
    /// Open (creating if needed) the journal at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(|e| journal_err(path, e))?;
        let journal = Journal { conn, path: path.to_path_buf() };
        journal.setup()?;
        Ok(journal)
    }

    /// Open an existing journal (for reading a search, possibly while it runs).
    pub fn open_existing(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(EvolveError::Journal {
                path: path.to_path_buf(),
                message: "no journal here (is this the --out directory of an `evomerge evolve` run?)".into(),
            });
        }
        Self::open(path)
    }

    fn setup(&self) -> Result<()> {
        let e = |err| journal_err(&self.path, err);
        self.conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(e)?;
        self.conn.pragma_update(None, "journal_mode", "WAL").map_err(e)?;
        // Every committed trial survives a power cut, not only a killed process.
        self.conn.pragma_update(None, "synchronous", "FULL").map_err(e)?;
        self.conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS study (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS trials (
                   trial INTEGER PRIMARY KEY,
                   generation INTEGER NOT NULL,
                   candidate INTEGER NOT NULL,
                   genome TEXT NOT NULL,
                   params TEXT NOT NULL,
                   status TEXT NOT NULL CHECK (status IN ('running', 'complete', 'failed')),
                   fitness REAL,
                   item_scores TEXT,
                   items INTEGER,
                   seconds REAL,
                   merge_seconds REAL,
                   generated_tokens INTEGER,
                   truncated INTEGER,
                   error TEXT,
                   started_at REAL,
                   finished_at REAL,
                   worker TEXT,
                   phase TEXT NOT NULL DEFAULT 'ps',
                   path TEXT
                 );",
            )
            .map_err(e)?;
        // Columns added after the first format: journals written before them get them, empty.
        for (column, declaration) in [("phase", "TEXT NOT NULL DEFAULT 'ps'"), ("path", "TEXT")] {
            let present: i64 = self
                .conn
                .query_row("SELECT COUNT(*) FROM pragma_table_info('trials') WHERE name = ?1", [column], |r| r.get(0))
                .map_err(e)?;
            if present == 0 {
                self.conn.execute_batch(&format!("ALTER TABLE trials ADD COLUMN {column} {declaration}")).map_err(e)?;
            }
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A value of the study table (`recipe`, `identity`, `format`, ...).
    pub fn study_value(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM study WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| journal_err(&self.path, e))
    }

    /// Bind the journal to a recipe: a new journal stores it; an existing one must hold the same
    /// recipe identity, or the search is refused.
    pub fn bind_recipe(&mut self, identity: &str, recipe_yaml: &str) -> Result<()> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| journal_err(&path, e))?;
        let stored: Option<String> = tx
            .query_row("SELECT value FROM study WHERE key = 'identity'", [], |r| r.get(0))
            .optional()
            .map_err(|e| journal_err(&path, e))?;
        match stored {
            Some(s) if s == identity => {}
            Some(_) => {
                return Err(EvolveError::OutputDir(format!(
                    "{} holds the journal of another recipe (or another seed); use a new --out directory, \
                     or run the recipe stored there (`evomerge trials {} --recipe` prints it)",
                    path.parent().map_or_else(|| path.display().to_string(), |p| p.display().to_string()),
                    path.parent().map_or_else(|| path.display().to_string(), |p| p.display().to_string()),
                )))
            }
            None => {
                let insert = |k: &str, v: &str| {
                    tx.execute("INSERT INTO study (key, value) VALUES (?1, ?2)", params![k, v]).map_err(|e| journal_err(&path, e))
                };
                insert("format", FORMAT)?;
                insert("identity", identity)?;
                insert("recipe", recipe_yaml)?;
                insert("created_at", &now().to_string())?;
            }
        }
        tx.commit().map_err(|e| journal_err(&path, e))
    }

    /// Set a study value (e.g. the genome's gene names).
    pub fn set_study_value(&self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute("INSERT OR REPLACE INTO study (key, value) VALUES (?1, ?2)", params![key, value])
            .map(|_| ())
            .map_err(|e| journal_err(&self.path, e))
    }

    pub fn trial(&self, trial: u64) -> Result<Option<TrialRecord>> {
        let mut stmt = self.conn.prepare_cached(&format!("{SELECT} WHERE trial = ?1")).map_err(|e| journal_err(&self.path, e))?;
        stmt.query_row([trial as i64], row_to_record).optional().map_err(|e| journal_err(&self.path, e))
    }

    /// Every trial in trial order.
    pub fn trials(&self) -> Result<Vec<TrialRecord>> {
        let mut stmt = self.conn.prepare_cached(&format!("{SELECT} ORDER BY trial")).map_err(|e| journal_err(&self.path, e))?;
        let rows = stmt.query_map([], row_to_record).map_err(|e| journal_err(&self.path, e))?;
        rows.collect::<std::result::Result<Vec<_>, _>>().map_err(|e| journal_err(&self.path, e))
    }

    /// Record that a trial is being evaluated (replacing a `running` row left by a killed run;
    /// finished rows are never replaced).
    #[allow(clippy::too_many_arguments)]
    pub fn start_trial(
        &self,
        trial: u64,
        phase: PhaseKind,
        generation: u64,
        candidate: u64,
        genome: &[f64],
        params: &BTreeMap<String, f64>,
        path: Option<&str>,
        worker: &str,
    ) -> Result<()> {
        let genome_json = serde_json::to_string(genome).map_err(|e| EvolveError::Fitness(e.to_string()))?;
        let params_json = serde_json::to_string(params).map_err(|e| EvolveError::Fitness(e.to_string()))?;
        let changed = self
            .conn
            .execute(
                "INSERT INTO trials (trial, generation, candidate, genome, params, status, started_at, worker, phase, path)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'running', ?6, ?7, ?8, ?9)
                 ON CONFLICT (trial) DO UPDATE SET started_at = excluded.started_at, worker = excluded.worker
                 WHERE trials.status = 'running'",
                params![trial as i64, generation as i64, candidate as i64, genome_json, params_json, now(), worker, phase.as_str(), path],
            )
            .map_err(|e| journal_err(&self.path, e))?;
        if changed == 0 {
            return Err(EvolveError::Journal {
                path: self.path.clone(),
                message: format!("trial {trial} is already finished; it must not be evaluated twice"),
            });
        }
        Ok(())
    }

    /// Record a trial's result (exactly once: a finished trial is never overwritten).
    pub fn finish_trial(&self, trial: u64, result: std::result::Result<&TrialOutcome, &str>, seconds: f64) -> Result<()> {
        let changed = match result {
            Ok(o) => {
                let scores = serde_json::to_string(&o.item_scores).map_err(|e| EvolveError::Fitness(e.to_string()))?;
                self.conn.execute(
                    "UPDATE trials SET status = 'complete', fitness = ?2, item_scores = ?3, items = ?4, seconds = ?5,
                     generated_tokens = ?6, truncated = ?7, finished_at = ?8, merge_seconds = ?9
                     WHERE trial = ?1 AND status = 'running'",
                    params![
                        trial as i64,
                        o.fitness,
                        scores,
                        o.item_scores.len() as i64,
                        seconds,
                        o.generated_tokens as i64,
                        o.truncated as i64,
                        now(),
                        o.merge_seconds
                    ],
                )
            }
            Err(message) => self.conn.execute(
                "UPDATE trials SET status = 'failed', error = ?2, seconds = ?3, finished_at = ?4
                 WHERE trial = ?1 AND status = 'running'",
                params![trial as i64, message, seconds, now()],
            ),
        }
        .map_err(|e| journal_err(&self.path, e))?;
        if changed != 1 {
            return Err(EvolveError::Journal {
                path: self.path.clone(),
                message: format!("trial {trial} was not running; its result is not recorded twice"),
            });
        }
        Ok(())
    }
}

const SELECT: &str = "SELECT trial, generation, candidate, genome, params, status, fitness, item_scores, items, seconds,
    generated_tokens, truncated, error, worker, merge_seconds, phase, path FROM trials";

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<TrialRecord> {
    let bad = |i: usize, e: String| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into());
    let genome: String = r.get(3)?;
    let params: String = r.get(4)?;
    let status: String = r.get(5)?;
    let scores: Option<String> = r.get(7)?;
    let phase: String = r.get(15)?;
    Ok(TrialRecord {
        trial: r.get::<_, i64>(0)? as u64,
        phase: PhaseKind::parse(&phase).ok_or_else(|| bad(15, format!("unknown phase {phase}")))?,
        generation: r.get::<_, i64>(1)? as u64,
        candidate: r.get::<_, i64>(2)? as u64,
        genome: serde_json::from_str(&genome).map_err(|e| bad(3, e.to_string()))?,
        params: serde_json::from_str(&params).map_err(|e| bad(4, e.to_string()))?,
        status: TrialStatus::parse(&status).ok_or_else(|| bad(5, format!("unknown status {status}")))?,
        fitness: r.get(6)?,
        item_scores: scores.map(|s| serde_json::from_str(&s)).transpose().map_err(|e| bad(7, e.to_string()))?,
        items: r.get::<_, Option<i64>>(8)?.map(|v| v as u64),
        seconds: r.get(9)?,
        generated_tokens: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
        truncated: r.get::<_, Option<i64>>(11)?.map(|v| v as u64),
        error: r.get(12)?,
        worker: r.get(13)?,
        merge_seconds: r.get(14)?,
        path: r.get(16)?,
    })
}

fn journal_err(path: &Path, e: rusqlite::Error) -> EvolveError {
    EvolveError::Journal { path: path.to_path_buf(), message: e.to_string() }
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trials_are_recorded_once_and_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.sqlite");
        let mut j = Journal::open(&path).unwrap();
        j.bind_recipe("id-1", "recipe: 1").unwrap();
        j.bind_recipe("id-1", "recipe: 1").unwrap();
        assert!(j.bind_recipe("id-2", "recipe: 2").unwrap_err().to_string().contains("another recipe"));
        let genome = vec![0.1 + 0.2, 1.0 / 3.0];
        let params: BTreeMap<String, f64> = [("a.weight".to_string(), genome[0])].into();
        j.start_trial(0, PhaseKind::Ps, 0, 0, &genome, &params, None, "w").unwrap();
        // A killed run's `running` row may be restarted ...
        j.start_trial(0, PhaseKind::Ps, 0, 0, &genome, &params, None, "w").unwrap();
        let outcome =
            TrialOutcome { fitness: -0.125, item_scores: vec![0.5, -0.75], generated_tokens: 7, truncated: 1, merge_seconds: 0.25 };
        j.finish_trial(0, Ok(&outcome), 1.5).unwrap();
        // ... a finished one may not.
        assert!(j.start_trial(0, PhaseKind::Ps, 0, 0, &genome, &params, None, "w").is_err());
        assert!(j.finish_trial(0, Err("boom"), 1.0).is_err());
        let t = j.trial(0).unwrap().unwrap();
        assert_eq!(t.genome, genome);
        assert_eq!(t.fitness, Some(-0.125));
        assert_eq!(t.status, TrialStatus::Complete);
        assert_eq!(t.item_scores, Some(vec![0.5, -0.75]));
        j.start_trial(1, PhaseKind::Ps, 0, 1, &genome, &params, None, "w").unwrap();
        j.finish_trial(1, Err("NaN logits"), 0.5).unwrap();
        let all = Journal::open_existing(&path).unwrap().trials().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].status, TrialStatus::Failed);
        assert_eq!(all[1].error.as_deref(), Some("NaN logits"));
    }
}
