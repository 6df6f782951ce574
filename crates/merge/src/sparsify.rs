//! Shared building blocks of the task-arithmetic family: magnitude trimming (top-k by |delta|),
//! reproducible DARE drop masks, and the counter-based random numbers behind them.

use rayon::prelude::*;

/// SplitMix64's output function: a bijective 64-bit mixer.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// FNV-1a over the bytes of a string (stable across platforms and releases, unlike `Hash`).
pub fn fnv1a(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The key of one DARE mask: a pure function of the recipe seed, the output tensor name and the
/// model's index in the recipe.
pub fn dare_key(seed: u64, tensor_name: &str, model_index: usize) -> u64 {
    mix64(mix64(seed ^ GOLDEN) ^ fnv1a(tensor_name) ^ mix64((model_index as u64).wrapping_add(1).wrapping_mul(GOLDEN)))
}

/// Uniform value in [0, 1) for element `index` of the stream `key` (SplitMix64 evaluated at a
/// counter, so any element can be computed independently: thread-count-independent masks).
#[inline]
pub fn uniform(key: u64, index: usize) -> f64 {
    let z = mix64(key.wrapping_add((index as u64).wrapping_add(1).wrapping_mul(GOLDEN)));
    (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Whether DARE keeps element `index` (probability `density`).
#[inline]
pub fn dare_keeps(key: u64, index: usize, density: f64) -> bool {
    uniform(key, index) < density
}

/// Which entries of one task vector survive sparsification.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Keep {
    All,
    None,
    /// Entries with |delta| > threshold, plus those equal to it up to and including index
    /// `tie_cut` (so exactly k survive; ties broken by position).
    Magnitude { threshold: f32, tie_cut: usize },
    /// DARE: entries whose counter-based uniform draw is below `density`.
    Random { key: u64, density: f64 },
}

impl Keep {
    #[inline]
    pub fn keeps(&self, index: usize, delta: f32) -> bool {
        match *self {
            Keep::All => true,
            Keep::None => false,
            Keep::Magnitude { threshold, tie_cut } => {
                let a = delta.abs();
                a > threshold || (a == threshold && index <= tie_cut)
            }
            Keep::Random { key, density } => dare_keeps(key, index, density),
        }
    }
}

/// How many entries magnitude trimming keeps: mergekit's `max(1, int(density * n))`.
pub fn magnitude_k(density: f64, n: usize) -> usize {
    ((density * n as f64) as usize).max(1)
}

/// Top-k-by-magnitude selection for `delta = input - base`, computed without materialising the delta
/// beyond one scratch buffer (`scratch` is resized to the tensor length and reused by callers).
pub fn magnitude_keep(input: &[f32], base: &[f32], density: f64, scratch: &mut Vec<f32>) -> Keep {
    let n = input.len();
    if density >= 1.0 {
        return Keep::All;
    }
    if density <= 0.0 || n == 0 {
        return Keep::None;
    }
    let k = magnitude_k(density, n);
    if k >= n {
        return Keep::All;
    }
    scratch.clear();
    scratch.resize(n, 0.0);
    scratch.par_chunks_mut(super::methods::CHUNK).enumerate().for_each(|(c, chunk)| {
        let start = c * super::methods::CHUNK;
        for (j, s) in chunk.iter_mut().enumerate() {
            *s = (input[start + j] - base[start + j]).abs();
        }
    });
    // The k-th largest |delta| sits at position n - k of the ascending order.
    let (_, kth, _) = scratch.select_nth_unstable_by(n - k, |a, b| a.total_cmp(b));
    let threshold = *kth;
    let greater = input
        .par_chunks(super::methods::CHUNK)
        .zip(base.par_chunks(super::methods::CHUNK))
        .map(|(x, b)| x.iter().zip(b).filter(|(x, b)| (**x - **b).abs() > threshold).count())
        .sum::<usize>();
    let need = k - greater;
    let mut seen = 0usize;
    let mut tie_cut = n - 1;
    for j in 0..n {
        if (input[j] - base[j]).abs() == threshold {
            seen += 1;
            if seen == need {
                tie_cut = j;
                break;
            }
        }
    }
    Keep::Magnitude { threshold, tie_cut }
}
