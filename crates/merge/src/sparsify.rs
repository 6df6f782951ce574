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
    /// Breadcrumbs: entries inside the top-`keep` set (everything when `None`) but outside the
    /// top-`drop` set, each set given as a [`Keep::Magnitude`] threshold and tie cut.
    Band { keep: Option<(f32, usize)>, drop: (f32, usize) },
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
            Keep::Band { keep, drop } => {
                let a = delta.abs();
                let within = |(threshold, tie_cut): (f32, usize)| a > threshold || (a == threshold && index <= tie_cut);
                keep.is_none_or(within) && !within(drop)
            }
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

/// Breadcrumbs' magnitude band (mergekit's `magnitude_outliers`): drop the `gamma` fraction of
/// largest |delta| and the smallest ones, keeping ⌊density·n⌋ entries. Sorted ascending, the kept
/// entries are positions `n_bot .. n_bot + ⌊density·n⌋` with `n_bot = max(0, n − ⌊density·n⌋ −
/// ⌊gamma·n⌋)`; that is, descending ranks `top .. top + ⌊density·n⌋` with
/// `top = min(⌊gamma·n⌋, n − ⌊density·n⌋)` (fewer outliers are dropped when needed to keep the density).
pub fn outlier_keep(input: &[f32], base: &[f32], density: f64, gamma: f64, scratch: &mut Vec<f32>) -> Keep {
    let n = input.len();
    if density >= 1.0 {
        return Keep::All;
    }
    let target = if density > 0.0 { (density * n as f64) as usize } else { 0 };
    if target == 0 {
        return Keep::None;
    }
    let n_top = if gamma > 0.0 { (gamma * n as f64) as usize } else { 0 };
    let top = n_top.min(n - target);
    let as_pair = |keep: Keep| match keep {
        Keep::Magnitude { threshold, tie_cut } => Some((threshold, tie_cut)),
        _ => None,
    };
    let keep = if top + target >= n { None } else { as_pair(crate::select::top_k(input, base, top + target, scratch)) };
    if top == 0 {
        return keep.map_or(Keep::All, |(threshold, tie_cut)| Keep::Magnitude { threshold, tie_cut });
    }
    match as_pair(crate::select::top_k(input, base, top, scratch)) {
        Some(drop) => Keep::Band { keep, drop },
        None => Keep::None,
    }
}

/// DELLA's magnitude-ranked drop (MAGPRUNE, mergekit's `della_magprune`), reproducibly seeded:
/// within each row (dimension 1 of the tensor; a 1-D tensor is one row) the entries are ranked by
/// |delta| ascending (ties by position), rank r of L becomes the keep probability
/// `p = (density − epsilon) + r/(L−1) · 2·epsilon` (f32, as mergekit computes it), and entry `j`
/// is kept when the counter-based draw `uniform(key, j)` is below `p`. Returns the sparsified delta:
/// kept entries divided by their `p` when `inverse` (the DELLA paper's rescale), else unchanged.
/// A row of one entry has no ranking and gets `p = density`.
pub fn della_delta(
    input: &[f32],
    base: &[f32],
    shape: &[usize],
    density: f64,
    epsilon: f64,
    key: u64,
    inverse: bool,
) -> Vec<f32> {
    use rayon::prelude::*;
    let n = input.len();
    // (outer, row length, stride) of the rows along dimension 1 (dimension 0 of a 1-D tensor).
    let (outer, len, inner) = match shape.len() {
        0 | 1 => (1, n, 1),
        _ => (shape[0], shape[1], shape[2..].iter().product()),
    };
    let low = (density - epsilon) as f32;
    let eps = epsilon as f32;
    // One row: its entries are `input[offset + r·inner]`, r < len; writes `out` at the same places.
    let row = |offset: usize, order: &mut Vec<u64>, write: &mut dyn FnMut(usize, f32)| {
        let at = |r: usize| offset + r * inner;
        // Rank by |delta|, ties by position: |delta| is never negative, so its bit pattern orders
        // as `total_cmp` does; (bits, position) packed in a u64 sorts as one integer key.
        order.clear();
        order.extend((0..len).map(|r| {
            let j = at(r);
            (u64::from((input[j] - base[j]).abs().to_bits()) << 32) | r as u64
        }));
        order.sort_unstable();
        let denom = (len.max(2) - 1) as f32;
        for (rank, r) in order.iter().map(|&key| key as u32).enumerate() {
            let j = at(r as usize);
            let p = if len > 1 { low + (rank as f32 / denom).clamp(0.0, 1.0) * 2.0 * eps } else { density as f32 };
            let d = input[j] - base[j];
            let v = if uniform(key, j) < p as f64 {
                if inverse {
                    d / p
                } else {
                    d
                }
            } else {
                0.0
            };
            write(r as usize, v);
        }
    };
    let mut out = vec![0f32; n];
    if inner == 1 {
        out.par_chunks_mut(len.max(1))
            .enumerate()
            .for_each_init(Vec::new, |order, (o, chunk)| row(o * len, order, &mut |r, v| chunk[r] = v));
    } else {
        let mut order = Vec::new();
        for o in 0..outer {
            for i in 0..inner {
                let offset = o * len * inner + i;
                row(offset, &mut order, &mut |r, v| out[offset + r * inner] = v);
            }
        }
    }
    out
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
