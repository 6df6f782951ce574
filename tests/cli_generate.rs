//! `evomerge generate` end to end on the tiny fixture model: the printed completions equal transformers'
//! `generate` output (fixtures: `tests/fixtures/mistral/generation/`), batch mode keeps input order and ids, and
//! bad input fails with a message naming the problem.

use std::path::{Path, PathBuf};
use std::process::Command;

use evomerge_mistral::prompt::TextTokenizer;
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mistral/generation")
}

fn model() -> PathBuf {
    fixture().join("model")
}

fn expected_run(name: &str) -> Value {
    let all: Value = serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap()).unwrap();
    all["runs"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap().clone()
}

/// transformers' tokens for a row, decoded as the CLI prints them (a final EOS is not part of the text).
fn expected_text(row: &Value) -> String {
    let mut ids: Vec<u32> = row["new_tokens"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    if row["hit_eos"].as_bool().unwrap() {
        ids.pop();
    }
    TextTokenizer::from_model_dir(&model()).unwrap().decode(&ids, true).unwrap()
}

fn evomerge(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_evomerge")).arg("generate").args(args).output().unwrap()
}

#[test]
fn single_prompt_prints_the_transformers_completion() {
    for (name, extra) in [("greedy_single_2", vec![]), ("beam5_reppen_single_2", vec!["--num-beams", "5", "--repetition-penalty", "1.5"])] {
        let run = expected_run(name);
        let row = &run["rows"][0];
        let model = model();
        let mut args = vec!["--model", model.to_str().unwrap(), "--prompt", row["prompt"].as_str().unwrap(), "--max-new-tokens", "12"];
        args.extend(extra);
        let out = evomerge(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{}\n", expected_text(row)), "{name}");
    }
}

#[test]
fn batch_mode_writes_one_line_per_prompt_in_order() {
    let run = expected_run("greedy_batch");
    let rows = run["rows"].as_array().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("prompts.jsonl");
    let mut lines: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| serde_json::json!({"id": format!("q{i}"), "prompt": r["prompt"]}).to_string())
        .collect();
    lines.push(String::new());
    std::fs::write(&prompts, lines.join("\n")).unwrap();
    let out_path = dir.path().join("out.jsonl");
    let model = model();
    let out = evomerge(&[
        "--model", model.to_str().unwrap(), "--prompts", prompts.to_str().unwrap(), "--max-new-tokens", "12",
        "--batch-size", "3", "--out", out_path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let written = std::fs::read_to_string(&out_path).unwrap();
    let got: Vec<Value> = written.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(got.len(), rows.len());
    for (i, (line, row)) in got.iter().zip(rows).enumerate() {
        assert_eq!(line["id"], format!("q{i}"));
        assert_eq!(line["prompt"], row["prompt"]);
        assert_eq!(line["completion"].as_str().unwrap(), expected_text(row));
        assert_eq!(line["new_tokens"].as_u64().unwrap() as usize, row["new_tokens"].as_array().unwrap().len());
        assert_eq!(line["finish_reason"], if row["hit_eos"].as_bool().unwrap() { "eos" } else { "length" });
    }
}

#[test]
fn templates_and_stop_strings_shape_the_completion() {
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("t.txt");
    std::fs::write(&template, "How many eggs does she eat {input}").unwrap();
    let run = expected_run("greedy_single_2");
    let row = &run["rows"][0];
    assert_eq!(row["prompt"], "How many eggs does she eat every morning? Let's think step by step.");
    let full = expected_text(row);
    let model = model();
    let out = evomerge(&[
        "--model", model.to_str().unwrap(), "--template", template.to_str().unwrap(), "--prompt",
        "every morning? Let's think step by step.", "--max-new-tokens", "12",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{full}\n"));

    // Stop on a piece of the free-running completion: the output is what came before it.
    let stop: String = full.chars().skip(3).take(2).collect();
    let cut = &full[..full.find(&stop).unwrap()];
    let out = evomerge(&[
        "--model", model.to_str().unwrap(), "--prompt", row["prompt"].as_str().unwrap(), "--max-new-tokens", "12",
        "--stop", &stop,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{cut}\n"));
}

#[test]
fn bad_input_is_reported_clearly() {
    let m = model();
    let m = m.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad_jsonl = dir.path().join("bad.jsonl");
    std::fs::write(&bad_jsonl, "\"fine\"\n{\"text\": \"no prompt field\"}\n").unwrap();
    let no_placeholder = dir.path().join("t.txt");
    std::fs::write(&no_placeholder, "no placeholder here").unwrap();
    let long_prompt = "The answer is ".repeat(200);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--model", m, "--prompt", "x", "--num-beams", "0"], "num_beams must be at least 1"),
        (vec!["--model", m, "--prompt", "x", "--repetition-penalty=-1"], "repetition_penalty"),
        (vec!["--model", m, "--prompts", bad_jsonl.to_str().unwrap()], "bad.jsonl:2: the object needs a string field `prompt`"),
        (vec!["--model", m, "--prompt", "x", "--template", no_placeholder.to_str().unwrap()], "no `{input}` placeholder"),
        (vec!["--model", m, "--prompt", "x", "--template", "no-such-template"], "neither a file nor one of mgsm-ja"),
        (vec!["--model", m, "--prompt", &long_prompt], "but the model's context is 256"),
        (vec!["--model", dir.path().to_str().unwrap(), "--prompt", "x"], "tokenizer.json"),
        (vec!["--model", m, "--prompt", "x", "--dtype", "f8"], "--dtype \"f8\""),
    ];
    for (args, needle) in cases {
        let out = evomerge(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(needle), "{args:?}: {stderr:?} should mention {needle:?}");
    }
}
