//! `linear`: weighted average of the inputs, divided by the sum of weights unless `normalize: false`.

use super::{BasePolicy, MergeMethod, ModelTensor, SumStart, TensorContext, WeightedSum};
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
    /// The unfused kernel's form (what `merge` computes); none in a rounded compute dtype, whose inputs are
    /// rounded first.
    fn weighted_sum(
        &self,
        ctx: &TensorContext,
        shared: &ParamSet,
        inputs: &[(usize, &ParamSet)],
        _statistics: &[f64],
    ) -> Option<Result<WeightedSum, MergeError>> {
        if ctx.compute.is_some_and(|d| d != evomerge_checkpoint::Dtype::F32) {
            return None;
        }
        let weights = super::gta::param_f64s(ctx, inputs.iter().copied(), "weight", self.name());
        Some(weights.and_then(|w| self.form(ctx, shared, w.into_iter().map(|w| w as f32).collect(), false)))
    }
}

impl Linear {
    fn run(&self, ctx: &TensorContext, shared: &ParamSet, inputs: &[ModelTensor], out: &mut [f32], fused: bool) -> Result<(), MergeError> {
        let weights = super::gta::input_floats(ctx, inputs, "weight", self.name())?;
        let form = self.form(ctx, shared, weights, fused)?;
        let rows: Vec<&[f32]> = inputs.iter().map(|i| i.data).collect();
        form.apply(&rows, out);
        Ok(())
    }

    fn form(&self, ctx: &TensorContext, shared: &ParamSet, weights: Vec<f32>, fused: bool) -> Result<WeightedSum, MergeError> {
        let normalize = shared.bool("normalize").unwrap_or(true);
        // mergekit sums the f32 weights; a zero sum divides by zero there too (inf/nan), so refuse.
        let total: f32 = weights.iter().sum();
        if normalize && total == 0.0 {
            return Err(MergeError::InvalidInputs {
                tensor: ctx.name.to_string(),
                message: "linear weights sum to 0; with normalize they must not".into(),
            });
        }
        Ok(WeightedSum { coefficients: weights, start: SumStart::Zero, fused, divisor: normalize.then_some(total) })
    }
}
