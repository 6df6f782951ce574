//! `model_stock` (Model Stock, arXiv 2403.19522): interpolate between the base and the average of
//! the fine-tuned models by `t = k·cos / (1 + (k − 1)·cos)`, with `cos` the mean pairwise cosine of
//! their offsets from the base (k models). `filter_wise: true` computes one `t` per row (last
//! dimension) instead of one per tensor. Where `1 + (k − 1)·cos` is 0 the base is kept.

use rayon::prelude::*;

use super::{need_base, round_to, BasePolicy, MergeMethod, ModelTensor, TensorContext, CHUNK};
use crate::params::{ParamDefault, ParamKind, ParamScope, ParamSet, ParamSpec};
use crate::MergeError;

pub struct ModelStock;

static PARAMS: [ParamSpec; 1] =
    [ParamSpec::new("filter_wise", ParamKind::Bool, ParamScope::Shared, ParamDefault::Bool(false))];

/// `t` for one vector (the whole tensor or one row) given its offsets' norms and pairwise dots,
/// in mergekit's f32 operations.
fn interpolation(norms: &[f32], dots: &[Vec<f64>]) -> f32 {
    let k = norms.len();
    let mut cos_sum = 0f32;
    let mut pairs = 0usize;
    for a in 0..k {
        for b in a + 1..k {
            let product = (norms[a] * norms[b]).max(1e-6);
            cos_sum += (dots[a][b] as f32 / product).clamp(-1.0, 1.0);
            pairs += 1;
        }
    }
    let cos = cos_sum / pairs as f32;
    let denominator = 1.0 + (k - 1) as f32 * cos;
    if denominator.abs() < 1e-6 {
        0.0
    } else {
        (k as f32 * cos) / denominator
    }
}

/// Squared norms and pairwise dots (upper triangle) of the offsets `x_i − base` over `range`.
fn statistics(base: &[f32], inputs: &[ModelTensor], range: std::ops::Range<usize>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let k = inputs.len();
    let mut sq = vec![0f64; k];
    let mut dots = vec![vec![0f64; k]; k];
    let mut offsets = vec![0f32; k];
    for j in range {
        for (o, input) in offsets.iter_mut().zip(inputs) {
            *o = input.data[j] - base[j];
        }
        for a in 0..k {
            sq[a] += (offsets[a] as f64) * (offsets[a] as f64);
            for b in a + 1..k {
                dots[a][b] += (offsets[a] * offsets[b]) as f64;
            }
        }
    }
    (sq, dots)
}

fn norms(sq: Vec<f64>) -> Vec<f32> {
    sq.into_iter().map(|s| s.sqrt() as f32).collect()
}

impl MergeMethod for ModelStock {
    fn name(&self) -> &'static str {
        "model_stock"
    }
    fn parameters(&self) -> &'static [ParamSpec] {
        &PARAMS
    }
    fn base_policy(&self) -> BasePolicy {
        BasePolicy::Required
    }
    fn input_bounds(&self) -> (usize, Option<usize>) {
        (3, None)
    }
    /// mergekit's half-precision arithmetic step by step; its reductions (norms, dots, sums) run
    /// in f64 here and are rounded once to the dtype, as torch rounds its f32 accumulators.
    fn merge_rounded(
        &self,
        dtype: evomerge_checkpoint::Dtype,
        ctx: &TensorContext,
        shared: &ParamSet,
        base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Option<Result<(), MergeError>> {
        let Some(base) = base else { return Some(Err(need_base(ctx, self.name()))) };
        let r = |v: f32| round_to(dtype, v);
        let filter_wise = shared.bool("filter_wise").unwrap_or(false);
        let n = base.len();
        let row = if filter_wise { ctx.shape.last().copied().unwrap_or(n).max(1) } else { n.max(1) };
        let k = inputs.len();
        out.par_chunks_mut(row).enumerate().for_each(|(row_index, chunk)| {
            let start = row_index * row;
            let range = start..start + chunk.len();
            let offset = |i: usize, j: usize| r(inputs[i].data[j] - base[j]);
            let norms: Vec<f32> = (0..k)
                .map(|i| r(range.clone().map(|j| (offset(i, j) as f64).powi(2)).sum::<f64>().sqrt() as f32))
                .collect();
            let mut cos_sum = 0f32;
            let mut pairs = 0usize;
            for a in 0..k {
                for b in a + 1..k {
                    let dot = r(range.clone().map(|j| r(offset(a, j) * offset(b, j)) as f64).sum::<f64>() as f32);
                    let product = r(norms[a] * norms[b]).max(r(1e-6));
                    cos_sum += r(dot / product).clamp(-1.0, 1.0);
                    pairs += 1;
                }
            }
            let cos = r(cos_sum / pairs as f32);
            let denominator = r(1.0 + r((k - 1) as f32 * cos));
            let t = if denominator.abs() < 1e-6 { 0.0 } else { r(r(k as f32 * cos) / denominator) };
            let keep = r(1.0 - t);
            for (o, j) in chunk.iter_mut().zip(range) {
                // Python's sum(ws) (0 + w1 + w2 ...) then / count, each step rounded.
                let sum = inputs.iter().fold(0f32, |acc, input| r(acc + input.data[j]));
                let average = r(sum / k as f32);
                *o = r(r(t * average) + r(keep * base[j]));
            }
        });
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
        let filter_wise = shared.bool("filter_wise").unwrap_or(false);
        let n = base.len();
        let row = if filter_wise { ctx.shape.last().copied().unwrap_or(n).max(1) } else { n.max(1) };
        let k = inputs.len() as f32;
        // One pass per row computes t, another writes the rows (rows of a filter-wise merge
        // are short; a whole-tensor t needs its statistics before any output).
        let blend = |o: &mut f32, j: usize, t: f32| {
            // mergekit: sum(ws) / count, then t·average + (1 − t)·base.
            let mut sum = 0f32;
            for input in inputs {
                sum += input.data[j];
            }
            let average = sum / k;
            *o = t * average + (1.0 - t) * base[j];
        };
        if filter_wise {
            out.par_chunks_mut(row).enumerate().for_each(|(r, chunk)| {
                let start = r * row;
                let (sq, dots) = statistics(base, inputs, start..start + chunk.len());
                let t = interpolation(&norms(sq), &dots);
                for (i, o) in chunk.iter_mut().enumerate() {
                    blend(o, start + i, t);
                }
            });
        } else {
            let t = whole_tensor_t(base, inputs);
            out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
                for (i, o) in chunk.iter_mut().enumerate() {
                    blend(o, c * CHUNK + i, t);
                }
            });
        }
        Ok(())
    }
}

/// `t` of the whole tensor, from chunked f64 sums (independent of the thread count).
fn whole_tensor_t(base: &[f32], inputs: &[ModelTensor]) -> f32 {
    let n = base.len();
    let k = inputs.len();
    let partial: Vec<(Vec<f64>, Vec<Vec<f64>>)> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| statistics(base, inputs, c * CHUNK..((c + 1) * CHUNK).min(n)))
        .collect();
    let mut sq = vec![0f64; k];
    let mut dots = vec![vec![0f64; k]; k];
    for (s, d) in partial {
        for a in 0..k {
            sq[a] += s[a];
            for b in 0..k {
                dots[a][b] += d[a][b];
            }
        }
    }
    interpolation(&norms(sq), &dots)
}
