//! `nearswap` (NearSwap, from the QuartetAnemoi-70B model card): take the other model's value where
//! it is within `t` of the base and move towards the base as they differ more:
//! `w = clamp(t / max(|base − x|, 1e-6), 0, 1)`, `out = w·x + (1 − w)·base`.

use rayon::prelude::*;

use super::{need_base, round_to, BasePolicy, MergeMethod, ModelTensor, TensorContext, CHUNK};
use crate::params::{ParamDefault, ParamKind, ParamScope, ParamSet, ParamSpec};
use crate::MergeError;

pub struct NearSwap;

static PARAMS: [ParamSpec; 1] = [ParamSpec::new(
    "t",
    ParamKind::Float { min: Some(0.0), max: None },
    ParamScope::Shared,
    ParamDefault::Required,
)];

impl MergeMethod for NearSwap {
    fn name(&self) -> &'static str {
        "nearswap"
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
    /// mergekit's arithmetic on half-precision tensors: every elementwise step rounded to the dtype.
    fn merge_rounded(
        &self,
        dtype: evomerge_checkpoint::Dtype,
        ctx: &TensorContext,
        shared: &ParamSet,
        base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Option<Result<(), MergeError>> {
        Some(self.run(ctx, shared, base, inputs, out, Some(dtype)))
    }
    fn merge(
        &self,
        ctx: &TensorContext,
        shared: &ParamSet,
        base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Result<(), MergeError> {
        self.run(ctx, shared, base, inputs, out, None)
    }
}

impl NearSwap {
    /// `rounding`: the dtype mergekit computes in (`None`: f32, where rounding is the identity).
    fn run(
        &self,
        ctx: &TensorContext,
        shared: &ParamSet,
        base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
        rounding: Option<evomerge_checkpoint::Dtype>,
    ) -> Result<(), MergeError> {
        let (Some(a), Some(other)) = (base, inputs.first()) else { return Err(need_base(ctx, self.name())) };
        let t = shared.float("t").ok_or_else(|| MergeError::MissingParameter {
            parameter: "t".into(),
            method: self.name().into(),
            tensor: ctx.name.into(),
            model: "(shared)".into(),
        })? as f32;
        let r = |v: f32| rounding.map_or(v, |d| round_to(d, v));
        // The clamp bound as the dtype holds it (torch converts clamp's scalars to the tensor dtype).
        let floor = r(1e-6);
        let b = other.data;
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
            let start = c * CHUNK;
            let (a, b) = (&a[start..start + chunk.len()], &b[start..start + chunk.len()]);
            for ((o, &x), &y) in chunk.iter_mut().zip(a).zip(b) {
                let d = r(x - y).abs().max(floor);
                // `t / d` on a tensor is torch's `d.reciprocal() * t`.
                let w = r(r(1.0 / d) * t).clamp(0.0, 1.0);
                *o = r(r(w * y) + r(r(1.0 - w) * x));
            }
        });
        Ok(())
    }
}
