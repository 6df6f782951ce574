//! `nuslerp` (mergekit's "NuSLERP"): spherical interpolation of two models with `t = w₁/(w₀ + w₁)`
//! from their `weight`s (0.5 when they sum to 0), either of the models themselves or, with a
//! `base_model`, of their task vectors (then added to the base). `nuslerp_flatten: true` (default)
//! treats the tensor as one vector; otherwise each row (last dimension) is interpolated on its own,
//! or each column with `nuslerp_row_wise: true`. Colinear pairs are interpolated linearly.

use rayon::prelude::*;

use super::{par_sums, round_to, BasePolicy, MergeMethod, ModelTensor, TensorContext, CHUNK};
use crate::params::{ParamDefault, ParamKind, ParamScope, ParamSet, ParamSpec};
use crate::MergeError;

pub struct NuSlerp;

static PARAMS: [ParamSpec; 3] = [
    ParamSpec::new("weight", ParamKind::Float { min: None, max: None }, ParamScope::NonBase, ParamDefault::Required),
    ParamSpec::new("nuslerp_flatten", ParamKind::Bool, ParamScope::Shared, ParamDefault::Bool(true)),
    ParamSpec::new("nuslerp_row_wise", ParamKind::Bool, ParamScope::Shared, ParamDefault::Bool(false)),
];

/// Interpolation of one vector pair: `out = (ca·v0 + cb·v1) / div`, or the lerp when colinear.
#[derive(Clone, Copy)]
struct Coefficients {
    ca: f32,
    cb: f32,
    div: f32,
    colinear: bool,
    t: f64,
}

impl Coefficients {
    /// `r` rounds each operation's result to the dtype mergekit computes in (identity for f32).
    #[inline(always)]
    fn apply(&self, v0: f32, v1: f32, r: impl Fn(f32) -> f32) -> f32 {
        if self.colinear {
            r(r((1.0 - self.t) as f32 * v0) + r(self.t as f32 * v1))
        } else {
            r(r(r(self.ca * v0) + r(self.cb * v1)) / self.div)
        }
    }

    /// mergekit's steps from the dot of the normalized vectors.
    fn new(t: f64, cos: f32, r: impl Fn(f32) -> f32) -> Self {
        let cos = cos.clamp(-1.0, 1.0);
        let colinear = r(1.0 - r(cos * cos)) <= 1e-16f32;
        let theta = r(if colinear { 0f32 } else { cos }.acos());
        let ca = r(r((1.0 - t) as f32 * theta).sin());
        let cb = r(r(t as f32 * theta).sin());
        Coefficients { ca, cb, div: r(theta.sin()), colinear, t }
    }
}

/// Norm clamped as mergekit's `_normalize` does.
fn clamp_norm(sq: f64, r: impl Fn(f32) -> f32) -> f32 {
    r(sq.sqrt() as f32).max(r(1e-7))
}

impl MergeMethod for NuSlerp {
    fn name(&self) -> &'static str {
        "nuslerp"
    }
    fn parameters(&self) -> &'static [ParamSpec] {
        &PARAMS
    }
    fn base_policy(&self) -> BasePolicy {
        BasePolicy::Optional
    }
    fn input_bounds(&self) -> (usize, Option<usize>) {
        (2, Some(3))
    }
    fn non_base_bounds(&self) -> (usize, Option<usize>) {
        (2, Some(2))
    }
    /// mergekit's half-precision arithmetic: every elementwise step rounded to the dtype, the
    /// norms and the dot accumulated wide and rounded once (as torch's f32 accumulators are).
    fn merge_rounded(
        &self,
        dtype: evomerge_checkpoint::Dtype,
        ctx: &TensorContext,
        shared: &ParamSet,
        base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Option<Result<(), MergeError>> {
        Some(self.run(ctx, shared, base, inputs, out, move |v| round_to(dtype, v)))
    }
    fn merge(
        &self,
        ctx: &TensorContext,
        shared: &ParamSet,
        base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Result<(), MergeError> {
        self.run(ctx, shared, base, inputs, out, |v| v)
    }
}

impl NuSlerp {
    /// The merge with `r` applied to each operation's result (the identity in f32; a rounding
    /// to the dtype mergekit computes in otherwise).
    fn run(
        &self,
        ctx: &TensorContext,
        shared: &ParamSet,
        base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
        r: impl Fn(f32) -> f32 + Sync + Copy,
    ) -> Result<(), MergeError> {
        let weights = super::gta::input_f64s(ctx, inputs, "weight", self.name())?;
        let total = weights[0] + weights[1];
        let t = if total.abs() < 1e-6 { 0.5 } else { weights[1] / total };
        let flatten = shared.bool("nuslerp_flatten").unwrap_or(true);
        let row_wise = shared.bool("nuslerp_row_wise").unwrap_or(false);
        let (x0, x1) = (inputs[0].data, inputs[1].data);
        let v = |x: &[f32], j: usize| match base {
            Some(b) => r(x[j] - b[j]),
            None => x[j],
        };
        let n = out.len();
        let shape = ctx.shape;
        // Vectors: (count, length, element j of vector r at position i).
        let (count, len, inner) = if flatten || shape.len() <= 1 {
            (1, n, 0)
        } else if row_wise {
            let inner: usize = shape[1..].iter().product();
            (inner, shape[0], inner)
        } else {
            let len = shape[shape.len() - 1];
            (n / len.max(1), len, 0)
        };
        let index = move |r: usize, i: usize| if inner > 0 { i * inner + r } else { r * len + i };
        let coefficients: Vec<Coefficients> = if count == 1 {
            let [s0, s1] = par_sums::<2>(n, |range, s| {
                for j in range {
                    let (a, b) = (v(x0, j) as f64, v(x1, j) as f64);
                    s[0] += a * a;
                    s[1] += b * b;
                }
            });
            let (n0, n1) = (clamp_norm(s0, r), clamp_norm(s1, r));
            let [dot] = par_sums::<1>(n, |range, s| {
                for j in range {
                    s[0] += r(r(v(x0, j) / n0) * r(v(x1, j) / n1)) as f64;
                }
            });
            vec![Coefficients::new(t, r(dot as f32), r)]
        } else {
            (0..count)
                .into_par_iter()
                .map(|vector| {
                    let (mut s0, mut s1) = (0f64, 0f64);
                    for i in 0..len {
                        let j = index(vector, i);
                        let (a, b) = (v(x0, j) as f64, v(x1, j) as f64);
                        s0 += a * a;
                        s1 += b * b;
                    }
                    let (n0, n1) = (clamp_norm(s0, r), clamp_norm(s1, r));
                    let mut dot = 0f64;
                    for i in 0..len {
                        let j = index(vector, i);
                        dot += r(r(v(x0, j) / n0) * r(v(x1, j) / n1)) as f64;
                    }
                    Coefficients::new(t, r(dot as f32), r)
                })
                .collect()
        };
        let vector_of = move |j: usize| {
            if count == 1 {
                0
            } else if inner > 0 {
                j % inner
            } else {
                j / len
            }
        };
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
            for (o, j) in chunk.iter_mut().zip(c * CHUNK..) {
                let merged = coefficients[vector_of(j)].apply(v(x0, j), v(x1, j), r);
                *o = match base {
                    Some(b) => r(b[j] + merged),
                    None => merged,
                };
            }
        });
        Ok(())
    }
}
