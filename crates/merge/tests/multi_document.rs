//! Multi-document recipe files (`mergekit-multi`'s format) run in order: named documents into
//! OUT/<name>, the final one into OUT, later documents using earlier merges by name.

use std::path::{Path, PathBuf};

use evomerge_merge::{merge_documents_to_dir, merge_to_dir, MergeConfig, MergeOptions, RecipeDocument};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/merge")
}

fn documents(text: &str) -> Result<Vec<RecipeDocument>, String> {
    let mut docs = MergeConfig::documents_from_yaml(text).map_err(|e| e.to_string())?;
    for d in &mut docs {
        d.config.recipe_dir = Some(fixtures());
    }
    Ok(docs)
}

fn options() -> MergeOptions {
    MergeOptions { progress: false, threads: Some(2), ..Default::default() }
}

fn tensors(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("model.safetensors")).unwrap()
}

const FIRST: &str = "name: soup\nmodels:\n  - model: models/ft1\n    parameters: {weight: 0.5}\n  - model: models/ft2\n    parameters: {weight: 0.5}\nmerge_method: linear\ndtype: float32\n";
const SECOND: &str = "name: tilted\nmodels:\n  - model: models/base\n  - model: soup\nmerge_method: slerp\nbase_model: models/base\nparameters: {t: 0.3}\ndtype: float32\n";
const FINAL: &str = "models:\n  - model: soup\n    parameters: {weight: 0.6}\n  - model: tilted\n    parameters: {weight: 0.4}\nmerge_method: task_arithmetic\nbase_model: models/base\ndtype: float32\n";

#[test]
fn documents_run_in_order_into_out_and_its_named_subdirectories() {
    let text = format!("{FIRST}---\n{SECOND}---\n{FINAL}");
    let docs = documents(&text).unwrap();
    assert_eq!(docs.iter().map(|d| d.name.as_deref()).collect::<Vec<_>>(), [Some("soup"), Some("tilted"), None]);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let reports = merge_documents_to_dir(&docs, &out, &options()).unwrap();
    assert_eq!(reports.len(), 3);
    assert_eq!(reports[0].out_dir, std::path::absolute(out.join("soup")).unwrap());

    // The same merges done one by one, each later recipe naming the earlier output's directory.
    let by_hand = tmp.path().join("by-hand");
    let mut soup = documents(FIRST).unwrap().remove(0).config;
    soup.recipe_dir = Some(fixtures());
    merge_to_dir(&soup, &by_hand.join("soup"), &options()).unwrap();
    let soup_dir = by_hand.join("soup").display().to_string();
    let tilted = documents(&SECOND.replace("model: soup", &format!("model: {soup_dir}"))).unwrap().remove(0).config;
    merge_to_dir(&tilted, &by_hand.join("tilted"), &options()).unwrap();
    let last = FINAL
        .replace("model: soup", &format!("model: {soup_dir}"))
        .replace("model: tilted", &format!("model: {}", by_hand.join("tilted").display()));
    let last = documents(&last).unwrap().remove(0).config;
    merge_to_dir(&last, &by_hand.join("final"), &options()).unwrap();

    assert!(tensors(&out.join("soup")) == tensors(&by_hand.join("soup")));
    assert!(tensors(&out.join("tilted")) == tensors(&by_hand.join("tilted")));
    assert!(tensors(&out) == tensors(&by_hand.join("final")));
    // Staging is gone: only `out` was added next to `by-hand`.
    let mut entries: Vec<String> =
        std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    entries.sort();
    assert_eq!(entries, ["by-hand", "out"]);
}

#[test]
fn a_document_may_only_use_earlier_merges() {
    let text = format!("{SECOND}---\n{FIRST}---\n{FINAL}");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let e = merge_documents_to_dir(&documents(&text).unwrap(), &out, &options()).unwrap_err().to_string();
    assert!(e.contains("document 1") && e.contains("`soup` before it is merged"), "{e}");
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "staged intermediates are removed");
}

#[test]
fn bad_document_lists_are_refused() {
    let e = documents(&format!("{FINAL}---\n{FIRST}")).unwrap_err();
    assert!(e.contains("only the last document may be unnamed"), "{e}");
    let e = documents(&format!("{FIRST}---\n{FIRST}")).unwrap_err();
    assert!(e.contains("`name: soup` is used by an earlier document"), "{e}");
    let e = documents(&format!("{}---\n{FINAL}", FIRST.replace("name: soup", "name: ../x"))).unwrap_err();
    assert!(e.contains("directory name"), "{e}");
    let e = documents(&format!("{FIRST}---\n{}", FINAL.replace("merge_method: task_arithmetic", "merge_method: nope"))).unwrap_err();
    assert!(e.contains("nope"), "{e}");
}
