//! f32 products `x @ w.T` on the CPU against weights packed once, at load time.
//!
//! A general GEMM (what candle calls) repacks the weight matrix on every call. The weights of a model are
//! constant between candidates, so we pack each one once into column panels of [`NR`] output features,
//! `[k][NR]` in memory, and the per-call work is only the arithmetic: an AVX2/FMA micro-kernel computing
//! [`MR`] rows × [`NR`] columns, cache-blocked over `k` and rows. The activations are copied once per call
//! into [`MR`]-row groups (read in place when there are only a few rows, as in decoding). Used where the CPU has AVX2 and FMA (checked at run time); elsewhere the model keeps
//! candle's matmul.
//!
//! Work runs on candle's own CPU thread pool (the calling thread takes part), not on a second pool: on a
//! machine with few cores, two pools' idle threads spinning against each other's work cost more than the
//! kernels gain.

use crate::cpu_ops::{parallel_for, SendPtr};

/// Output features per packed panel (two 8-lane vectors).
pub(crate) const NR: usize = 16;
/// Rows per micro-kernel call: 6 × 2 accumulators + 2 weight vectors + 1 broadcast fit the 16 AVX registers.
const MR: usize = 6;
/// Inner-dimension block: one panel's block (`KC × NR` f32 = 16 KiB) stays in L1 while the kernel sweeps rows.
const KC: usize = 256;
/// Largest row block: `MC × KC` activations (72 KiB) stay in L2 across the panels of a tile.
const MC: usize = 72;
/// Panels per tile (columns `NB × NR`).
const NB: usize = 16;

/// A `[n, k]` weight matrix (`n` output features, `k` inputs) stored as `ceil(n / NR)` panels of `[k][NR]`;
/// the last panel is padded with zero rows.
#[derive(Debug, Clone)]
pub(crate) struct PackedMatrix {
    n: usize,
    k: usize,
    panels: Vec<f32>,
}

impl PackedMatrix {
    /// Packs a row-major `[n, k]` matrix, on the calling thread (attention packs inside parallel tasks).
    pub fn pack(w: &[f32], n: usize, k: usize) -> PackedMatrix {
        // Padding lanes of the last panel stay zero for good: `fill` never writes them.
        let mut m = PackedMatrix {
            n,
            k,
            panels: vec![0f32; n.div_ceil(NR) * k * NR],
        };
        m.fill(w, false);
        m
    }

    /// Packs a row-major matrix of this one's shape `[n, k]` into the existing panels, so a live model
    /// takes new weights without allocating. Spread over candle's CPU pool: not for use inside a parallel
    /// task (the pool does not nest).
    pub fn repack_from(&mut self, w: &[f32]) {
        self.fill(w, true)
    }

    fn fill(&mut self, w: &[f32], parallel: bool) {
        let (n, k) = (self.n, self.k);
        assert_eq!(
            w.len(),
            n * k,
            "packed matrix: data does not match its shape"
        );
        if k == 0 {
            return;
        }
        let dst = SendPtr(self.panels.as_mut_ptr());
        let fill_panel = |p: usize| {
            // SAFETY: task `p` writes only panel `p`, `[p * k * NR, (p + 1) * k * NR)` of the panels.
            let panel =
                unsafe { std::slice::from_raw_parts_mut(dst.get().add(p * k * NR), k * NR) };
            for j in 0..NR.min(n - p * NR) {
                let row = &w[(p * NR + j) * k..(p * NR + j + 1) * k];
                for (kk, &v) in row.iter().enumerate() {
                    panel[kk * NR + j] = v;
                }
            }
        };
        if parallel {
            parallel_for(n.div_ceil(NR), fill_panel);
        } else {
            (0..n.div_ceil(NR)).for_each(fill_panel);
        }
    }

    /// The address of the packed panels (the same before and after [`PackedMatrix::repack_from`]).
    pub fn data_addr(&self) -> usize {
        self.panels.as_ptr() as usize
    }

    /// Packs the `[n, k]` matrix whose transpose `wt` (`[k, n]`, row-major) is given, e.g. attention values
    /// `[t, head_dim]` for `probs @ v`.
    pub fn pack_transposed(wt: &[f32], k: usize, n: usize) -> PackedMatrix {
        assert_eq!(
            wt.len(),
            n * k,
            "packed matrix: data does not match its shape"
        );
        let mut panels = vec![0f32; n.div_ceil(NR) * k * NR];
        for (p, panel) in panels.chunks_mut(k * NR).enumerate() {
            let cols = NR.min(n - p * NR);
            for kk in 0..k {
                panel[kk * NR..kk * NR + cols]
                    .copy_from_slice(&wt[kk * n + p * NR..kk * n + p * NR + cols]);
            }
        }
        PackedMatrix { n, k, panels }
    }

    /// The row-major `[n, k]` matrix back.
    pub fn unpack(&self) -> Vec<f32> {
        let (n, k) = (self.n, self.k);
        let mut w = vec![0f32; n * k];
        for (row, out) in w.chunks_mut(k.max(1)).enumerate().take(n) {
            let panel = &self.panels[(row / NR) * k * NR..];
            for (kk, v) in out.iter_mut().enumerate() {
                *v = panel[kk * NR + row % NR];
            }
        }
        w
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// `out[m, n] = sum_k x[m, k] * w[n, k]` for row-major `x` `[m, k]`; `out` is `[m, n]`, overwritten.
    /// Spread over candle's CPU thread pool (the model goes through [`matmul_t_many`]).
    #[cfg(test)]
    pub fn matmul_t(&self, x: &[f32], m: usize, out: &mut [f32]) {
        self.run(x, m, out, true)
    }

    /// [`PackedMatrix::matmul_t`] on the calling thread only (for use inside a parallel task).
    pub fn matmul_t_serial(&self, x: &[f32], m: usize, out: &mut [f32]) {
        self.run(x, m, out, false)
    }

    fn run(&self, x: &[f32], m: usize, out: &mut [f32], parallel: bool) {
        matmul_t_many(&[self], x, m, &mut [out], parallel)
    }

    /// One output tile: rows `rows` (starting at a multiple of MR), panels `panels`, the whole inner dimension.
    unsafe fn tile(
        &self,
        x: &[f32],
        packed_rows: Option<&[f32]>,
        rows: std::ops::Range<usize>,
        panels: std::ops::Range<usize>,
        out: *mut f32,
    ) {
        let (n, k) = (self.n, self.k);
        let mut pc = 0;
        while pc < k {
            let kc = KC.min(k - pc);
            for p in panels.clone() {
                let cols = NR.min(n - p * NR);
                let b = self.panels.as_ptr().add(p * k * NR + pc * NR);
                let mut r = rows.start;
                while r < rows.end {
                    let mr = MR.min(rows.end - r);
                    let (a, row_stride, k_stride) = match packed_rows {
                        Some(packed) => (packed.as_ptr().add((r / MR) * k * MR + pc * MR), 1, MR),
                        None => (x.as_ptr().add(r * k + pc), k, 1),
                    };
                    let c = out.add(r * n + p * NR);
                    kernel(mr, kc, a, row_stride, k_stride, b, c, n, cols, pc > 0);
                    r += mr;
                }
            }
            pc += kc;
        }
    }
}

/// [`PackedMatrix::matmul_t`] of one input against several matrices with the same inner dimension (a
/// layer's q, k and v projections; gate and up): the input is packed once and all tiles share one parallel
/// run. `outs[i]` is `[m, n_i]`, overwritten.
pub(crate) fn matmul_t_many(
    mats: &[&PackedMatrix],
    x: &[f32],
    m: usize,
    outs: &mut [&mut [f32]],
    parallel: bool,
) {
    assert_eq!(
        mats.len(),
        outs.len(),
        "packed matmul: one output per matrix"
    );
    let Some(k) = mats.first().map(|w| w.k) else {
        return;
    };
    assert_eq!(x.len(), m * k, "packed matmul: input does not match [m, k]");
    for (w, out) in mats.iter().zip(outs.iter()) {
        assert_eq!(
            w.k, k,
            "packed matmul: matrices differ in their inner dimension"
        );
        assert_eq!(
            out.len(),
            m * w.n,
            "packed matmul: output does not match [m, n]"
        );
    }
    if m == 0 {
        return;
    }
    if k == 0 {
        outs.iter_mut().for_each(|o| o.fill(0.0));
        return;
    }
    let threads = if parallel {
        candle_core::utils::get_num_threads()
    } else {
        1
    };
    // More than one micro-kernel's rows: copy the activations once into `[k][MR]` groups so the kernel
    // reads a single stream; a few rows (decoding) are read in place.
    let packed_rows = (m > MR).then(|| pack_rows(x, m, k, parallel));
    let tilings: Vec<Tiling> = mats.iter().map(|w| Tiling::new(m, w.n, threads)).collect();
    let jobs: Vec<(usize, usize)> = tilings
        .iter()
        .enumerate()
        .flat_map(|(i, t)| (0..t.count()).map(move |j| (i, j)))
        .collect();
    let out_ptrs: Vec<SendPtr> = outs.iter_mut().map(|o| SendPtr(o.as_mut_ptr())).collect();
    let run_job = |job: usize| {
        let (i, t) = jobs[job];
        let (rows, panels) = tilings[i].tile(t);
        // SAFETY: the tiles of one matrix cover disjoint blocks of its own output, so no two tasks write the
        // same element; every pointer stays within `x`, the packed rows, the outputs and the panels (checked
        // by the asserts above and the tiling).
        unsafe { mats[i].tile(x, packed_rows.as_deref(), rows, panels, out_ptrs[i].get()) };
    };
    if parallel {
        parallel_for(jobs.len(), run_job);
    } else {
        (0..jobs.len()).for_each(run_job);
    }
}

/// `x` (`[m, k]`) as groups of MR rows, each laid out `[k][MR]` (a short last group is zero-padded).
fn pack_rows(x: &[f32], m: usize, k: usize, parallel: bool) -> Vec<f32> {
    let groups = m.div_ceil(MR);
    let mut packed = vec![0f32; groups * MR * k];
    let dst = SendPtr(packed.as_mut_ptr());
    let pack_group = |g: usize| {
        // SAFETY: each task writes only its own group, `[g * MR * k, (g + 1) * MR * k)`.
        let group = unsafe { std::slice::from_raw_parts_mut(dst.get().add(g * MR * k), MR * k) };
        for i in 0..MR.min(m - g * MR) {
            let src = &x[(g * MR + i) * k..(g * MR + i + 1) * k];
            for (p, &v) in src.iter().enumerate() {
                group[p * MR + i] = v;
            }
        }
    };
    if parallel {
        parallel_for(groups, pack_group);
    } else {
        (0..groups).for_each(pack_group);
    }
    packed
}

/// How the `[m, n]` output is cut into tiles of at most `MC` rows × `NB` panels, with enough tiles to keep
/// every thread busy when the matrix allows it.
struct Tiling {
    row_block: usize,
    row_blocks: usize,
    panel_block: usize,
    panel_blocks: usize,
    m: usize,
    num_panels: usize,
}

impl Tiling {
    fn new(m: usize, n: usize, threads: usize) -> Tiling {
        let num_panels = n.div_ceil(NR);
        // Equal row blocks, each a multiple of MR, none above MC.
        let row_blocks = m.div_ceil(MC);
        let row_block = m.div_ceil(row_blocks).div_ceil(MR) * MR;
        let row_blocks = m.div_ceil(row_block);
        // Enough column blocks that there are at least ~4 tiles per thread (small m: decoding).
        let wanted = (8 * threads).div_ceil(row_blocks).max(1);
        let panel_block = num_panels.div_ceil(wanted).clamp(1, NB);
        let panel_blocks = num_panels.div_ceil(panel_block);
        Tiling {
            row_block,
            row_blocks,
            panel_block,
            panel_blocks,
            m,
            num_panels,
        }
    }

    fn count(&self) -> usize {
        self.row_blocks * self.panel_blocks
    }

    /// Tile `t`, in panel-block-major order: threads taking consecutive tiles work on the same weight panels
    /// (different rows) at the same time, so each panel comes from memory once and is shared through L3.
    fn tile(&self, t: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let (pb, rb) = (t / self.row_blocks, t % self.row_blocks);
        let rows = rb * self.row_block..((rb + 1) * self.row_block).min(self.m);
        let panels = pb * self.panel_block..((pb + 1) * self.panel_block).min(self.num_panels);
        (rows, panels)
    }
}

/// `mr` rows (≤ MR) × one panel over `kc` inputs:
/// `c[r, j] (+)= sum_p a[r * row_stride + p * k_stride] * b[p * NR + j]` for `j < cols`.
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn kernel(
    mr: usize,
    kc: usize,
    a: *const f32,
    row_stride: usize,
    k_stride: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    {
        use avx2::kernel as k;
        match mr {
            6 => k::<6>(kc, a, row_stride, k_stride, b, c, ldc, cols, accumulate),
            5 => k::<5>(kc, a, row_stride, k_stride, b, c, ldc, cols, accumulate),
            4 => k::<4>(kc, a, row_stride, k_stride, b, c, ldc, cols, accumulate),
            3 => k::<3>(kc, a, row_stride, k_stride, b, c, ldc, cols, accumulate),
            2 => k::<2>(kc, a, row_stride, k_stride, b, c, ldc, cols, accumulate),
            _ => k::<1>(kc, a, row_stride, k_stride, b, c, ldc, cols, accumulate),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // Never reached: `cpu_ops::avx2_fma()` is false here, so no matrix is packed. A plain loop keeps it correct.
        for r in 0..mr {
            for j in 0..cols {
                let mut s = 0f32;
                for p in 0..kc {
                    s += *a.add(r * row_stride + p * k_stride) * *b.add(p * NR + j);
                }
                let dst = c.add(r * ldc + j);
                *dst = if accumulate { *dst + s } else { s };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::NR;

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn kernel<const R: usize>(
        kc: usize,
        a: *const f32,
        row_stride: usize,
        k_stride: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        accumulate: bool,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for p in 0..kc {
            let b0 = _mm256_loadu_ps(b.add(p * NR));
            let b1 = _mm256_loadu_ps(b.add(p * NR + 8));
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*a.add(r * row_stride + p * k_stride));
                acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let dst = c.add(r * ldc);
            if cols == NR {
                let (mut lo, mut hi) = (acc[0], acc[1]);
                if accumulate {
                    lo = _mm256_add_ps(lo, _mm256_loadu_ps(dst));
                    hi = _mm256_add_ps(hi, _mm256_loadu_ps(dst.add(8)));
                }
                _mm256_storeu_ps(dst, lo);
                _mm256_storeu_ps(dst.add(8), hi);
            } else {
                let mut tmp = [0f32; NR];
                _mm256_storeu_ps(tmp.as_mut_ptr(), acc[0]);
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8), acc[1]);
                for (j, v) in tmp.iter().enumerate().take(cols) {
                    let d = dst.add(j);
                    *d = if accumulate { *d + v } else { *v };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0f64;
                for p in 0..k {
                    s += x[i * k + p] as f64 * w[j * k + p] as f64;
                }
                out[i * n + j] = s as f32;
            }
        }
        out
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    #[test]
    fn matches_a_plain_product_for_ragged_shapes() {
        if !crate::cpu_ops::avx2_fma() {
            eprintln!("no AVX2/FMA: the packed kernels are not used on this CPU");
            return;
        }
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 16, 8),
            (5, 17, 3),
            (6, 15, 256),
            (7, 33, 257),
            (13, 40, 600),
            (72, 16, 64),
            (73, 48, 512),
            (150, 257, 100),
            (3, 300, 1030),
        ] {
            let x = values(m * k, (m * 31 + n) as u64);
            let w = values(n * k, (k * 17 + 3) as u64);
            let packed = PackedMatrix::pack(&w, n, k);
            let mut out = vec![f32::NAN; m * n];
            packed.matmul_t(&x, m, &mut out);
            let expected = reference(&x, &w, m, n, k);
            let mut serial = vec![f32::NAN; m * n];
            packed.matmul_t_serial(&x, m, &mut serial);
            assert_eq!(out, serial, "serial and parallel runs differ");
            let wt: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
            assert_eq!(PackedMatrix::pack_transposed(&wt, k, n).unpack(), w);
            let worst = out
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst <= 1e-5 * (k as f32).sqrt(),
                "m={m} n={n} k={k}: max diff {worst}"
            );
        }
    }

    #[test]
    fn unpack_returns_the_packed_matrix() {
        for &(n, k) in &[(1, 1), (15, 7), (16, 3), (17, 9), (40, 1)] {
            let w = values(n * k, (n + k) as u64);
            assert_eq!(PackedMatrix::pack(&w, n, k).unpack(), w, "n={n} k={k}");
        }
    }

    #[test]
    fn repacking_in_place_equals_packing_afresh() {
        for &(n, k) in &[(1, 1), (15, 7), (16, 3), (17, 9), (40, 300)] {
            let mut m = PackedMatrix::pack(&values(n * k, 1), n, k);
            let addr = m.data_addr();
            let w = values(n * k, 2);
            m.repack_from(&w);
            assert_eq!(m.data_addr(), addr, "n={n} k={k}: the panels moved");
            assert_eq!(m.panels, PackedMatrix::pack(&w, n, k).panels, "n={n} k={k}");
        }
    }

    #[test]
    fn tiles_cover_the_output_once() {
        for &(m, n, threads) in &[
            (1, 16, 2),
            (128, 768, 2),
            (2048, 256, 2),
            (16, 32000, 16),
            (7, 5, 1),
        ] {
            let t = Tiling::new(m, n, threads);
            let mut seen = vec![0u8; m * n.div_ceil(NR)];
            for i in 0..t.count() {
                let (rows, panels) = t.tile(i);
                assert!(rows.len() <= MC.max(MR) && panels.len() <= NB);
                for r in rows {
                    for p in panels.clone() {
                        seen[r * n.div_ceil(NR) + p] += 1;
                    }
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "m={m} n={n}");
        }
    }
}
