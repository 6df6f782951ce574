//! The in-memory merger: the same plan and kernels as the file merger, but each merged tensor is
//! handed to the caller (e.g. written into a live model for one candidate of the search).

use rayon::prelude::*;

use crate::buffers::BufferPool;
use crate::config::MergeConfig;
use crate::execute::{Executor, TensorOutput};
use crate::methods::{ElementwiseGta, TensorContext, WeightedSum};
use crate::params::ParamSet;
use crate::plan::{model_refs, MergePlan, PlannedTensor, TensorJob};
use crate::source::TensorSource;
use crate::{ComputeDtype, MergeError};

/// One merged output tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Merges a recipe over sources already opened or loaded (see [`TensorSource`]).
///
/// A search keeps one merger for the whole run and gives it each candidate's recipe with
/// [`InMemoryMerger::set_config`]: the sources stay as they are, f32 buffers come from a pool and
/// go back to it, so a candidate allocates no tensor-sized memory in steady state.
pub struct InMemoryMerger<'a> {
    plan: MergePlan,
    sources: Vec<&'a dyn TensorSource>,
    seed: u64,
    pool: BufferPool,
    /// Working memory (f32 values) merged at once by [`InMemoryMerger::merge_into`].
    batch_bytes: usize,
    compute: ComputeDtype,
}

/// What [`InMemoryMerger::merge_into`] hands the sink: one merged tensor of the plan.
pub struct MergedView<'v> {
    pub tensor: &'v PlannedTensor,
    pub values: &'v [f32],
}

impl<'a> InMemoryMerger<'a> {
    /// `models` maps each model reference of the recipe (as written there) to its source.
    pub fn new(config: &MergeConfig, models: &[(&str, &'a dyn TensorSource)], seed: u64) -> Result<Self, MergeError> {
        let sources = model_refs(config)
            .iter()
            .map(|r| {
                models.iter().find(|(name, _)| name == r).map(|(_, s)| *s).ok_or_else(|| {
                    MergeError::config("models", format!("the recipe names `{r}` but no source was given for it"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_sources(config, sources, seed)
    }

    /// Same as [`InMemoryMerger::new`] with sources in [`model_refs`] order.
    pub fn from_sources(config: &MergeConfig, sources: Vec<&'a dyn TensorSource>, seed: u64) -> Result<Self, MergeError> {
        let plan = MergePlan::new(config, &sources)?;
        Ok(InMemoryMerger { plan, sources, seed, pool: BufferPool::new(DEFAULT_BATCH_BYTES * 2),
            batch_bytes: DEFAULT_BATCH_BYTES,
            compute: ComputeDtype::F32,
        })
    }

    /// Bound on the f32 working memory of one [`InMemoryMerger::merge_into`] batch (default 1 GiB).
    pub fn with_batch_bytes(mut self, bytes: usize) -> Self {
        self.batch_bytes = bytes.max(1);
        self.pool = BufferPool::new(self.batch_bytes.saturating_mul(2));
        self
    }

    /// Re-plan for another recipe over the same sources (the next candidate of a search): the
    /// recipe must reference the same models in the same order.
    pub fn set_config(&mut self, config: &MergeConfig) -> Result<(), MergeError> {
        let refs = model_refs(config);
        if refs != self.plan.model_refs {
            return Err(MergeError::config(
                "models",
                format!("the new recipe references {refs:?}, the merger holds {:?}", self.plan.model_refs),
            ));
        }
        self.plan = MergePlan::replan(config, &self.sources, &self.plan)?;
        Ok(())
    }

    /// What the following merges compute in (see [`ComputeDtype`]; default f32).
    pub fn with_compute_dtype(mut self, compute: ComputeDtype) -> Self {
        self.compute = compute;
        self
    }

    /// Seed of DARE masks for the following merges.
    pub fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
    }

    pub fn plan(&self) -> &MergePlan {
        &self.plan
    }

    pub fn sources(&self) -> &[&'a dyn TensorSource] {
        &self.sources
    }

    fn executor(&self) -> Executor<'_> {
        Executor {
            plan: &self.plan,
            sources: &self.sources,
            seed: self.seed,
            pool: Some(&self.pool),
            compute: self.compute.rounding(&self.plan),
        }
    }

    /// Planned tensor `index` in per-element form, for a kernel elsewhere (see [`MergeMethod::elementwise`]):
    /// `None` when it is a copy, has no base or no other input, needs vocabulary alignment or permutation, or its
    /// method has no such form for these parameters.
    pub fn elementwise(&self, index: usize) -> Option<Result<ElementwiseGta, MergeError>> {
        let tensor = self.plan.tensors.get(index)?;
        let TensorJob::Merge { shared, base: Some(_), inputs, vocab: None, permute: None } = &tensor.job else {
            return None;
        };
        if inputs.is_empty() {
            return None;
        }
        let params: Vec<(usize, &ParamSet)> = inputs.iter().map(|i| (i.model, &i.params)).collect();
        self.plan.method.elementwise(&self.context(tensor), shared, &params)
    }

    /// The rows of planned tensor `index` as a [`WeightedSum`] sees them (its base first when it has one, then its
    /// other inputs, as (model, stored name)); `None` when it is a copy or needs vocabulary alignment or
    /// permutation.
    pub fn sum_rows(&self, index: usize) -> Option<Vec<(usize, &str)>> {
        let tensor = self.plan.tensors.get(index)?;
        let TensorJob::Merge { base, inputs, vocab: None, permute: None, .. } = &tensor.job else {
            return None;
        };
        Some(base.iter().chain(inputs).map(|i| (i.model, i.name.as_str())).collect())
    }

    /// The numbers planned tensor `index`'s [`WeightedSum`] form needs from its data
    /// ([`crate::MergeMethod::sum_statistics`], read from the sources; empty when it needs none); `None` when the tensor
    /// has no rows ([`InMemoryMerger::sum_rows`]). Independent of the parameters: compute once per tensor.
    pub fn sum_statistics(&self, index: usize) -> Option<Result<Vec<f64>, MergeError>> {
        let rows = self.sum_rows(index)?;
        let Some(statistics) = self.plan.method.sum_statistics() else { return Some(Ok(Vec::new())) };
        let read = || -> Result<Vec<f64>, MergeError> {
            let mut values = Vec::with_capacity(rows.len());
            for (model, name) in &rows {
                let mut row = Vec::new();
                self.sources[*model].read_f32(name, &mut row)?;
                values.push(row);
            }
            let rows: Vec<&[f32]> = values.iter().map(Vec::as_slice).collect();
            Ok(statistics(&rows))
        };
        Some(read())
    }

    /// Planned tensor `index` as a fixed weighted sum of its rows, given its statistics
    /// ([`InMemoryMerger::sum_statistics`]): `None` when it has no rows or its method no such form.
    pub fn weighted_sum(&self, index: usize, statistics: &[f64]) -> Option<Result<WeightedSum, MergeError>> {
        let tensor = self.plan.tensors.get(index)?;
        // The tensors `sum_rows` gives rows for.
        let TensorJob::Merge { shared, inputs, vocab: None, permute: None, .. } = &tensor.job else { return None };
        let params: Vec<(usize, &ParamSet)> = inputs.iter().map(|i| (i.model, &i.params)).collect();
        self.plan.method.weighted_sum(&self.context(tensor), shared, &params, statistics)
    }

    fn context<'t>(&self, tensor: &'t PlannedTensor) -> TensorContext<'t> {
        TensorContext {
            name: &tensor.canonical,
            layer: tensor.layer,
            seed: self.seed,
            shape: &tensor.shape,
            compute: self.compute.rounding(&self.plan),
        }
    }

    /// Merge one planned tensor (by position in `plan().tensors`).
    pub fn merge_one(&self, index: usize) -> Result<MergedTensor, MergeError> {
        let tensor = self.plan.tensors.get(index).ok_or_else(|| MergeError::InvalidInputs {
            tensor: format!("#{index}"),
            message: format!("the plan has {} tensors", self.plan.tensors.len()),
        })?;
        let executor = Executor {
            plan: &self.plan,
            sources: &self.sources,
            seed: self.seed,
            pool: None,
            compute: self.compute.rounding(&self.plan),
        };
        let values = match executor.run(tensor)? {
            TensorOutput::Values(v) => v,
            TensorOutput::Raw(dtype, bytes) => {
                let mut v = vec![0f32; bytes.len() / dtype.size_of()];
                evomerge_checkpoint::decode_to_f32(dtype, bytes, &mut v);
                v
            }
        };
        Ok(MergedTensor { name: tensor.name.clone(), shape: tensor.shape.clone(), values })
    }

    /// Merge every tensor of the plan that a merge computes (copies of tensors outside the language
    /// model, such as a frozen vision tower, are skipped unless `copies` is set) and hand each to
    /// `sink` in plan order. Tensors are merged in parallel in batches of at most the batch memory;
    /// the sink runs on the calling thread (it typically writes into a live model).
    pub fn merge_into<E>(&self, copies: bool, sink: impl FnMut(MergedView<'_>) -> Result<(), E>) -> Result<(), E>
    where
        E: From<MergeError>,
    {
        self.merge_into_except(copies, |_| false, sink)
    }

    /// [`InMemoryMerger::merge_into`] without the tensors (by plan index) that `done` says were merged
    /// elsewhere (on an accelerator, from [`InMemoryMerger::elementwise`]).
    pub fn merge_into_except<E>(
        &self,
        copies: bool,
        done: impl Fn(usize) -> bool,
        mut sink: impl FnMut(MergedView<'_>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<MergeError>,
    {
        let executor = self.executor();
        let wanted: Vec<&PlannedTensor> = self
            .plan
            .tensors
            .iter()
            .enumerate()
            .filter(|(i, t)| (copies || !matches!(t.job, crate::plan::TensorJob::Copy { .. })) && !done(*i))
            .map(|(_, t)| t)
            .collect();
        let mut start = 0;
        while start < wanted.len() {
            // A batch: consecutive tensors whose working memory fits (at least one).
            let mut end = start;
            let mut bytes = 0usize;
            while end < wanted.len() {
                let need = Executor::working_bytes(wanted[end]).max(wanted[end].numel() * 4);
                if end > start && bytes + need > self.batch_bytes {
                    break;
                }
                bytes += need;
                end += 1;
            }
            let outputs: Vec<Result<Vec<f32>, MergeError>> = wanted[start..end]
                .par_iter()
                .map(|tensor| match executor.run(tensor)? {
                    TensorOutput::Values(v) => Ok(v),
                    TensorOutput::Raw(dtype, bytes) => {
                        let mut v = executor.take_for_output(bytes.len() / dtype.size_of());
                        evomerge_checkpoint::decode_to_f32(dtype, bytes, &mut v);
                        Ok(v)
                    }
                })
                .collect();
            let mut result = Ok(());
            for (tensor, output) in wanted[start..end].iter().zip(outputs) {
                match output {
                    Ok(values) => {
                        if result.is_ok() {
                            result = sink(MergedView { tensor, values: &values });
                        }
                        executor.give(values);
                    }
                    Err(e) => {
                        if result.is_ok() {
                            result = Err(E::from(e));
                        }
                    }
                }
            }
            result?;
            start = end;
        }
        Ok(())
    }

    /// Merge every tensor in plan order, handing each to `sink` as soon as it is ready (peak memory:
    /// one tensor's inputs and output).
    pub fn for_each<E>(&self, mut sink: impl FnMut(MergedTensor) -> Result<(), E>) -> Result<(), E>
    where
        E: From<MergeError>,
    {
        for i in 0..self.plan.tensors.len() {
            sink(self.merge_one(i)?)?;
        }
        Ok(())
    }

    /// Merge everything into a vector (small models, tests).
    pub fn merge_all(&self) -> Result<Vec<MergedTensor>, MergeError> {
        (0..self.plan.tensors.len()).map(|i| self.merge_one(i)).collect()
    }
}

/// Default working memory of one in-memory merge batch.
const DEFAULT_BATCH_BYTES: usize = 1 << 30;
