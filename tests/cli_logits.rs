//! `evomerge logits` end to end on the tiny fixtures.

use std::path::PathBuf;
use std::process::Command;

use candle_core::{Device, Tensor};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mistral")
        .join(name)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn logits_match_transformers_reference() {
    let reference = candle_core::safetensors::load(
        fixture("mistral_swa").join("reference.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let ids: Vec<i64> = reference["input_ids"]
        .squeeze(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    let ids = ids
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("logits.safetensors");
    let status = Command::new(env!("CARGO_BIN_EXE_evomerge"))
        .args(["logits", "--model"])
        .arg(fixture("mistral_swa"))
        .args(["--ids", &ids, "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let got = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    let logits = &got["logits"];
    let want = reference["logits"].squeeze(0).unwrap();
    assert_eq!(logits.dims(), want.dims());
    assert!(max_abs_diff(logits, &want) <= 1e-4);
}

#[test]
fn evomistral_with_layer_indexed_scales_matches_reference() {
    let reference = candle_core::safetensors::load(
        fixture("evomistral").join("reference.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let ids: Vec<i64> = reference["input_ids"]
        .squeeze(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    let ids = ids
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("logits.safetensors");
    let status = Command::new(env!("CARGO_BIN_EXE_evomerge"))
        .args(["logits", "--evomistral-scales", "layer", "--model"])
        .arg(fixture("evomistral"))
        .args(["--ids", &ids, "--out"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let got = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    let want = reference["logits_by_layer"].squeeze(0).unwrap();
    assert!(max_abs_diff(&got["logits"], &want) <= 1e-4);
}

#[test]
fn bad_path_and_bad_ids_are_reported() {
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("logits.safetensors");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_evomerge"))
            .args(["logits", "--model"])
            .arg(fixture("mistral_classic"))
            .args(["--out"])
            .arg(&file)
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&["--ids", "1,2,3", "--pool"]);
    assert!(!o.status.success());
    let o = run(&[
        "--ids",
        "1,2,3",
        "--pool",
        fixture("mistral_b").to_str().unwrap(),
        "--path",
        "0,3,9",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("hop 2 names layer 9") && err.contains("4 layers"),
        "{err}"
    );
    let o = run(&["--ids", "1,500"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("token id 500"));
    assert!(!file.exists());
}
