//! `nearswap` (NearSwap, from the QuartetAnemoi-70B model card): take the other model's value where
//! it is within `t` of the base and move towards the base as they differ more:
//! `w = clamp(t / max(|base − x|, 1e-6), 0, 1)`, `out = w·x + (1 − w)·base`.

use rayon::prelude::*;

use super::{need_base, BasePolicy, MergeMethod, ModelTensor, TensorContext, CHUNK};
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
    fn merge(
        &self,
        ctx: &TensorContext,
        shared: &ParamSet,
        base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Result<(), MergeError> {
        let (Some(a), Some(other)) = (base, inputs.first()) else { return Err(need_base(ctx, self.name())) };
        let t = shared.float("t").ok_or_else(|| MergeError::MissingParameter {
            parameter: "t".into(),
            method: self.name().into(),
            tensor: ctx.name.into(),
            model: "(shared)".into(),
        })? as f32;
        let b = other.data;
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
            let start = c * CHUNK;
            let (a, b) = (&a[start..start + chunk.len()], &b[start..start + chunk.len()]);
            for ((o, &x), &y) in chunk.iter_mut().zip(a).zip(b) {
                // torch evaluates `t / d` as `d.reciprocal() * t`.
                let d = (x - y).abs().max(1e-6);
                let w = ((1.0 / d) * t).clamp(0.0, 1.0);
                *o = w * y + (1.0 - w) * x;
            }
        });
        Ok(())
    }
}
