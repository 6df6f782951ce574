//! Evaluating queued candidates: the claim → evaluate → record step that the coordinator (unless
//! `--workers 0`) and every `evomerge worker` run, the heartbeat that keeps a claim's lease while
//! the evaluation runs, and the worker's loop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::budget::Budgeter;
use crate::error::Result;
use crate::journal::{Claim, Journal, Location};
use crate::phase::Phase;

/// Keeps the lease of the trial this process evaluates alive, from its own connection (a thread:
/// the evaluation itself may hold the main thread for minutes).
pub struct Heartbeat {
    current: Arc<Mutex<Option<u64>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    pub fn start(location: Location, worker: String, lease_seconds: f64) -> Heartbeat {
        let current = Arc::new(Mutex::new(None::<u64>));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (current.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let journal = match Journal::connect(&location) {
                Ok(j) => j,
                Err(e) => {
                    tracing::warn!("heartbeat: {e}; leases of this process will not be extended");
                    return;
                }
            };
            let interval = Duration::from_secs_f64((lease_seconds / 4.0).max(0.05));
            let mut last = Instant::now();
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20).min(interval));
                if last.elapsed() < interval {
                    continue;
                }
                last = Instant::now();
                let trial = c.lock().ok().and_then(|t| *t);
                if let Some(trial) = trial {
                    match journal.heartbeat(trial, &worker, lease_seconds) {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!("trial {trial}: this process lost its lease (another process took it over)"),
                        Err(e) => tracing::warn!("heartbeat for trial {trial}: {e}"),
                    }
                }
            }
        });
        Heartbeat { current, stop, thread: Some(thread) }
    }

    fn set(&self, trial: Option<u64>) {
        if let Ok(mut t) = self.current.lock() {
            *t = trial;
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Evaluate a claimed trial and record its result; false when this process had lost the claim
/// (the result of whoever holds it is the one recorded). A failed evaluation is a failed trial; a
/// journal error is an error.
pub fn evaluate_claim(
    phase: &mut dyn Phase,
    budget: &Budgeter,
    journal: &Journal,
    claim: &Claim,
    worker: &str,
    heartbeat: &Heartbeat,
) -> Result<bool> {
    heartbeat.set(Some(claim.trial));
    let t0 = Instant::now();
    let result = budget.execute(phase, journal, claim);
    let seconds = t0.elapsed().as_secs_f64();
    test_gate(claim.trial);
    heartbeat.set(None);
    let recorded = match &result {
        Ok(outcome) => journal.finish_trial(claim.trial, worker, Ok(outcome), seconds)?,
        Err(e) => {
            tracing::warn!("trial {} failed: {e}", claim.trial);
            journal.finish_trial(claim.trial, worker, Err(&e.to_string()), seconds)?
        }
    };
    if !recorded {
        tracing::warn!("trial {}: not recorded by this process (its lease ran out and another process took it)", claim.trial);
    }
    Ok(recorded)
}

/// For tests only: the environment variable naming a gate file that holds evaluated trials back from
/// being recorded. It is read here and nowhere else, and is no setting of the command line.
const TEST_TRIAL_GATE_ENV: &str = "EVOMERGE_TEST_TRIAL_GATE";

/// Tests that kill processes in the middle of a search (tests/cli_evolve_workers.rs) need a trial to be
/// in flight at a moment they choose, however fast trials run or slow the machine is. With
/// `EVOMERGE_TEST_TRIAL_GATE=FILE` set, a process that has evaluated trial `n` waits — still holding it
/// as `running`, its lease kept by the heartbeat, its result not recorded — while FILE exists and does
/// not hold a number greater than `n` (a file that cannot be read or parsed holds back too). The test
/// lets trials below `m` through by writing `m` (atomically, by a rename) and every trial by removing
/// FILE. Unset (always, outside tests), this does nothing.
fn test_gate(trial: u64) {
    let Some(gate) = std::env::var_os(TEST_TRIAL_GATE_ENV) else { return };
    let gate = std::path::PathBuf::from(gate);
    loop {
        match std::fs::read_to_string(&gate) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Ok(text) if text.trim().parse::<u64>().is_ok_and(|open_below| trial < open_below) => return,
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}
