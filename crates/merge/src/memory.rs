//! The in-memory merger: the same plan and kernels as the file merger, but each merged tensor is
//! handed to the caller (e.g. written into a live model for one candidate of the search).

use crate::config::MergeConfig;
use crate::execute::{Executor, TensorOutput};
use crate::plan::{model_refs, MergePlan};
use crate::source::TensorSource;
use crate::MergeError;

/// One merged output tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Merges a recipe over sources already opened or loaded (see [`TensorSource`]).
pub struct InMemoryMerger<'a> {
    plan: MergePlan,
    sources: Vec<&'a dyn TensorSource>,
    seed: u64,
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
        let plan = MergePlan::new(config, &sources)?;
        Ok(InMemoryMerger { plan, sources, seed })
    }

    /// Same as [`InMemoryMerger::new`] with sources in [`model_refs`] order.
    pub fn from_sources(config: &MergeConfig, sources: Vec<&'a dyn TensorSource>, seed: u64) -> Result<Self, MergeError> {
        let plan = MergePlan::new(config, &sources)?;
        Ok(InMemoryMerger { plan, sources, seed })
    }

    pub fn plan(&self) -> &MergePlan {
        &self.plan
    }

    /// Merge one planned tensor (by position in `plan().tensors`).
    pub fn merge_one(&self, index: usize) -> Result<MergedTensor, MergeError> {
        let tensor = self.plan.tensors.get(index).ok_or_else(|| MergeError::InvalidInputs {
            tensor: format!("#{index}"),
            message: format!("the plan has {} tensors", self.plan.tensors.len()),
        })?;
        let executor = Executor { plan: &self.plan, sources: &self.sources, seed: self.seed, pool: None };
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
