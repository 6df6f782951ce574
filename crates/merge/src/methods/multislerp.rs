//! `multislerp` (mergekit's barycentric interpolation on the hypersphere, "Multi-SLERP"): project
//! the models (or, with a `base_model`, their task vectors) onto the unit sphere, map them to the
//! tangent space at their weighted mean direction, average there with the `weight`s (normalized to
//! sum 1 unless `normalize_weights: false`), map back and scale by the weighted mean norm. One
//! model alone is returned unchanged.

use rayon::prelude::*;

use super::{par_sums, BasePolicy, MergeMethod, ModelTensor, TensorContext, CHUNK};
use crate::params::{ParamDefault, ParamKind, ParamScope, ParamSet, ParamSpec};
use crate::MergeError;
use evomerge_checkpoint::Dtype;

use super::round_to;
use super::rounded::round_f64_to;

pub struct MultiSlerp;

static PARAMS: [ParamSpec; 3] = [
    ParamSpec::new("weight", ParamKind::Float { min: None, max: None }, ParamScope::NonBase, ParamDefault::Required),
    ParamSpec::new("normalize_weights", ParamKind::Bool, ParamScope::Shared, ParamDefault::Bool(true)),
    ParamSpec::new("eps", ParamKind::Float { min: Some(0.0), max: None }, ParamScope::Shared, ParamDefault::Float(1e-8)),
];

impl MergeMethod for MultiSlerp {
    fn name(&self) -> &'static str {
        "multislerp"
    }
    fn parameters(&self) -> &'static [ParamSpec] {
        &PARAMS
    }
    fn base_policy(&self) -> BasePolicy {
        BasePolicy::Optional
    }
    fn input_bounds(&self) -> (usize, Option<usize>) {
        (1, None)
    }
    fn non_base_bounds(&self) -> (usize, Option<usize>) {
        (1, None)
    }
    /// mergekit's half-precision arithmetic step by step (see [`rounded_multislerp`]).
    fn merge_rounded(
        &self,
        dtype: Dtype,
        ctx: &TensorContext,
        shared: &ParamSet,
        base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Option<Result<(), MergeError>> {
        let weights = match super::gta::input_f64s(ctx, inputs, "weight", self.name()) {
            Ok(w) => w,
            Err(e) => return Some(Err(e)),
        };
        Some(rounded_multislerp(dtype, ctx, shared, base, inputs, &weights, out))
    }
    fn merge(
        &self,
        ctx: &TensorContext,
        shared: &ParamSet,
        base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Result<(), MergeError> {
        let mut weights = super::gta::input_floats(ctx, inputs, "weight", self.name())?;
        if inputs.len() == 1 {
            out.copy_from_slice(inputs[0].data);
            return Ok(());
        }
        let eps = shared.float("eps").unwrap_or(1e-8) as f32;
        if shared.bool("normalize_weights").unwrap_or(true) {
            let total: f32 = weights.iter().sum();
            for w in &mut weights {
                *w /= total;
            }
        }
        let n = out.len();
        let m = inputs.len();
        let v = |i: usize, j: usize| match base {
            Some(b) => inputs[i].data[j] - b[j],
            None => inputs[i].data[j],
        };
        let norms: Vec<f32> = (0..m)
            .map(|i| {
                par_sums::<1>(n, |range, s| {
                    for j in range {
                        let x = v(i, j) as f64;
                        s[0] += x * x;
                    }
                })[0]
                .sqrt() as f32
            })
            .collect();
        let unit = |i: usize, j: usize| v(i, j) / (norms[i] + eps);
        // The weighted mean of the unit vectors, in `out`.
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
            for (o, j) in chunk.iter_mut().zip(c * CHUNK..) {
                let mut sum = 0f32;
                for (i, &w) in weights.iter().enumerate() {
                    sum += unit(i, j) * w;
                }
                *o = sum;
            }
        });
        let mean_norm = norm(out);
        if mean_norm < eps {
            if m == 2 {
                // mergekit falls back to the linear interpolation.
                out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
                    for (o, j) in chunk.iter_mut().zip(c * CHUNK..) {
                        let r = v(0, j) * weights[0] + v(1, j) * weights[1];
                        *o = base.map_or(r, |b| r + b[j]);
                    }
                });
                return Ok(());
            }
            return Err(MergeError::InvalidInputs {
                tensor: ctx.name.into(),
                message: "multislerp: the weighted mean of the models' directions is zero (antipodal models with balancing weights); change the weights".into(),
            });
        }
        out.par_chunks_mut(CHUNK).for_each(|chunk| {
            for o in chunk {
                *o /= mean_norm;
            }
        });
        let mean: &[f32] = out;
        let dots: Vec<f32> = (0..m)
            .map(|i| {
                par_sums::<1>(n, |range, s| {
                    for j in range {
                        s[0] += (unit(i, j) * mean[j]) as f64;
                    }
                })[0] as f32
            })
            .collect();
        // The weighted mean of the tangent vectors at entry `j`, where the mean direction is `mean_j`.
        let tangent = |j: usize, mean_j: f32| {
            let mut sum = 0f32;
            for i in 0..m {
                sum += (unit(i, j) - dots[i] * mean_j) * weights[i];
            }
            sum
        };
        let tangent_norm = par_sums::<1>(n, |range, s| {
            for j in range {
                let t = tangent(j, mean[j]) as f64;
                s[0] += t * t;
            }
        })[0]
            .sqrt() as f32
            + eps;
        let mut avg_norm = 0f32;
        for (&norm, &w) in norms.iter().zip(&weights) {
            avg_norm += norm * w;
        }
        let (cos, sin_ratio) = (tangent_norm.cos(), tangent_norm.sin() / tangent_norm);
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
            for (o, j) in chunk.iter_mut().zip(c * CHUNK..) {
                let r = (*o * cos + tangent(j, *o) * sin_ratio) * avg_norm;
                *o = base.map_or(r, |b| r + b[j]);
            }
        });
        Ok(())
    }
}

/// Euclidean norm (f64 sums in fixed chunks, rounded to f32).
fn norm(x: &[f32]) -> f32 {
    par_sums::<1>(x.len(), |range, s| {
        for &v in &x[range] {
            s[0] += (v as f64) * (v as f64);
        }
    })[0]
        .sqrt() as f32
}

/// `multislerp` as mergekit computes it on half-precision tensors: each elementwise operation
/// rounded to `dtype`; norms, dots and sums (over entries or over models) accumulated wide and
/// rounded once, as torch's f32 accumulators are.
fn rounded_multislerp(
    dtype: Dtype,
    ctx: &TensorContext,
    shared: &ParamSet,
    base: Option<&[f32]>,
    inputs: &[ModelTensor],
    weights: &[f64],
    out: &mut [f32],
) -> Result<(), MergeError> {
    let r = |v: f32| round_to(dtype, v);
    if inputs.len() == 1 {
        out.copy_from_slice(inputs[0].data);
        return Ok(());
    }
    let eps = shared.float("eps").unwrap_or(1e-8) as f32;
    let (n, m) = (out.len(), inputs.len());
    let mut weights: Vec<f32> = weights.iter().map(|&w| round_f64_to(dtype, w)).collect();
    if shared.bool("normalize_weights").unwrap_or(true) {
        let total = r(weights.iter().sum::<f32>());
        for w in &mut weights {
            *w = r(*w / total);
        }
    }
    let vectors: Vec<Vec<f32>> = inputs
        .iter()
        .map(|i| match base {
            Some(b) => i.data.iter().zip(b).map(|(&x, &b)| r(x - b)).collect(),
            None => i.data.to_vec(),
        })
        .collect();
    let norm = |x: &mut dyn Iterator<Item = f32>| r(x.map(|v| (v as f64).powi(2)).sum::<f64>().sqrt() as f32);
    // Wide sum over models of rounded terms, rounded once.
    let over_models = |term: &dyn Fn(usize) -> f32| r((0..m).map(term).sum::<f32>());
    let norms: Vec<f32> = vectors.iter().map(|v| norm(&mut v.iter().copied())).collect();
    let units: Vec<Vec<f32>> =
        vectors.iter().zip(&norms).map(|(v, &nm)| v.iter().map(|&x| r(x / r(nm + eps))).collect()).collect();
    let mut mean: Vec<f32> = (0..n).map(|j| over_models(&|i| r(units[i][j] * weights[i]))).collect();
    let mean_norm = norm(&mut mean.iter().copied());
    if mean_norm < eps {
        if m == 2 {
            for (j, o) in out.iter_mut().enumerate() {
                let merged = r(r(vectors[0][j] * weights[0]) + r(vectors[1][j] * weights[1]));
                *o = base.map_or(merged, |b| r(merged + b[j]));
            }
            return Ok(());
        }
        return Err(MergeError::InvalidInputs {
            tensor: ctx.name.into(),
            message: "multislerp: the weighted mean of the models' directions is zero (antipodal models with balancing weights); change the weights".into(),
        });
    }
    for v in mean.iter_mut() {
        *v = r(*v / mean_norm);
    }
    let dots: Vec<f32> =
        units.iter().map(|u| r(u.iter().zip(&mean).map(|(&a, &b)| r(a * b) as f64).sum::<f64>() as f32)).collect();
    let tangent: Vec<f32> =
        (0..n).map(|j| over_models(&|i| r(r(units[i][j] - r(dots[i] * mean[j])) * weights[i]))).collect();
    let tangent_norm = r(norm(&mut tangent.iter().copied()) + eps);
    let (cos, sin_ratio) = (r(tangent_norm.cos()), r(r(tangent_norm.sin()) / tangent_norm));
    let avg_norm = over_models(&|i| r(norms[i] * weights[i]));
    for (j, o) in out.iter_mut().enumerate() {
        let merged = r(r(r(mean[j] * cos) + r(tangent[j] * sin_ratio)) * avg_norm);
        *o = base.map_or(merged, |b| r(merged + b[j]));
    }
    Ok(())
}
