//! Data-flow-space parity: layer paths over a pool of two models against an independent computation, the
//! identity path against the plain model, and the `evomistral` fixture against its PyTorch reference.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, D};
use common::*;
use evomerge_mistral::{evomistral, Hop, LayerPath, LoadOptions, ScaleConvention, ScaleLookup};

/// A straightforward forward pass written from scratch with basic tensor ops on the raw checkpoint tensors
/// (no code shared with the crate): `layers` lists (which model's weights, layer index, scale).
struct Naive {
    a: HashMap<String, Tensor>,
    b: HashMap<String, Tensor>,
    heads: usize,
    kv_heads: usize,
    eps: f64,
    theta: f64,
}

impl Naive {
    fn new() -> Naive {
        let read = |n: &str| {
            candle_core::safetensors::load(fixture(n).join("model.safetensors"), &Device::Cpu)
                .unwrap()
        };
        Naive {
            a: read("mistral_classic"),
            b: read("mistral_b"),
            heads: 4,
            kv_heads: 2,
            eps: 1e-5,
            theta: 1e6,
        }
    }

    fn w(&self, model: usize, name: &str) -> &Tensor {
        if model == 0 {
            &self.a[name]
        } else {
            &self.b[name]
        }
    }

    fn rms(&self, x: &Tensor, w: &Tensor) -> Tensor {
        let var = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let inv = (var + self.eps).unwrap().sqrt().unwrap().recip().unwrap();
        x.broadcast_mul(&inv).unwrap().broadcast_mul(w).unwrap()
    }

    fn lin(x: &Tensor, w: &Tensor) -> Tensor {
        x.matmul(&w.t().unwrap()).unwrap()
    }

    /// `x` [s, d] for one head group, positions 0..s.
    fn rope(&self, x: &Tensor) -> Tensor {
        let (s, d) = x.dims2().unwrap();
        let mut cos = vec![0f32; s * d];
        let mut sin = vec![0f32; s * d];
        for p in 0..s {
            for k in 0..d {
                let i = k % (d / 2);
                let inv = 1.0 / self.theta.powf(2.0 * i as f64 / d as f64);
                let ang = p as f64 * inv;
                cos[p * d + k] = ang.cos() as f32;
                sin[p * d + k] = ang.sin() as f32;
            }
        }
        let cos = Tensor::from_vec(cos, (s, d), &Device::Cpu).unwrap();
        let sin = Tensor::from_vec(sin, (s, d), &Device::Cpu).unwrap();
        let x1 = x.narrow(1, 0, d / 2).unwrap();
        let x2 = x.narrow(1, d / 2, d / 2).unwrap();
        let rot = Tensor::cat(&[&x2.neg().unwrap(), &x1], 1).unwrap();
        ((x * cos).unwrap() + (rot * sin).unwrap()).unwrap()
    }

    fn attention(&self, m: usize, l: usize, x: &Tensor) -> Tensor {
        let p = format!("model.layers.{l}.self_attn.");
        let (s, _) = x.dims2().unwrap();
        let q = Self::lin(x, self.w(m, &(p.clone() + "q_proj.weight")));
        let k = Self::lin(x, self.w(m, &(p.clone() + "k_proj.weight")));
        let v = Self::lin(x, self.w(m, &(p.clone() + "v_proj.weight")));
        let hd = q.dim(1).unwrap() / self.heads;
        let mut outs = Vec::new();
        for h in 0..self.heads {
            let kvh = h / (self.heads / self.kv_heads);
            let qh = self.rope(&q.narrow(1, h * hd, hd).unwrap());
            let kh = self.rope(&k.narrow(1, kvh * hd, hd).unwrap());
            let vh = v.narrow(1, kvh * hd, hd).unwrap();
            let scores = (qh.matmul(&kh.t().unwrap()).unwrap() / (hd as f64).sqrt()).unwrap();
            let mut rows = Vec::new();
            for i in 0..s {
                let row = scores.get(i).unwrap().narrow(0, 0, i + 1).unwrap();
                let e = (row.clone() - row.max(0).unwrap().to_scalar::<f32>().unwrap() as f64)
                    .unwrap()
                    .exp()
                    .unwrap();
                let pr = e.broadcast_div(&e.sum_all().unwrap()).unwrap();
                let out = pr
                    .unsqueeze(0)
                    .unwrap()
                    .matmul(&vh.narrow(0, 0, i + 1).unwrap())
                    .unwrap();
                rows.push(out);
            }
            outs.push(Tensor::cat(&rows, 0).unwrap());
        }
        Self::lin(
            &Tensor::cat(&outs, 1).unwrap(),
            self.w(m, &(p + "o_proj.weight")),
        )
    }

    fn mlp(&self, m: usize, l: usize, x: &Tensor) -> Tensor {
        let p = format!("model.layers.{l}.mlp.");
        let g = Self::lin(x, self.w(m, &(p.clone() + "gate_proj.weight")));
        let silu = (g.clone() * candle_nn::ops::sigmoid(&g).unwrap()).unwrap();
        let u = Self::lin(x, self.w(m, &(p.clone() + "up_proj.weight")));
        Self::lin(&(silu * u).unwrap(), self.w(m, &(p + "down_proj.weight")))
    }

    /// Logits [s, vocab] along `hops` (model, layer, scale) with the given convention.
    fn run(&self, ids: &[u32], hops: &[(usize, usize, f64)], paper: bool) -> Tensor {
        let idx = Tensor::new(ids, &Device::Cpu).unwrap();
        let mut x = self.a["model.embed_tokens.weight"]
            .index_select(&idx, 0)
            .unwrap();
        let mut pending: Option<Tensor> = None;
        for (t, &(m, l, s)) in hops.iter().enumerate() {
            let n = |name: &str| format!("model.layers.{l}.{name}");
            if paper || t == 0 {
                x = (x * s).unwrap();
            } else {
                x = (x + (pending.take().unwrap() * s).unwrap()).unwrap();
            }
            let h = (x.clone()
                + self.attention(m, l, &self.rms(&x, self.w(m, &n("input_layernorm.weight")))))
            .unwrap();
            let mo = self.mlp(
                m,
                l,
                &self.rms(&h, self.w(m, &n("post_attention_layernorm.weight"))),
            );
            if paper {
                x = (h + mo).unwrap();
            } else {
                x = h;
                pending = Some(mo);
            }
        }
        if let Some(p) = pending {
            x = (x + p).unwrap();
        }
        let x = self.rms(&x, &self.a["model.norm.weight"]);
        Self::lin(&x, &self.a["lm_head.weight"])
    }
}

const IDS: [u32; 10] = [3, 77, 12, 5, 101, 64, 9, 0, 33, 120];

fn pooled() -> evomerge_mistral::Mistral {
    let b = load("mistral_b");
    load("mistral_classic").with_pool(&[&b]).unwrap()
}

#[test]
fn path_over_two_models_matches_independent_computation() {
    let naive = Naive::new();
    // Pool: 0, 1 = mistral_classic's layers; 2, 3 = mistral_b's layers 0, 1. Layer 1 appears twice.
    let hops = [
        (0, 0, 0.9),
        (1, 0, 1.2),
        (0, 1, 0.7),
        (1, 1, 1.0),
        (0, 1, 1.3),
    ];
    let ids = Tensor::new(&IDS[..], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    for (convention, paper) in [
        (ScaleConvention::ReleasedBranch, false),
        (ScaleConvention::PaperStream, true),
    ] {
        let mut model = pooled();
        let path = hops
            .iter()
            .map(|&(m, l, s)| Hop {
                layer: m * 2 + l,
                scale: s,
            })
            .collect();
        model
            .set_path(LayerPath::new(path, convention).unwrap())
            .unwrap();
        let got = logits_for(&model, &ids).squeeze(0).unwrap();
        let want = naive.run(&IDS, &hops, paper);
        let diff = max_abs_diff(&got, &want);
        assert!(diff <= 1e-4, "{convention:?}: diff {diff}");
        // The scales matter: the same path with unit scales gives clearly different logits.
        let unit: Vec<_> = hops.iter().map(|&(m, l, _)| (m, l, 1.0)).collect();
        assert!(max_abs_diff(&got, &naive.run(&IDS, &unit, paper)) > 1e-2);
    }
}

#[test]
fn path_decoding_with_per_hop_cache_matches_full_forward() {
    let mut model = pooled();
    let path =
        LayerPath::parse("0, 2:0.8, 1:1.1, 1:0.9, 3", ScaleConvention::ReleasedBranch).unwrap();
    model.set_path(path).unwrap();
    let ids = Tensor::new(&IDS[..], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let full = logits_for(&model, &ids);
    let mut cache = model.new_cache(1);
    assert_eq!(cache.num_hops(), 5);
    let pos = evomerge_mistral::sequential_positions(1, 6, 0, model.device()).unwrap();
    model
        .forward(&ids.narrow(1, 0, 6).unwrap(), &pos, None, &mut cache)
        .unwrap();
    for i in 6..IDS.len() {
        let pos = evomerge_mistral::sequential_positions(1, 1, i, model.device()).unwrap();
        let last = model
            .forward_last(&ids.narrow(1, i, 1).unwrap(), &pos, None, &mut cache)
            .unwrap();
        let want = full.get(0).unwrap().get(i).unwrap().unsqueeze(0).unwrap();
        assert!(max_abs_diff(&last, &want) <= 1e-5);
    }
}

#[test]
fn identity_path_equals_plain_model_bit_for_bit() {
    let plain = load("mistral_classic");
    let ids = Tensor::new(&IDS[..], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let want = logits_for(&plain, &ids)
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let hops = vec![
        Hop {
            layer: 0,
            scale: 1.0,
        },
        Hop {
            layer: 1,
            scale: 1.0,
        },
    ];
    let paths = [
        LayerPath::new(hops.clone(), ScaleConvention::ReleasedBranch).unwrap(),
        LayerPath::new(hops, ScaleConvention::PaperStream).unwrap(),
        // The paper's form: first repetition of the pool's own layers on, W = 1 everywhere.
        LayerPath::from_paper(
            &[1.0, 1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0],
            &[1.0; 16],
            4,
        )
        .unwrap(),
    ];
    for path in paths {
        let mut model = pooled();
        model.set_path(path.clone()).unwrap();
        let got = logits_for(&model, &ids)
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{path:?}"
        );
    }
}

#[test]
fn evomistral_fixture_matches_reference_for_both_scale_lookups() {
    let r = reference("evomistral");
    let ids = &r["input_ids"];
    for (lookup, key) in [
        (ScaleLookup::ByHop, "logits_by_hop"),
        (ScaleLookup::ByLayer, "logits_by_layer"),
    ] {
        let model =
            evomistral::load_dir(&fixture("evomistral"), &LoadOptions::default(), lookup).unwrap();
        assert_eq!(model.path().len(), 6);
        assert_eq!(model.pool_len(), 4);
        let diff = max_abs_diff(&logits_for(&model, ids), &r[key]);
        assert!(diff <= 1e-4, "{lookup:?}: diff {diff}");
    }
    // The two lookups really differ on this fixture.
    assert!(max_abs_diff(&r["logits_by_hop"], &r["logits_by_layer"]) > 1e-2);
}

#[test]
fn evomistral_save_then_load_round_trips() {
    let mut model = pooled();
    model
        .set_path(
            LayerPath::parse("0:0.5, 3:1.5, 1, 2:0.25", ScaleConvention::ReleasedBranch).unwrap(),
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    evomistral::save(&model, dir.path(), None).unwrap();
    let back =
        evomistral::load_dir(dir.path(), &LoadOptions::default(), ScaleLookup::ByHop).unwrap();
    // Only the layers the path uses are stored, renumbered in pool order.
    assert_eq!(back.pool_len(), 4);
    let stored: Vec<usize> = back.path().hops().iter().map(|h| h.layer).collect();
    assert_eq!(stored, vec![0, 3, 1, 2]);
    let ids = Tensor::new(&IDS[..], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let (a, b) = (logits_for(&model, &ids), logits_for(&back, &ids));
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    let layers =
        candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(layers[evomistral::INPUT_LAYERS].dtype(), DType::I32);
    assert_eq!(layers[evomistral::INPUT_SCALES].dtype(), DType::F32);
}

#[test]
fn weights_replaced_in_place_give_the_other_checkpoints_logits() {
    let mut model = load("mistral_classic");
    let other = candle_core::safetensors::load(
        fixture("mistral_b").join("model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    for name in model.parameter_names() {
        model.set_tensor(&name, &other[&name]).unwrap();
    }
    let r = reference("mistral_b");
    let diff = max_abs_diff(&logits_for(&model, &r["input_ids"]), &r["logits"]);
    assert!(diff <= 1e-4, "diff {diff}");
    // And from a flat f32 slice.
    let norm: Vec<f32> = other["model.norm.weight"].to_vec1().unwrap();
    model.set_tensor_f32("model.norm.weight", &norm).unwrap();
    assert!(model
        .set_tensor_f32("model.norm.weight", &norm[1..])
        .is_err());
    assert!(model
        .set_tensor(
            "model.layers.9.mlp.up_proj.weight",
            &other["model.norm.weight"]
        )
        .is_err());
}

#[test]
fn evomistral_whose_input_layers_leave_the_pool_is_refused() {
    let mut model = pooled();
    model
        .set_path(LayerPath::parse("0, 3, 1", ScaleConvention::ReleasedBranch).unwrap())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    evomistral::save(&model, dir.path(), None).unwrap();
    // Point the second hop at layer 9 of a pool that stores 3.
    let file = dir.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    tensors.insert(
        evomistral::INPUT_LAYERS.into(),
        Tensor::new(&[0i32, 9, 1], &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, &file).unwrap();
    let err = evomistral::load_dir(dir.path(), &LoadOptions::default(), ScaleLookup::ByHop)
        .unwrap_err()
        .to_string();
    assert!(err.contains("hop 1") && err.contains("9"), "{err}");
}
