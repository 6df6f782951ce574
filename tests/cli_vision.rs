//! `evomerge generate --image` and `evomerge logits --image` end to end on the tiny LLaVA fixtures
//! (`tests/fixtures/vision`, made by its `generate.py` with transformers 5.23): completions and logits
//! equal transformers', batch files pair prompts with images, and bad input fails with a clear message.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use evomerge_mistral::prompt::TextTokenizer;

const PROMPT: &str = "USER: <image>\nWhat is in the picture? ASSISTANT:";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vision")
}

fn expected() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join("expected.safetensors"), &Device::Cpu).unwrap()
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|v| v as u32)
        .collect()
}

/// transformers' greedy tokens for `key`, as the CLI prints them.
fn expected_text(key: &str) -> String {
    let tok = TextTokenizer::from_model_dir(&fixtures().join("llava_next")).unwrap();
    tok.decode(&ids(&expected()[key]), true).unwrap()
}

fn evomerge(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_evomerge"))
        .args(args)
        .output()
        .unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn generate_with_an_image_prints_the_transformers_completion() {
    let model = fixtures().join("llava_next");
    let image = fixtures().join("images/test.png");
    let out = evomerge(&[
        "generate",
        "--model",
        path(&model),
        "--image",
        path(&image),
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "8",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{}\n", expected_text("llava_next.generated"))
    );
}

#[test]
fn generate_batch_file_pairs_each_prompt_with_its_image() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vqa.jsonl");
    let lines = [
        serde_json::json!({"id": "wide", "prompt": PROMPT, "image": path(&fixtures().join("images/test.png"))}),
        serde_json::json!({"id": "tall", "prompt": PROMPT, "image": path(&fixtures().join("images/tall.png"))}),
    ];
    std::fs::write(
        &file,
        lines
            .iter()
            .map(|l| l.to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let model = fixtures().join("llava_next");
    let out = evomerge(&[
        "generate",
        "--model",
        path(&model),
        "--prompts",
        path(&file),
        "--max-new-tokens",
        "8",
        "--batch-size",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], "wide");
    assert_eq!(rows[0]["completion"], expected_text("llava_next.generated"));
    assert_eq!(rows[1]["id"], "tall");
    assert_eq!(
        rows[1]["completion"],
        expected_text("llava_next.tall.generated")
    );
}

#[test]
fn logits_with_an_image_match_transformers() {
    let exp = expected();
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("logits.safetensors");
    let id_list = ids(&exp["prompt_ids"])
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    for (model, mode, key) in [
        ("llava", "native", "llava.logits"),
        ("llava_next", "native", "llava_next.logits"),
        ("llava_next", "single", "llava_next_as_llava.logits"),
    ] {
        let out = evomerge(&[
            "logits",
            "--model",
            path(&fixtures().join(model)),
            "--ids",
            &id_list,
            "--image",
            path(&fixtures().join("images/test.png")),
            "--image-mode",
            mode,
            "--out",
            path(&out_file),
        ]);
        assert!(
            out.status.success(),
            "{model} {mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got =
            candle_core::safetensors::load(&out_file, &Device::Cpu).unwrap()["logits"].clone();
        let want = &exp[key];
        assert_eq!(got.dims(), want.dims(), "{model} {mode}");
        let diff = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-3, "{model} {mode}: logits differ by {diff}");
    }
}

#[test]
fn bad_image_inputs_fail_with_clear_messages() {
    let model = fixtures().join("llava");
    let good = fixtures().join("images/test.png");
    let truncated = fixtures().join("images/truncated.png");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "generate",
                "--model",
                path(&model),
                "--image",
                path(&truncated),
                "--prompt",
                PROMPT,
            ],
            "truncated.png",
        ),
        (
            vec![
                "generate",
                "--model",
                path(&model),
                "--image",
                path(&good),
                "--prompt",
                "no marker here",
            ],
            "<image>",
        ),
        (
            vec![
                "generate",
                "--model",
                path(&model),
                "--image",
                path(&good),
                "--prompt",
                "<image> twice <image>",
            ],
            "2 `<image>`",
        ),
        (
            vec![
                "logits",
                "--model",
                path(&model),
                "--ids",
                "1,2,3",
                "--image",
                path(&good),
                "--out",
                "/dev/null",
            ],
            "<image>",
        ),
    ];
    for (args, needle) in cases {
        let out = evomerge(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            err.contains(needle),
            "{args:?}: expected `{needle}` in: {err}"
        );
    }
}
