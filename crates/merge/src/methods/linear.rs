//! `linear`: weighted average of the inputs, divided by the sum of weights unless `normalize: false`.

use rayon::prelude::*;

use super::{BasePolicy, MergeMethod, ModelTensor, TensorContext, CHUNK};
use crate::params::{ParamDefault, ParamKind, ParamScope, ParamSet, ParamSpec};
use crate::MergeError;

pub struct Linear;

static PARAMS: [ParamSpec; 2] = [
    ParamSpec::new("weight", ParamKind::Float { min: None, max: None }, ParamScope::Input, ParamDefault::Required),
    ParamSpec::new("normalize", ParamKind::Bool, ParamScope::Shared, ParamDefault::Bool(true)),
];

impl MergeMethod for Linear {
    fn name(&self) -> &'static str {
        "linear"
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
    /// mergekit upcasts to f32 inside `linear_merge` and accumulates with `addcmul_`, a fused
    /// multiply-add: with inputs rounded to the dtype, that is its whole arithmetic.
    fn merge_rounded(
        &self,
        _dtype: evomerge_checkpoint::Dtype,
        ctx: &TensorContext,
        shared: &ParamSet,
        _base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Option<Result<(), MergeError>> {
        Some(self.run(ctx, shared, inputs, out, true))
    }
    fn merge(
        &self,
        ctx: &TensorContext,
        shared: &ParamSet,
        _base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Result<(), MergeError> {
        // Unfused: a software fma per entry costs far more than the last-bit difference is worth.
        self.run(ctx, shared, inputs, out, false)
    }
}

impl Linear {
    fn run(&self, ctx: &TensorContext, shared: &ParamSet, inputs: &[ModelTensor], out: &mut [f32], fused: bool) -> Result<(), MergeError> {
        let weights = super::gta::input_floats(ctx, inputs, "weight", self.name())?;
        let normalize = shared.bool("normalize").unwrap_or(true);
        // mergekit sums the f32 weights; a zero sum divides by zero there too (inf/nan), so refuse.
        let total: f32 = weights.iter().sum();
        if normalize && total == 0.0 {
            return Err(MergeError::InvalidInputs {
                tensor: ctx.name.to_string(),
                message: "linear weights sum to 0; with normalize they must not".into(),
            });
        }
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
            let start = c * CHUNK;
            chunk.fill(0.0);
            for (input, &w) in inputs.iter().zip(&weights) {
                let src = &input.data[start..start + chunk.len()];
                if fused {
                    for (o, &x) in chunk.iter_mut().zip(src) {
                        *o = x.mul_add(w, *o);
                    }
                } else {
                    for (o, &x) in chunk.iter_mut().zip(src) {
                        *o += x * w;
                    }
                }
            }
            if normalize {
                for o in chunk.iter_mut() {
                    *o /= total;
                }
            }
        });
        Ok(())
    }
}
