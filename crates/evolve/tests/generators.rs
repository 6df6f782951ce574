//! The library generators on the tiny fixtures: the text generator reproduces transformers' greedy
//! completions, a borrowed generator sees weights written into the live model, and the VLM feature
//! cache gives the tower's completions while running the tower once per distinct image.

use std::path::{Path, PathBuf};

use candle_core::Device;
use evomerge_eval::generator::{GenerationSettings, Generator, ImageInput, Prompt};
use evomerge_evolve::generators::{
    parse_device, parse_dtype, FeatureCache, SpecError, TextGenerator, TextModel, VlmGenerator,
    VlmModel,
};
use evomerge_vision::{ImagePrompt, ModeChoice};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn greedy(max_new_tokens: usize) -> GenerationSettings {
    GenerationSettings {
        max_new_tokens,
        num_beams: 1,
        repetition_penalty: 1.0,
        stop: Vec::new(),
    }
}

fn text_model() -> TextModel {
    let dir = fixtures().join("mistral/generation/model");
    TextModel::load(dir.to_str().unwrap(), &Device::Cpu, None).unwrap()
}

#[test]
fn text_generator_matches_transformers_greedy_batch() {
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("mistral/generation/expected.json")).unwrap(),
    )
    .unwrap();
    let run = expected["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "greedy_batch")
        .unwrap();
    assert_eq!(run["settings"]["max_new_tokens"], 12);
    let rows = run["rows"].as_array().unwrap();
    let prompts: Vec<Prompt> = rows
        .iter()
        .map(|r| Prompt::text(r["prompt"].as_str().unwrap()))
        .collect();
    let model = text_model();
    let out = model.generator().generate(&prompts, &greedy(12)).unwrap();
    assert_eq!(out.len(), rows.len());
    for (c, row) in out.iter().zip(rows) {
        // transformers' new tokens include the EOS that ended a row; so do ours.
        let ids: Vec<u32> = row["new_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(c.new_tokens, ids.len(), "{}", row["prompt"]);
        let hit_eos = row["hit_eos"] == true;
        assert_eq!(c.hit_max_new_tokens, !hit_eos);
        // The fixture's `text` decodes every new token; a completion's text leaves out the EOS that
        // ended it (here id 104, an ordinary byte token the config also lists as EOS).
        let content = &ids[..ids.len() - usize::from(hit_eos)];
        let want = model.tokenizer().decode(content, true).unwrap();
        assert_eq!(c.text, want, "{}", row["prompt"]);
        if !hit_eos {
            assert_eq!(c.text, row["text"].as_str().unwrap(), "{}", row["prompt"]);
        }
    }
    assert!(model.generator().describe().starts_with("mistral "));
    assert!(model.generator().describe().ends_with(", cpu)"));
}

#[test]
fn a_borrowed_text_generator_sees_weights_written_into_the_live_model() {
    let mut model = text_model();
    let prompts = [Prompt::text("猫"), Prompt::text("The answer is")];
    let before = model.generator().generate(&prompts, &greedy(6)).unwrap();

    // A candidate's weights: the output head negated, which turns every greedy choice into the
    // least likely token, so the completions must change.
    let head = model.model().parameter("lm_head.weight").unwrap();
    let flipped = head.neg().unwrap();
    model
        .model_mut()
        .set_tensor("lm_head.weight", &flipped)
        .unwrap();
    let (m, tok, base) = (model.model(), model.tokenizer(), model.generation_config());
    let mut live = TextGenerator::new(m, tok, base, "candidate 1");
    let after = live.generate(&prompts, &greedy(6)).unwrap();
    assert_ne!(before, after);
    assert_eq!(live.describe(), "candidate 1");

    // Writing the original weights back restores the original completions exactly.
    model
        .model_mut()
        .set_tensor("lm_head.weight", &head)
        .unwrap();
    let again = model.generator().generate(&prompts, &greedy(6)).unwrap();
    assert_eq!(before, again);
}

#[test]
fn text_generator_refuses_image_prompts() {
    let model = text_model();
    let err = model
        .generator()
        .generate(
            &[Prompt::with_image("x", ImageInput::Encoded(vec![1]))],
            &greedy(2),
        )
        .unwrap_err();
    assert!(err.to_string().contains("text-only"), "{err}");
}

fn vlm_model() -> VlmModel {
    let dir = fixtures().join("vision/llava");
    VlmModel::load(
        dir.to_str().unwrap(),
        &Device::Cpu,
        None,
        ModeChoice::Single,
    )
    .unwrap()
}

fn image_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("vision/images").join(name)).unwrap()
}

const VQA_PROMPT: &str = "[INST] <image>\nWhat is this? [/INST]";

#[test]
fn cached_features_give_the_towers_completions_and_the_tower_runs_once_per_image() {
    let mut vlm = vlm_model();
    let wide = image_bytes("test.png");
    let tall = image_bytes("tall.png");
    let prompts = vec![
        Prompt::with_image(VQA_PROMPT, ImageInput::Encoded(wide.clone())),
        Prompt::with_image(VQA_PROMPT, ImageInput::Encoded(tall.clone())),
        // The same picture again, this time as a file: same bytes, same cache entry.
        Prompt::with_image(
            VQA_PROMPT,
            ImageInput::Path(fixtures().join("vision/images/test.png")),
        ),
    ];
    let settings = GenerationSettings {
        max_new_tokens: 6,
        num_beams: 2,
        repetition_penalty: 1.5,
        stop: Vec::new(),
    };

    let first = vlm.generator().generate(&prompts, &settings).unwrap();
    assert_eq!(vlm.feature_cache().misses(), 2, "two distinct images");
    assert_eq!(vlm.feature_cache().hits(), 1);
    assert_eq!(vlm.feature_cache().len(), 2);

    let second = vlm.generator().generate(&prompts, &settings).unwrap();
    assert_eq!(first, second);
    assert_eq!(
        vlm.feature_cache().misses(),
        2,
        "the tower did not run again"
    );
    assert_eq!(vlm.feature_cache().hits(), 4);

    // The uncached path (decode, preprocess, tower, projector inside `LlavaModel::generate`) gives
    // the same tokens.
    let model = vlm.model();
    let prompt = ImagePrompt::from_text(vlm.tokenizer().inner(), VQA_PROMPT).unwrap();
    let items: Vec<_> = [&wide, &tall, &wide]
        .iter()
        .map(|bytes| {
            let image = evomerge_vision::decode_image(bytes, "test image", model.processor().alpha)
                .unwrap();
            (prompt.clone(), image)
        })
        .collect();
    let mut config = vlm.generation_config().clone();
    config.max_new_tokens = 6;
    config.num_beams = 2;
    config.repetition_penalty = 1.5;
    let direct = model
        .generate(&items, &config, Some(vlm.tokenizer()), items.len())
        .unwrap();
    let texts: Vec<String> = direct
        .iter()
        .map(|c| c.text(vlm.tokenizer()).unwrap())
        .collect();
    assert_eq!(
        texts,
        first.iter().map(|c| c.text.clone()).collect::<Vec<_>>()
    );
    assert_eq!(
        direct.iter().map(|c| c.tokens.len()).collect::<Vec<_>>(),
        first.iter().map(|c| c.new_tokens).collect::<Vec<_>>()
    );
}

#[test]
fn cached_features_follow_a_changed_language_model() {
    let mut vlm = vlm_model();
    let prompts = vec![Prompt::with_image(
        VQA_PROMPT,
        ImageInput::Encoded(image_bytes("test.png")),
    )];
    let before = vlm.generator().generate(&prompts, &greedy(6)).unwrap();

    // A candidate: the language model's output head negated (the tower is untouched).
    let head = vlm.model().llm().parameter("lm_head.weight").unwrap();
    vlm.llm_mut()
        .set_tensor("lm_head.weight", &head.neg().unwrap())
        .unwrap();
    let after = vlm.generator().generate(&prompts, &greedy(6)).unwrap();
    assert_ne!(before, after);
    assert_eq!(vlm.feature_cache().misses(), 1);

    // A fresh cache over the same live model agrees with the warm one.
    let mut fresh = FeatureCache::new();
    let mut live = VlmGenerator::new(
        vlm.model(),
        vlm.tokenizer(),
        vlm.generation_config(),
        &mut fresh,
        "candidate",
    );
    assert_eq!(live.generate(&prompts, &greedy(6)).unwrap(), after);
    assert_eq!(fresh.misses(), 1);
}

#[test]
fn vlm_generator_reports_bad_images_by_prompt() {
    let mut vlm = vlm_model();
    let prompts = vec![
        Prompt::with_image(VQA_PROMPT, ImageInput::Encoded(image_bytes("test.png"))),
        Prompt::with_image(VQA_PROMPT, ImageInput::Encoded(b"not an image".to_vec())),
    ];
    let err = vlm.generator().generate(&prompts, &greedy(2)).unwrap_err();
    assert!(err.to_string().starts_with("prompt 1:"), "{err}");
    let err = vlm
        .generator()
        .generate(&[Prompt::text(VQA_PROMPT)], &greedy(2))
        .unwrap_err();
    assert!(err.to_string().contains("needs an image"), "{err}");
}

#[test]
fn device_and_dtype_names() {
    assert!(matches!(parse_device("cpu"), Ok(Device::Cpu)));
    assert!(matches!(
        parse_device("gpu"),
        Err(SpecError::UnknownDevice(s)) if s == "gpu"
    ));
    assert!(matches!(
        parse_device("cuda:x"),
        Err(SpecError::UnknownDevice(_))
    ));
    assert_eq!(parse_dtype(None).unwrap(), None);
    assert_eq!(
        parse_dtype(Some("BF16")).unwrap(),
        Some(candle_core::DType::BF16)
    );
    assert_eq!(
        parse_dtype(Some("float16")).unwrap(),
        Some(candle_core::DType::F16)
    );
    let err = parse_dtype(Some("f8")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown dtype \"f8\": use f32, f16 or bf16"
    );
}
