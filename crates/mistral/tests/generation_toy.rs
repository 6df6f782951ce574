//! Generation semantics on a toy model whose logits are a hash of each row's real-token history. The toy checks
//! every call's positions and attention mask against what it has cached, so padding, position and cache-reordering
//! mistakes fail loudly; batched and unbatched runs must agree exactly.

use std::cell::Cell;

use candle_core::{Device, Tensor};
use evomerge_mistral::generation::{
    generate, CausalLm, Completion, EarlyStopping, FinishReason, GenerationConfig, GenerationError,
    ModelError, PromptInput, StepInput, TokenDecoder, score_on_device_even_on_cpu,
};

const VOCAB: usize = 24;

struct Toy {
    max_context: usize,
    /// Rows fed through the model so far (to check that finished rows leave the batch).
    rows_computed: Cell<usize>,
}

/// Per row: every cached position's token (`None` = padding).
struct ToyCache(Vec<Vec<Option<u32>>>);

fn fnv(history: &[u32], extra: u32) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &t in history.iter().chain(std::iter::once(&extra)) {
        for b in t.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

impl Toy {
    fn new(max_context: usize) -> Toy {
        Toy {
            max_context,
            rows_computed: Cell::new(0),
        }
    }

    fn logits_for(history: &[u32]) -> Vec<f32> {
        (0..VOCAB as u32)
            .map(|v| ((fnv(history, v) % 10_000) as f32 / 10_000.0 - 0.5) * 8.0)
            .collect()
    }
}

impl CausalLm for Toy {
    type Cache = ToyCache;

    fn new_cache(&self, batch: usize) -> Result<ToyCache, ModelError> {
        Ok(ToyCache(vec![Vec::new(); batch]))
    }

    fn forward_last(
        &self,
        input: StepInput<'_>,
        positions: &[Vec<u32>],
        attention_mask: &[Vec<bool>],
        cache: &mut ToyCache,
    ) -> Result<Tensor, ModelError> {
        let ids: Vec<Vec<u32>> = match input {
            StepInput::Tokens(ids) => ids.to_vec(),
            // The toy's "embedding" of token t is the row vector [t as f32]; padding rows are zeros.
            StepInput::Embeds(e) => {
                let e = e.to_vec3::<f32>()?;
                e.iter()
                    .map(|row| row.iter().map(|v| v[0] as u32).collect())
                    .collect()
            }
        };
        if cache.0.len() != ids.len() {
            return Err(format!("cache has {} rows, step has {}", cache.0.len(), ids.len()).into());
        }
        self.rows_computed.set(self.rows_computed.get() + ids.len());
        let mut out = Vec::with_capacity(ids.len() * VOCAB);
        for (b, row_ids) in ids.iter().enumerate() {
            let row = &mut cache.0[b];
            let past = row.len();
            if attention_mask[b].len() != past + row_ids.len() {
                return Err(format!(
                    "row {b}: mask has {} entries, expected {}",
                    attention_mask[b].len(),
                    past + row_ids.len()
                )
                .into());
            }
            for (s, &id) in row_ids.iter().enumerate() {
                let real = attention_mask[b][past + s];
                if real {
                    let expected = row.iter().filter(|t| t.is_some()).count() as u32;
                    if positions[b][s] != expected {
                        return Err(format!(
                            "row {b}: position {} but {expected} real tokens precede",
                            positions[b][s]
                        )
                        .into());
                    }
                }
                row.push(real.then_some(id));
            }
            for (i, cached) in row.iter().enumerate() {
                if cached.is_some() != attention_mask[b][i] {
                    return Err(format!("row {b}: mask disagrees with the cache at {i}").into());
                }
            }
            let history: Vec<u32> = row.iter().flatten().copied().collect();
            if history.len() > self.max_context {
                return Err("context overflow".into());
            }
            out.extend(Toy::logits_for(&history));
        }
        Ok(Tensor::from_vec(out, (ids.len(), VOCAB), &Device::Cpu)?)
    }

    fn reorder_cache(&self, cache: &mut ToyCache, rows: &[usize]) -> Result<(), ModelError> {
        cache.0 = rows.iter().map(|&r| cache.0[r].clone()).collect();
        Ok(())
    }

    fn max_context(&self) -> usize {
        self.max_context
    }
}

/// Decodes token t as the letter `a + t`.
struct Letters;

impl TokenDecoder for Letters {
    fn decode_completion(&self, ids: &[u32]) -> Result<String, ModelError> {
        Ok(ids.iter().map(|&t| (b'a' + t as u8) as char).collect())
    }
}

fn prompts() -> Vec<PromptInput> {
    vec![
        PromptInput::Tokens(vec![1, 5, 7]),
        PromptInput::Tokens(vec![1]),
        PromptInput::Tokens(vec![1, 9, 9, 3, 2, 11, 4]),
        PromptInput::Tokens(vec![1, 20, 6, 13]),
    ]
}

fn one_by_one(model: &Toy, prompts: &[PromptInput], config: &GenerationConfig) -> Vec<Completion> {
    prompts
        .iter()
        .flat_map(|p| generate(model, std::slice::from_ref(p), config, Some(&Letters)).unwrap())
        .collect()
}

/// Straightforward greedy decoding without a cache, straight from the toy's definition.
fn reference_greedy(prompt: &[u32], max_new: usize, eos: &[u32], penalty: f32) -> Vec<u32> {
    let mut seq = prompt.to_vec();
    let mut out = Vec::new();
    while out.len() < max_new {
        let mut logits = Toy::logits_for(&seq);
        let distinct: std::collections::BTreeSet<u32> = seq.iter().copied().collect();
        for t in distinct {
            let s = &mut logits[t as usize];
            *s = if *s < 0.0 { *s * penalty } else { *s / penalty };
        }
        let mut best = 0;
        for v in 0..VOCAB {
            if logits[v] > logits[best] {
                best = v;
            }
        }
        out.push(best as u32);
        seq.push(best as u32);
        if eos.contains(&(best as u32)) {
            break;
        }
    }
    out
}

#[test]
fn greedy_matches_a_cacheless_reference_and_batching_changes_nothing() {
    let model = Toy::new(64);
    for penalty in [1.0, 1.5] {
        let config = GenerationConfig {
            max_new_tokens: 9,
            eos_token_ids: vec![3, 17],
            repetition_penalty: penalty,
            ..GenerationConfig::default()
        };
        let batched = generate(&model, &prompts(), &config, None).unwrap();
        assert_eq!(batched, one_by_one(&model, &prompts(), &config));
        score_on_device_even_on_cpu(true);
        let on_device = generate(&model, &prompts(), &config, None);
        score_on_device_even_on_cpu(false);
        assert_eq!(on_device.unwrap(), batched, "penalty {penalty}, on-device scoring");
        for (prompt, got) in prompts().iter().zip(&batched) {
            let PromptInput::Tokens(ids) = prompt else {
                unreachable!()
            };
            assert_eq!(
                got.tokens,
                reference_greedy(ids, 9, &[3, 17], penalty),
                "penalty {penalty}"
            );
            let ends_with_eos = got.tokens.last().is_some_and(|t| [3, 17].contains(t));
            assert_eq!(
                got.finish,
                if ends_with_eos {
                    FinishReason::Eos
                } else {
                    FinishReason::Length
                }
            );
        }
    }
}

#[test]
fn finished_rows_leave_the_batch() {
    let model = Toy::new(64);
    let config = GenerationConfig {
        max_new_tokens: 30,
        eos_token_ids: (0..12).collect(),
        ..Default::default()
    };
    let out = generate(&model, &prompts(), &config, None).unwrap();
    let total_tokens: usize = out.iter().map(|c| c.tokens.len()).sum();
    // Prefill computes 4 rows, then each decode step only the rows still running.
    let expected_rows = 4 + total_tokens - out.len();
    assert_eq!(model.rows_computed.get(), expected_rows);
}

#[test]
fn beam_search_is_batch_independent() {
    let model = Toy::new(64);
    for (beams, penalty, early) in [
        (2, 1.0, EarlyStopping::Heuristic),
        (4, 1.0, EarlyStopping::Always),
        (5, 1.5, EarlyStopping::Never),
    ] {
        let config = GenerationConfig {
            max_new_tokens: 7,
            num_beams: beams,
            eos_token_ids: vec![3],
            repetition_penalty: penalty,
            early_stopping: early,
            ..GenerationConfig::default()
        };
        let batched = generate(&model, &prompts(), &config, None).unwrap();
        assert_eq!(
            batched,
            one_by_one(&model, &prompts(), &config),
            "{beams} beams"
        );
        score_on_device_even_on_cpu(true);
        let on_device = generate(&model, &prompts(), &config, None);
        score_on_device_even_on_cpu(false);
        // Same tokens and endings; beam scores agree to f32 rounding (the exp-sum is reduced in another order).
        for (d, h) in on_device.unwrap().iter().zip(&batched) {
            assert_eq!((&d.tokens, &d.finish), (&h.tokens, &h.finish), "{beams} beams, on-device scoring");
            let (a, b) = (d.score.unwrap(), h.score.unwrap());
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{beams} beams: on-device score {a} vs {b}");
        }
        for c in &batched {
            assert!(c.score.is_some_and(|s| s.is_finite() && s > -1e8), "{c:?}");
            assert!(!c.tokens.is_empty() && c.tokens.len() <= 7);
        }
    }
}

#[test]
fn embedding_prompts_give_the_same_tokens_as_token_prompts() {
    let model = Toy::new(64);
    let config = GenerationConfig {
        max_new_tokens: 6,
        eos_token_ids: vec![3],
        ..Default::default()
    };
    let as_embeds: Vec<PromptInput> = prompts()
        .into_iter()
        .map(|p| {
            let PromptInput::Tokens(ids) = p else {
                unreachable!()
            };
            let e: Vec<f32> = ids.iter().map(|&t| t as f32).collect();
            let embeds = Tensor::from_vec(e, (ids.len(), 1), &Device::Cpu).unwrap();
            PromptInput::Embeds {
                embeds,
                context_ids: ids,
            }
        })
        .collect();
    for beams in [1, 3] {
        let config = GenerationConfig {
            num_beams: beams,
            ..config.clone()
        };
        assert_eq!(
            generate(&model, &as_embeds, &config, None).unwrap(),
            generate(&model, &prompts(), &config, None).unwrap()
        );
    }
}

#[test]
fn stop_strings_cut_the_text_before_the_stop() {
    let model = Toy::new(64);
    let free = generate(
        &model,
        &prompts()[..1],
        &GenerationConfig {
            max_new_tokens: 12,
            ..Default::default()
        },
        None,
    )
    .unwrap()
    .remove(0);
    let text = Letters.decode_completion(&free.tokens).unwrap();
    // Stop on the two letters at positions 4..6 of the free-running completion.
    let stop = text[4..6].to_string();
    let first = text.find(&stop).unwrap();
    let config = GenerationConfig {
        max_new_tokens: 12,
        stop_strings: vec!["zzz".into(), stop.clone()],
        ..Default::default()
    };
    for beams in [1, 2] {
        let config = GenerationConfig {
            num_beams: beams,
            ..config.clone()
        };
        let got = generate(&model, &prompts()[..1], &config, Some(&Letters))
            .unwrap()
            .remove(0);
        if beams == 1 {
            assert_eq!(got.finish, FinishReason::Stop(stop.clone()));
            assert_eq!(got.stop_text.as_deref(), Some(&text[..first]));
            assert_eq!(got.tokens, free.tokens[..first + stop.len()]);
            assert_eq!(got.text(&Letters).unwrap(), text[..first]);
        } else if let FinishReason::Stop(s) = &got.finish {
            let t = got.stop_text.clone().unwrap();
            assert!(!t.contains(&stop) && s == &stop);
        }
    }
    let err = generate(&model, &prompts(), &config, None).unwrap_err();
    assert!(matches!(err, GenerationError::StopWithoutDecoder), "{err}");
}

#[test]
fn the_context_limit_ends_rows_and_overlong_prompts_are_refused() {
    let model = Toy::new(10);
    let config = GenerationConfig {
        max_new_tokens: 50,
        ..Default::default()
    };
    let out = generate(&model, &prompts(), &config, None).unwrap();
    // The longest prompt (7 tokens) sets the limit for the whole call: the cache holds left padding too.
    for c in &out {
        assert_eq!(c.tokens.len(), 3);
        assert_eq!(c.finish, FinishReason::Length);
    }
    let alone = generate(&model, &prompts()[1..2], &config, None).unwrap();
    assert_eq!(alone[0].tokens.len(), 9);
    let long = vec![PromptInput::Tokens(vec![1; 10])];
    let err = generate(&model, &long, &config, None).unwrap_err();
    assert!(
        err.to_string()
            .contains("prompt 0 has 10 tokens but the model's context is 10"),
        "{err}"
    );
}

#[test]
fn bad_settings_and_prompts_are_refused_with_a_reason() {
    let model = Toy::new(64);
    let check = |config: GenerationConfig, prompts: Vec<PromptInput>, needle: &str| {
        let err = generate(&model, &prompts, &config, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    };
    check(
        GenerationConfig {
            num_beams: 0,
            ..Default::default()
        },
        prompts(),
        "num_beams",
    );
    check(
        GenerationConfig {
            max_new_tokens: 0,
            ..Default::default()
        },
        prompts(),
        "max_new_tokens",
    );
    check(
        GenerationConfig {
            repetition_penalty: 0.0,
            ..Default::default()
        },
        prompts(),
        "repetition_penalty",
    );
    check(
        GenerationConfig {
            stop_strings: vec![String::new()],
            ..Default::default()
        },
        prompts(),
        "stop strings",
    );
    check(
        GenerationConfig::default(),
        vec![PromptInput::Tokens(vec![])],
        "prompt 0 is empty",
    );
    let embeds = PromptInput::Embeds {
        embeds: Tensor::zeros((2, 1), candle_core::DType::F32, &Device::Cpu).unwrap(),
        context_ids: vec![],
    };
    check(
        GenerationConfig::default(),
        vec![PromptInput::Tokens(vec![1]), embeds],
        "all token prompts or all embedding",
    );
    assert!(generate(&model, &[], &GenerationConfig::default(), None)
        .unwrap()
        .is_empty());
}
