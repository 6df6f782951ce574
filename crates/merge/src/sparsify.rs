//! Shared building blocks of the task-arithmetic family: magnitude trimming (top-k by |delta|),
//! reproducible DARE drop masks, and the counter-based random numbers behind them.

/// SplitMix64's output function: a bijective 64-bit mixer.
#[inline(always)]
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

/// The integer form of [`dare_keeps`]: the draw is m·2⁻⁵³ for the 53-bit integer m = z >> 11
/// (exact in f64), so `uniform < density` holds exactly when m < ⌈density·2⁵³⌉. Comparing m with
/// this cut gives bit-identical masks without a float conversion per element.
#[inline]
pub fn dare_cut(density: f64) -> u64 {
    // density·2^53 is exact (a power-of-two scale); NaN casts to 0 (nothing kept, as the float
    // comparison with NaN gives).
    (density * (1u64 << 53) as f64).ceil() as u64
}

/// Whether DARE keeps element `index` given `cut = dare_cut(density)` (same result as [`dare_keeps`]).
#[inline(always)]
pub fn dare_keeps_cut(key: u64, index: usize, cut: u64) -> bool {
    let z = mix64(key.wrapping_add((index as u64).wrapping_add(1).wrapping_mul(GOLDEN)));
    (z >> 11) < cut
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

/// Top-k-by-magnitude selection for `delta = input - base`: which entries of one task vector
/// TIES keeps. Exactly k = [`magnitude_k`] entries survive: those with |delta| above the k-th
/// largest, and ties at that value by position, as a sort by `total_cmp` would choose them
/// (found without sorting: a sampled bracket, else a radix select). `scratch` is used only for deltas
/// holding inf or NaN.
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
    crate::select::top_k(input, base, k, scratch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_dare_cut_matches_the_float_draw() {
        for density in [1e-9, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0 - 1e-12, 0.123456789, f64::NAN] {
            let cut = dare_cut(density);
            for i in 0..20_000usize {
                let key = mix64(i as u64 / 100);
                let z = mix64(key.wrapping_add((i as u64).wrapping_add(1).wrapping_mul(GOLDEN)));
                assert_eq!((z >> 11) < cut, dare_keeps(key, i, density), "density {density}, element {i}");
            }
            // Boundary draws: m just below, at and above density·2^53.
            let t = density * (1u64 << 53) as f64;
            if t.is_finite() {
                for m in [t.floor() as u64, t.ceil() as u64, t.floor() as u64 + 1, (t.floor() as u64).saturating_sub(1)] {
                    let draw = m as f64 * (1.0 / (1u64 << 53) as f64);
                    assert_eq!(m < cut, draw < density, "density {density}, m {m}");
                }
            }
        }
    }
}
