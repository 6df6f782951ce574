//! Scaling of a search over worker processes, and what the journal costs per trial.
//!
//!     cargo bench --bench workers                      # SQLite; PostgreSQL too when
//!     EVOMERGE_BENCH_POSTGRES=postgresql://… cargo bench --bench workers   # a server is given
//!
//! 1. The journal alone: per trial, the coordinator's queueing and reading back and a worker's claim
//!    and result (the statements a real trial runs), on SQLite and on PostgreSQL.
//! 2. The tiny loglik search (fixtures, its task 120 times over, 32 trials, generations of 8) run by one process, then by a
//!    coordinator (`--workers 0`) with 1, 2 and 4 workers, each worker on one thread: candidates per
//!    minute and the overhead per trial of coordinating through the journal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use evomerge_evolve::journal::{Journal, Location, NewTrial, PhaseKind};
use evomerge_evolve::TrialOutcome;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Microseconds per trial of the journal statements a trial runs.
fn journal_cost(location: &Location, trials: u64) -> f64 {
    let j = Journal::connect(location).expect("journal");
    let mut j = j;
    j.bind_recipe("bench", "bench: 1").expect("bind");
    let genome = vec![0.5; 4];
    let params: BTreeMap<String, f64> = (0..4).map(|i| (format!("g{i}"), 0.5)).collect();
    let outcome = TrialOutcome { fitness: 0.5, item_scores: vec![0.5; 32], generated_tokens: 0, truncated: 0, merge_seconds: 0.0, item_ids: None };
    let t0 = Instant::now();
    for t in 0..trials {
        j.enqueue(&NewTrial::new(t, PhaseKind::Ps, t / 8, t % 8, &genome, &params)).expect("enqueue");
        let claim = j.claim(Some(PhaseKind::Ps), "bench:1", 60.0).expect("claim").expect("a row");
        j.heartbeat(claim.trial, "bench:1", 60.0).expect("heartbeat");
        assert!(j.finish_trial(claim.trial, "bench:1", Ok(&outcome), 0.0).expect("finish"));
        j.requeue_dead_local_workers().expect("requeue");
        let _ = j.trial_range(t, t + 1).expect("read");
    }
    t0.elapsed().as_secs_f64() * 1e6 / trials as f64
}

fn recipe(dir: &Path) -> PathBuf {
    let models = fixtures().join("merge/models");
    let task = std::fs::read_to_string(fixtures().join("evolve/task.jsonl")).expect("task");
    std::fs::write(dir.join("task.jsonl"), task.repeat(120)).expect("write");
    let text = format!(
        "genome:\n  merge_method: dare_ties\n  base_model: {m}/base\n  models: [{m}/ft1, {m}/ft2]\n  parameters: [density, weight]\n  dtype: float32\n\
         task:\n  kind: custom\n  data: task.jsonl\n  metric: loglik\n  generation: {{batch_size: 8}}\n\
         optimizer: {{max_trials: 32, population: 8, seed: 1}}\n",
        m = models.display()
    );
    let path = dir.join("recipe.yml");
    std::fs::write(&path, text).expect("write");
    path
}

fn evomerge(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_evomerge"))
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("evomerge")
}

fn finish(c: Child) {
    let out = c.wait_with_output().expect("wait");
    assert!(out.status.success(), "evomerge failed");
}

/// Seconds for the whole search with `workers` worker processes (0: one process does everything).
fn search_seconds(recipe: &Path, out: &Path, workers: usize, url: Option<&str>) -> f64 {
    let t0 = Instant::now();
    let mut args = vec!["evolve", recipe.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"];
    if workers > 0 {
        args.extend(["--workers", "0"]);
    }
    if let Some(u) = url {
        args.extend(["--journal", u]);
    }
    let journal = url.unwrap_or(out.to_str().unwrap()).to_string();
    let ws: Vec<Child> = (0..workers).map(|_| evomerge(&["worker", "--journal", &journal])).collect();
    finish(evomerge(&args));
    for w in ws {
        finish(w);
    }
    t0.elapsed().as_secs_f64()
}

fn fresh_database(admin: &str, name: &str) -> String {
    let mut client = postgres::Client::connect(admin, postgres::NoTls).expect("EVOMERGE_BENCH_POSTGRES");
    client.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).expect("drop database");
    client.batch_execute(&format!("CREATE DATABASE {name}")).expect("create database");
    format!("{}/{name}", admin.rsplit_once('/').map_or(admin, |(b, _)| b))
}

fn main() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pg = std::env::var("EVOMERGE_BENCH_POSTGRES").ok();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("machine: {cores} cores; each process on 1 thread (RAYON_NUM_THREADS=1)");

    println!("\n## The journal per trial (queue, claim, heartbeat, result, requeue check, read back; 400 trials)");
    let sqlite = journal_cost(&Location::Sqlite(tmp.path().join("bench.sqlite")), 400);
    println!("SQLite (WAL, synchronous=FULL): {sqlite:.0} µs per trial");
    match &pg {
        Some(admin) => {
            let url = fresh_database(admin, "evomerge_bench_journal");
            println!("PostgreSQL ({}): {:.0} µs per trial", "local server, TCP", journal_cost(&Location::Postgres(url), 400));
        }
        None => println!("PostgreSQL: not measured (set EVOMERGE_BENCH_POSTGRES to a server URL)"),
    }

    println!("\n## The tiny search (32 trials), candidates per minute (wall time from start to the last process's exit, median of 3)");
    let recipe = recipe(tmp.path());
    let mut backends = vec![("SQLite", None)];
    if let Some(admin) = &pg {
        backends.push(("PostgreSQL", Some(admin.clone())));
    }
    for (name, admin) in backends {
        println!("| journal | processes | seconds | candidates/min |");
        println!("|---|---|---|---|");
        let mut single = 0.0;
        for workers in [0usize, 1, 2, 4] {
            let out = tmp.path().join(format!("{name}-{workers}"));
            // The median of 3 runs (a shared machine is noisy).
            let mut runs: Vec<f64> = (0..3)
                .map(|run| {
                    let out = out.with_extension(run.to_string());
                    let url = admin.as_ref().map(|a| fresh_database(a, &format!("evomerge_bench_{workers}_{run}")));
                    search_seconds(&recipe, &out, workers, url.as_deref())
                })
                .collect();
            runs.sort_by(f64::total_cmp);
            let s = runs[1];
            if workers == 0 {
                single = s;
            }
            let label = if workers == 0 { "1 (no workers)".to_string() } else { format!("coordinator + {workers} worker(s)") };
            println!("| {name} | {label} | {s:.2} | {:.0} |", 32.0 * 60.0 / s);
            if workers == 1 {
                println!("(coordination overhead: {:+.1} ms per trial against one process)", (s - single) * 1000.0 / 32.0);
            }
        }
    }
}
