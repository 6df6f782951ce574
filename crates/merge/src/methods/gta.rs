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

        let normalize_by = |mixed: f32, divisor: f32| if normalize { mixed / divisor } else { mixed };
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
            // Work in small blocks of structure-of-arrays buffers so the inner loops vectorise.
            let n = inputs.len();
            let mut dw = vec![0f32; n * BLOCK];
            let mut sum = [0f32; BLOCK];
            let mut mixed = [0f32; BLOCK];
            let mut divisor = [0f32; BLOCK];
            for (blk, out_block) in chunk.chunks_mut(BLOCK).enumerate() {
                let start = c * CHUNK + blk * BLOCK;
                let len = out_block.len();
                let b = &base[start..start + len];
                for (i, (input, plan)) in inputs.iter().zip(&plans).enumerate() {
                    let x = &input.data[start..start + len];
                    let d_out = &mut dw[i * BLOCK..i * BLOCK + len];
                    weighted_sparse_delta(x, b, start, plan, d_out);
                }
                match consensus {
                    None => {
                        sum[..len].fill(0.0);
                        for i in 0..n {
                            for (s, &d) in sum[..len].iter_mut().zip(&dw[i * BLOCK..i * BLOCK + len]) {
                                *s += d;
                            }
                        }
                        for ((o, &bj), &m) in out_block.iter_mut().zip(b).zip(&sum[..len]) {
                            let mut m = normalize_by(m, plain_divisor);
                            if lambda != 1.0 {
                                m *= lambda32;
                            }
                            *o = bj + m;
                        }
                    }
                    Some(rule) => {
                        sum[..len].fill(0.0);
                        for i in 0..n {
                            for (s, &d) in sum[..len].iter_mut().zip(&dw[i * BLOCK..i * BLOCK + len]) {
                                *s += match rule {
                                    Consensus::Sum => d,
                                    Consensus::Count => sign(d),
                                };
                            }
                        }
                        // Majority sign: +1 when the sum (or count) is >= 0, else -1.
                        for s in sum[..len].iter_mut() {
                            *s = if *s >= 0.0 { 1.0 } else { -1.0 };
                        }
                        mixed[..len].fill(0.0);
                        divisor[..len].fill(0.0);
                        for (i, plan) in plans.iter().enumerate() {
                            let d_in = &dw[i * BLOCK..i * BLOCK + len];
                            for j in 0..len {
                                let agree = sign(d_in[j]) == sum[j];
                                mixed[j] += if agree { d_in[j] } else { 0.0 };
                                divisor[j] += if agree { plan.weight } else { 0.0 };
                            }
                        }
                        for j in 0..len {
                            let div = if divisor[j] == 0.0 { 1.0 } else { divisor[j] };
                            let mut m = normalize_by(mixed[j], div);
                            if lambda != 1.0 {
                                m *= lambda32;
                            }
                            out_block[j] = b[j] + m;
                        }
                    }
                }
            }
        });
        Ok(())
    }
}

/// Elements per inner block of the kernel (structure-of-arrays scratch stays in L1/L2).
const BLOCK: usize = 1024;

/// `out[j] = weight · scale(keep(x[j] − b[j]))` for one input over one block starting at `start`.
fn weighted_sparse_delta(x: &[f32], b: &[f32], start: usize, plan: &InputPlan, out: &mut [f32]) {
    let w = plan.weight;
    let scaled = |d: f32| match plan.scale {
        Scale::One => d,
        Scale::Div(s) => d / s,
        Scale::Mul(s) => d * s,
    };
    match plan.keep {
        Keep::All => {
            for ((o, &x), &b) in out.iter_mut().zip(x).zip(b) {
                *o = scaled(x - b) * w;
            }
        }
        Keep::None => out.fill(0.0),
        Keep::Magnitude { threshold, tie_cut } => {
            for (j, ((o, &x), &b)) in out.iter_mut().zip(x).zip(b).enumerate() {
                let d = x - b;
                let a = d.abs();
                let keep = a > threshold || (a == threshold && start + j <= tie_cut);
                *o = if keep { scaled(d) * w } else { 0.0 };
            }
        }
        Keep::Random { key, density } => {
            for (j, ((o, &x), &b)) in out.iter_mut().zip(x).zip(b).enumerate() {
                let keep = crate::sparsify::dare_keeps(key, start + j, density);
                *o = if keep { scaled(x - b) * w } else { 0.0 };
            }
        }
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
