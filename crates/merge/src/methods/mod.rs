//! Merge methods: one module per method behind [`MergeMethod`], found by name in a static registry,
//! all called through [`merge_tensor`].

mod arcee_fusion;
mod breadcrumbs;
mod dare;
mod della;
mod elementwise;
mod gta;
mod karcher;
mod linear;
mod model_stock;
mod multislerp;
mod nearswap;
mod nuslerp;
mod passthrough;
mod ram;
mod rounded;
mod sce;
mod slerp;
mod task_arithmetic;
mod torch_sort;
mod ties;

pub use elementwise::{ElementInput, ElementKeep, ElementScale, ElementwiseGta, SumStart, WeightedSum};
pub use gta::{Consensus, GeneralizedTaskArithmetic, Rescale, Sparsification};
pub use rounded::round_to;
pub use torch_sort::{torch_argsort_ascending, torch_argsort_descending, torch_topk_indices};

use evomerge_checkpoint::Dtype;

use crate::params::{ParamScope, ParamSet, ParamSpec};
use crate::MergeError;

/// Where the tensor being merged sits; kernels that draw random numbers key them on it.
#[derive(Debug, Clone, Copy)]
pub struct TensorContext<'a> {
    /// Canonical output tensor name (plain Mistral/Llama naming, e.g.
    /// `model.layers.3.mlp.up_proj.weight`, whatever the output layout: a VLM's merged language
    /// model gets the same DARE masks as a plain model's).
    pub name: &'a str,
    /// Output layer index, `None` for embeddings, final norm, lm_head.
    pub layer: Option<usize>,
    /// Recipe seed (DARE masks are a pure function of seed, tensor name and model index).
    pub seed: u64,
    pub shape: &'a [usize],
    /// Merge in this dtype, as mergekit does with a bf16/f16 recipe (`None`: f32; see
    /// [`crate::ComputeDtype`]). Inputs are already rounded to it.
    pub compute: Option<Dtype>,
}

/// One input of a tensor merge: which model it comes from, its values (f32, row-major) and its
/// resolved per-input parameters (`weight`, `density`, `scale`, ...).
#[derive(Debug, Clone, Copy)]
pub struct ModelTensor<'a> {
    /// Stable index of the model in the recipe (keys DARE masks).
    pub model: usize,
    pub data: &'a [f32],
    pub params: &'a ParamSet,
}

/// How a method treats the recipe's `base_model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BasePolicy {
    /// The base is passed separately; the others are deltas against it (task arithmetic family, slerp).
    Required,
    /// The base, if named, is one more ordinary input (linear, passthrough, karcher).
    Ignored,
    /// The base may be named; then it is passed separately and the others are taken relative
    /// to it (multislerp, nuslerp).
    Optional,
}

pub trait MergeMethod: Send + Sync {
    fn name(&self) -> &'static str;
    /// Parameters the method reads; anything else in a recipe is an error.
    fn parameters(&self) -> &'static [ParamSpec];
    fn base_policy(&self) -> BasePolicy;
    /// Inclusive bounds on the number of inputs (base included).
    fn input_bounds(&self) -> (usize, Option<usize>);
    /// Inclusive bounds on the number of inputs other than the base (methods with an optional base
    /// constrain these).
    fn non_base_bounds(&self) -> (usize, Option<usize>) {
        (0, None)
    }
    /// Merge one tensor. `inputs` excludes the base when `base_policy()` is `Required`; all slices
    /// (base, inputs, out) have the same length. Parameters are already resolved for this tensor.
    /// Every value of `out` must be written: it may hold stale values on entry (reused buffers).
    fn merge(
        &self,
        ctx: &TensorContext,
        shared: &ParamSet,
        base: Option<&[f32]>,
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Result<(), MergeError>;
    /// Merge as mergekit 0.1.5 does when it computes in `dtype` (bf16 or f16), inputs already
    /// rounded to it; `None` when evomerge does not reproduce this method (with these parameters)
    /// in that dtype.
    fn merge_rounded(
        &self,
        _dtype: Dtype,
        _ctx: &TensorContext,
        _shared: &ParamSet,
        _base: Option<&[f32]>,
        _inputs: &[ModelTensor],
        _out: &mut [f32],
    ) -> Option<Result<(), MergeError>> {
        None
    }
    /// This merge of one tensor in per-element form, when every output entry depends only on the same entry of
    /// the inputs and planning reads no data (see [`ElementwiseGta`]); `None` otherwise. `inputs` are the
    /// non-base inputs' model indices and parameters, as [`MergeMethod::merge`] gets them.
    fn elementwise(
        &self,
        _ctx: &TensorContext,
        _shared: &ParamSet,
        _inputs: &[(usize, &ParamSet)],
    ) -> Option<Result<ElementwiseGta, MergeError>> {
        None
    }
    /// The per-tensor numbers this merge's [`WeightedSum`] form depends on that no parameter changes (slerp:
    /// |base|², |other|², base·other), as a function of the tensor's rows (base first, then the other inputs);
    /// `None` when the form needs none. A caller that merges many candidates computes them once per tensor.
    fn sum_statistics(&self) -> Option<fn(&[&[f32]]) -> Vec<f64>> {
        None
    }
    /// This merge of one tensor as a fixed weighted sum of its rows ([`WeightedSum`]), given its
    /// [`MergeMethod::sum_statistics`] (empty when it needs none); `None` when it has no such form (with these
    /// parameters or this compute dtype). `inputs` as for [`MergeMethod::elementwise`].
    fn weighted_sum(
        &self,
        _ctx: &TensorContext,
        _shared: &ParamSet,
        _inputs: &[(usize, &ParamSet)],
        _statistics: &[f64],
    ) -> Option<Result<WeightedSum, MergeError>> {
        None
    }
}

static LINEAR: linear::Linear = linear::Linear;
static SLERP: slerp::Slerp = slerp::Slerp;
static PASSTHROUGH: passthrough::Passthrough = passthrough::Passthrough;
static SCE: sce::Sce = sce::Sce;
static MODEL_STOCK: model_stock::ModelStock = model_stock::ModelStock;
static NEARSWAP: nearswap::NearSwap = nearswap::NearSwap;
static MULTISLERP: multislerp::MultiSlerp = multislerp::MultiSlerp;
static NUSLERP: nuslerp::NuSlerp = nuslerp::NuSlerp;
static KARCHER: karcher::Karcher = karcher::Karcher;
static ARCEE_FUSION: arcee_fusion::ArceeFusion = arcee_fusion::ArceeFusion;

/// All registered methods, in the order they are listed to users.
pub fn registry() -> [&'static dyn MergeMethod; 20] {
    [
        &LINEAR,
        &task_arithmetic::TASK_ARITHMETIC,
        &ties::TIES,
        &dare::DARE_TIES,
        &dare::DARE_LINEAR,
        &breadcrumbs::BREADCRUMBS,
        &breadcrumbs::BREADCRUMBS_TIES,
        &della::DELLA,
        &della::DELLA_LINEAR,
        &SCE,
        &MODEL_STOCK,
        &NEARSWAP,
        &ARCEE_FUSION,
        &ram::RAM,
        &ram::RAMPLUS_TL,
        &SLERP,
        &NUSLERP,
        &MULTISLERP,
        &KARCHER,
        &PASSTHROUGH,
    ]
}

/// Look a method up by its recipe name.
pub fn get(name: &str) -> Result<&'static dyn MergeMethod, MergeError> {
    registry().into_iter().find(|m| m.name() == name).ok_or_else(|| MergeError::UnknownMethod {
        name: name.to_string(),
        known: registry().iter().map(|m| m.name().to_string()).collect(),
    })
}

/// The one tensor-level entry point used by the file merger and the in-memory merger: checks the
/// inputs fit the method, then runs its kernel into `out`.
pub fn merge_tensor(
    method: &dyn MergeMethod,
    ctx: &TensorContext,
    shared: &ParamSet,
    base: Option<&[f32]>,
    inputs: &[ModelTensor],
    out: &mut [f32],
) -> Result<(), MergeError> {
    let invalid = |message: String| MergeError::InvalidInputs { tensor: ctx.name.to_string(), message };
    let numel: usize = ctx.shape.iter().product();
    if out.len() != numel {
        return Err(invalid(format!("output has {} values but shape {:?} needs {numel}", out.len(), ctx.shape)));
    }
    if let Some(b) = base {
        if b.len() != numel {
            return Err(invalid(format!("base has {} values, expected {numel}", b.len())));
        }
    }
    for input in inputs {
        if input.data.len() != numel {
            return Err(invalid(format!("input from model {} has {} values, expected {numel}", input.model, input.data.len())));
        }
    }
    match (method.base_policy(), base) {
        (BasePolicy::Required, None) => {
            return Err(invalid(format!("{} needs a base model (set `base_model`)", method.name())))
        }
        (BasePolicy::Ignored, Some(_)) => {
            return Err(invalid(format!("{} takes the base model as an ordinary input", method.name())))
        }
        _ => {}
    }
    if let Some(message) = count_error(method, inputs.len(), base.is_some()) {
        return Err(invalid(message));
    }
    match ctx.compute {
        Some(dtype) if dtype != Dtype::F32 => {
            method.merge_rounded(dtype, ctx, shared, base, inputs, out).unwrap_or_else(|| {
                Err(MergeError::Unsupported(format!(
                    "computing `{}` in the recipe's dtype ({dtype:?}, --compute-dtype recipe): below density 1 \
                     DARE and DELLA draw random masks (torch's draws cannot be reproduced), and the \
                     inverse-density rescale is evomerge's own; set every density to 1 or merge in f32 (the default)",
                    method.name()
                )))
            })
        }
        _ => method.merge(ctx, shared, base, inputs, out),
    }
}

/// Why `non_base` inputs plus an optional base do not fit the method, if they do not.
pub fn count_error(method: &dyn MergeMethod, non_base: usize, has_base: bool) -> Option<String> {
    let expected = |lo: usize, hi: Option<usize>| match hi {
        Some(h) if h == lo => format!("exactly {lo}"),
        Some(h) => format!("{lo} to {h}"),
        None => format!("at least {lo}"),
    };
    let count = non_base + usize::from(has_base);
    let (lo, hi) = method.input_bounds();
    if count < lo || hi.is_some_and(|h| count > h) {
        return Some(format!("{} merges {} models (base included); got {count}", method.name(), expected(lo, hi)));
    }
    let (lo, hi) = method.non_base_bounds();
    if non_base < lo || hi.is_some_and(|h| non_base > h) {
        return Some(format!("{} merges {} models besides the base; got {non_base}", method.name(), expected(lo, hi)));
    }
    None
}

/// Parameter specs of a method restricted to one scope.
pub fn specs_in_scope(method: &dyn MergeMethod, scope: ParamScope) -> impl Iterator<Item = &'static ParamSpec> {
    method.parameters().iter().filter(move |s| s.scope == scope)
}

/// Values per rayon work item inside one large tensor; fixed so results never depend on threads.
pub(crate) const CHUNK: usize = 1 << 16;

/// Whether the AVX2 build of the kernels can run here (x86-64 builds target plain SSE2 unless
/// told otherwise). Both builds do the same f32 operations in the same order per entry, so their
/// results are bit-identical; AVX2 mostly speeds up DARE's 64-bit hashing (4 lanes instead of 2).
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Sums over `0..n` in f64, computed per fixed chunk of indices in parallel and added in chunk
/// order, so the result does not depend on the thread count. `f` adds the terms of one range.
pub(crate) fn par_sums<const K: usize>(n: usize, f: impl Fn(std::ops::Range<usize>, &mut [f64; K]) + Sync) -> [f64; K] {
    use rayon::prelude::*;
    let chunks = n.div_ceil(CHUNK);
    let partial: Vec<[f64; K]> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let mut s = [0f64; K];
            f(c * CHUNK..((c + 1) * CHUNK).min(n), &mut s);
            s
        })
        .collect();
    partial.iter().fold([0f64; K], |mut acc, s| {
        for (a, b) in acc.iter_mut().zip(s) {
            *a += b;
        }
        acc
    })
}


/// The recipe's `base_model` was missing where the method needs it (the planner reports this first).
pub(crate) fn need_base(ctx: &TensorContext, method: &str) -> MergeError {
    MergeError::InvalidInputs { tensor: ctx.name.into(), message: format!("{method} needs a base model") }
}
