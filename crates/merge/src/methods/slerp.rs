//! `slerp`: spherical interpolation from the base (t = 0) to the other model (t = 1), treating each
//! tensor as one vector; nearly parallel pairs (|cos| > 0.9995, mergekit's threshold) use lerp.

use rayon::prelude::*;

use super::{BasePolicy, MergeMethod, ModelTensor, SumStart, TensorContext, WeightedSum, CHUNK};
use crate::params::{ParamDefault, ParamKind, ParamScope, ParamSet, ParamSpec};
use crate::MergeError;

pub struct Slerp;

/// Above this |cos θ| the pair counts as parallel and is linearly interpolated.
pub const DOT_THRESHOLD: f64 = 0.9995;
/// Norms at or below this are treated as 1 (zero vectors), as mergekit does.
pub const NORM_EPS: f64 = 1e-8;

static PARAMS: [ParamSpec; 1] =
    [ParamSpec::new("t", ParamKind::Float { min: None, max: None }, ParamScope::Shared, ParamDefault::Required)];

/// Interpolation coefficients `(c_base, c_other)` for two vectors with the given statistics.
pub fn slerp_coefficients(t: f64, norm_a: f64, norm_b: f64, dot_ab: f64) -> (f32, f32) {
    let na = if norm_a > NORM_EPS { norm_a } else { 1.0 };
    let nb = if norm_b > NORM_EPS { norm_b } else { 1.0 };
    let dot = (dot_ab / (na * nb)).clamp(-1.0, 1.0);
    let t32 = t as f32;
    if dot.abs() > DOT_THRESHOLD {
        return (1.0 - t32, t32);
    }
    let theta = dot.acos();
    let sin_theta = theta.sin();
    let t = t32 as f64;
    (((1.0 - t) * theta).sin() as f32 / sin_theta as f32, (t * theta).sin() as f32 / sin_theta as f32)
}

impl MergeMethod for Slerp {
    fn name(&self) -> &'static str {
        "slerp"
    }
    fn parameters(&self) -> &'static [ParamSpec] {
        &PARAMS
    }
    fn base_policy(&self) -> BasePolicy {
        BasePolicy::Required
    }
    fn input_bounds(&self) -> (usize, Option<usize>) {
        (2, Some(2))
    }
    /// mergekit upcasts to f32 inside slerp: with inputs rounded to the dtype, the f32 kernel is
    /// its arithmetic (the output is rounded when written).
    fn merge_rounded(
        &self,
        _dtype: evomerge_checkpoint::Dtype,
        ctx: &TensorContext,
        shared: &ParamSet,
        base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Option<Result<(), MergeError>> {
        Some(self.merge(ctx, shared, base, inputs, out))
    }
    fn merge(
        &self,
        ctx: &TensorContext,
        shared: &ParamSet,
        base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Result<(), MergeError> {
        let (Some(a), Some(other)) = (base, inputs.first()) else {
            return Err(MergeError::InvalidInputs { tensor: ctx.name.into(), message: "slerp needs a base and one other model".into() });
        };
        let rows = [a, other.data];
        let form = self.form(ctx, shared, &slerp_statistics(&rows))?;
        form.apply(&rows, out);
        Ok(())
    }
    fn sum_statistics(&self) -> Option<fn(&[&[f32]]) -> Vec<f64>> {
        Some(slerp_statistics)
    }
    fn weighted_sum(
        &self,
        ctx: &TensorContext,
        shared: &ParamSet,
        _inputs: &[(usize, &ParamSet)],
        statistics: &[f64],
    ) -> Option<Result<WeightedSum, MergeError>> {
        Some(self.form(ctx, shared, statistics))
    }
}

impl Slerp {
    /// `s0·base + s1·other` with the coefficients of `t` and the tensor's statistics.
    fn form(&self, ctx: &TensorContext, shared: &ParamSet, statistics: &[f64]) -> Result<WeightedSum, MergeError> {
        let t = shared.float("t").ok_or_else(|| MergeError::MissingParameter {
            parameter: "t".into(),
            method: "slerp".into(),
            tensor: ctx.name.into(),
            model: "(shared)".into(),
        })?;
        let &[norm2_a, norm2_b, dot_ab] = statistics else {
            return Err(MergeError::InvalidInputs {
                tensor: ctx.name.into(),
                message: format!("slerp needs 3 statistics of its two rows, got {}", statistics.len()),
            });
        };
        let (ca, cb) = slerp_coefficients(t, norm2_a.sqrt(), norm2_b.sqrt(), dot_ab);
        Ok(WeightedSum { coefficients: vec![ca, cb], start: SumStart::FirstTerm, fused: false, divisor: None })
    }
}

/// `[|a|², |b|², a·b]` of slerp's two rows, summed in f64 over fixed chunks in order, so the numbers do not depend
/// on the thread count.
pub fn slerp_statistics(rows: &[&[f32]]) -> Vec<f64> {
    let (a, b) = match rows {
        [a, b] => (*a, *b),
        _ => return Vec::new(),
    };
    let partial: Vec<[f64; 3]> = a
        .par_chunks(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .map(|(x, y)| {
            let mut s = [0f64; 3];
            for (&u, &v) in x.iter().zip(y) {
                let (u, v) = (u as f64, v as f64);
                s[0] += u * u;
                s[1] += v * v;
                s[2] += u * v;
            }
            s
        })
        .collect();
    partial.iter().fold([0f64; 3], |acc, s| [acc[0] + s[0], acc[1] + s[1], acc[2] + s[2]]).to_vec()
}
