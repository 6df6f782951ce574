//! One search, many processes: a coordinator (`evolve --workers 0`) and `evomerge worker`
//! processes over the SQLite journal of one machine and over a PostgreSQL journal. The trial records
//! are those of the single-process run, also when a worker and the coordinator are SIGKILLed in the
//! middle; a worker with another recipe is refused; a journal server that does not answer is a
//! clear error. The PostgreSQL tests need a server: `scripts/test.sh` starts one and says where in
//! EVOMERGE_TEST_POSTGRES; without it they fail (they never pass by skipping).

mod evolve_support;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use evolve_support::*;

/// The tiny loglik search (16 trials in generations of 4), its task repeated so that a trial lasts
/// long enough to be killed inside.
fn recipe(dir: &Path, seed: u64) -> PathBuf {
    let text = format!(
        "{}{}optimizer: {{max_trials: 16, population: 4, seed: {seed}}}\n",
        tiny_genome(),
        tiny_task(dir, 12)
    );
    let path = dir.join(format!("recipe-{seed}.yml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn(args: &[&str]) -> Child {
    spawn_gated(args, None)
}

/// `evomerge ARGS`; with `gate`, its trials are held back by that gate file (see [`set_gate`]).
fn spawn_gated(args: &[&str], gate: Option<&Path>) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_evomerge"));
    command.args(args).env("HF_HUB_OFFLINE", "1").stdout(Stdio::null()).stderr(Stdio::piped());
    if let Some(gate) = gate {
        command.env("EVOMERGE_TEST_TRIAL_GATE", gate);
    }
    command.spawn().expect("starting evomerge")
}

/// The test-only trial gate (EVOMERGE_TEST_TRIAL_GATE, read in crates/evolve/src/work.rs): a process
/// that has evaluated trial n does not record it, and keeps holding it as running, until the gate
/// file holds a number above n or is gone. `Some(m)` lets trials below m through, `None` all of them.
fn set_gate(gate: &Path, open_below: Option<u64>) {
    match open_below {
        Some(m) => {
            // Written whole and renamed in place: a reader never sees a half-written number.
            let tmp = gate.with_extension("tmp");
            std::fs::write(&tmp, m.to_string()).unwrap();
            std::fs::rename(&tmp, gate).unwrap();
        }
        None => std::fs::remove_file(gate).unwrap(),
    }
}

fn wait_ok(child: Child, what: &str) {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The records of the single-process run of `recipe`.
fn single_process(recipe: &Path, out: &Path) -> Vec<serde_json::Value> {
    let o = evomerge(&["evolve", recipe.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = records(out);
    assert_eq!(r.len(), 16);
    r
}

/// Trial records with the worker column (the raw journal rows).
fn raw_records(journal: &str) -> Vec<serde_json::Value> {
    let o = evomerge(&["trials", journal, "--format", "jsonl"]);
    if !o.status.success() {
        return Vec::new();
    }
    String::from_utf8(o.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn coordinator_args<'a>(recipe: &'a Path, out: &'a Path, url: Option<&'a str>) -> Vec<&'a str> {
    let mut a = vec!["evolve", recipe.to_str().unwrap(), "--out", out.to_str().unwrap(), "--workers", "0", "--quiet"];
    if let Some(url) = url {
        a.extend(["--journal", url]);
    }
    a
}

/// Coordinator + 3 workers; returns the records (and the workers that evaluated).
fn distributed(recipe: &Path, out: &Path, url: Option<&str>) -> (Vec<serde_json::Value>, BTreeSet<String>) {
    let journal = url.unwrap_or(out.to_str().unwrap()).to_string();
    // Workers may start before the coordinator has created the search.
    let workers: Vec<Child> = (0..3).map(|_| spawn(&["worker", "--journal", &journal, "--wait-seconds", "120"])).collect();
    let coordinator = spawn(&coordinator_args(recipe, out, url));
    wait_ok(coordinator, "the coordinator");
    for w in workers {
        wait_ok(w, "a worker");
    }
    let who = raw_records(out.to_str().unwrap()).iter().filter_map(|r| r["worker"].as_str().map(str::to_string)).collect();
    (records(out), who)
}

/// Coordinator + 3 workers; SIGKILL one worker in the middle of a trial, later the coordinator,
/// restart the coordinator: the records must still be the single-process ones.
///
/// The kills do not depend on catching the search at the right moment (a trial lasts some 50 ms and
/// the whole search about a second, so polling could miss it on a fast or a busy machine): the trial
/// gate holds the search where each kill belongs. Trials from 3 on are held (evaluated, not recorded,
/// still running) until a worker holding one has been killed; trials from 8 on until the coordinator
/// has been killed and restarted. The search cannot end before either kill.
fn distributed_with_kills(recipe: &Path, out: &Path, url: Option<&str>) -> Vec<serde_json::Value> {
    let journal = url.unwrap_or(out.to_str().unwrap()).to_string();
    let gate = out.with_extension("gate");
    set_gate(&gate, Some(3));
    let mut workers: Vec<Child> =
        (0..3).map(|_| spawn_gated(&["worker", "--journal", &journal, "--wait-seconds", "120"], Some(&gate))).collect();
    let mut coordinator = spawn_gated(&coordinator_args(recipe, out, url), Some(&gate));
    let started = Instant::now();
    // Poll the journal until `ready` holds for its records; the coordinator must not end meanwhile.
    let wait_for = |coordinator: &mut Child, what: &str, ready: &dyn Fn(&[serde_json::Value]) -> bool| loop {
        assert!(started.elapsed() < Duration::from_secs(240), "waited too long for {what}");
        if coordinator.try_wait().unwrap().is_some() {
            let mut err = String::new();
            if let Some(mut e) = coordinator.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("the search ended before {what}: {err}");
        }
        let now = raw_records(out.to_str().unwrap());
        if ready(&now) {
            return now;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let complete = |now: &[serde_json::Value]| now.iter().filter(|r| r["status"] == "complete").count();
    // A worker of ours holding a running trial the gate holds back (so still holding it at the kill).
    let pids: Vec<u32> = workers.iter().map(Child::id).collect();
    let held = |now: &[serde_json::Value]| -> Vec<u32> {
        now.iter()
            .filter(|r| r["status"] == "running" && r["trial"].as_u64().is_some_and(|t| t >= 3))
            .filter_map(|r| r["worker"].as_str()?.rsplit(':').next()?.parse().ok())
            .filter(|p| pids.contains(p))
            .collect()
    };
    let now = wait_for(&mut coordinator, "a worker held a running trial", &|now| complete(now) >= 2 && !held(now).is_empty());
    let holding = held(&now);
    let w = workers.iter_mut().find(|w| holding.contains(&w.id())).unwrap();
    w.kill().unwrap();
    w.wait().unwrap();
    set_gate(&gate, Some(8));
    wait_for(&mut coordinator, "7 trials were complete", &|now| complete(now) >= 7);
    coordinator.kill().unwrap();
    coordinator.wait().unwrap();
    coordinator = spawn_gated(&coordinator_args(recipe, out, url), Some(&gate));
    set_gate(&gate, None);
    wait_ok(coordinator, "the restarted coordinator");
    for mut w in workers {
        if w.try_wait().unwrap().is_some_and(|s| !s.success()) {
            continue; // the killed one
        }
        let status = w.wait().unwrap();
        assert!(status.success() || status.code().is_none(), "a worker failed");
    }
    records(out)
}

/// A new, empty database on the test server; its URL.
fn fresh_database(name: &str) -> String {
    let admin = std::env::var("EVOMERGE_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "EVOMERGE_TEST_POSTGRES is not set: the distributed-journal tests need a PostgreSQL server. Run the suite \
             with scripts/test.sh (it starts one), or set EVOMERGE_TEST_POSTGRES=postgresql://user@host:port/db"
        )
    });
    let mut client = postgres::Client::connect(&admin, postgres::NoTls).expect("connecting to EVOMERGE_TEST_POSTGRES");
    let db = format!("evomerge_{name}_{}", std::process::id());
    client.batch_execute(&format!("DROP DATABASE IF EXISTS {db}")).unwrap();
    client.batch_execute(&format!("CREATE DATABASE {db}")).unwrap();
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b).to_string();
    format!("{base}/{db}")
}

#[test]
fn workers_over_the_sqlite_journal_record_what_one_process_does() {
    let tmp = tempfile::tempdir().unwrap();
    let path = recipe(tmp.path(), 3);
    let expected = single_process(&path, &tmp.path().join("single"));
    let (got, who) = distributed(&path, &tmp.path().join("workers"), None);
    assert_eq!(got, expected, "3 workers must record what one process does");
    assert!(who.len() >= 2, "the work should be shared between workers: {who:?}");
    let killed = distributed_with_kills(&path, &tmp.path().join("killed"), None);
    assert_eq!(killed, expected, "killing a worker and the coordinator must lose or repeat nothing");
    assert_eq!(
        std::fs::read(tmp.path().join("killed/best/model.safetensors")).unwrap(),
        std::fs::read(tmp.path().join("single/best/model.safetensors")).unwrap()
    );
}

#[test]
fn workers_over_a_postgresql_journal_record_what_one_process_does() {
    let tmp = tempfile::tempdir().unwrap();
    let path = recipe(tmp.path(), 5);
    let expected = single_process(&path, &tmp.path().join("single"));
    let url = fresh_database("workers");
    let (got, who) = distributed(&path, &tmp.path().join("workers"), Some(&url));
    assert_eq!(got, expected, "3 workers over PostgreSQL must record what one process does");
    assert!(who.len() >= 2, "the work should be shared between workers: {who:?}");
    let url = fresh_database("killed");
    let killed = distributed_with_kills(&path, &tmp.path().join("killed"), Some(&url));
    assert_eq!(killed, expected, "killing a worker and the coordinator must lose or repeat nothing");
}

#[test]
fn a_worker_with_another_recipe_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = recipe(tmp.path(), 3);
    let out = tmp.path().join("run");
    let o = evomerge(&["evolve", path.to_str().unwrap(), "--out", out.to_str().unwrap(), "--max-trials", "4", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let other = recipe(tmp.path(), 4);
    std::fs::write(&other, std::fs::read_to_string(&other).unwrap().replace("population: 4", "population: 6")).unwrap();
    let o = evomerge(&["worker", "--journal", out.to_str().unwrap(), "--recipe", other.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is not the recipe of the search"), "{}", stderr(&o));
    // The same recipe (under another seed, which the journal's overrides) is accepted: the search
    // is done, so the worker has nothing to do and exits.
    let o = evomerge(&["worker", "--journal", out.to_str().unwrap(), "--recipe", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Where a worker evaluates is its own (--device, not part of the search); an unknown device is named.
    let o = evomerge(&["worker", "--journal", out.to_str().unwrap(), "--device", "cpu"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = evomerge(&["worker", "--journal", out.to_str().unwrap(), "--device", "gpu:1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--device") && stderr(&o).contains("gpu:1"), "{}", stderr(&o));
    // No search at all.
    let o = evomerge(&["worker", "--journal", tmp.path().join("nothing").to_str().unwrap(), "--wait-seconds", "0"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no search appeared"), "{}", stderr(&o));
}

#[test]
fn a_journal_server_that_does_not_answer_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = recipe(tmp.path(), 3);
    let out = tmp.path().join("run");
    // Port 1 on the loopback: nothing listens there.
    let url = "postgresql://evomerge:secret@127.0.0.1:1/nowhere";
    let o = evomerge(&["evolve", path.to_str().unwrap(), "--out", out.to_str().unwrap(), "--journal", url, "--quiet"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("cannot connect to the PostgreSQL journal at postgresql://evomerge:***@127.0.0.1:1/nowhere"), "{err}");
    assert!(!err.contains("secret"), "the password must not be printed: {err}");
    assert!(!out.exists(), "nothing may be written when the journal cannot be reached");
    let o = evomerge(&["worker", "--journal", url, "--wait-seconds", "0"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cannot connect to the PostgreSQL journal"), "{}", stderr(&o));
    // A file path is not a --journal URL.
    let o = evomerge(&["evolve", path.to_str().unwrap(), "--out", out.to_str().unwrap(), "--journal", "x.sqlite"]);
    assert!(!o.status.success() && stderr(&o).contains("PostgreSQL URL"), "{}", stderr(&o));
}
