//! What the `evomerge evolve` end-to-end tests share: running the binary, reading trial records, and
//! killing a search in the middle of a trial.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The `genome:` section of the tiny searches: DARE-TIES of the merge fixtures ft1 and ft2 on base,
/// a density and a weight per model.
pub fn tiny_genome() -> String {
    format!(
        "genome:
  merge_method: dare_ties
  base_model: {m}/base
  models: [{m}/ft1, {m}/ft2]
  parameters: [density, weight]
  dtype: float32
",
        m = fixtures().join("merge/models").display()
    )
}

/// The `task:` section of the tiny searches (`loglik` of ft1's own continuations), its data file
/// written into `dir` as `task.jsonl`, `repeat` times over (more items make a trial slower).
pub fn tiny_task(dir: &Path, repeat: usize) -> String {
    let task = std::fs::read_to_string(fixtures().join("evolve/task.jsonl")).unwrap();
    std::fs::write(dir.join("task.jsonl"), task.repeat(repeat)).unwrap();
    "task:
  kind: custom
  data: task.jsonl
  metric: loglik
  generation: {batch_size: 8}
"
    .to_string()
}

pub fn evomerge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_evomerge"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", std::env::temp_dir().join("evomerge-cli-evolve-empty-hf-home"))
        .output()
        .expect("running evomerge")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Trial records without the fields that depend on timing or the process (seconds, worker, wait).
pub fn records(dir: &Path) -> Vec<serde_json::Value> {
    let out = evomerge(&["trials", dir.to_str().unwrap(), "--format", "jsonl"]);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("seconds");
            o.remove("merge_seconds");
            o.remove("worker");
            o.remove("wait_seconds");
            v
        })
        .collect()
}

/// Start `evomerge evolve recipe --out out` and SIGKILL it while a trial is running once `ready`
/// holds for the records so far (tried a few times, each from an empty `out`, with a later kill
/// each time). Returns whether a kill inside a trial happened; `out` is then left as the kill left it.
pub fn kill_mid_trial(recipe: &Path, out: &Path, total: usize, ready: impl Fn(&[serde_json::Value], usize) -> bool) -> bool {
    for attempt in 0..5 {
        let _ = std::fs::remove_dir_all(out);
        let mut child = Command::new(env!("CARGO_BIN_EXE_evomerge"))
            .args(["evolve", recipe.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        loop {
            if started.elapsed() > Duration::from_secs(120) || child.try_wait().unwrap().is_some() {
                break;
            }
            if out.join("journal.sqlite").exists() {
                let now = records(out);
                if ready(&now, attempt) && now.iter().any(|r| r["status"] == "running") {
                    child.kill().unwrap();
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = child.wait();
        let after_kill = records(out);
        let finished = after_kill.iter().filter(|r| r["status"] == "complete" || r["status"] == "failed").count();
        if after_kill.iter().any(|r| r["status"] == "running") && finished < total {
            return true;
        }
    }
    false
}

/// `evomerge evolve recipe` is refused: non-zero exit, the message names `key`, and the output
/// directory (`run` beside the recipe) is not created.
pub fn assert_refused(recipe: &Path, key: &str) {
    let out = recipe.with_file_name("run");
    let o = evomerge(&["evolve", recipe.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    assert!(!o.status.success(), "should be refused");
    let err = stderr(&o);
    assert!(err.contains(key), "the message should name `{key}`: {err}");
    assert!(!out.exists(), "a refused recipe must leave nothing behind");
}
