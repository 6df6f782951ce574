//! The MGSM-JA prompt (`evals/prompts/mgsm_ja.txt`, which `MGSM_JA_PROMPT` includes) against the reference.
//!
//! The reference (SakanaAI/evolutionary-model-merge, `evomerge/models/prompt_templates.py`,
//! `JA_ALPACA_COT_TEMPLATE`) is a triple-quoted Python string that closes right after `### 応答:`, so the
//! prompt has NO trailing newline.

use std::path::PathBuf;

use evomerge_eval::mgsm::{render_prompt, MGSM_JA_PROMPT};

/// The reference template, written out here independently of the file.
const REFERENCE: &str = "以下に、あるタスクを説明する指示があります。リクエストを適切に完了するための回答を日本語で記述してください。一歩一歩考えましょう。\n\n### 指示:\n{input}\n\n### 応答:";

fn template_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../evals/prompts/mgsm_ja.txt")
}

#[test]
fn builtin_prompt_has_the_reference_shape() {
    let p = render_prompt(MGSM_JA_PROMPT, "Q");
    assert!(p.starts_with("以下に、あるタスクを説明する指示があります。"));
    assert!(p.contains("一歩一歩考えましょう。\n\n### 指示:\nQ\n\n### 応答:"));
    assert!(p.ends_with("### 応答:"), "the reference prompt ends without a newline");
}

#[test]
fn template_file_is_byte_identical_to_the_reference_prompt() {
    let path = template_file();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(text, REFERENCE, "{}", path.display());
    assert_eq!(MGSM_JA_PROMPT, REFERENCE);
}
