//! The generalized task-arithmetic kernel behind `task_arithmetic`, `ties`, `dare_ties` and
//! `dare_linear` (mergekit's `GeneralizedTaskArithmeticMerge`): sparsify each delta, weight it,
//! optionally elect a sign per entry, sum, normalize, scale by λ, add to the base.

use rayon::prelude::*;

use super::{
    has_avx2, BasePolicy, ElementInput, ElementKeep, ElementScale, ElementwiseGta, MergeMethod, ModelTensor,
    TensorContext, CHUNK,
};
use crate::params::{ParamDefault, ParamKind, ParamScope, ParamSet, ParamSpec};
use crate::sparsify::{dare_cut, dare_keeps_cut, dare_key, della_delta, magnitude_k, magnitude_keep, outlier_keep, Keep};
use crate::MergeError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sparsification {
    None,
    /// Keep the top `density` fraction by |delta| (TIES).
    Magnitude,
    /// Keep each entry with probability `density` (DARE).
    Random,
    /// Drop the `gamma` fraction of largest |delta| and the smallest, keeping `density` (Breadcrumbs).
    MagnitudeOutliers,
    /// Keep each entry with a probability ranked on |delta| within its row, `density ± epsilon` (DELLA).
    Della,
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

const GAMMA: ParamSpec = ParamSpec::new(
    "gamma",
    ParamKind::Float { min: Some(0.0), max: Some(1.0) },
    ParamScope::NonBase,
    ParamDefault::Float(0.01),
);
const EPSILON: ParamSpec = ParamSpec::new(
    "epsilon",
    ParamKind::Float { min: Some(0.0), max: Some(1.0) },
    ParamScope::NonBase,
    ParamDefault::Float(0.15),
);

const fn with_extra<const N: usize, const M: usize>(params: [ParamSpec; N], extra: ParamSpec) -> [ParamSpec; M] {
    let mut out = [extra; M];
    let mut i = 0;
    while i < N {
        out[i] = params[i];
        i += 1;
    }
    out
}

pub(crate) static BREADCRUMBS_PARAMS_PLAIN: [ParamSpec; 7] = with_extra(GTA_PARAMS_PLAIN, GAMMA);
pub(crate) static BREADCRUMBS_PARAMS_CONSENSUS: [ParamSpec; 8] = with_extra(GTA_PARAMS_CONSENSUS, GAMMA);
pub(crate) static DELLA_PARAMS_PLAIN: [ParamSpec; 7] = with_extra(GTA_PARAMS_PLAIN, EPSILON);
pub(crate) static DELLA_PARAMS_CONSENSUS: [ParamSpec; 8] = with_extra(GTA_PARAMS_CONSENSUS, EPSILON);

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
    Ok(input_f64s(ctx, inputs, name, method)?.into_iter().map(|v| v as f32).collect())
}

/// Per-input values of a float parameter as the recipe gives them (f64), erroring when one is missing.
pub(crate) fn input_f64s(
    ctx: &TensorContext,
    inputs: &[ModelTensor],
    name: &str,
    method: &str,
) -> Result<Vec<f64>, MergeError> {
    param_f64s(ctx, inputs.iter().map(|i| (i.model, i.params)), name, method)
}

/// [`input_f64s`] over the inputs' (model index, parameters), as the per-element and weighted-sum forms get them.
pub(crate) fn param_f64s<'p>(
    ctx: &TensorContext,
    inputs: impl IntoIterator<Item = (usize, &'p ParamSet)>,
    name: &str,
    method: &str,
) -> Result<Vec<f64>, MergeError> {
    inputs
        .into_iter()
        .map(|(model, params)| {
            params.float(name).ok_or_else(|| MergeError::MissingParameter {
                parameter: name.into(),
                method: method.into(),
                tensor: ctx.name.into(),
                model: format!("#{model}"),
            })
        })
        .collect()
}

impl GeneralizedTaskArithmetic {
    pub(crate) fn rescale(&self, shared: &ParamSet) -> Rescale {
        let natural = match self.sparsification {
            Sparsification::Random | Sparsification::Della => Rescale::InverseDensity,
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
#[derive(Debug, Clone)]
struct InputPlan {
    keep: Keep,
    scale: Scale,
    weight: f32,
    /// The sparsified delta, when it is computed ahead (DELLA); `keep` is then `All`.
    given: Option<Vec<f32>>,
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

    fn merge_rounded(
        &self,
        dtype: evomerge_checkpoint::Dtype,
        ctx: &TensorContext,
        shared: &ParamSet,
        base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Option<Result<(), MergeError>> {
        let Some(base) = base else {
            return Some(Err(MergeError::InvalidInputs {
                tensor: ctx.name.into(),
                message: format!("{} needs a base model", self.name),
            }));
        };
        self.gta_rounded(dtype, ctx, shared, base, inputs, out)
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
        let (rescale, normalize, lambda, consensus) = self.shared_settings(shared);

        let mut scratch = Vec::new();
        let mut plans = Vec::with_capacity(inputs.len());
        for (input, &weight) in inputs.iter().zip(&weights) {
            let density = input.params.float("density").unwrap_or(1.0);
            let mut given = None;
            let keep = match self.sparsification {
                Sparsification::None => Keep::All,
                _ if density >= 1.0 => Keep::All,
                _ if density <= 0.0 => Keep::None,
                Sparsification::Magnitude => magnitude_keep(input.data, base, density, &mut scratch),
                Sparsification::Random => Keep::Random { key: dare_key(ctx.seed, ctx.name, input.model), density },
                Sparsification::MagnitudeOutliers => {
                    let gamma = input.params.float("gamma").unwrap_or(0.01);
                    outlier_keep(input.data, base, density, gamma, &mut scratch)
                }
                Sparsification::Della => {
                    let epsilon = input.params.float("epsilon").unwrap_or(0.15);
                    if density + epsilon >= 1.0 || density - epsilon <= 0.0 {
                        return Err(MergeError::InvalidInputs {
                            tensor: ctx.name.into(),
                            message: format!(
                                "{}: density {density} ± epsilon {epsilon} of model #{} must stay inside (0, 1); lower epsilon",
                                self.name, input.model
                            ),
                        });
                    }
                    let key = dare_key(ctx.seed, ctx.name, input.model);
                    let inverse = rescale == Rescale::InverseDensity;
                    given = Some(della_delta(input.data, base, ctx.shape, density, epsilon, key, inverse));
                    Keep::All
                }
            };
            let scale = match (&given, keep, rescale) {
                (Some(_), _, Rescale::L1) => given_l1_scale(input.data, base, given.as_deref().unwrap_or_default()),
                (Some(_), _, _) => Scale::One,
                (None, Keep::All | Keep::None, _) | (None, _, Rescale::None) => Scale::One,
                (None, _, Rescale::InverseDensity) => Scale::Div(density as f32),
                (None, _, Rescale::L1) => l1_scale(input.data, base, keep),
            };
            plans.push(InputPlan { keep, scale, weight, given });
        }
        drop(scratch);

        let finish = Finish { normalize, lambda: (lambda != 1.0).then_some(lambda as f32) };
        let kernel = Kernel { base, inputs, plans: &plans, consensus, finish, plain_divisor: plain_divisor(&weights) };
        kernel.run(out);
        Ok(())
    }

    fn elementwise(
        &self,
        ctx: &TensorContext,
        shared: &ParamSet,
        inputs: &[(usize, &ParamSet)],
    ) -> Option<Result<ElementwiseGta, MergeError>> {
        if ctx.compute.is_some_and(|d| d != evomerge_checkpoint::Dtype::F32) {
            return None;
        }
        let (rescale, normalize, lambda, consensus) = self.shared_settings(shared);
        let weights = match param_f64s(ctx, inputs.iter().copied(), "weight", self.name) {
            Ok(weights) => weights,
            Err(e) => return Some(Err(e)),
        };
        let mut planned = Vec::with_capacity(inputs.len());
        for (&(model, params), weight) in inputs.iter().zip(weights) {
            let density = params.float("density").unwrap_or(1.0);
            // The same decisions as `merge`, for the sparsifications whose plan reads no data.
            let keep = match self.sparsification {
                Sparsification::None => ElementKeep::All,
                _ if density >= 1.0 => ElementKeep::All,
                _ if density <= 0.0 => ElementKeep::None,
                Sparsification::Random => {
                    ElementKeep::Random { key: dare_key(ctx.seed, ctx.name, model), density }
                }
                // As `magnitude_keep`: k of n survive, all of them when k reaches n.
                Sparsification::Magnitude => match magnitude_k(density, ctx.shape.iter().product()) {
                    k if k >= ctx.shape.iter().product() => ElementKeep::All,
                    k => ElementKeep::TopMagnitude { k },
                },
                _ => return None,
            };
            let scale = match (keep, rescale) {
                (ElementKeep::All | ElementKeep::None, _) | (_, Rescale::None) => ElementScale::One,
                (_, Rescale::InverseDensity) => ElementScale::Div(density as f32),
                (_, Rescale::L1) => return None,
            };
            planned.push(ElementInput { weight: weight as f32, keep, scale });
        }
        let weights: Vec<f32> = planned.iter().map(|p| p.weight).collect();
        Some(Ok(ElementwiseGta {
            inputs: planned,
            consensus,
            normalize,
            lambda: (lambda != 1.0).then_some(lambda as f32),
            plain_divisor: plain_divisor(&weights),
        }))
    }
}

impl GeneralizedTaskArithmetic {
    /// `(rescale, normalize, lambda, consensus)` from the shared parameters.
    fn shared_settings(&self, shared: &ParamSet) -> (Rescale, bool, f64, Option<Consensus>) {
        let consensus = match (self.consensus, shared.text("consensus_method")) {
            (false, _) => None,
            (true, Some("count")) => Some(Consensus::Count),
            (true, _) => Some(Consensus::Sum),
        };
        (
            self.rescale(shared),
            shared.bool("normalize").unwrap_or(self.default_normalize),
            shared.float("lambda").unwrap_or(1.0),
            consensus,
        )
    }
}

/// Without sign election the divisor is the plain sum of weights (1 when that is ~0).
fn plain_divisor(weights: &[f32]) -> f32 {
    let weight_sum: f32 = weights.iter().sum();
    if weight_sum.abs() < 1e-8 {
        1.0
    } else {
        weight_sum
    }
}

/// [`ElementwiseGta::apply`]: the plan turned back into the kernel's input plans, run by the same kernel.
pub(super) fn run_elementwise(plan: &ElementwiseGta, base: &[f32], inputs: &[&[f32]], out: &mut [f32]) {
    let no_params = ParamSet::default();
    let tensors: Vec<ModelTensor> =
        inputs.iter().enumerate().map(|(model, data)| ModelTensor { model, data, params: &no_params }).collect();
    let plans: Vec<InputPlan> = plan
        .inputs
        .iter()
        .zip(inputs)
        .map(|(p, &data)| InputPlan {
            keep: match p.keep {
                ElementKeep::All => Keep::All,
                ElementKeep::None => Keep::None,
                ElementKeep::Random { key, density } => Keep::Random { key, density },
                ElementKeep::Magnitude { threshold, tie_cut } => Keep::Magnitude { threshold, tie_cut },
                ElementKeep::TopMagnitude { k } => crate::select::top_k(data, base, k, &mut Vec::new()),
            },
            scale: match p.scale {
                ElementScale::One => Scale::One,
                ElementScale::Div(s) => Scale::Div(s),
                ElementScale::Mul(s) => Scale::Mul(s),
            },
            weight: p.weight,
            given: None,
        })
        .collect();
    let finish = Finish { normalize: plan.normalize, lambda: plan.lambda };
    Kernel { base, inputs: &tensors, plans: &plans, consensus: plan.consensus, finish, plain_divisor: plan.plain_divisor }
        .run(out);
}

/// Everything one chunk of the merge needs.
struct Kernel<'k> {
    base: &'k [f32],
    inputs: &'k [ModelTensor<'k>],
    plans: &'k [InputPlan],
    consensus: Option<Consensus>,
    finish: Finish,
    plain_divisor: f32,
}

impl Kernel<'_> {
    /// Merges every entry into `out`, in parallel chunks.
    fn run(&self, out: &mut [f32]) {
        let avx2 = has_avx2();
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU has AVX2 (checked at run time by `has_avx2`).
                unsafe { self.chunk_avx2(c * CHUNK, chunk) };
                return;
            }
            let _ = avx2;
            self.chunk(c * CHUNK, chunk);
        });
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn chunk_avx2(&self, offset: usize, chunk: &mut [f32]) {
        self.chunk(offset, chunk)
    }

    /// Merge the entries `offset..offset + chunk.len()` into `chunk`.
    #[inline(always)]
    fn chunk(&self, offset: usize, chunk: &mut [f32]) {
        let Kernel { base, inputs, plans, consensus, finish, plain_divisor } = *self;
        // Work in small blocks of structure-of-arrays buffers so the inner loops vectorise.
        let n = inputs.len();
        let mut dw = vec![0f32; n * BLOCK];
        let mut sum = [0f32; BLOCK];
        let mut mixed = [0f32; BLOCK];
        let mut divisor = [0f32; BLOCK];
        for (blk, out_block) in chunk.chunks_mut(BLOCK).enumerate() {
            let start = offset + blk * BLOCK;
            let len = out_block.len();
            let b = &base[start..start + len];
            for (i, (input, plan)) in inputs.iter().zip(plans).enumerate() {
                let out = &mut dw[i * BLOCK..i * BLOCK + len];
                match &plan.given {
                    // x − 0 is x exactly: the given delta goes through the same weighting.
                    Some(given) => weighted_sparse_delta(&given[start..start + len], &ZEROS[..len], start, plan, out),
                    None => weighted_sparse_delta(&input.data[start..start + len], b, start, plan, out),
                }
            }
            let deltas = |i: usize| &dw[i * BLOCK..i * BLOCK + len];
            let sum = &mut sum[..len];
            sum.fill(0.0);
            match consensus {
                None => {
                    for i in 0..n {
                        add_assign(sum, deltas(i));
                    }
                    finish.apply(out_block, b, sum, |_| plain_divisor);
                }
                Some(rule) => {
                    for i in 0..n {
                        match rule {
                            Consensus::Sum => add_assign(sum, deltas(i)),
                            Consensus::Count => add_signs(sum, deltas(i)),
                        }
                    }
                    // Majority sign: +1 when the sum (or count) is >= 0, else -1 (NaN: -1).
                    for s in sum.iter_mut() {
                        *s = if *s >= 0.0 { 1.0 } else { -1.0 };
                    }
                    let (mixed, divisor) = (&mut mixed[..len], &mut divisor[..len]);
                    mixed.fill(0.0);
                    divisor.fill(0.0);
                    for (i, plan) in plans.iter().enumerate() {
                        add_agreeing(mixed, divisor, deltas(i), sum, plan.weight);
                    }
                    finish.apply(out_block, b, mixed, |j| if divisor[j] == 0.0 { 1.0 } else { divisor[j] });
                }
            }
        }
    }
}

/// Elements per inner block of the kernel (structure-of-arrays scratch stays in L1/L2).
const BLOCK: usize = 1024;
static ZEROS: [f32; BLOCK] = [0.0; BLOCK];

/// The last step of every entry: normalise by a divisor, scale by λ, add to the base.
#[derive(Clone, Copy)]
struct Finish {
    normalize: bool,
    lambda: Option<f32>,
}

impl Finish {
    #[inline(always)]
    fn apply(self, out: &mut [f32], base: &[f32], mixed: &[f32], divisor: impl Fn(usize) -> f32) {
        let (out, base, mixed) = (&mut out[..mixed.len()], &base[..mixed.len()], mixed);
        match (self.normalize, self.lambda) {
            (false, None) => {
                for ((o, &b), &m) in out.iter_mut().zip(base).zip(mixed) {
                    *o = b + m;
                }
            }
            (false, Some(l)) => {
                for ((o, &b), &m) in out.iter_mut().zip(base).zip(mixed) {
                    *o = b + m * l;
                }
            }
            (true, None) => {
                for (j, ((o, &b), &m)) in out.iter_mut().zip(base).zip(mixed).enumerate() {
                    *o = b + m / divisor(j);
                }
            }
            (true, Some(l)) => {
                for (j, ((o, &b), &m)) in out.iter_mut().zip(base).zip(mixed).enumerate() {
                    *o = b + m / divisor(j) * l;
                }
            }
        }
    }
}

#[inline(always)]
fn add_assign(sum: &mut [f32], d: &[f32]) {
    for (s, &d) in sum.iter_mut().zip(d) {
        *s += d;
    }
}

#[inline(always)]
fn add_signs(sum: &mut [f32], d: &[f32]) {
    for (s, &d) in sum.iter_mut().zip(d) {
        *s += sign(d);
    }
}

/// Disjoint-mean accumulation: entries whose sign agrees with the elected one (`elected` is ±1,
/// so `d · elected > 0` is exactly `sign(d) == elected`; zero and NaN never agree).
#[inline(always)]
fn add_agreeing(mixed: &mut [f32], divisor: &mut [f32], d: &[f32], elected: &[f32], weight: f32) {
    let len = mixed.len();
    let (divisor, d, elected) = (&mut divisor[..len], &d[..len], &elected[..len]);
    for j in 0..len {
        let agree = d[j] * elected[j] > 0.0;
        mixed[j] += if agree { d[j] } else { 0.0 };
        divisor[j] += if agree { weight } else { 0.0 };
    }
}

/// `out[j] = weight · scale(keep(x[j] − b[j]))` for one input over one block starting at `start`.
#[inline(always)]
fn weighted_sparse_delta(x: &[f32], b: &[f32], start: usize, plan: &InputPlan, out: &mut [f32]) {
    let w = plan.weight;
    // One monomorphised loop per scale, with the same f32 operations in the same order.
    match plan.scale {
        Scale::One => sparse_delta(x, b, start, plan.keep, out, |d| d * w),
        Scale::Div(s) => sparse_delta(x, b, start, plan.keep, out, |d| d / s * w),
        Scale::Mul(s) => sparse_delta(x, b, start, plan.keep, out, |d| d * s * w),
    }
}

#[inline(always)]
fn sparse_delta(x: &[f32], b: &[f32], start: usize, keep: Keep, out: &mut [f32], f: impl Fn(f32) -> f32 + Copy) {
    let len = out.len();
    let (x, b) = (&x[..len], &b[..len]);
    match keep {
        Keep::All => {
            for ((o, &x), &b) in out.iter_mut().zip(x).zip(b) {
                *o = f(x - b);
            }
        }
        Keep::None => out.fill(0.0),
        Keep::Magnitude { threshold, tie_cut } => {
            // Entries equal to the threshold count only up to index `tie_cut`: split the block
            // there so that both parts are branch-free loops.
            let ties_until = (tie_cut + 1).saturating_sub(start).min(len);
            magnitude_part(&x[..ties_until], &b[..ties_until], &mut out[..ties_until], threshold, true, f);
            magnitude_part(&x[ties_until..], &b[ties_until..], &mut out[ties_until..], threshold, false, f);
        }
        Keep::Band { .. } => {
            for (j, ((o, &x), &b)) in out.iter_mut().zip(x).zip(b).enumerate() {
                let d = x - b;
                let v = f(d);
                *o = if keep.keeps(start + j, d) { v } else { 0.0 };
            }
        }
        Keep::Random { key, density } => {
            let cut = dare_cut(density);
            for (j, ((o, &x), &b)) in out.iter_mut().zip(x).zip(b).enumerate() {
                let keep = dare_keeps_cut(key, start + j, cut);
                let v = f(x - b);
                *o = if keep { v } else { 0.0 };
            }
        }
    }
}

#[inline(always)]
fn magnitude_part(x: &[f32], b: &[f32], out: &mut [f32], threshold: f32, ties_kept: bool, f: impl Fn(f32) -> f32) {
    for ((o, &x), &b) in out.iter_mut().zip(x).zip(b) {
        let d = x - b;
        let a = d.abs();
        let keep = (a > threshold) | (ties_kept & (a == threshold));
        let v = f(d);
        *o = if keep { v } else { 0.0 };
    }
}

#[inline(always)]
fn sign(x: f32) -> f32 {
    ((x > 0.0) as i32 - (x < 0.0) as i32) as f32
}

/// mergekit's l1 rescale for a delta sparsified ahead: ‖delta‖₁ / ‖given‖₁, unless either is below 1e-7.
fn given_l1_scale(input: &[f32], base: &[f32], given: &[f32]) -> Scale {
    let sums = input
        .par_chunks(CHUNK)
        .zip(base.par_chunks(CHUNK))
        .zip(given.par_chunks(CHUNK))
        .map(|((x, b), g)| {
            let mut s = [0f64; 2];
            for ((&x, &b), &g) in x.iter().zip(b).zip(g) {
                s[0] += (x - b).abs() as f64;
                s[1] += g.abs() as f64;
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
