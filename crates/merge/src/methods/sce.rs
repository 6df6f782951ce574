//! `sce` (Select, Calculate, Erase: FuseChat-2.0, arXiv 2408.07990): keep the `select_topk`
//! fraction of entries where the task vectors vary most across models (of those that vary at all),
//! weight each task vector by its mean squared entry (normalized to sum 1), erase entries whose sign
//! disagrees with the elected (summed) sign, and add the weighted mean of the rest to the base.

use rayon::prelude::*;

use super::{need_base, par_sums, round_to, torch_topk_indices, BasePolicy, MergeMethod, ModelTensor, TensorContext, CHUNK};
use crate::params::{ParamDefault, ParamKind, ParamScope, ParamSet, ParamSpec};
use crate::sparsify::Keep;
use crate::MergeError;
use evomerge_checkpoint::Dtype;

pub struct Sce;

static PARAMS: [ParamSpec; 2] = [
    ParamSpec::new(
        "select_topk",
        ParamKind::Float { min: Some(0.0), max: Some(1.0) },
        ParamScope::Shared,
        ParamDefault::Float(1.0),
    ),
    ParamSpec::new("int8_mask", ParamKind::Bool, ParamScope::Shared, ParamDefault::Bool(false)),
];

/// Population variance across models of the task vectors at entry `j` (f64, as torch's CPU
/// reduction accumulates, rounded to f32).
#[inline]
fn variance(base: &[f32], inputs: &[ModelTensor], j: usize) -> f32 {
    let m = inputs.len() as f64;
    let mean = inputs.iter().map(|i| (i.data[j] - base[j]) as f64).sum::<f64>() / m;
    (inputs.iter().map(|i| ((i.data[j] - base[j]) as f64 - mean).powi(2)).sum::<f64>() / m) as f32
}

impl MergeMethod for Sce {
    fn name(&self) -> &'static str {
        "sce"
    }
    fn parameters(&self) -> &'static [ParamSpec] {
        &PARAMS
    }
    fn base_policy(&self) -> BasePolicy {
        BasePolicy::Required
    }
    fn input_bounds(&self) -> (usize, Option<usize>) {
        (1, None)
    }
    /// mergekit's half-precision arithmetic step by step (see [`rounded_sce`]).
    fn merge_rounded(
        &self,
        dtype: Dtype,
        ctx: &TensorContext,
        shared: &ParamSet,
        base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Option<Result<(), MergeError>> {
        let Some(base) = base else { return Some(Err(need_base(ctx, self.name()))) };
        rounded_sce(dtype, shared.float("select_topk").unwrap_or(1.0), base, inputs, out);
        Some(Ok(()))
    }
    fn merge(
        &self,
        ctx: &TensorContext,
        shared: &ParamSet,
        base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Result<(), MergeError> {
        let base = base.ok_or_else(|| need_base(ctx, self.name()))?;
        if inputs.is_empty() {
            out.copy_from_slice(base);
            return Ok(());
        }
        let n = base.len();
        let m = inputs.len();
        let density = shared.float("select_topk").unwrap_or(1.0);

        // Select: the top k by variance, k = ⌊nonzero · density⌋ (f32, as mergekit's tensor product).
        let mut var = Vec::new();
        let select = if density >= 1.0 {
            Keep::All
        } else if density <= 0.0 {
            Keep::None
        } else {
            var = (0..n).into_par_iter().with_min_len(CHUNK).map(|j| variance(base, inputs, j)).collect();
            let nonzero = var.iter().filter(|v| **v != 0.0).count();
            let k = (nonzero as f32 * density as f32) as usize;
            if k == 0 {
                Keep::None
            } else if k >= n {
                Keep::All
            } else {
                let zeros = vec![0f32; n];
                crate::select::top_k(&var, &zeros, k, &mut Vec::new())
            }
        };
        let kept = |j: usize| select.keeps(j, var.get(j).copied().unwrap_or(0.0));
        // Task vector i at entry j after selection.
        let tv = |i: usize, j: usize, keep: bool| if keep { inputs[i].data[j] - base[j] } else { 0.0 };

        // Calculate: weights from the mean squared (selected) entries.
        let squares: Vec<f64> = (0..m)
            .map(|i| {
                par_sums::<1>(n, |range, s| {
                    for j in range {
                        let v = tv(i, j, kept(j)) as f64;
                        s[0] += v * v;
                    }
                })[0]
            })
            .collect();
        let raw: Vec<f32> = squares.iter().map(|s| (s / n as f64) as f32).collect();
        let total: f32 = raw.iter().sum();
        let weights: Vec<f32> = if (total as f64).abs() < 1e-6 {
            vec![1.0 / m as f32; m]
        } else {
            raw.iter().map(|w| w / total).collect()
        };

        // Erase and merge.
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
            let mut values = vec![0f32; m];
            for (o, j) in chunk.iter_mut().zip(c * CHUNK..) {
                let keep = kept(j);
                let mut sum = 0f32;
                for (i, v) in values.iter_mut().enumerate() {
                    *v = tv(i, j, keep);
                    sum += *v;
                }
                let elected = if sum >= 0.0 { 1.0 } else { -1.0 };
                let (mut merged, mut divisor) = (0f32, 0f32);
                for (&v, &w) in values.iter().zip(&weights) {
                    let agree = sign(v) == elected;
                    let ew = if agree { w } else { 0.0 };
                    merged += v * ew;
                    divisor += ew;
                }
                *o = base[j] + merged / divisor.max(1e-6);
            }
        });
        Ok(())
    }
}

#[inline(always)]
fn sign(x: f32) -> f32 {
    ((x > 0.0) as i32 - (x < 0.0) as i32) as f32
}

/// `sce` as mergekit computes it on half-precision tensors: task vectors, squares, products and
/// quotients rounded to `dtype` per operation; reductions (variance, means, sums over models)
/// accumulated wide and rounded once, as torch's f32 accumulators are; the selection is
/// `torch.topk`'s own (its choice among tied variances depends on the algorithm).
fn rounded_sce(dtype: Dtype, density: f64, base: &[f32], inputs: &[ModelTensor], out: &mut [f32]) {
    let r = |v: f32| round_to(dtype, v);
    let (n, m) = (base.len(), inputs.len());
    if m == 0 {
        out.copy_from_slice(base);
        return;
    }
    let mut tvs: Vec<Vec<f32>> = inputs.iter().map(|i| i.data.iter().zip(base).map(|(&x, &b)| r(x - b)).collect()).collect();
    if density < 1.0 {
        let mut keep = vec![false; n];
        if density > 0.0 {
            let var: Vec<f32> = (0..n)
                .map(|j| {
                    let mean = tvs.iter().map(|t| t[j] as f64).sum::<f64>() / m as f64;
                    r((tvs.iter().map(|t| (t[j] as f64 - mean).powi(2)).sum::<f64>() / m as f64) as f32)
                })
                .collect();
            let nonzero = var.iter().filter(|v| **v != 0.0).count();
            // int(count_nonzero · density): an int64 tensor times a Python float is f32.
            let k = (nonzero as f32 * density as f32) as usize;
            for i in torch_topk_indices(&var, k) {
                keep[i as usize] = true;
            }
        }
        for t in tvs.iter_mut() {
            for (v, &kept) in t.iter_mut().zip(&keep) {
                if !kept {
                    *v *= 0.0;
                }
            }
        }
    }
    // Weights: mean of the rounded squares, normalized by their (rounded) sum.
    let raw: Vec<f32> = tvs.iter().map(|t| r((t.iter().map(|&v| r(v * v) as f64).sum::<f64>() / n as f64) as f32)).collect();
    let total = r(raw.iter().sum::<f32>());
    let weights: Vec<f32> =
        if (total as f64).abs() < 1e-6 { vec![r(1.0 / m as f32); m] } else { raw.iter().map(|&w| r(w / total)).collect() };
    let floor = r(1e-6);
    for (j, o) in out.iter_mut().enumerate() {
        let elected = if tvs.iter().map(|t| t[j]).sum::<f32>() >= 0.0 { 1.0 } else { -1.0 };
        let (mut merged, mut divisor) = (0f32, 0f32);
        for (t, &w) in tvs.iter().zip(&weights) {
            let ew = if sign(t[j]) == elected { w } else { 0.0 };
            merged += r(t[j] * ew);
            divisor += ew;
        }
        *o = r(base[j] + r(r(merged) / r(divisor).max(floor)));
    }
}
