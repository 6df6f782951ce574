//! `multislerp` (mergekit's barycentric interpolation on the hypersphere, "Multi-SLERP"): project
//! the models (or, with a `base_model`, their task vectors) onto the unit sphere, map them to the
//! tangent space at their weighted mean direction, average there with the `weight`s (normalized to
//! sum 1 unless `normalize_weights: false`), map back and scale by the weighted mean norm. One
//! model alone is returned unchanged.

use rayon::prelude::*;

use super::{par_sums, BasePolicy, MergeMethod, ModelTensor, TensorContext, CHUNK};
use crate::params::{ParamDefault, ParamKind, ParamScope, ParamSet, ParamSpec};
use crate::MergeError;

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
