//! Token-exact parity with transformers 5.23 `generate` on a tiny Mistral with a tiny real BPE tokenizer
//! (fixtures and their generator: `tests/fixtures/mistral/generation/`). Covers greedy decoding of a left-padded
//! batch, beam search (4 beams, batched and single; 3 beams), repetition penalty 1.5 with greedy and 5 beams, an
//! EOS list of two ids, and `max_new_tokens` limits. The fixture records the smallest logit margin / candidate gap
//! of every run, so a pass is not luck in near-ties.

use std::path::PathBuf;

use evomerge_mistral::generation::{
    generate, score_on_device_even_on_cpu, FinishReason, GenerationConfig, PromptInput,
};
use evomerge_mistral::prompt::TextTokenizer;
use evomerge_mistral::{LoadOptions, Mistral};
use serde_json::Value;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/mistral/generation")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture_dir().join("expected.json"))
        .expect("fixture expected.json");
    serde_json::from_str(&text).expect("fixture expected.json parses")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id list")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

#[test]
fn tokenizer_encodes_and_decodes_like_transformers() {
    let tok = TextTokenizer::from_model_dir(&fixture_dir().join("model")).unwrap();
    assert_eq!(tok.bos_token_id(), Some(1));
    assert_eq!(tok.eos_token_id(), Some(2));
    for case in expected()["tokenizer"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text).unwrap(),
            ids(&case["ids"]),
            "encode {text:?}"
        );
        assert_eq!(
            tok.encode_plain(text).unwrap(),
            ids(&case["ids_no_special"]),
            "encode_plain {text:?}"
        );
        let all = ids(&case["ids"]);
        assert_eq!(
            tok.decode(&all, true).unwrap(),
            case["decoded"].as_str().unwrap(),
            "decode {text:?}"
        );
        assert_eq!(
            tok.decode(&all, false).unwrap(),
            case["decoded_with_special"].as_str().unwrap()
        );
    }
}

#[test]
fn generation_config_comes_from_the_checkpoint() {
    let config = GenerationConfig::from_model_dir(&fixture_dir().join("model")).unwrap();
    assert_eq!(config.eos_token_ids, ids(&expected()["eos_token_ids"]));
    assert_eq!(config.num_beams, 1);
    assert_eq!(config.pad_token_id, None);
}

#[test]
fn generate_gives_the_same_tokens_as_transformers() {
    let dir = fixture_dir().join("model");
    let model = Mistral::from_dir(&dir, &LoadOptions::default()).unwrap();
    // What an accelerator runs: candle's device-generic ops (no packed CPU kernels), scoring as tensor ops.
    let generic = Mistral::from_dir(&dir, &LoadOptions { cpu_kernels: false, ..LoadOptions::default() }).unwrap();
    let tok = TextTokenizer::from_model_dir(&dir).unwrap();
    let base = GenerationConfig::from_model_dir(&dir).unwrap();
    let expected = expected();
    let runs = expected["runs"].as_array().unwrap();
    assert!(runs.len() >= 10);
    for run in runs {
        let name = run["name"].as_str().unwrap();
        let settings = &run["settings"];
        let config = GenerationConfig {
            max_new_tokens: settings["max_new_tokens"].as_u64().unwrap() as usize,
            num_beams: settings
                .get("num_beams")
                .and_then(Value::as_u64)
                .unwrap_or(1) as usize,
            repetition_penalty: settings
                .get("repetition_penalty")
                .and_then(Value::as_f64)
                .unwrap_or(1.0) as f32,
            ..base.clone()
        };
        let rows = run["rows"].as_array().unwrap();
        let prompts: Vec<PromptInput> = rows
            .iter()
            .map(|row| {
                let prompt_ids = ids(&row["prompt_ids"]);
                assert_eq!(
                    tok.encode(row["prompt"].as_str().unwrap()).unwrap(),
                    prompt_ids,
                    "{name}: prompt ids"
                );
                PromptInput::Tokens(prompt_ids)
            })
            .collect();
        let got = generate(&model, &prompts, &config, Some(&tok)).unwrap();
        // The path an accelerator runs (generic ops; log-softmax, penalty, argmax and top-k as tensor ops) picks
        // the same tokens.
        score_on_device_even_on_cpu(true);
        let on_device = generate(&generic, &prompts, &config, Some(&tok));
        score_on_device_even_on_cpu(false);
        // Same tokens and endings; beam scores agree to f32 rounding (the exp-sum is reduced in another order).
        for (d, h) in on_device.unwrap().iter().zip(&got) {
            assert_eq!((&d.tokens, &d.finish, &d.stop_text), (&h.tokens, &h.finish, &h.stop_text), "{name}: on-device scoring");
            if let (Some(a), Some(b)) = (d.score, h.score) {
                assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{name}: on-device score {a} vs {b}");
            }
        }
        for (row, completion) in rows.iter().zip(&got) {
            assert_eq!(
                completion.tokens,
                ids(&row["new_tokens"]),
                "{name}: {:?}",
                row["prompt"]
            );
            let hit_eos = row["hit_eos"].as_bool().unwrap();
            assert_eq!(completion.finish == FinishReason::Eos, hit_eos, "{name}");
            assert_eq!(
                tok.decode(&completion.tokens, true).unwrap(),
                row["text"].as_str().unwrap(),
                "{name}"
            );
        }
        // Each prompt alone gives the same tokens as in the batch (beam scores agree to f32 rounding: padding
        // changes the shapes of the matrix products).
        if prompts.len() > 1 {
            for (prompt, batched) in prompts.iter().zip(&got) {
                let alone = generate(&model, std::slice::from_ref(prompt), &config, None)
                    .unwrap()
                    .remove(0);
                assert_eq!(
                    (&alone.tokens, &alone.finish),
                    (&batched.tokens, &batched.finish),
                    "{name}: alone vs batched"
                );
                if let (Some(a), Some(b)) = (alone.score, batched.score) {
                    assert!((a - b).abs() < 1e-4, "{name}: scores {a} vs {b}");
                }
            }
        }
    }
}
