//! `passthrough`: copies its single input, optionally multiplied by `scale` (frankenmerges via slices).

use super::{BasePolicy, MergeMethod, ModelTensor, TensorContext};
use crate::params::{ParamDefault, ParamKind, ParamScope, ParamSet, ParamSpec};
use crate::MergeError;

pub struct Passthrough;

static PARAMS: [ParamSpec; 1] =
    [ParamSpec::new("scale", ParamKind::Float { min: None, max: None }, ParamScope::Input, ParamDefault::Absent)];

impl MergeMethod for Passthrough {
    fn name(&self) -> &'static str {
        "passthrough"
    }
    fn parameters(&self) -> &'static [ParamSpec] {
        &PARAMS
    }
    fn base_policy(&self) -> BasePolicy {
        BasePolicy::Ignored
    }
    fn input_bounds(&self) -> (usize, Option<usize>) {
        (1, Some(1))
    }
    /// mergekit multiplies the half-precision tensor by the Python scalar in f32 and rounds once:
    /// with inputs rounded to the dtype and the output rounded when written, that is `merge`.
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
        _ctx: &TensorContext,
        _shared: &ParamSet,
        _base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Result<(), MergeError> {
        let input = &inputs[0];
        match input.params.float("scale") {
            None => out.copy_from_slice(input.data),
            Some(scale) => {
                let s = scale as f32;
                for (o, &x) in out.iter_mut().zip(input.data) {
                    *o = x * s;
                }
            }
        }
        Ok(())
    }
}
