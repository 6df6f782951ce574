//! [`CausalLm`] for the crate's [`Mistral`] (plain models and layer paths alike).

use candle_core::Tensor;

use super::{CausalLm, ModelError, StepInput};
use crate::{KvCache, Mistral};

impl CausalLm for Mistral {
    type Cache = KvCache;

    fn new_cache(&self, batch: usize) -> Result<KvCache, ModelError> {
        Ok(Mistral::new_cache(self, batch))
    }

    fn new_cache_with_capacity(
        &self,
        batch: usize,
        capacity: usize,
    ) -> Result<KvCache, ModelError> {
        Ok(Mistral::new_cache_with_capacity(self, batch, capacity))
    }

    fn forward_last(
        &self,
        input: StepInput<'_>,
        positions: &[Vec<u32>],
        attention_mask: &[Vec<bool>],
        cache: &mut KvCache,
    ) -> Result<Tensor, ModelError> {
        let embeds = match input {
            StepInput::Tokens(ids) => {
                let (b, s) = (ids.len(), ids.first().map_or(0, Vec::len));
                if ids.iter().any(|row| row.len() != s) {
                    return Err(format!("token rows must all have {s} ids").into());
                }
                // Checked on the host ids, instead of reading the device tensor back.
                self.embed_ids(&ids.concat())?.reshape((b, s, self.config().hidden_size))?
            }
            StepInput::Embeds(embeds) => embeds.clone(),
        };
        Ok(self.forward_last_step(&embeds, positions, attention_mask, cache)?)
    }

    fn reorder_cache(&self, cache: &mut KvCache, rows: &[usize]) -> Result<(), ModelError> {
        Ok(cache.select(rows)?)
    }

    fn max_context(&self) -> usize {
        Mistral::max_context(self)
    }
}
