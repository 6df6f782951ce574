//! The generalized task-arithmetic kernel behind `task_arithmetic`, `ties`, `dare_ties` and
//! `dare_linear` (mergekit's `GeneralizedTaskArithmeticMerge`): sparsify each delta, weight it,
//! optionally elect a sign per entry, sum, normalize, scale by λ, add to the base.

use rayon::prelude::*;

use super::{BasePolicy, MergeMethod, ModelTensor, TensorContext, CHUNK};
use crate::params::{ParamDefault, ParamKind, ParamScope, ParamSet, ParamSpec};
use crate::sparsify::{dare_key, magnitude_keep, Keep};
use crate::MergeError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sparsification {
    None,
    /// Keep the top `density` fraction by |delta| (TIES).
    Magnitude,
    /// Keep each entry with probability `density` (DARE).
    Random,
}

/// Sign election rule (TIES).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consensus {
    /// Sign of the sum of weighted deltas (the TIES paper, mergekit's default).
    Sum,
    /// Sign of the majority count.
    Count,
}

/// How kept entries are rescaled after sparsification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rescale {
    None,
    /// Divide by density (DARE paper).
    InverseDensity,
    /// Multiply by ‖delta‖₁ / ‖kept‖₁ (mergekit's `rescale: true`).
    L1,
}

const fn float(name: &'static str, scope: ParamScope, default: ParamDefault) -> ParamSpec {
    ParamSpec::new(name, ParamKind::Float { min: None, max: None }, scope, default)
}

const DENSITY: ParamSpec = ParamSpec::new(
    "density",
    ParamKind::Float { min: Some(0.0), max: Some(1.0) },
    ParamScope::NonBase,
    ParamDefault::Float(1.0),
);
const RESCALE_WORDS: &[&str] = &["l1", "inverse_density"];

pub(crate) static GTA_PARAMS_PLAIN: [ParamSpec; 6] = [
    float("weight", ParamScope::NonBase, ParamDefault::Required),
    DENSITY,
    float("lambda", ParamScope::Shared, ParamDefault::Float(1.0)),
    ParamSpec::new("normalize", ParamKind::Bool, ParamScope::Shared, ParamDefault::Absent),
    ParamSpec::new("rescale", ParamKind::BoolOrChoice(RESCALE_WORDS), ParamScope::Shared, ParamDefault::Absent),
    ParamSpec::new("int8_mask", ParamKind::Bool, ParamScope::Shared, ParamDefault::Bool(false)),
];

pub(crate) static GTA_PARAMS_CONSENSUS: [ParamSpec; 7] = [
    float("weight", ParamScope::NonBase, ParamDefault::Required),
    DENSITY,
    float("lambda", ParamScope::Shared, ParamDefault::Float(1.0)),
    ParamSpec::new("normalize", ParamKind::Bool, ParamScope::Shared, ParamDefault::Absent),
    ParamSpec::new("rescale", ParamKind::BoolOrChoice(RESCALE_WORDS), ParamScope::Shared, ParamDefault::Absent),
    ParamSpec::new("int8_mask", ParamKind::Bool, ParamScope::Shared, ParamDefault::Bool(false)),
    ParamSpec::new("consensus_method", ParamKind::Choice(&["sum", "count"]), ParamScope::Shared, ParamDefault::Text("sum")),
];

pub struct GeneralizedTaskArithmetic {
    pub name: &'static str,
    pub sparsification: Sparsification,
    /// Whether this method elects signs (then `consensus_method` picks sum or count).
    pub consensus: bool,
    pub default_normalize: bool,
    /// `rescale` when the recipe does not say (true ⇒ the sparsification's natural rescale).
    pub default_rescale: bool,
    pub params: &'static [ParamSpec],
}

/// Per-input f32 values of a float parameter, erroring when one is missing.
pub(crate) fn input_floats(
    ctx: &TensorContext,
    inputs: &[ModelTensor],
    name: &str,
    method: &str,
) -> Result<Vec<f32>, MergeError> {
    inputs
        .iter()
        .map(|i| {
            i.params.float(name).map(|v| v as f32).ok_or_else(|| MergeError::MissingParameter {
                parameter: name.into(),
                method: method.into(),
                tensor: ctx.name.into(),
                model: format!("#{}", i.model),
            })
        })
        .collect()
}

impl GeneralizedTaskArithmetic {
    fn rescale(&self, shared: &ParamSet) -> Rescale {
        let natural = match self.sparsification {
            Sparsification::Random => Rescale::InverseDensity,
            _ => Rescale::L1,
        };
        match (shared.get("rescale"), self.default_rescale) {
            (Some(crate::ParamValue::Bool(true)), _) | (None, true) => natural,
            (Some(crate::ParamValue::Text(t)), _) if t == "l1" => Rescale::L1,
            (Some(crate::ParamValue::Text(t)), _) if t == "inverse_density" => Rescale::InverseDensity,
            _ => Rescale::None,
        }
    }
}

/// What to do with one input's delta entries: which survive and by how much they are scaled.
#[derive(Debug, Clone, Copy)]
struct InputPlan {
    keep: Keep,
    scale: Scale,
    weight: f32,
}

#[derive(Debug, Clone, Copy)]
enum Scale {
    One,
    Div(f32),
    Mul(f32),
}

impl MergeMethod for GeneralizedTaskArithmetic {
    fn name(&self) -> &'static str {
        self.name
    }
    fn parameters(&self) -> &'static [ParamSpec] {
        self.params
    }
    fn base_policy(&self) -> BasePolicy {
        BasePolicy::Required
    }
    fn input_bounds(&self) -> (usize, Option<usize>) {
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
        let Some(base) = base else {
            return Err(MergeError::InvalidInputs { tensor: ctx.name.into(), message: format!("{} needs a base model", self.name) });
        };
        if inputs.is_empty() {
            out.copy_from_slice(base);
            return Ok(());
        }
        let weights = input_floats(ctx, inputs, "weight", self.name)?;
        let rescale = self.rescale(shared);
        let normalize = shared.bool("normalize").unwrap_or(self.default_normalize);
        let lambda = shared.float("lambda").unwrap_or(1.0);
        let consensus = match (self.consensus, shared.text("consensus_method")) {
            (false, _) => None,
            (true, Some("count")) => Some(Consensus::Count),
            (true, _) => Some(Consensus::Sum),
        };

        let mut scratch = Vec::new();
        let mut plans = Vec::with_capacity(inputs.len());
        for (input, &weight) in inputs.iter().zip(&weights) {
            let density = input.params.float("density").unwrap_or(1.0);
            let keep = match self.sparsification {
                Sparsification::None => Keep::All,
                _ if density >= 1.0 => Keep::All,
                _ if density <= 0.0 => Keep::None,
                Sparsification::Magnitude => magnitude_keep(input.data, base, density, &mut scratch),
                Sparsification::Random => Keep::Random { key: dare_key(ctx.seed, ctx.name, input.model), density },
            };
            let scale = match (keep, rescale) {
                (Keep::All | Keep::None, _) | (_, Rescale::None) => Scale::One,
                (_, Rescale::InverseDensity) => Scale::Div(density as f32),
                (_, Rescale::L1) => l1_scale(input.data, base, keep),
            };
            plans.push(InputPlan { keep, scale, weight });
        }
        drop(scratch);

        // Without sign election the divisor is the plain sum of weights.
        let weight_sum: f32 = weights.iter().sum();
        let plain_divisor = if weight_sum.abs() < 1e-8 { 1.0 } else { weight_sum };
        let lambda32 = lambda as f32;

        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
            let start = c * CHUNK;
            let mut dw = vec![0f32; inputs.len()];
            for (offset, o) in chunk.iter_mut().enumerate() {
                let j = start + offset;
                let b = base[j];
                for ((d_out, input), plan) in dw.iter_mut().zip(inputs).zip(&plans) {
                    let d = input.data[j] - b;
                    let d = if plan.keep.keeps(j, d) {
                        match plan.scale {
                            Scale::One => d,
                            Scale::Div(s) => d / s,
                            Scale::Mul(s) => d * s,
                        }
                    } else {
                        0.0
                    };
                    *d_out = d * plan.weight;
                }
                let (mixed, divisor) = match consensus {
                    None => (dw.iter().sum::<f32>(), plain_divisor),
                    Some(rule) => {
                        let positive = match rule {
                            Consensus::Sum => dw.iter().sum::<f32>() >= 0.0,
                            Consensus::Count => dw.iter().map(|&d| sign(d)).sum::<f32>() >= 0.0,
                        };
                        let majority = if positive { 1.0 } else { -1.0 };
                        let mut mixed = 0f32;
                        let mut divisor = 0f32;
                        for (&d, plan) in dw.iter().zip(&plans) {
                            if sign(d) == majority {
                                mixed += d;
                                divisor += plan.weight;
                            }
                        }
                        (mixed, if divisor == 0.0 { 1.0 } else { divisor })
                    }
                };
                let mut mixed = if normalize { mixed / divisor } else { mixed };
                if lambda != 1.0 {
                    mixed *= lambda32;
                }
                *o = b + mixed;
            }
        });
        Ok(())
    }
}

#[inline]
fn sign(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// mergekit's l1 rescale: ‖delta‖₁ / ‖kept delta‖₁, unless either is below 1e-7.
fn l1_scale(input: &[f32], base: &[f32], keep: Keep) -> Scale {
    let sums = input
        .par_chunks(CHUNK)
        .zip(base.par_chunks(CHUNK))
        .enumerate()
        .map(|(c, (x, b))| {
            let mut s = [0f64; 2];
            for (i, (&x, &b)) in x.iter().zip(b).enumerate() {
                let d = x - b;
                s[0] += d.abs() as f64;
                if keep.keeps(c * CHUNK + i, d) {
                    s[1] += d.abs() as f64;
                }
            }
            s
        })
        .collect::<Vec<_>>()
        .into_iter()
        .fold([0f64; 2], |a, s| [a[0] + s[0], a[1] + s[1]]);
    const EPS: f64 = 1e-7;
    if sums[0] < EPS || sums[1] < EPS {
        Scale::One
    } else {
        Scale::Mul((sums[0] / sums[1]) as f32)
    }
}
