//! Fused element-wise steps of the forward pass for f32 on the CPU: `silu(gate) * up`, the RMS norm and the
//! attention softmax with its scale and additive mask, each one pass over memory with a vectorised `exp` (AVX2/FMA,
//! checked at run time; a scalar loop elsewhere). candle would take three to four passes and as many
//! buffers for each.

/// Elements per parallel task: large enough that scheduling costs nothing next to the work.
const CHUNK: usize = 1 << 14;

/// Runs `f(0..n)` on candle's CPU thread pool (the calling thread takes part), items handed out in order.
pub(crate) fn parallel_for(n: usize, f: impl Fn(usize) + Sync) {
    match n {
        0 => {}
        1 => f(0),
        _ => candle_core::utils::barrier_pool().execute_chunked(n, |range| range.for_each(&f)),
    }
}

/// A pointer that parallel tasks may share because each writes a disjoint part of what it points to.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub(crate) *mut f32);
// SAFETY: only used to hand disjoint output regions to parallel tasks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// `out[i] = silu(gate[i]) * up[i]` with `silu(x) = x / (1 + exp(-x))`.
pub(crate) fn silu_mul(gate: &[f32], up: &[f32]) -> Vec<f32> {
    assert_eq!(
        gate.len(),
        up.len(),
        "silu_mul: gate and up differ in length"
    );
    let len = gate.len();
    let mut out = vec![0f32; len];
    let dst = SendPtr(out.as_mut_ptr());
    parallel_for(len.div_ceil(CHUNK), |c| {
        let range = c * CHUNK..((c + 1) * CHUNK).min(len);
        // SAFETY: chunk `c` writes only its own range of `out`.
        let o = unsafe { std::slice::from_raw_parts_mut(dst.get().add(range.start), range.len()) };
        silu_mul_chunk(&gate[range.clone()], &up[range], o);
    });
    out
}

fn silu_mul_chunk(g: &[f32], u: &[f32], o: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked above); the slices have equal lengths.
        unsafe { avx2::silu_mul(g, u, o) };
        return;
    }
    for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// RMS norm of each row of `x` (`[rows, w.len()]`): `x * (1 / sqrt(mean(x^2) + eps)) * w`, rounded in that
/// order as the unfused operations do.
pub(crate) fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let h = w.len();
    assert!(
        h > 0 && x.len() % h == 0,
        "rms_norm: rows of {h} do not divide {}",
        x.len()
    );
    let rows = x.len() / h;
    let mut out = vec![0f32; x.len()];
    let dst = SendPtr(out.as_mut_ptr());
    let rows_per_task = (CHUNK / h).max(1);
    parallel_for(rows.div_ceil(rows_per_task), |task| {
        let range = task * rows_per_task..((task + 1) * rows_per_task).min(rows);
        for r in range {
            let row = &x[r * h..(r + 1) * h];
            // Eight running sums, so the loop vectorises.
            let mut acc = [0f32; 8];
            let mut chunks = row.chunks_exact(8);
            for c in &mut chunks {
                for (a, v) in acc.iter_mut().zip(c) {
                    *a += v * v;
                }
            }
            let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
            let mean = (acc.iter().sum::<f32>() + tail) / h as f32;
            let inv = 1.0 / (mean + eps).sqrt();
            // SAFETY: row `r` belongs to this task only.
            let o = unsafe { std::slice::from_raw_parts_mut(dst.get().add(r * h), h) };
            for ((o, &v), &w) in o.iter_mut().zip(row).zip(w) {
                *o = (v * inv) * w;
            }
        }
    });
    out
}

/// Softmax of one row after `row * scale + mask`, in place.
pub(crate) fn softmax_row(row: &mut [f32], scale: f32, mask: Option<&[f32]>) {
    // Scale and mask first, rounding as the separate operations would (multiply, then add).
    match mask {
        Some(m) => row
            .iter_mut()
            .zip(m)
            .for_each(|(v, &m)| *v = *v * scale + m),
        None => row.iter_mut().for_each(|v| *v *= scale),
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        let sum = unsafe { avx2::exp_sub_in_place(row, max) };
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
        return;
    }
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// Whether this CPU has AVX2 and FMA, which every vectorised kernel of the crate needs.
pub(crate) fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// `exp` on 8 lanes: `x = n ln 2 + r` with `|r| <= ln 2 / 2`, a degree-6 polynomial for `exp(r)` and
    /// `2^n` built in the exponent bits. Relative error about 2e-7 (a couple of ulp) over the whole range;
    /// below -87.3 the result is 0 (where f32 `exp` goes subnormal), above 88.72 it is +inf.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp8(x: __m256) -> __m256 {
        let hi = _mm256_set1_ps(88.722_84);
        let lo = _mm256_set1_ps(-87.336_55);
        let xc = _mm256_max_ps(_mm256_min_ps(x, hi), lo);
        let n = _mm256_round_ps(
            _mm256_mul_ps(xc, _mm256_set1_ps(std::f32::consts::LOG2_E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        // r = x - n ln2, with ln2 split in two for precision (Cody-Waite).
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), xc);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.398_199_9e-3));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.333_452e-3));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.166_579_6e-2));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.666_666_5e-1));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
        let r2 = _mm256_mul_ps(r, r);
        p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
        // 2^n for n in [-126, 128], as 2^(n/2) * 2^(n - n/2) so that both factors are normal numbers.
        let n_i = _mm256_cvtps_epi32(n);
        let half = _mm256_srai_epi32(n_i, 1);
        let rest = _mm256_sub_epi32(n_i, half);
        let bias = _mm256_set1_epi32(127);
        let pow_a = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, bias), 23));
        let pow_b = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(rest, bias), 23));
        let y = _mm256_mul_ps(_mm256_mul_ps(p, pow_a), pow_b);
        let y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
        _mm256_blendv_ps(
            y,
            _mm256_set1_ps(f32::INFINITY),
            _mm256_cmp_ps(x, hi, _CMP_GT_OQ),
        )
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn silu_mul(g: &[f32], u: &[f32], o: &mut [f32]) {
        let len = o.len().min(g.len()).min(u.len());
        let one = _mm256_set1_ps(1.0);
        let mut i = 0;
        while i + 8 <= len {
            let gv = _mm256_loadu_ps(g.as_ptr().add(i));
            let uv = _mm256_loadu_ps(u.as_ptr().add(i));
            let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv));
            let s = _mm256_div_ps(gv, _mm256_add_ps(one, e));
            _mm256_storeu_ps(o.as_mut_ptr().add(i), _mm256_mul_ps(s, uv));
            i += 8;
        }
        for j in i..len {
            o[j] = g[j] / (1.0 + (-g[j]).exp()) * u[j];
        }
    }

    /// `row[i] = exp(row[i] - max)`; returns the sum.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_sub_in_place(row: &mut [f32], max: f32) -> f32 {
        let m = _mm256_set1_ps(max);
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= row.len() {
            let p = row.as_mut_ptr().add(i);
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p), m));
            _mm256_storeu_ps(p, e);
            acc = _mm256_add_ps(acc, e);
            i += 8;
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        let mut sum: f32 = lanes.iter().sum();
        for v in &mut row[i..] {
            *v = (*v - max).exp();
            sum += *v;
        }
        sum
    }

    #[cfg(test)]
    pub(super) fn exp_slice(x: &[f32]) -> Vec<f32> {
        x.chunks(8)
            .flat_map(|c| {
                let mut lanes = [0f32; 8];
                lanes[..c.len()].copy_from_slice(c);
                // SAFETY: only called when the test has checked for AVX2/FMA.
                unsafe {
                    _mm256_storeu_ps(lanes.as_mut_ptr(), exp8(_mm256_loadu_ps(lanes.as_ptr())))
                };
                lanes[..c.len()].to_vec()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_exp_is_within_a_few_ulp() {
        #[cfg(target_arch = "x86_64")]
        if avx2_fma() {
            let xs: Vec<f32> = (-1970..=2000)
                .map(|i| i as f32 * 0.0443)
                .chain([-87.0, -86.9, 88.0, 88.5, 0.0])
                .collect();
            for (x, y) in xs.iter().zip(avx2::exp_slice(&xs)) {
                let want = (*x as f64).exp();
                let rel = ((y as f64 - want) / want).abs();
                assert!(rel < 5e-7, "exp({x}) = {y}, want {want} (rel {rel:e})");
            }
            let edge = avx2::exp_slice(&[-100.0, -88.0, 89.0, 100.0, f32::NEG_INFINITY]);
            assert_eq!(edge[0], 0.0);
            assert!(edge[1] >= 0.0 && edge[1] < 1e-37);
            assert_eq!(edge[2], f32::INFINITY);
            assert_eq!(edge[3], f32::INFINITY);
            assert_eq!(edge[4], 0.0);
        }
    }

    #[test]
    fn silu_mul_matches_the_definition() {
        let g: Vec<f32> = (0..1003).map(|i| (i as f32 - 500.0) * 0.037).collect();
        let u: Vec<f32> = (0..1003).map(|i| (i as f32 * 0.11).sin()).collect();
        for (i, v) in silu_mul(&g, &u).iter().enumerate() {
            let x = g[i] as f64;
            let want = x / (1.0 + (-x).exp()) * u[i] as f64;
            assert!(
                (*v as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{i}: {v} vs {want}"
            );
        }
    }

    #[test]
    fn rms_norm_matches_the_definition() {
        let h = 37;
        let x: Vec<f32> = (0..5 * h)
            .map(|i| ((i * 31) % 17) as f32 * 0.21 - 1.5)
            .collect();
        let w: Vec<f32> = (0..h).map(|i| 0.5 + i as f32 * 0.03).collect();
        let got = rms_norm(&x, &w, 1e-5);
        for r in 0..5 {
            let row = &x[r * h..(r + 1) * h];
            let mean: f64 = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / h as f64;
            let inv = 1.0 / (mean + 1e-5).sqrt();
            for j in 0..h {
                let want = row[j] as f64 * inv * w[j] as f64;
                assert!(
                    (got[r * h + j] as f64 - want).abs() < 1e-5,
                    "row {r} col {j}"
                );
            }
        }
    }

    #[test]
    fn softmax_row_applies_scale_and_mask() {
        for t in [1usize, 5, 8, 11, 40] {
            let scores: Vec<f32> = (0..t)
                .map(|i| ((i * 7919) % 23) as f32 * 0.3 - 3.0)
                .collect();
            let mask: Vec<f32> = (0..t)
                .map(|i| if i % 5 == 1 { f32::MIN } else { 0.0 })
                .collect();
            let mut got = scores.clone();
            softmax_row(&mut got, 0.125, Some(&mask));
            let z: Vec<f64> = (0..t)
                .map(|j| scores[j] as f64 * 0.125 + mask[j] as f64)
                .collect();
            let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
            for j in 0..t {
                let want = (z[j] - max).exp() / sum;
                assert!(
                    (got[j] as f64 - want).abs() < 1e-6,
                    "t {t} col {j}: {} vs {want}",
                    got[j]
                );
            }
        }
    }
}
