//! Prompt text → ids around the image, with and without an `<image>` token in the vocabulary, and the
//! CLI helpers.

use std::path::{Path, PathBuf};

use candle_core::Device;
use evomerge_mistral::generation::GenerationConfig;
use evomerge_mistral::prompt::TextTokenizer;
use evomerge_vision::cli::{generate_with_images, logits_with_image, parse_mode, ImageJob};
use evomerge_vision::{ImagePrompt, LoadOptions, ModeChoice};

const PROMPT: &str = "USER: <image>\nWhat is in the picture? ASSISTANT:";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vision")
}

fn reference() -> ImagePrompt {
    let exp = candle_core::safetensors::load(fixtures().join("expected.safetensors"), &Device::Cpu)
        .unwrap();
    let ids: Vec<u32> = exp["prompt_ids"]
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|v| v as u32)
        .collect();
    ImagePrompt::from_ids(&ids, 120).unwrap()
}

#[test]
fn text_tokenizer_prompt_matches_transformers_processor() {
    let tok = TextTokenizer::from_model_dir(&fixtures().join("llava")).unwrap();
    assert_eq!(
        ImagePrompt::from_text_tokenizer(&tok, PROMPT).unwrap(),
        reference()
    );
}

/// Original LLaVA tokenizers have no `<image>` token: the text is split at the marker and the halves are
/// encoded separately (BOS only on the first); for this tokenizer that equals transformers' ids.
#[test]
fn tokenizer_without_image_token_splits_the_text() {
    let dir = tempfile::tempdir().unwrap();
    let mut json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("tokenizer/tokenizer.json")).unwrap(),
    )
    .unwrap();
    let added = json["added_tokens"].as_array_mut().unwrap();
    added.retain(|t| t["content"] != "<image>");
    std::fs::write(dir.path().join("tokenizer.json"), json.to_string()).unwrap();
    let raw = tokenizers::Tokenizer::from_file(dir.path().join("tokenizer.json")).unwrap();
    assert_eq!(raw.token_to_id("<image>"), None);
    assert_eq!(ImagePrompt::from_text(&raw, PROMPT).unwrap(), reference());
    let tok = TextTokenizer::from_model_dir(dir.path()).unwrap();
    assert_eq!(
        ImagePrompt::from_text_tokenizer(&tok, PROMPT).unwrap(),
        reference()
    );
}

#[test]
fn image_modes_parse() {
    assert_eq!(parse_mode("single").unwrap(), ModeChoice::Single);
    assert_eq!(parse_mode("anyres").unwrap(), ModeChoice::AnyRes);
    assert_eq!(parse_mode("native").unwrap(), ModeChoice::Native);
    assert!(parse_mode("tiles")
        .unwrap_err()
        .to_string()
        .contains("tiles"));
}

#[test]
fn cli_helpers_generate_and_score() {
    let jobs = vec![
        ImageJob {
            prompt: PROMPT.into(),
            image: fixtures().join("images/test.png"),
        },
        ImageJob {
            prompt: PROMPT.into(),
            image: fixtures().join("images/tall.png"),
        },
        ImageJob {
            prompt: PROMPT.into(),
            image: fixtures().join("images/test.png"),
        },
    ];
    let config = GenerationConfig {
        max_new_tokens: 8,
        ..GenerationConfig::default()
    };
    let mut batches = Vec::new();
    let (out, _) = generate_with_images(
        &fixtures().join("llava_next"),
        &jobs,
        &config,
        2,
        &LoadOptions::default(),
        &mut |n| batches.push(n),
    )
    .unwrap();
    assert_eq!(batches, vec![2, 1]);
    assert_eq!(out[0].tokens, out[2].tokens);
    assert_eq!(out[0].tokens, vec![32, 75, 70, 89, 97, 93, 89, 32]); // transformers' greedy tokens
    assert_eq!(out[1].tokens, vec![41, 51, 89, 41, 7, 7, 7, 7]);

    let ids: Vec<u32> = reference()
        .before
        .into_iter()
        .chain([120])
        .chain(reference().after)
        .collect();
    let logits = logits_with_image(
        fixtures().join("llava").to_str().unwrap(),
        &ids,
        &fixtures().join("images/test.png"),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(logits.dims(), &[34, 121]);
    let bad = logits_with_image(
        fixtures().join("llava").to_str().unwrap(),
        &[1, 2, 3],
        &fixtures().join("images/test.png"),
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert!(bad.to_string().contains("<image>"), "{bad}");
}

#[test]
fn images_for_prompts_pairs_lines_with_images() {
    use evomerge_vision::cli::images_for_prompts;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.jsonl");
    std::fs::write(
        &file,
        "{\"prompt\": \"a <image>\", \"image\": \"x.png\"}\n\n\"b <image>\"\n",
    )
    .unwrap();
    let got = images_for_prompts(Some(&file), Some(Path::new("/d.png")), 2)
        .unwrap()
        .unwrap();
    assert_eq!(got, vec![dir.path().join("x.png"), PathBuf::from("/d.png")]);
    let err = images_for_prompts(Some(&file), None, 2).unwrap_err();
    assert!(err.to_string().contains("no image"), "{err}");
    assert_eq!(images_for_prompts(None, None, 3).unwrap(), None);
    assert_eq!(
        images_for_prompts(None, Some(Path::new("i.png")), 1)
            .unwrap()
            .unwrap(),
        vec![PathBuf::from("i.png")]
    );
}
