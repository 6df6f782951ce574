//! `karcher`: the Karcher (Riemannian) mean of the models' directions on the unit sphere, found by
//! at most `max_iter` gradient steps (stopping when the step is below `tol`), scaled by the mean of
//! their norms. All models weigh the same; a `base_model` is one more model (mergekit 0.1.5).

use rayon::prelude::*;

use super::{par_sums, BasePolicy, MergeMethod, ModelTensor, TensorContext, CHUNK};
use crate::params::{ParamDefault, ParamKind, ParamScope, ParamSet, ParamSpec};
use crate::MergeError;
use evomerge_checkpoint::Dtype;

use super::round_to;

pub struct Karcher;

static PARAMS: [ParamSpec; 2] = [
    ParamSpec::new("max_iter", ParamKind::Integer { min: Some(0.0), max: None }, ParamScope::Shared, ParamDefault::Float(10.0)),
    ParamSpec::new("tol", ParamKind::Float { min: Some(0.0), max: None }, ParamScope::Shared, ParamDefault::Float(1e-5)),
];

/// Euclidean norm (f64 sums in fixed chunks, rounded to f32).
fn norm(n: usize, x: impl Fn(usize) -> f32 + Sync) -> f32 {
    par_sums::<1>(n, |range, s| {
        for j in range {
            let v = x(j) as f64;
            s[0] += v * v;
        }
    })[0]
        .sqrt() as f32
}

impl MergeMethod for Karcher {
    fn name(&self) -> &'static str {
        "karcher"
    }
    fn parameters(&self) -> &'static [ParamSpec] {
        &PARAMS
    }
    fn base_policy(&self) -> BasePolicy {
        BasePolicy::Ignored
    }
    fn input_bounds(&self) -> (usize, Option<usize>) {
        (1, None)
    }
    /// mergekit's half-precision arithmetic step by step (see [`rounded_karcher`]).
    fn merge_rounded(
        &self,
        dtype: Dtype,
        _ctx: &TensorContext,
        shared: &ParamSet,
        _base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Option<Result<(), MergeError>> {
        rounded_karcher(dtype, shared, inputs, out);
        Some(Ok(()))
    }
    fn merge(
        &self,
        _ctx: &TensorContext,
        shared: &ParamSet,
        _base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Result<(), MergeError> {
        if inputs.len() == 1 {
            out.copy_from_slice(inputs[0].data);
            return Ok(());
        }
        let max_iter = shared.float("max_iter").unwrap_or(10.0).max(0.0) as usize;
        let tol = shared.float("tol").unwrap_or(1e-5);
        let n = out.len();
        let k = inputs.len();
        let alpha = 1.0 / k as f64;
        let norms: Vec<f32> = inputs.iter().map(|i| norm(n, |j| i.data[j])).collect();
        // Unit vectors (zero for a zero tensor), recomputed where needed: x / ‖x‖ in f32.
        let unit = |i: usize, j: usize| if norms[i] == 0.0 { 0.0 } else { inputs[i].data[j] / norms[i] };
        let valid: Vec<usize> = (0..k).filter(|&i| norms[i] as f64 > tol).collect();
        if valid.is_empty() {
            out.fill(0.0);
            return Ok(());
        }
        let alpha_sum: f64 = valid.iter().map(|_| alpha).sum();
        let alphas: Vec<f32> = valid.iter().map(|_| (alpha / alpha_sum) as f32).collect();

        // Start: the normalized weighted mean of the unit vectors (the first one if that is ~0).
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
            for (o, j) in chunk.iter_mut().zip(c * CHUNK..) {
                let mut mean = 0f32;
                for (&i, &a) in valid.iter().zip(&alphas) {
                    mean += a * unit(i, j);
                }
                *o = mean;
            }
        });
        let mean_norm = norm(n, |j| out[j]);
        if (mean_norm as f64) < tol {
            let first = valid[0];
            out.par_iter_mut().enumerate().for_each(|(j, o)| *o = unit(first, j));
        } else {
            out.par_iter_mut().for_each(|o| *o /= mean_norm);
        }

        let mut tangent = vec![0f32; n];
        for _ in 0..max_iter {
            let mean: &[f32] = out;
            // Per model: its coefficient and dot with the mean, or None when it is at the mean.
            let steps: Vec<Option<(f32, f32)>> = valid
                .iter()
                .zip(&alphas)
                .map(|(&i, &a)| {
                    let dot = par_sums::<1>(n, |range, s| {
                        for j in range {
                            s[0] += (mean[j] * unit(i, j)) as f64;
                        }
                    })[0] as f32;
                    let dot = dot.clamp(-1.0, 1.0);
                    let theta = dot.acos();
                    ((theta as f64) >= tol).then(|| (a * (theta / theta.sin()), dot))
                })
                .collect();
            tangent.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
                for (t, j) in chunk.iter_mut().zip(c * CHUNK..) {
                    let mut sum = 0f32;
                    for (&i, step) in valid.iter().zip(&steps) {
                        if let Some((coef, dot)) = *step {
                            sum += coef * (unit(i, j) - dot * mean[j]);
                        }
                    }
                    *t = sum;
                }
            });
            let tangent_norm = norm(n, |j| tangent[j]);
            if (tangent_norm as f64) < tol {
                break;
            }
            let (cos, sin) = (tangent_norm.cos(), tangent_norm.sin());
            out.par_chunks_mut(CHUNK).zip(tangent.par_chunks(CHUNK)).for_each(|(chunk, t)| {
                for (o, &t) in chunk.iter_mut().zip(t) {
                    *o = cos * *o + sin * (t / tangent_norm);
                }
            });
            let unit_norm = norm(n, |j| out[j]);
            if unit_norm as f64 > tol {
                out.par_iter_mut().for_each(|o| *o /= unit_norm);
            }
        }
        let mut scale = 0f32;
        for &norm in &norms {
            scale += alpha as f32 * norm;
        }
        out.par_iter_mut().for_each(|o| *o *= scale);
        Ok(())
    }
}

/// `karcher` as mergekit computes it on half-precision tensors: the norms in f32 (mergekit
/// upcasts for them), unit vectors, mean and tangent in the dtype with every elementwise operation
/// rounded; a 0-dim f32 divisor (a norm) applies in f32, a 0-dim f32 factor on the left (cos,
/// sin, the scale) is first rounded to the dtype; `torch.dot` accumulates wide and rounds once.
fn rounded_karcher(dtype: Dtype, shared: &ParamSet, inputs: &[ModelTensor], out: &mut [f32]) {
    let r = |v: f32| round_to(dtype, v);
    if inputs.len() == 1 {
        out.copy_from_slice(inputs[0].data);
        return;
    }
    let max_iter = shared.float("max_iter").unwrap_or(10.0).max(0.0) as usize;
    let tol = shared.float("tol").unwrap_or(1e-5);
    let f32_norm = |x: &[f32]| x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt() as f32;
    let k = inputs.len();
    let alpha = 1.0 / k as f64;
    let norms: Vec<f32> = inputs.iter().map(|i| f32_norm(i.data)).collect();
    let units: Vec<Vec<f32>> = inputs
        .iter()
        .zip(&norms)
        .map(|(i, &nm)| if nm == 0.0 { vec![0.0; i.data.len()] } else { i.data.iter().map(|&x| r(x / nm)).collect() })
        .collect();
    let valid: Vec<usize> = (0..k).filter(|&i| norms[i] as f64 > tol).collect();
    if valid.is_empty() {
        out.fill(0.0);
        return;
    }
    let alpha_sum: f64 = valid.iter().map(|_| alpha).sum();
    let alphas: Vec<f32> = valid.iter().map(|_| (alpha / alpha_sum) as f32).collect();
    out.fill(0.0);
    for (&i, &a) in valid.iter().zip(&alphas) {
        for (o, &u) in out.iter_mut().zip(&units[i]) {
            *o = r(*o + r(a * u));
        }
    }
    let mean_norm = f32_norm(out);
    if (mean_norm as f64) < tol {
        out.copy_from_slice(&units[valid[0]]);
    } else {
        out.iter_mut().for_each(|o| *o = r(*o / mean_norm));
    }
    let mut tangent = vec![0f32; out.len()];
    for _ in 0..max_iter {
        tangent.fill(0.0);
        for (&i, &a) in valid.iter().zip(&alphas) {
            let unit = &units[i];
            let dot = r(out.iter().zip(unit).map(|(&m, &u)| (m as f64) * (u as f64)).sum::<f64>() as f32).clamp(-1.0, 1.0);
            let theta = r(dot.acos());
            if (theta as f64) < tol {
                continue;
            }
            let coefficient = r(a * r(theta / r(theta.sin())));
            for ((t, &u), &m) in tangent.iter_mut().zip(unit).zip(out.iter()) {
                *t = r(*t + r(coefficient * r(u - r(dot * m))));
            }
        }
        let tangent_norm = f32_norm(&tangent);
        if (tangent_norm as f64) < tol {
            break;
        }
        // A 0-dim f32 tensor on the left of `*` is cast to the other operand's dtype first
        // (on the right it is applied in f32).
        let (cos, sin) = (r(tangent_norm.cos()), r(tangent_norm.sin()));
        for (o, &t) in out.iter_mut().zip(&tangent) {
            *o = r(r(cos * *o) + r(sin * r(t / tangent_norm)));
        }
        let unit_norm = f32_norm(out);
        if unit_norm as f64 > tol {
            out.iter_mut().for_each(|o| *o = r(*o / unit_norm));
        }
    }
    // Python's sum of `alpha * norm`: 0-dim f32 tensors.
    let scale = r(norms.iter().fold(0f32, |acc, &nm| acc + alpha as f32 * nm));
    out.iter_mut().for_each(|o| *o = r(scale * *o));
}
