//! Prompt templates (the paper's MGSM-JA and VQA prompts, byte for byte) and the tokenizer's BOS/EOS rules.

use std::path::{Path, PathBuf};

use evomerge_mistral::prompt::{PromptError, PromptTemplate, TextTokenizer};

fn fixture_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/mistral/generation/model")
}

/// The prompts as the paper's evaluation code writes them (SakanaAI/evolutionary-model-merge).
const MGSM_JA: &str = "以下に、あるタスクを説明する指示があります。リクエストを適切に完了するための回答を日本語で記述してください。一歩一歩考えましょう。\n\n### 指示:\n{input}\n\n### 応答:";
const JA_VQA: &str = "[INST] <<SYS>>\nあなたは役立つ、偏見がなく、検閲されていないアシスタントです。与えられた画像を下に、質問に答えてください。\n<</SYS>>\n\n<image>\n{input} [/INST]";

#[test]
fn the_paper_templates_are_kept_byte_for_byte() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../evals/prompts");
    assert_eq!(
        std::fs::read_to_string(root.join("mgsm_ja.txt")).unwrap(),
        MGSM_JA
    );
    assert_eq!(
        std::fs::read_to_string(root.join("ja_vqa.txt")).unwrap(),
        JA_VQA
    );
    assert_eq!(PromptTemplate::mgsm_ja().text(), MGSM_JA);
    assert_eq!(PromptTemplate::ja_vqa().text(), JA_VQA);
    let rendered = PromptTemplate::mgsm_ja().render("1+1は？");
    assert!(rendered.ends_with("### 指示:\n1+1は？\n\n### 応答:"));
    assert_eq!(
        PromptTemplate::from_file(&root.join("mgsm_ja.txt")).unwrap(),
        PromptTemplate::mgsm_ja()
    );
}

#[test]
fn a_template_without_placeholder_is_refused() {
    let err = PromptTemplate::new("no placeholder", "test").unwrap_err();
    assert!(matches!(err, PromptError::NoPlaceholder { .. }));
    assert!(err.to_string().contains("{input}"), "{err}");
    let missing = PromptTemplate::from_file(Path::new("/nonexistent/template.txt")).unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/template.txt"),
        "{missing}"
    );
}

/// A copy of the fixture tokenizer with another `tokenizer_config.json` (or none).
fn tokenizer_with_config(config: Option<&str>) -> Result<TextTokenizer, PromptError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture_model().join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    if let Some(config) = config {
        std::fs::write(dir.path().join("tokenizer_config.json"), config).unwrap();
    }
    TextTokenizer::from_model_dir(dir.path())
}

#[test]
fn bos_and_eos_follow_the_tokenizer_config() {
    let text = "The answer is";
    let plain = tokenizer_with_config(None)
        .unwrap()
        .encode_plain(text)
        .unwrap();
    let with = |bos: bool, eos: bool| {
        let mut ids = Vec::new();
        if bos {
            ids.push(1);
        }
        ids.extend(&plain);
        if eos {
            ids.push(2);
        }
        ids
    };
    // No config: the post-processor (`<s> $A`) decides.
    assert_eq!(
        tokenizer_with_config(None).unwrap().encode(text).unwrap(),
        with(true, false)
    );
    let cases = [
        (
            r#"{"add_bos_token": false, "bos_token": "<s>", "eos_token": "</s>"}"#,
            with(false, false),
        ),
        (
            r#"{"add_bos_token": true, "add_eos_token": true, "bos_token": "<s>", "eos_token": "</s>"}"#,
            with(true, true),
        ),
        (
            r#"{"add_eos_token": true, "bos_token": {"content": "<s>", "special": true}, "eos_token": "</s>"}"#,
            with(true, true),
        ),
        (r#"{"bos_token": "<s>"}"#, with(true, false)),
    ];
    for (config, expected) in cases {
        assert_eq!(
            tokenizer_with_config(Some(config))
                .unwrap()
                .encode(text)
                .unwrap(),
            expected,
            "{config}"
        );
    }
}

#[test]
fn bad_tokenizer_files_are_reported() {
    let unknown = tokenizer_with_config(Some(r#"{"add_bos_token": true, "bos_token": "<bos>"}"#))
        .unwrap_err();
    assert!(unknown.to_string().contains("\"<bos>\""), "{unknown}");
    let missing = tokenizer_with_config(Some(r#"{"add_bos_token": true}"#)).unwrap_err();
    assert!(
        missing.to_string().contains("names no bos token"),
        "{missing}"
    );
    let broken = tokenizer_with_config(Some("{not json")).unwrap_err();
    assert!(
        broken
            .to_string()
            .contains("tokenizer_config.json is not valid JSON"),
        "{broken}"
    );
    let dir = tempfile::tempdir().unwrap();
    let none = TextTokenizer::from_model_dir(dir.path()).unwrap_err();
    assert!(none.to_string().contains("tokenizer.json"), "{none}");
    std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
    let bad = TextTokenizer::from_model_dir(dir.path()).unwrap_err();
    assert!(
        bad.to_string().contains("is not a valid tokenizer"),
        "{bad}"
    );
}
