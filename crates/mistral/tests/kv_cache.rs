//! The preallocated KV cache (issue #19): decoding token by token gives the same logits whether the cache was
//! allocated for the whole run, starts empty and doubles, or is a clone of another, and equals one full-sequence
//! pass; with the crate's CPU kernels and with the device-generic path.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use evomerge_mistral::{sequential_positions, KvCache, LoadOptions, Mistral};

const IDS: [u32; 10] = [3, 77, 12, 5, 101, 64, 9, 0, 33, 120];
const PROMPT: usize = 4;

fn model(cpu_kernels: bool) -> Mistral {
    let o = LoadOptions {
        cpu_kernels,
        ..LoadOptions::default()
    };
    Mistral::from_dir(&fixture("mistral_classic"), &o).unwrap()
}

/// Last-position logits after the prompt and after each following token, fed one at a time.
fn decode(model: &Mistral, cache: &mut KvCache) -> Vec<Vec<f32>> {
    let step = |ids: &[u32], past: usize, cache: &mut KvCache| {
        let t = Tensor::from_vec(ids.to_vec(), (1, ids.len()), &Device::Cpu).unwrap();
        let pos = sequential_positions(1, ids.len(), past, model.device()).unwrap();
        let l = model.forward_last(&t, &pos, None, cache).unwrap();
        l.to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let mut out = vec![step(&IDS[..PROMPT], 0, cache)];
    for i in PROMPT..IDS.len() {
        out.push(step(&IDS[i..=i], i, cache));
    }
    out
}

/// One pass over the whole sequence: the reference every cached run must equal.
fn full_pass(model: &Mistral) -> Vec<Vec<f32>> {
    let ids = Tensor::new(&[IDS], &Device::Cpu).unwrap();
    let all = logits_for(model, &ids).to_dtype(DType::F32).unwrap();
    (PROMPT - 1..IDS.len())
        .map(|i| {
            all.get(0)
                .unwrap()
                .get(i)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

#[test]
fn preallocated_growing_and_full_pass_agree() {
    for cpu_kernels in [true, false] {
        let m = model(cpu_kernels);
        let mut big = m.new_cache_with_capacity(1, IDS.len());
        let preallocated = decode(&m, &mut big);
        assert_eq!(big.capacity(), IDS.len(), "a big enough cache never grows");
        // Starts at the prompt's length and doubles twice (4 -> 8 -> 16).
        let mut small = m.new_cache(1);
        let growing = decode(&m, &mut small);
        assert_eq!(small.capacity(), 16, "the buffer doubles when full");
        assert_eq!(small.seq_len(), IDS.len());
        assert_eq!(preallocated, growing, "cpu_kernels={cpu_kernels}");
        let d = max_diff(&preallocated, &full_pass(&m));
        assert!(
            d <= 1e-4,
            "cached decoding vs full pass: {d} (cpu_kernels={cpu_kernels})"
        );
    }
}

#[test]
fn a_cloned_cache_does_not_see_the_other_clones_writes() {
    let m = model(true);
    let mut a = m.new_cache_with_capacity(1, 32);
    let t = Tensor::new(&[[3u32, 77, 12]], &Device::Cpu).unwrap();
    let pos = sequential_positions(1, 3, 0, m.device()).unwrap();
    m.forward_last(&t, &pos, None, &mut a).unwrap();
    let mut b = a.clone();
    let next = |id: u32, cache: &mut KvCache| {
        let t = Tensor::new(&[[id]], &Device::Cpu).unwrap();
        let pos = sequential_positions(1, 1, 3, m.device()).unwrap();
        m.forward_last(&t, &pos, None, cache)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    // b writes position 3 first; a's position 3 must still be its own token.
    next(101, &mut b);
    let a_logits = next(5, &mut a);
    let mut fresh = m.new_cache(1);
    m.forward_last(&t, &pos, None, &mut fresh).unwrap();
    assert_eq!(a_logits, next(5, &mut fresh));
}
