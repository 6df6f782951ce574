//! `evomerge worker`: a process that joins a search through its journal and evaluates queued
//! candidates until the search is done. It reads the recipe from the journal (or checks a local copy
//! against it), loads the sources once and keeps them resident, and serves whichever phase has
//! candidates queued. Any number of workers, on any machines that reach the journal, may join or
//! leave at any time; the trial records do not depend on them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::{EvolveError, Result};
use crate::budget::Budgeter;
use crate::journal::{worker_id, Journal, Location, PhaseKind};
use crate::phase::Phase;
use crate::pool::DfsPhase;
use crate::recipe::EvolveRecipe;
use crate::search::{load_sources, prepare, Prepared, PsPhase, OUT_KEY, PS_BEST_DIR, RECIPE_DIR_KEY, STATE_KEY};
use crate::work::{evaluate_claim, Heartbeat};

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub journal: Location,
    /// A local copy of the search's recipe (paths in it as this machine sees them); its identity
    /// must be the journal's. Without it the recipe stored in the journal is used.
    pub recipe: Option<PathBuf>,
    pub lease_seconds: f64,
    /// How long to wait for the search to appear in the journal (a worker may start first).
    pub wait_for_search: Duration,
    /// Where this worker evaluates (`cpu`, `cuda`, `cuda:N`) instead of the recipe's `device`: one worker per
    /// GPU of a machine.
    pub device: Option<String>,
}

#[derive(Debug, Clone)]
pub struct WorkerReport {
    pub worker: String,
    /// Trials this worker evaluated and recorded.
    pub evaluated: u64,
}

const IDLE_POLL: Duration = Duration::from_millis(50);

/// Serve the search in `options.journal` until it is done.
pub fn run_worker(options: &WorkerOptions) -> Result<WorkerReport> {
    if let Some(device) = &options.device {
        crate::recipe::check_device(device).map_err(|m| EvolveError::recipe("--device", m))?;
    }
    let journal = wait_for_search(options)?;
    let recipe = worker_recipe(&journal, options)?;
    let worker = worker_id();
    let heartbeat = Heartbeat::start(options.journal.clone(), worker.clone(), options.lease_seconds);
    tracing::info!("worker {worker} joined the search in {}", journal.path().display());
    let mut evaluated = 0;
    loop {
        journal.requeue_dead_local_workers()?;
        match journal.next_queued_phase()? {
            Some(kind) => {
                evaluated += serve(prepare(recipe.clone())?, kind, &journal, &worker, &heartbeat, options.lease_seconds)?;
            }
            None => {
                if journal.study_value(STATE_KEY)?.as_deref() == Some("done") && journal.unfinished(None)? == 0 {
                    break;
                }
                std::thread::sleep(IDLE_POLL);
            }
        }
    }
    Ok(WorkerReport { worker, evaluated })
}

/// Connect, and wait until the journal holds a search.
fn wait_for_search(options: &WorkerOptions) -> Result<Journal> {
    let started = Instant::now();
    loop {
        let ready = match &options.journal {
            Location::Sqlite(path) => path.is_file(),
            Location::Postgres(_) => true,
        };
        if ready {
            let journal = Journal::connect(&options.journal)?;
            if journal.study_value(STATE_KEY)?.is_some() {
                return Ok(journal);
            }
        }
        if started.elapsed() >= options.wait_for_search {
            return Err(EvolveError::Journal {
                path: PathBuf::from(options.journal.display()),
                message: format!(
                    "no search appeared here within {:.0} s; start the coordinator (`evomerge evolve RECIPE --out DIR{}`) \
                     or give the right --journal",
                    options.wait_for_search.as_secs_f64(),
                    if matches!(options.journal, Location::Postgres(_)) { " --journal URL" } else { "" }
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The recipe this worker evaluates with: the journal's, or a local copy that must be the same.
fn worker_recipe(journal: &Journal, options: &WorkerOptions) -> Result<EvolveRecipe> {
    let identity = journal.study_value("identity")?.unwrap_or_default();
    let recipe = match &options.recipe {
        Some(path) => {
            let recipe = EvolveRecipe::from_file(path)?;
            // The coordinator's --seed has been applied to the stored recipe; a local copy takes it
            // from there too (every other setting must agree).
            let stored = EvolveRecipe::from_yaml(&journal.study_value("recipe")?.unwrap_or_default())?;
            let mut recipe = recipe;
            recipe.optimizer.seed = stored.optimizer.seed;
            if recipe.identity()? != identity {
                return Err(EvolveError::Journal {
                    path: journal.path().to_path_buf(),
                    message: format!(
                        "{} is not the recipe of the search in this journal (its settings differ); a worker must \
                         evaluate with the coordinator's recipe: give that one, or leave --recipe out to use the one \
                         stored in the journal",
                        path.display()
                    ),
                });
            }
            recipe
        }
        None => {
            let text = journal.study_value("recipe")?.unwrap_or_default();
            let mut recipe = EvolveRecipe::from_yaml(&text)?;
            recipe.recipe_dir = journal.study_value(RECIPE_DIR_KEY)?.map(PathBuf::from);
            if recipe.identity()? != identity {
                return Err(EvolveError::Journal {
                    path: journal.path().to_path_buf(),
                    message: "the recipe stored in this journal does not match its identity (written by another \
                              evomerge version?); give the recipe with --recipe"
                        .into(),
                });
            }
            recipe
        }
    };
    let mut recipe = recipe;
    if let Some(device) = &options.device {
        recipe.device = device.clone();
    }
    Ok(recipe)
}

/// Evaluate `kind`'s queued candidates with its models resident, until none of that phase is
/// queued and either the search is done or another phase has begun.
fn serve(mut p: Prepared, kind: PhaseKind, journal: &Journal, worker: &str, heartbeat: &Heartbeat, lease: f64) -> Result<u64> {
    match kind {
        PhaseKind::Ps => {
            let mut ps = p.ps.take().ok_or_else(|| {
                EvolveError::recipe("genome", "the journal queues parameter-space candidates but the recipe has no `genome:`")
            })?;
            let resident = load_sources(&mut ps.opened)?;
            let mut phase = PsPhase::new(&p, &ps, &resident)?;
            serve_phase(&mut phase, &p.budget, journal, worker, heartbeat, lease)
        }
        PhaseKind::Dfs => {
            let dfs = p.dfs.as_ref().ok_or_else(|| {
                EvolveError::recipe("dfs", "the journal queues data-flow candidates but the recipe has no `dfs:`")
            })?;
            let out = journal.study_value(OUT_KEY)?.map(PathBuf::from);
            let dirs = dfs
                .dirs
                .iter()
                .map(|d| match d {
                    Some(dir) => Ok(dir.clone()),
                    None => {
                        let dir = out.as_ref().map(|o| o.join(PS_BEST_DIR)).filter(|d| d.join("config.json").is_file());
                        dir.ok_or_else(|| {
                            EvolveError::Model(format!(
                                "the data-flow pool holds this search's parameter-space result, {}/{PS_BEST_DIR} on the \
                                 coordinator's machine, and this worker cannot read it; run workers where the output \
                                 directory is reachable (a shared filesystem)",
                                out.as_ref().map_or_else(|| "OUT".into(), |o| o.display().to_string())
                            ))
                        })
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            let mut phase =
                DfsPhase::load(dfs.space.clone(), &dirs, &p.device, dfs.dtype, &p.task, p.recipe.task.metric, p.scorer.as_ref())?;
            serve_phase(&mut phase, &p.budget, journal, worker, heartbeat, lease)
        }
    }
}

fn serve_phase(phase: &mut dyn Phase, budget: &Budgeter, journal: &Journal, worker: &str, heartbeat: &Heartbeat, lease: f64) -> Result<u64> {
    let kind = phase.kind();
    phase.prepare_evaluation()?;
    let mut evaluated = 0;
    loop {
        journal.requeue_dead_local_workers()?;
        if let Some(claim) = journal.claim(Some(kind), worker, lease)? {
            if evaluate_claim(phase, budget, journal, &claim, worker, heartbeat)? {
                evaluated += 1;
            }
            continue;
        }
        match journal.next_queued_phase()? {
            Some(other) if other != kind => return Ok(evaluated),
            _ => {}
        }
        if journal.study_value(STATE_KEY)?.as_deref() == Some("done") && journal.unfinished(None)? == 0 {
            return Ok(evaluated);
        }
        std::thread::sleep(IDLE_POLL);
    }
}
