//! `arcee_fusion` (Arcee Fusion, arcee.ai): take the other model's value only where it matters.
//! Importance of an entry is `|x − base|` times the KL divergence between the softmaxes (over the
//! last dimension) of the model's and the base's row holding it; entries whose importance reaches
//! `median + 1.5·(q3 − q1)` of the tensor's importances take the model's value, the rest keep the
//! base's. mergekit estimates the quartiles from a random sample of 1M entries on larger tensors;
//! we take them over all entries (deterministic; what the sample estimates).
//!
//! Not bit-exact with mergekit: the KL divergence of two nearly equal softmaxes is a sum of
//! terms that mostly cancel, so torch's f32 result (its own vectorized `exp` and summation order)
//! carries a relative error around 1e-4; ours sums in f64. Entries whose importance lies that close
//! to the threshold can take the other side (measured in tests/parity.rs: `arcee_fusion_*`).

use rayon::prelude::*;

use super::{need_base, BasePolicy, MergeMethod, ModelTensor, TensorContext, CHUNK};
use crate::params::{ParamSet, ParamSpec};
use crate::MergeError;
use evomerge_checkpoint::Dtype;

use super::round_to;

pub struct ArceeFusion;

/// Softmax of one row plus mergekit's 1e-8 (torch's order: subtract the max, exponentiate, scale by
/// the reciprocal of the sum).
fn softmax(row: &[f32], out: &mut Vec<f32>) {
    softmax_plain(row, out);
    for e in out.iter_mut() {
        *e += 1e-8;
    }
}

/// The softmax alone (f32).
fn softmax_plain(row: &[f32], out: &mut Vec<f32>) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    out.clear();
    out.extend(row.iter().map(|&x| (x - max).exp()));
    let sum = out.iter().map(|&e| e as f64).sum::<f64>() as f32;
    let inv = 1.0 / sum;
    for e in out.iter_mut() {
        *e *= inv;
    }
}

/// Value at `index` of the ascending order of `values` (reordering them).
fn order_stat(values: &mut [f32], index: usize) -> f32 {
    *values.select_nth_unstable_by(index, f32::total_cmp).1
}

impl MergeMethod for ArceeFusion {
    fn name(&self) -> &'static str {
        "arcee_fusion"
    }
    fn parameters(&self) -> &'static [ParamSpec] {
        &[]
    }
    fn base_policy(&self) -> BasePolicy {
        BasePolicy::Required
    }
    fn input_bounds(&self) -> (usize, Option<usize>) {
        (2, Some(2))
    }
    /// mergekit's half-precision arithmetic (see [`rounded_fusion`]).
    fn merge_rounded(
        &self,
        dtype: Dtype,
        ctx: &TensorContext,
        _shared: &ParamSet,
        base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Option<Result<(), MergeError>> {
        let (Some(base), Some(other)) = (base, inputs.first()) else { return Some(Err(need_base(ctx, self.name()))) };
        rounded_fusion(dtype, ctx.shape.last().copied().unwrap_or(1).max(1), base, other.data, out);
        Some(Ok(()))
    }
    fn merge(
        &self,
        ctx: &TensorContext,
        _shared: &ParamSet,
        base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Result<(), MergeError> {
        let (Some(base), Some(other)) = (base, inputs.first()) else { return Err(need_base(ctx, self.name())) };
        let x = other.data;
        let n = base.len();
        if n == 0 {
            return Ok(());
        }
        let width = ctx.shape.last().copied().unwrap_or(1).max(1);

        // Importance, row by row (the KL divergence is per row).
        let mut importance = vec![0f32; n];
        importance.par_chunks_mut(width).enumerate().for_each_init(
            || (Vec::new(), Vec::new()),
            |(p, q), (r, imp)| {
                let range = r * width..r * width + imp.len();
                softmax(&x[range.clone()], p);
                softmax(&base[range.clone()], q);
                let kl = p.iter().zip(q.iter()).map(|(&p, &q)| (p * (p / q).ln()) as f64).sum::<f64>() as f32;
                for ((v, &a), &b) in imp.iter_mut().zip(&base[range.clone()]).zip(&x[range]) {
                    *v = (b - a).abs() * kl;
                }
            },
        );

        // Quartile positions as mergekit computes them: ⌊q·(n−1)⌋ with q·(n−1) in f32.
        let position = |q: f32| (q * (n - 1) as f32) as usize;
        let (i1, i2, i3) = (position(0.25), position(0.5), position(0.75));
        let mut sorted = importance.clone();
        let q1 = order_stat(&mut sorted, i1);
        // After selecting i1 everything above it is no smaller, so later selections search there.
        let median = order_stat(&mut sorted[i1..], i2 - i1);
        let q3 = order_stat(&mut sorted[i2..], i3 - i2);
        let threshold = median + 1.5 * (q3 - q1);

        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
            let start = c * CHUNK;
            for (k, o) in chunk.iter_mut().enumerate() {
                let j = start + k;
                let mask = (importance[j] >= threshold) as u8 as f32;
                *o = base[j] + (x[j] - base[j]) * mask;
            }
        });
        Ok(())
    }
}

/// `arcee_fusion` as mergekit computes it on half-precision tensors: softmaxes (computed in f32
/// by torch) rounded to `dtype`, each elementwise step of the KL divergence and the importance
/// rounded, the row sums accumulated wide and rounded once; the quartiles are order statistics
/// of the rounded importances (over all entries: mergekit samples 1M entries of larger tensors)
/// and the threshold is computed in the dtype. The f32 mask promotes the blend to f32.
fn rounded_fusion(dtype: Dtype, width: usize, base: &[f32], x: &[f32], out: &mut [f32]) {
    let r = |v: f32| round_to(dtype, v);
    let n = base.len();
    if n == 0 {
        return;
    }
    let eps = 1e-8f32;
    let mut importance = vec![0f32; n];
    let (mut p, mut q) = (Vec::new(), Vec::new());
    for (row, imp) in importance.chunks_mut(width).enumerate() {
        let range = row * width..row * width + imp.len();
        softmax_plain(&x[range.clone()], &mut p);
        softmax_plain(&base[range.clone()], &mut q);
        let kl = r(p
            .iter()
            .zip(&q)
            .map(|(&p, &q)| {
                let (p, q) = (r(r(p) + eps), r(r(q) + eps));
                r(p * r(r(p / q).ln())) as f64
            })
            .sum::<f64>() as f32);
        for ((v, &a), &b) in imp.iter_mut().zip(&base[range.clone()]).zip(&x[range]) {
            *v = r(r(b - a).abs() * kl);
        }
    }
    let position = |q: f32| (q * (n - 1) as f32) as usize;
    let mut sorted = importance.clone();
    sorted.sort_unstable_by(f32::total_cmp);
    let (q1, median, q3) = (sorted[position(0.25)], sorted[position(0.5)], sorted[position(0.75)]);
    let threshold = r(median + r(1.5 * r(q3 - q1)));
    for (j, o) in out.iter_mut().enumerate() {
        let mask = (importance[j] >= threshold) as u8 as f32;
        *o = base[j] + r(x[j] - base[j]) * mask;
    }
}
