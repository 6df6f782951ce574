//! Shared building blocks of the task-arithmetic family: magnitude trimming (top-k by |delta|),
//! reproducible DARE drop masks, and the counter-based random numbers behind them.

use rayon::prelude::*;

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

/// Top-k-by-magnitude selection for `delta = input - base`, without materialising the delta.
///
/// The k-th largest |delta| is found by a radix select on the bit patterns of |delta| (for
/// non-negative floats, integer order is `total_cmp` order, so this is the value a sort would
/// pick): a histogram of the high 16 bits finds the bucket holding it, a histogram of the low 16
/// bits inside that bucket finds the value, and per-chunk counts of entries equal to it place the
/// tie cut. Every pass is parallel and reads the inputs once. Deltas holding inf or NaN take the
/// exact sort-based path instead (using `scratch`), which treats them as that path always has.
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
    // Per-task histograms count in u32.
    if n > u32::MAX as usize {
        return magnitude_keep_exact(input, base, k, scratch);
    }
    // The k-th largest sits at position n - k of the ascending order.
    let rank = n - k;
    let high = histogram(input, base, |key, h: &mut [u32; HIGH_BUCKETS]| h[(key >> 16) as usize & (HIGH_BUCKETS - 1)] += 1);
    if high[NON_FINITE_BUCKET..].iter().any(|&c| c > 0) {
        return magnitude_keep_exact(input, base, k, scratch);
    }
    let (bucket, rank_in_bucket) = locate(&high[..], rank);
    let bucket_bits = bucket as u32;
    let low = histogram(input, base, |key, h: &mut [u32; LOW_BUCKETS]| {
        if key >> 16 == bucket_bits {
            h[(key & 0xffff) as usize] += 1;
        }
    });
    let (low_bits, _) = locate(&low[..], rank_in_bucket);
    let threshold_bits = (bucket_bits << 16) | low_bits as u32;
    let threshold = f32::from_bits(threshold_bits);
    // All deltas are finite here, so `|delta| > threshold` is exactly `key > threshold_bits`.
    let greater = high[bucket + 1..].iter().map(|&c| c as usize).sum::<usize>()
        + low[low_bits + 1..].iter().map(|&c| c as usize).sum::<usize>();
    let need = k - greater;
    let ties: Vec<usize> = input
        .par_chunks(CHUNK)
        .zip(base.par_chunks(CHUNK))
        .map(|(x, b)| x.iter().zip(b).filter(|(&x, &b)| magnitude_bits(x, b) == threshold_bits).count())
        .collect();
    let mut seen = 0usize;
    let mut tie_cut = n - 1;
    for (c, &count) in ties.iter().enumerate() {
        if seen + count < need {
            seen += count;
            continue;
        }
        let start = c * CHUNK;
        let end = (start + CHUNK).min(n);
        for j in start..end {
            if magnitude_bits(input[j], base[j]) == threshold_bits {
                seen += 1;
                if seen == need {
                    tie_cut = j;
                    break;
                }
            }
        }
        break;
    }
    Keep::Magnitude { threshold, tie_cut }
}

const CHUNK: usize = crate::methods::CHUNK;
/// Buckets of the high 16 bits; the sign bit of |delta| is clear, so 2^15 of them.
const HIGH_BUCKETS: usize = 1 << 15;
const LOW_BUCKETS: usize = 1 << 16;
/// The first high bucket holding inf and NaN bit patterns.
const NON_FINITE_BUCKET: usize = (f32::INFINITY.to_bits() >> 16) as usize;

/// Bit pattern of |x − b|.
#[inline(always)]
fn magnitude_bits(x: f32, b: f32) -> u32 {
    (x - b).abs().to_bits()
}

/// A histogram of |input − base| bit patterns, built per rayon task and summed.
fn histogram<const N: usize>(
    input: &[f32],
    base: &[f32],
    count: impl Fn(u32, &mut [u32; N]) + Sync,
) -> Box<[u32; N]> {
    let zeroed = || -> Box<[u32; N]> { vec![0u32; N].into_boxed_slice().try_into().unwrap_or_else(|_| unreachable!()) };
    input
        .par_chunks(CHUNK)
        .zip(base.par_chunks(CHUNK))
        .fold(zeroed, |mut h, (x, b)| {
            for (&x, &b) in x.iter().zip(b) {
                count(magnitude_bits(x, b), &mut h);
            }
            h
        })
        .reduce(zeroed, |mut a, b| {
            for (a, b) in a.iter_mut().zip(b.iter()) {
                *a += b;
            }
            a
        })
}

/// The bucket holding the entry of ascending rank `rank`, and that entry's rank inside it.
fn locate(histogram: &[u32], rank: usize) -> (usize, usize) {
    let mut below = 0usize;
    for (bucket, &count) in histogram.iter().enumerate() {
        let count = count as usize;
        if below + count > rank {
            return (bucket, rank - below);
        }
        below += count;
    }
    // The histogram counts every entry and rank < n, so the loop always returns.
    (histogram.len() - 1, 0)
}

/// Sort-based top-k (`select_nth_unstable` under `total_cmp`): the reference for
/// [`magnitude_keep`], and its path for deltas holding inf or NaN.
fn magnitude_keep_exact(input: &[f32], base: &[f32], k: usize, scratch: &mut Vec<f32>) -> Keep {
    let n = input.len();
    scratch.clear();
    scratch.resize(n, 0.0);
    scratch.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
        let start = c * CHUNK;
        for (j, s) in chunk.iter_mut().enumerate() {
            *s = (input[start + j] - base[start + j]).abs();
        }
    });
    let (_, kth, _) = scratch.select_nth_unstable_by(n - k, |a, b| a.total_cmp(b));
    let threshold = *kth;
    let greater = input
        .par_chunks(CHUNK)
        .zip(base.par_chunks(CHUNK))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Values on a coarse grid (many equal magnitudes, as bf16 weights give).
    fn grid(seed: u64, n: usize, levels: u64, step: f32) -> Vec<f32> {
        (0..n).map(|i| ((mix64(seed ^ mix64(i as u64)) % levels) as f32 - (levels / 2) as f32) * step).collect()
    }

    fn check(input: &[f32], base: &[f32], density: f64) {
        let k = magnitude_k(density, input.len());
        let fast = magnitude_keep(input, base, density, &mut Vec::new());
        if k >= input.len() {
            assert_eq!(fast, Keep::All);
            return;
        }
        let exact = magnitude_keep_exact(input, base, k, &mut Vec::new());
        match (fast, exact) {
            (Keep::Magnitude { threshold: a, tie_cut: x }, Keep::Magnitude { threshold: b, tie_cut: y }) => {
                assert_eq!(a.to_bits(), b.to_bits(), "threshold, n {} density {density}", input.len());
                assert_eq!(x, y, "tie cut, n {} density {density}", input.len());
            }
            other => panic!("unexpected {other:?}"),
        }
        let kept = (0..input.len()).filter(|&j| fast.keeps(j, input[j] - base[j])).count();
        assert_eq!(kept, k, "exactly k entries survive");
    }

    #[test]
    fn radix_select_matches_sort_with_many_ties() {
        for (n, levels, step) in [(10, 3, 0.5), (1000, 7, 0.01), (CHUNK * 3 + 17, 31, 1e-3), (300_001, 2, 1.0), (200_000, 1 << 20, 1e-9)] {
            let base = grid(1, n, levels, step);
            let input: Vec<f32> = base.iter().zip(grid(2, n, levels, step)).map(|(b, d)| b + d).collect();
            for density in [1e-6, 0.01, 0.3, 0.5, 0.77, 0.999] {
                check(&input, &base, density);
            }
        }
    }

    #[test]
    fn all_equal_and_zero_deltas() {
        let base = vec![0.25f32; 5000];
        check(&base, &base, 0.4);
        let shifted: Vec<f32> = base.iter().map(|b| b + 0.5).collect();
        check(&shifted, &base, 0.4);
        let mut mixed = base.clone();
        mixed[77] = -3.0;
        mixed[4999] = 1e-30;
        check(&mixed, &base, 0.0001);
        check(&mixed, &base, 0.5);
    }

    #[test]
    fn non_finite_deltas_take_the_exact_path() {
        let base = grid(3, 4000, 9, 0.1);
        let mut input: Vec<f32> = base.iter().zip(grid(4, 4000, 9, 0.1)).map(|(b, d)| b + d).collect();
        input[10] = f32::INFINITY;
        input[20] = f32::NAN;
        input[30] = f32::NEG_INFINITY;
        let k = magnitude_k(0.2, input.len());
        assert_eq!(
            magnitude_keep(&input, &base, 0.2, &mut Vec::new()),
            magnitude_keep_exact(&input, &base, k, &mut Vec::new())
        );
    }

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
