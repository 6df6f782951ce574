//! `evomerge ask-tell`: the JSON-lines protocol, exact resume through `--state` and end of
//! input, and one test per kind of bad input.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use evomerge_cmaes::{CmaEs, Config};
use serde_json::Value;

fn evomerge() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_evomerge"));
    cmd.arg("ask-tell");
    cmd
}

fn shifted_sphere(x: &[f64]) -> f64 {
    x.iter().map(|v| (v - 0.3) * (v - 0.3)).sum()
}

fn vectors(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .expect("an array of candidates")
        .iter()
        .map(|c| c.as_array().expect("a candidate").iter().map(|x| x.as_f64().expect("a number")).collect())
        .collect()
}

fn bits(xs: &[Vec<f64>]) -> Vec<Vec<u64>> {
    xs.iter().map(|x| x.iter().map(|v| v.to_bits()).collect()).collect()
}

/// What one session of the protocol produced.
struct Session {
    /// (generation index, candidates) of every generation that was answered.
    answered: Vec<(u64, Vec<Vec<f64>>)>,
    stop: Option<Value>,
    success: bool,
    stderr: String,
}

/// Runs `ask-tell` with `args`, answering generations with `f` until the stop line, or until
/// `max_answers` generations were answered, after which stdin is closed (end of input).
fn session(args: &[&str], f: fn(&[f64]) -> f64, max_answers: usize) -> Session {
    let mut child = evomerge()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the evomerge binary starts");
    let mut stdin = child.stdin.take();
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut answered = Vec::new();
    let mut stop = None;
    while let Some(Ok(line)) = lines.next() {
        let v: Value = serde_json::from_str(&line).expect("every output line is JSON");
        if v.get("stop").is_some() {
            stop = Some(v);
            break;
        }
        if answered.len() == max_answers {
            drop(stdin.take()); // end of input
            continue;
        }
        let g = v["generation"].as_u64().expect("a generation index");
        let candidates = vectors(&v["candidates"]);
        let fitness: Vec<f64> = candidates.iter().map(|x| f(x)).collect();
        let answer = serde_json::json!({ "fitness": fitness }).to_string();
        let pipe = stdin.as_mut().expect("stdin open");
        writeln!(pipe, "{answer}").expect("write fitness");
        pipe.flush().expect("flush");
        answered.push((g, candidates));
    }
    drop(stdin);
    let out = child.wait_with_output().expect("the command finishes");
    Session {
        answered,
        stop,
        success: out.status.success(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `ask-tell` with a fixed stdin.
fn scripted(args: &[&str], input: &str) -> Output {
    let mut child = evomerge()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the evomerge binary starts");
    let mut stdin = child.stdin.take().expect("stdin");
    // The command may exit before reading everything; a broken pipe is fine here.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    child.wait_with_output().expect("the command finishes")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn solves_a_bounded_problem_and_prints_the_stop_line() {
    let args = ["--dim", "4", "--x0", "0.5", "--lower", "0", "--upper", "1", "--seed", "1"];
    let s = session(&args, shifted_sphere, 10_000);
    assert!(s.success, "{}", s.stderr);
    for (k, (g, candidates)) in s.answered.iter().enumerate() {
        assert_eq!(*g, k as u64);
        assert_eq!(candidates.len(), 8); // 4 + floor(3 ln 4)
        assert!(candidates.iter().flatten().all(|v| (0.0..=1.0).contains(v)));
    }
    let stop = s.stop.expect("a stop line");
    assert!(stop["stop"].is_string());
    assert!(stop["best"]["fitness"].as_f64().unwrap() < 1e-10, "{stop}");
    let x: Vec<f64> = stop["best"]["x"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(x.iter().all(|v| (v - 0.3).abs() < 1e-5), "{x:?}");
    assert_eq!(stop["evaluations"].as_u64().unwrap(), 8 * s.answered.len() as u64);

    // The printed floats are exactly the library's candidates (shortest round-trip printing).
    let config = Config::new(vec![0.5; 4], 1.0 / 6.0).with_bounds(vec![0.0; 4], vec![1.0; 4]).with_seed(1);
    let mut es = CmaEs::new(config).unwrap();
    for (_, candidates) in s.answered.iter().take(20) {
        let expected = es.ask().unwrap();
        assert_eq!(bits(candidates), bits(&expected));
        let fitness: Vec<f64> = expected.iter().map(|x| shifted_sphere(x)).collect();
        es.tell(&fitness).unwrap();
    }
}

#[test]
fn end_of_input_then_resume_from_state_asks_exactly_the_same_candidates() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("search.json");
    let state_arg = state.to_str().unwrap();
    let base = ["--dim", "3", "--x0", "1,-2,0.5", "--sigma0", "0.7", "--seed", "7", "--max-evals", "300"];

    let straight = session(&base, shifted_sphere, usize::MAX);
    assert!(straight.success, "{}", straight.stderr);
    let straight_stop = straight.stop.expect("stop line");
    assert_eq!(straight_stop["stop"], "maxevals");

    let with_state: Vec<&str> = base.iter().copied().chain(["--state", state_arg]).collect();
    let first = session(&with_state, shifted_sphere, 5);
    assert!(first.success, "end of input must exit 0: {}", first.stderr);
    assert!(first.stop.is_none());
    assert_eq!(first.answered.len(), 5);
    assert!(state.exists());
    let second = session(&with_state, shifted_sphere, usize::MAX);
    assert!(second.success, "{}", second.stderr);
    assert_eq!(second.answered[0].0, 5, "resume continues with generation 5");

    let resumed: Vec<_> = first.answered.iter().chain(&second.answered).collect();
    assert_eq!(resumed.len(), straight.answered.len());
    for ((g1, c1), (g2, c2)) in straight.answered.iter().zip(resumed) {
        assert_eq!(g1, g2);
        assert_eq!(bits(c1), bits(c2), "generation {g1} differs after resuming");
    }
    assert_eq!(second.stop.expect("stop line"), straight_stop);

    // The saved state is the library's state; a stopped search reports its stop again.
    let again = scripted(&with_state, "");
    assert!(again.status.success());
    let line: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(line, straight_stop);
}

#[test]
fn flat_fitness_stops_a_run_unless_tolerated() {
    // dim 3 -> popsize 7; the best equals the 75th percentile but the range is not zero (so
    // tolfun does not fire first).
    let flat_line = "{\"fitness\": [0, 0, 0, 0, 0, 0, 1]}\n".repeat(20);
    for (extra, generations) in [(vec![], 2), (vec!["--tolflatfitness", "5"], 6)] {
        let mut args = vec!["--dim", "3", "--x0", "0.5"];
        args.extend(extra);
        let out = scripted(&args, &flat_line);
        assert!(out.status.success(), "{}", stderr(&out));
        let lines: Vec<Value> =
            String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let stop = lines.last().unwrap();
        assert_eq!(stop["stop"], "tolflatfitness", "{stop}");
        assert_eq!(lines.len() - 1, generations, "{args:?}");
    }
}

#[test]
fn malformed_line_is_an_error() {
    let out = scripted(&["--dim", "2", "--x0", "0"], "this is not json\n");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("expected a line {\"fitness\": [f, ...]}"), "{}", stderr(&out));
    let out = scripted(&["--dim", "2", "--x0", "0"], "{\"fit\": [1, 2, 3, 4, 5, 6]}\n");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("expected a line"), "{}", stderr(&out));
}

#[test]
fn wrong_number_of_fitness_values_is_an_error() {
    // dim 2 -> popsize 6
    let out = scripted(&["--dim", "2", "--x0", "0"], "{\"fitness\": [1, 2, 3]}\n");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("expected 6 fitness values"), "{}", stderr(&out));
}

#[test]
fn nan_fitness_is_an_error() {
    for input in ["{\"fitness\": [1, NaN, 3, 4, 5, 6]}\n", "{\"fitness\": [1, null, 3, 4, 5, 6]}\n"] {
        let out = scripted(&["--dim", "2", "--x0", "0"], input);
        assert!(!out.status.success(), "{input}");
        assert!(stderr(&out).contains("NaN"), "{}", stderr(&out));
    }
}

#[test]
fn lower_above_upper_is_an_error() {
    let out = scripted(&["--dim", "2", "--x0", "0.5", "--lower", "0,2", "--upper", "1,1"], "");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("lower bound 2 is above upper bound 1 in dimension 1"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

#[test]
fn popsize_below_two_is_an_error() {
    let out = scripted(&["--dim", "2", "--x0", "0", "--popsize", "1"], "");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("popsize = 1 is too small"), "{}", stderr(&out));
}

#[test]
fn state_file_of_another_dimension_is_an_error_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.json");
    let s = session(&["--dim", "3", "--x0", "0", "--state", state.to_str().unwrap()], shifted_sphere, 2);
    assert!(s.success);
    let before = std::fs::read(&state).unwrap();
    let out = scripted(&["--dim", "4", "--x0", "0", "--state", state.to_str().unwrap()], "");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("holds a 3-dimensional search but --dim is 4"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&state).unwrap(), before);
}

#[test]
fn bad_input_mid_run_leaves_the_last_complete_state() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.json");
    let args = ["--dim", "2", "--x0", "0", "--state", state.to_str().unwrap()];
    let good = "{\"fitness\": [1, 2, 3, 4, 5, 6]}\n";
    let out = scripted(&args, &format!("{good}{good}{{\"fitness\": [1, 2]}}\n"));
    assert!(!out.status.success());
    let es = CmaEs::from_json(&std::fs::read_to_string(&state).unwrap()).expect("a complete state");
    assert_eq!(es.generations(), 2);
    no_temporary_files_left(dir.path());
}

fn no_temporary_files_left(dir: &Path) {
    let names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
}
