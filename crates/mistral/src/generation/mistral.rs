//! [`CausalLm`] for the crate's [`Mistral`] (plain models and layer paths alike).

use candle_core::Tensor;

use super::{CausalLm, ModelError, StepInput};
use crate::{KvCache, Mistral};

impl CausalLm for Mistral {
    type Cache = KvCache;

    fn new_cache(&self, batch: usize) -> Result<KvCache, ModelError> {
        Ok(Mistral::new_cache(self, batch))
    }

    fn new_cache_with_capacity(&self, batch: usize, capacity: usize) -> Result<KvCache, ModelError> {
        Ok(Mistral::new_cache_with_capacity(self, batch, capacity))
    }

    fn forward_last(
        &self,
        input: StepInput<'_>,
        positions: &[Vec<u32>],
        attention_mask: &[Vec<bool>],
        cache: &mut KvCache,
    ) -> Result<Tensor, ModelError> {
        let device = self.device();
        let b = positions.len();
        let s = positions.first().map_or(0, Vec::len);
        let flat: Vec<u32> = positions.iter().flatten().copied().collect();
        let positions = Tensor::from_vec(flat, (b, s), device)?;
        // No padding anywhere (the common case): let the model use its plain causal path.
        let mask = if attention_mask.iter().flatten().all(|&m| m) {
            None
        } else {
            let t = attention_mask.first().map_or(0, Vec::len);
            let flat: Vec<u8> = attention_mask.iter().flatten().map(|&m| m as u8).collect();
            Some(Tensor::from_vec(flat, (b, t), device)?)
        };
        let logits = match input {
            StepInput::Tokens(ids) => {
                // The range check runs here, on the host ids, instead of reading the device tensor back.
                let flat: Vec<u32> = ids.iter().flatten().copied().collect();
                if let Some(&max) = flat.iter().max() {
                    self.check_token_id(max as usize)?;
                }
                let n = flat.len();
                let ids = Tensor::from_vec(flat, n, device)?;
                let embeds = self.embed_checked_ids(&ids, b, s)?;
                Mistral::forward_embeds_last(self, &embeds, &positions, mask.as_ref(), cache)?
            }
            StepInput::Embeds(embeds) => Mistral::forward_embeds_last(self, embeds, &positions, mask.as_ref(), cache)?,
        };
        Ok(logits)
    }

    fn reorder_cache(&self, cache: &mut KvCache, rows: &[usize]) -> Result<(), ModelError> {
        Ok(cache.select(rows)?)
    }

    fn max_context(&self) -> usize {
        Mistral::max_context(self)
    }
}
