//! Running one planned tensor: read its inputs as f32, call [`merge_tensor`], add vocabulary rows
//! from the tokenizer source. Shared by the streaming and the in-memory merger.

use evomerge_checkpoint::Dtype;

use crate::buffers::BufferPool;
use crate::methods::{merge_tensor, ModelTensor, TensorContext};
use crate::plan::{MergePlan, PlannedInput, PlannedTensor, TensorJob, VocabPermute, VocabRows};
use crate::source::TensorSource;
use crate::MergeError;

/// A merged tensor: computed values, or stored bytes copied unchanged.
pub enum TensorOutput<'s> {
    Values(Vec<f32>),
    Raw(Dtype, &'s [u8]),
}

pub(crate) struct Executor<'a> {
    pub plan: &'a MergePlan,
    pub sources: &'a [&'a dyn TensorSource],
    pub seed: u64,
    /// Where f32 buffers come from and go back to (the streaming merger); `None`: plain allocations.
    pub pool: Option<&'a BufferPool>,
    /// Round inputs to this dtype and merge in it, as mergekit does (`None`: f32).
    pub compute: Option<Dtype>,
}

impl<'a> Executor<'a> {
    /// Read an input as f32, aligned to `vocab.rows` rows when the vocabulary needs aligning.
    fn read(
        &self,
        model: usize,
        name: &str,
        vocab: Option<&VocabRows>,
        row_len: usize,
        donor: &mut Option<Vec<f32>>,
    ) -> Result<Vec<f32>, MergeError> {
        let len: usize = self.sources[model].shape(name).map_or(0, |s| s.iter().product());
        let mut values = self.take(len.max(vocab.map_or(0, |v| v.rows * row_len)));
        self.sources[model].read_f32(name, &mut values)?;
        // The f32 copy is all we use: let the mapped pages go now rather than after the merge.
        self.sources[model].release(name);
        if let Some(vocab) = vocab {
            let want = vocab.rows * row_len;
            if values.len() > want {
                values.truncate(want);
            } else if values.len() < want {
                if donor.is_none() {
                    let mut d = Vec::new();
                    self.sources[vocab.model].read_f32(&vocab.name, &mut d)?;
                    self.sources[vocab.model].release(&vocab.name);
                    if d.len() != want {
                        return Err(MergeError::InvalidInputs {
                            tensor: name.to_string(),
                            message: format!("the tokenizer source's `{}` does not have {} rows", vocab.name, vocab.rows),
                        });
                    }
                    *donor = Some(d);
                }
                if let Some(d) = donor.as_ref() {
                    values.extend_from_slice(&d[values.len()..want]);
                }
            }
        }
        // mergekit casts every input to the recipe's dtype as it loads it.
        if let Some(dtype) = self.compute {
            for v in values.iter_mut() {
                *v = crate::methods::round_to(dtype, *v);
            }
        }
        Ok(values)
    }

    /// Put every input's rows in the merged vocabulary's order (all inputs at once: a token one
    /// model lacks takes another model's row).
    fn permute_vocabulary(
        &self,
        tensor: &PlannedTensor,
        permute: &VocabPermute,
        base_model: Option<usize>,
        base_values: &mut Option<Vec<f32>>,
        inputs: &[PlannedInput],
        input_values: &mut [Vec<f32>],
    ) -> Result<(), MergeError> {
        let Some(vocabulary) = self.plan.vocabulary.as_deref() else {
            return Err(MergeError::InvalidInputs { tensor: tensor.name.clone(), message: "the plan has no merged vocabulary".into() });
        };
        let row_len: usize = tensor.shape.iter().skip(1).product();
        let mut all: Vec<(usize, &[f32])> = Vec::with_capacity(inputs.len() + 1);
        if let (Some(model), Some(values)) = (base_model, base_values.as_deref()) {
            all.push((model, values));
        }
        all.extend(inputs.iter().zip(input_values.iter()).map(|(i, v)| (i.model, v.as_slice())));
        let mut permuted = vocabulary.permute(&tensor.name, &all, row_len, permute.base, self.compute)?.into_iter();
        drop(all);
        // mergekit rounds the permuted rows (means included) to the recipe's dtype too.
        let place = |slot: &mut Vec<f32>, new: Option<Vec<f32>>| {
            if let Some(mut new) = new {
                if let Some(dtype) = self.compute {
                    new.iter_mut().for_each(|v| *v = crate::methods::round_to(dtype, *v));
                }
                self.give(std::mem::replace(slot, new));
            }
        };
        if let Some(slot) = base_values.as_mut() {
            place(slot, permuted.next());
        }
        for slot in input_values.iter_mut() {
            place(slot, permuted.next());
        }
        Ok(())
    }

    /// An empty buffer for `len` values.
    fn take(&self, len: usize) -> Vec<f32> {
        let mut buffer = self.pool.map_or_else(Vec::new, |p| p.take(len));
        buffer.clear();
        buffer
    }

    /// A buffer of `len` values with unspecified contents, for a kernel that writes all of them
    /// (a reused buffer then needs no zero-filling).
    pub(crate) fn take_for_output(&self, len: usize) -> Vec<f32> {
        let mut buffer = self.pool.map_or_else(Vec::new, |p| p.take(len));
        buffer.truncate(len);
        buffer.resize(len, 0.0);
        buffer
    }

    /// Hand a buffer back for reuse (dropped without a pool).
    pub fn give(&self, buffer: Vec<f32>) {
        if let Some(pool) = self.pool {
            pool.give(buffer);
        }
    }

    /// Bytes of working memory `run` needs for this tensor (inputs, output, scratch), for admission control.
    pub fn working_bytes(tensor: &PlannedTensor) -> usize {
        let n = tensor.numel() * 4;
        match &tensor.job {
            TensorJob::Copy { .. } => 0,
            // Aligning a vocabulary holds each input twice for a moment (as read, and reordered).
            TensorJob::Merge { base, inputs, permute, .. } => {
                let held = inputs.len() + usize::from(base.is_some());
                n * (held * if permute.is_some() { 2 } else { 1 } + 2)
            }
        }
    }

    pub fn run(&self, tensor: &PlannedTensor) -> Result<TensorOutput<'a>, MergeError> {
        match &tensor.job {
            TensorJob::Copy { model, name } => {
                let source = self.sources[*model];
                match source.raw(name) {
                    Some((dtype, bytes)) if dtype == tensor.dtype => Ok(TensorOutput::Raw(dtype, bytes)),
                    _ => {
                        let mut values = self.take(tensor.numel());
                        source.read_f32(name, &mut values)?;
                        Ok(TensorOutput::Values(values))
                    }
                }
            }
            TensorJob::Merge { shared, base, inputs, vocab, permute } => {
                let row_len: usize = tensor.shape.iter().skip(1).product();
                let vocab = vocab.as_ref();
                let mut donor = None;
                let mut base_values =
                    base.as_ref().map(|b| self.read(b.model, &b.name, vocab, row_len, &mut donor)).transpose()?;
                let mut input_values = inputs
                    .iter()
                    .map(|i| self.read(i.model, &i.name, vocab, row_len, &mut donor))
                    .collect::<Result<Vec<_>, _>>()?;
                drop(donor);
                if let Some(permute) = permute {
                    self.permute_vocabulary(tensor, permute, base.as_ref().map(|b| b.model), &mut base_values, inputs, &mut input_values)?;
                }
                let model_tensors: Vec<ModelTensor> = inputs
                    .iter()
                    .zip(&input_values)
                    .map(|(i, data)| ModelTensor { model: i.model, data, params: &i.params })
                    .collect();
                // Every method writes every output value.
                let mut out = self.take_for_output(tensor.numel());
                let ctx = TensorContext {
                    name: &tensor.canonical,
                    layer: tensor.layer,
                    seed: self.seed,
                    shape: &tensor.shape,
                    compute: self.compute,
                };
                let merged = merge_tensor(self.plan.method, &ctx, shared, base_values.as_deref(), &model_tensors, &mut out);
                drop(model_tensors);
                for buffer in input_values.into_iter().chain(base_values) {
                    self.give(buffer);
                }
                match merged {
                    Ok(()) => Ok(TensorOutput::Values(out)),
                    Err(e) => {
                        self.give(out);
                        Err(e)
                    }
                }
            }
        }
    }
}
