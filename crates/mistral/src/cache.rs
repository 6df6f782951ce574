//! Key/value cache: one slot per hop of the layer path, so a layer that appears twice on a path keeps two
//! independent histories.

use candle_core::Tensor;

use crate::error::{MistralError, Result};

/// Keys and values of one hop, `[batch, kv_heads, seq, head_dim]` each.
#[derive(Debug, Clone, Default)]
pub struct KvSlot {
    kv: Option<(Tensor, Tensor)>,
}

impl KvSlot {
    /// Appends this step's keys/values and returns the full history.
    pub(crate) fn append(&mut self, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = match self.kv.take() {
            None => (k, v),
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
        };
        self.kv = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    fn len(&self) -> usize {
        self.kv
            .as_ref()
            .and_then(|(k, _)| k.dim(2).ok())
            .unwrap_or(0)
    }
}

/// The cache of a whole forward pass: one [`KvSlot`] per hop, all for the same batch rows.
#[derive(Debug, Clone)]
pub struct KvCache {
    slots: Vec<KvSlot>,
    batch: usize,
}

impl KvCache {
    /// An empty cache for `num_hops` hops and `batch` rows.
    pub fn new(num_hops: usize, batch: usize) -> KvCache {
        KvCache {
            slots: vec![KvSlot::default(); num_hops],
            batch,
        }
    }

    /// Positions already cached (the same for every hop).
    pub fn seq_len(&self) -> usize {
        self.slots.first().map_or(0, KvSlot::len)
    }

    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn num_hops(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn slot_mut(&mut self, hop: usize) -> &mut KvSlot {
        &mut self.slots[hop]
    }

    /// Keeps the given rows, in the given order (rows may repeat): beam search reorders its beams this way.
    pub fn select(&mut self, rows: &[usize]) -> Result<()> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.batch) {
            return Err(MistralError::BadInput(format!(
                "cache row {bad} does not exist (the cache holds {} rows)",
                self.batch
            )));
        }
        let Some(device) = self
            .slots
            .iter()
            .find_map(|s| s.kv.as_ref().map(|(k, _)| k.device().clone()))
        else {
            self.batch = rows.len();
            return Ok(());
        };
        let index = Tensor::from_vec(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            rows.len(),
            &device,
        )?;
        for slot in &mut self.slots {
            if let Some((k, v)) = slot.kv.take() {
                slot.kv = Some((k.index_select(&index, 0)?, v.index_select(&index, 0)?));
            }
        }
        self.batch = rows.len();
        Ok(())
    }

    /// Forgets everything, keeping the shape.
    pub fn clear(&mut self) {
        for slot in &mut self.slots {
            slot.kv = None;
        }
    }
}
