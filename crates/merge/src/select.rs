//! Finding TIES's magnitude threshold (the k-th largest |input − base|) and its tie cut without
//! sorting the deltas, with the exact result of the sort (`select_nth_unstable` under
//! `total_cmp`, ties kept by position).
//!
//! All three ways work on the bit patterns of |delta|: with the sign bit clear, integer order is
//! `total_cmp` order. In the order they are tried:
//! 1. [`bracketed`]: a strided sample brackets the threshold's quantile; one parallel pass counts
//!    the entries above the bracket and lists (by index) those inside it, and the threshold and
//!    tie cut are picked from that short list. Gives up (`None`) when the bracket misses.
//! 2. [`radix`]: histograms of the high and then the low 16 bits, then per-chunk tie counts.
//! 3. [`exact`]: the sort-based reference, for deltas holding inf or NaN (the integer view
//!    differs from float comparisons there) and for tensors beyond u32 indices.

use rayon::prelude::*;

use crate::sparsify::Keep;

const CHUNK: usize = crate::methods::CHUNK;
/// Bit pattern of +inf; larger patterns are NaNs.
const INF_BITS: u32 = 0x7f80_0000;

/// Bit pattern of |x − b|.
#[inline(always)]
fn magnitude_bits(x: f32, b: f32) -> u32 {
    (x - b).abs().to_bits()
}

/// Keep the k largest |input − base| (0 < k < n).
pub(crate) fn top_k(input: &[f32], base: &[f32], k: usize, scratch: &mut Vec<f32>) -> Keep {
    if input.len() > u32::MAX as usize {
        return exact(input, base, k, scratch);
    }
    if let Some(keep) = bracketed(input, base, k) {
        return keep;
    }
    radix(input, base, k).unwrap_or_else(|| exact(input, base, k, scratch))
}

/// Strided samples of the deltas for [`bracketed`].
const SAMPLES: usize = 1 << 14;
/// Half-width of the bracket in quantiles: five standard deviations of a sample quantile
/// (at most 0.5/√SAMPLES ≈ 0.0039).
const MARGIN: f64 = 0.02;
/// Give up on bracketing when the sample puts more than this fraction of entries inside the
/// bracket (many equal magnitudes): the list would cost more than it saves.
const MAX_INSIDE: f64 = 0.2;

/// One pass over the inputs when a sample brackets the threshold; `None` when it does not.
pub(crate) fn bracketed(input: &[f32], base: &[f32], k: usize) -> Option<Keep> {
    let n = input.len();
    if n < 4 * SAMPLES {
        return None;
    }
    let mut sample: Vec<u32> = (0..SAMPLES).map(|i| i * (n / SAMPLES)).map(|j| magnitude_bits(input[j], base[j])).collect();
    sample.sort_unstable();
    // The threshold sits at ascending position n - k, quantile q.
    let q = (n - k) as f64 / n as f64;
    let lo_at = ((q - MARGIN) * SAMPLES as f64).floor();
    let hi_at = ((q + MARGIN) * SAMPLES as f64).ceil();
    let lo = if lo_at < 0.0 { 0 } else { sample[lo_at as usize] };
    let hi = if hi_at >= SAMPLES as f64 { u32::MAX } else { sample[hi_at as usize] };
    let inside = sample.iter().filter(|&&key| key >= lo && key <= hi).count();
    if inside as f64 > MAX_INSIDE * SAMPLES as f64 || sample.last().is_some_and(|&top| top >= INF_BITS) {
        return None;
    }

    let avx2 = crate::methods::has_avx2();
    let parts: Vec<Part> = input
        .par_chunks(CHUNK)
        .zip(base.par_chunks(CHUNK))
        .enumerate()
        .map(|(c, (x, b))| {
            let bracket = Bracket { lo, hi, start: (c * CHUNK) as u64 };
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU has AVX2 (checked at run time by `has_avx2`).
                return unsafe { bracket.scan_avx2(x, b) };
            }
            let _ = avx2;
            bracket.scan(x, b)
        })
        .collect();
    if parts.iter().any(|p| p.non_finite) {
        return None;
    }
    let above: usize = parts.iter().map(|p| p.above).sum();
    let inside: usize = parts.iter().map(|p| p.inside.len()).sum();
    // The k-th largest is inside the bracket when fewer than k entries are above it and at
    // least k are at or above its low end.
    if above >= k || above + inside < k {
        return None;
    }
    let mut selected: Vec<u32> = parts.iter().flat_map(|p| p.inside.iter().map(|&e| e as u32)).collect();
    let rank = inside - (k - above);
    let (_, &mut threshold_bits, _) = selected.select_nth_unstable(rank);
    // All deltas are finite, so `|delta| > threshold` is exactly `key > threshold_bits`.
    let greater = above + selected.iter().filter(|&&key| key > threshold_bits).count();
    let need = k - greater;
    let tie_cut = parts
        .iter()
        .flat_map(|p| p.inside.iter())
        .filter(|&&e| e as u32 == threshold_bits)
        .nth(need - 1)
        .map_or(n - 1, |&e| (e >> 32) as usize);
    Some(Keep::Magnitude { threshold: f32::from_bits(threshold_bits), tie_cut })
}

/// What one chunk contributes to [`bracketed`].
struct Part {
    above: usize,
    /// Entries inside the bracket, in index order: index << 32 | key.
    inside: Vec<u64>,
    non_finite: bool,
}

/// The bracket `lo..=hi` of keys, and where the scanned chunk starts.
#[derive(Clone, Copy)]
struct Bracket {
    lo: u32,
    hi: u32,
    start: u64,
}

/// Entries scanned at a time: keys are computed and compared for a whole group (vectorised),
/// and only the few inside the bracket are visited one by one, from a bit mask.
const GROUP: usize = 64;

impl Bracket {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn scan_avx2(self, x: &[f32], b: &[f32]) -> Part {
        self.scan(x, b)
    }

    #[inline(always)]
    fn scan(self, x: &[f32], b: &[f32]) -> Part {
        let Bracket { lo, hi, start } = self;
        let mut part = Part { above: 0, inside: Vec::with_capacity(x.len() / 16), non_finite: false };
        let mut top = 0u32;
        let mut keys = [0u32; GROUP];
        for (g, (x, b)) in x.chunks(GROUP).zip(b.chunks(GROUP)).enumerate() {
            let keys = &mut keys[..x.len()];
            for ((key, &x), &b) in keys.iter_mut().zip(x).zip(b) {
                *key = magnitude_bits(x, b);
            }
            let mut mask = 0u64;
            for (j, &key) in keys.iter().enumerate() {
                top = top.max(key);
                part.above += usize::from(key > hi);
                mask |= u64::from((key >= lo) & (key <= hi)) << j;
            }
            let first = start + (g * GROUP) as u64;
            while mask != 0 {
                let j = mask.trailing_zeros() as usize;
                part.inside.push((first + j as u64) << 32 | u64::from(keys[j]));
                mask &= mask - 1;
            }
        }
        part.non_finite = top >= INF_BITS;
        part
    }
}

/// Buckets of the high 16 bits; the sign bit of |delta| is clear, so 2^15 of them.
const HIGH_BUCKETS: usize = 1 << 15;
const LOW_BUCKETS: usize = 1 << 16;
/// The first high bucket holding inf and NaN bit patterns.
const NON_FINITE_BUCKET: usize = (INF_BITS >> 16) as usize;

/// Radix select in three parallel passes; `None` when a delta is inf or NaN.
pub(crate) fn radix(input: &[f32], base: &[f32], k: usize) -> Option<Keep> {
    let n = input.len();
    // The k-th largest sits at position n - k of the ascending order.
    let rank = n - k;
    let high = histogram(input, base, |key, h: &mut [u32; HIGH_BUCKETS]| h[(key >> 16) as usize & (HIGH_BUCKETS - 1)] += 1);
    if high[NON_FINITE_BUCKET..].iter().any(|&c| c > 0) {
        return None;
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
    Some(Keep::Magnitude { threshold: f32::from_bits(threshold_bits), tie_cut })
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

/// Sort-based top-k (`select_nth_unstable` under `total_cmp`), the definition the others match.
pub(crate) fn exact(input: &[f32], base: &[f32], k: usize, scratch: &mut Vec<f32>) -> Keep {
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
    use crate::sparsify::{magnitude_k, magnitude_keep, mix64};

    /// Values on a grid of `levels` steps (many equal magnitudes, as bf16 weights give).
    fn grid(seed: u64, n: usize, levels: u64, step: f32) -> Vec<f32> {
        (0..n).map(|i| ((mix64(seed ^ mix64(i as u64)) % levels) as f32 - (levels / 2) as f32) * step).collect()
    }

    fn same(a: Keep, b: Keep, what: &str) {
        match (a, b) {
            (Keep::Magnitude { threshold: t1, tie_cut: c1 }, Keep::Magnitude { threshold: t2, tie_cut: c2 }) => {
                assert_eq!(t1.to_bits(), t2.to_bits(), "threshold, {what}");
                assert_eq!(c1, c2, "tie cut, {what}");
            }
            other => panic!("unexpected {other:?}, {what}"),
        }
    }

    /// Every way agrees with the sort; returns how many of the fast ways applied.
    fn check(input: &[f32], base: &[f32], density: f64) -> (bool, bool) {
        let n = input.len();
        let k = magnitude_k(density, n);
        let what = format!("n {n}, density {density}");
        let keep = magnitude_keep(input, base, density, &mut Vec::new());
        if k >= n {
            assert_eq!(keep, Keep::All);
            return (false, false);
        }
        let want = exact(input, base, k, &mut Vec::new());
        same(keep, want, &what);
        let bracket = bracketed(input, base, k);
        if let Some(b) = bracket {
            same(b, want, &format!("bracketed, {what}"));
        }
        let radix_keep = radix(input, base, k);
        if let Some(r) = radix_keep {
            same(r, want, &format!("radix, {what}"));
        }
        let kept = (0..n).filter(|&j| keep.keeps(j, input[j] - base[j])).count();
        assert_eq!(kept, k, "exactly k entries survive, {what}");
        (bracket.is_some(), radix_keep.is_some())
    }

    #[test]
    fn fast_selections_match_the_sort_with_many_ties() {
        let (mut bracketed_used, mut radix_used) = (0, 0);
        for (n, levels, step) in [
            (10, 3, 0.5),
            (1000, 7, 0.01),
            (CHUNK * 3 + 17, 31, 1e-3),
            (300_001, 2, 1.0),
            (200_000, 1 << 20, 1e-9),
            (400_000, 4001, 1e-4),
        ] {
            let base = grid(1, n, levels, step);
            let input: Vec<f32> = base.iter().zip(grid(2, n, levels, step)).map(|(b, d)| b + d).collect();
            for density in [1e-6, 0.01, 0.3, 0.5, 0.77, 0.999] {
                let (b, r) = check(&input, &base, density);
                bracketed_used += usize::from(b);
                radix_used += usize::from(r);
            }
        }
        assert!(bracketed_used >= 10 && radix_used >= 20, "both fast paths were exercised ({bracketed_used}, {radix_used})");
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
        // Mostly unchanged entries in a large tensor: the bracket is crowded by zeros.
        let n = 300_000;
        let big_base = grid(5, n, 101, 0.01);
        let mut big: Vec<f32> = big_base.clone();
        for (j, v) in big.iter_mut().enumerate() {
            if j % 3 == 0 {
                *v += 0.001 * (j % 17) as f32;
            }
        }
        for density in [0.1, 0.33, 0.34, 0.5, 0.9] {
            check(&big, &big_base, density);
        }
    }

    #[test]
    fn bracket_scan_builds_agree() {
        let n = CHUNK + 77;
        let base = grid(7, n, 1001, 1e-3);
        let input: Vec<f32> = base.iter().zip(grid(8, n, 1001, 1e-3)).map(|(b, d)| b + d).collect();
        let bracket = Bracket { lo: 0.2f32.to_bits(), hi: 0.25f32.to_bits(), start: 5 };
        let plain = bracket.scan(&input, &base);
        let mut want = Vec::new();
        for j in 0..n {
            let key = magnitude_bits(input[j], base[j]);
            if key >= bracket.lo && key <= bracket.hi {
                want.push((5 + j as u64) << 32 | u64::from(key));
            }
        }
        assert!(!want.is_empty());
        assert_eq!(plain.inside, want);
        assert_eq!(plain.above, (0..n).filter(|&j| magnitude_bits(input[j], base[j]) > bracket.hi).count());
        #[cfg(target_arch = "x86_64")]
        if crate::methods::has_avx2() {
            // SAFETY: AVX2 is available.
            let fast = unsafe { bracket.scan_avx2(&input, &base) };
            assert_eq!((fast.above, fast.inside, fast.non_finite), (plain.above, plain.inside, plain.non_finite));
        }
    }

    #[test]
    fn non_finite_deltas_take_the_exact_path() {
        for n in [4000, 300_000] {
            let base = grid(3, n, 9, 0.1);
            let mut input: Vec<f32> = base.iter().zip(grid(4, n, 9, 0.1)).map(|(b, d)| b + d).collect();
            input[10] = f32::INFINITY;
            input[n / 2 + 1] = f32::NAN;
            input[n - 30] = f32::NEG_INFINITY;
            let k = magnitude_k(0.2, n);
            assert!(bracketed(&input, &base, k).is_none() && radix(&input, &base, k).is_none());
            assert_eq!(magnitude_keep(&input, &base, 0.2, &mut Vec::new()), exact(&input, &base, k, &mut Vec::new()));
        }
    }
}
