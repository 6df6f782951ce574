//! Logit parity with transformers 5.23 on the committed tiny fixtures (tests/fixtures/mistral/generate.py).

mod common;

use candle_core::{DType, Tensor};
use common::*;
use evomerge_mistral::sequential_positions;

const TOL: f32 = 1e-4;

fn check_single(name: &str) {
    check_single_model(name, &load(name));
}

fn check_single_model(name: &str, model: &evomerge_mistral::Mistral) {
    let r = reference(name);
    let ids = &r["input_ids"];
    let got = logits_for(model, ids);
    let diff = max_abs_diff(&got, &r["logits"]);
    let scale = r["logits"]
        .abs()
        .unwrap()
        .max_keepdim(2)
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        scale > 0.5,
        "{name}: reference logits are too small ({scale}) to make the test meaningful"
    );
    assert!(diff <= TOL, "{name}: max abs diff {diff} > {TOL}");
}

/// Left-padded batch with attention mask and cumsum positions; only real positions are compared.
fn check_batch(name: &str) {
    check_batch_model(name, &load(name));
}

fn check_batch_model(name: &str, model: &evomerge_mistral::Mistral) {
    let r = reference(name);
    let ids = &r["batch_input_ids"];
    let mask = &r["batch_attention_mask"];
    let pos = &r["batch_position_ids"];
    let mut cache = model.new_cache(2);
    let got = model.forward(ids, pos, Some(mask), &mut cache).unwrap();
    let want = &r["batch_logits"];
    let mask_rows = mask.to_vec2::<i64>().unwrap();
    let mut worst = 0f32;
    for (b, row) in mask_rows.iter().enumerate() {
        for (i, &m) in row.iter().enumerate() {
            if m == 1 {
                let g = got.get(b).unwrap().get(i).unwrap();
                let w = want.get(b).unwrap().get(i).unwrap();
                worst = worst.max(max_abs_diff(&g, &w));
            }
        }
    }
    assert!(worst <= TOL, "{name}: batch max abs diff {worst} > {TOL}");
}

#[test]
fn mistral_classic_layout_gqa_rope_1e6_matches_transformers() {
    check_single("mistral_classic");
    check_batch("mistral_classic");
}

#[test]
fn mistral_sliding_window_shorter_than_sequence_matches_transformers() {
    let model = load("mistral_swa");
    assert_eq!(model.config().sliding_window, Some(4));
    assert!(reference("mistral_swa")["input_ids"].dim(1).unwrap() > 4);
    check_single("mistral_swa");
    check_batch("mistral_swa");
}

#[test]
fn llama_tied_embeddings_explicit_head_dim_matches_transformers() {
    let model = load("llama_tied");
    assert!(model.config().tie_word_embeddings);
    assert_eq!(model.config().head_dim, 16);
    check_single("llama_tied");
    check_batch("llama_tied");
}

/// The same fixtures through candle's matmul, weights not packed: the path GPUs and CPUs without AVX2 take.
#[test]
fn unpacked_weights_match_transformers_too() {
    let opts = evomerge_mistral::LoadOptions {
        cpu_kernels: false,
        ..Default::default()
    };
    for name in ["mistral_classic", "mistral_swa", "llama_tied"] {
        let model = evomerge_mistral::Mistral::from_dir(&fixture(name), &opts).unwrap();
        check_single_model(name, &model);
        check_batch_model(name, &model);
    }
}

/// Packed weights read back bit for bit as the checkpoint stores them.
#[test]
fn parameters_read_back_exactly_as_stored() {
    let model = load("mistral_classic");
    let stored = candle_core::safetensors::load(
        fixture("mistral_classic").join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    for name in model.parameter_names() {
        let got = model
            .parameter(&name)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = stored[&name]
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn second_source_model_matches_transformers() {
    check_single("mistral_b");
}

/// Prefill then one token at a time through the KV cache gives the full-sequence logits (including past the
/// sliding window).
#[test]
fn incremental_decoding_with_cache_matches_full_forward() {
    for name in ["mistral_classic", "mistral_swa", "llama_tied"] {
        let model = load(name);
        let r = reference(name);
        let ids = r["input_ids"].to_dtype(DType::U32).unwrap();
        let s = ids.dim(1).unwrap();
        let prefill = 5;
        let mut cache = model.new_cache(1);
        let pos = sequential_positions(1, prefill, 0, model.device()).unwrap();
        let first = model
            .forward(&ids.narrow(1, 0, prefill).unwrap(), &pos, None, &mut cache)
            .unwrap();
        let mut steps = vec![first];
        for i in prefill..s {
            let pos = sequential_positions(1, 1, i, model.device()).unwrap();
            let last = model
                .forward_last(&ids.narrow(1, i, 1).unwrap(), &pos, None, &mut cache)
                .unwrap();
            steps.push(last.unsqueeze(1).unwrap());
        }
        let got = Tensor::cat(&steps, 1).unwrap();
        let diff = max_abs_diff(&got, &r["logits"]);
        assert!(diff <= TOL, "{name}: cached decoding diff {diff}");
        assert_eq!(cache.seq_len(), s);
    }
}

/// Decoding a left-padded batch step by step with a mask, after reordering the cache rows (as beam search
/// does), matches the full forward of the reordered batch.
#[test]
fn cache_select_reorders_rows() {
    let name = "mistral_swa";
    let model = load(name);
    let r = reference(name);
    let ids = r["batch_input_ids"].to_dtype(DType::U32).unwrap();
    let mask = r["batch_attention_mask"].to_dtype(DType::U32).unwrap();
    let pos = r["batch_position_ids"].to_dtype(DType::U32).unwrap();
    let s = ids.dim(1).unwrap();
    let prefill = s - 2;
    let mut cache = model.new_cache(2);
    model
        .forward(
            &ids.narrow(1, 0, prefill).unwrap(),
            &pos.narrow(1, 0, prefill).unwrap(),
            Some(&mask.narrow(1, 0, prefill).unwrap()),
            &mut cache,
        )
        .unwrap();
    cache.select(&[1, 0]).unwrap();
    let swap = Tensor::new(&[1u32, 0], model.device()).unwrap();
    let (ids, mask, pos) = (
        ids.index_select(&swap, 0).unwrap(),
        mask.index_select(&swap, 0).unwrap(),
        pos.index_select(&swap, 0).unwrap(),
    );
    let mut last = None;
    for i in prefill..s {
        last = Some(
            model
                .forward_last(
                    &ids.narrow(1, i, 1).unwrap(),
                    &pos.narrow(1, i, 1).unwrap(),
                    Some(&mask.narrow(1, 0, i + 1).unwrap()),
                    &mut cache,
                )
                .unwrap(),
        );
    }
    let want = r["batch_logits"]
        .index_select(&swap, 0)
        .unwrap()
        .narrow(1, s - 1, 1)
        .unwrap()
        .squeeze(1)
        .unwrap();
    let diff = max_abs_diff(&last.unwrap(), &want);
    assert!(diff <= TOL, "reordered cache diff {diff}");
}

#[test]
fn half_precision_runs_close_to_f32() {
    let dir = fixture("mistral_classic");
    let opts = evomerge_mistral::LoadOptions {
        dtype: Some(DType::F16),
        ..Default::default()
    };
    let model = evomerge_mistral::Mistral::from_dir(&dir, &opts).unwrap();
    assert_eq!(model.dtype(), DType::F16);
    let r = reference("mistral_classic");
    let got = logits_for(&model, &r["input_ids"]);
    let diff = max_abs_diff(&got, &r["logits"]);
    assert!(diff < 0.05, "f16 diff {diff}");
}
