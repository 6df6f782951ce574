//! Key/value cache: one slot per hop of the layer path, so a layer that appears twice on a path keeps two
//! independent histories.

use std::sync::Arc;

use candle_core::Tensor;

use crate::error::{MistralError, Result};

/// Keys and values of one hop, `[batch, kv_heads, seq, head_dim]` each.
///
/// Stored in a preallocated buffer `[batch, kv_heads, capacity, head_dim]` that new positions are written into in
/// place, so a decode step costs the new position only instead of copying the whole history (`Tensor::cat`).
/// When the buffer is full it is reallocated with double the capacity.
#[derive(Debug, Clone, Default)]
pub struct KvSlot {
    buf: Option<(Tensor, Tensor)>,
    /// Shared by clones of this slot (a cloned cache shares the buffers): a slot whose buffers are shared copies
    /// them before writing in place, so one clone's appends never show up in another.
    buf_owner: Arc<()>,
    len: usize,
    /// Positions to allocate at the first append (the caller's estimate of prompt + new tokens); 0 = exactly
    /// what the first append needs.
    reserve: usize,
}

impl KvSlot {
    /// Appends this step's keys/values `[batch, kv_heads, s, head_dim]` and returns the full history
    /// `[batch, kv_heads, len, head_dim]`: a view into the buffer (strided along the position axis).
    pub(crate) fn append(&mut self, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let (b, h, s, d) = k.dims4()?;
        let needed = self.len + s;
        let capacity = self.capacity();
        let shared = Arc::strong_count(&self.buf_owner) > 1;
        if self.buf.is_none() || needed > capacity || shared {
            let new_capacity = match needed > capacity {
                true => needed.max(self.reserve).max(2 * capacity),
                false => capacity,
            };
            let shape = (b, h, new_capacity, d);
            let nk = Tensor::zeros(shape, k.dtype(), k.device())?;
            let nv = Tensor::zeros(shape, v.dtype(), v.device())?;
            if let Some((pk, pv)) = self.buf.take() {
                if self.len > 0 {
                    nk.slice_set(&pk.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                    nv.slice_set(&pv.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
                }
            }
            self.buf = Some((nk, nv));
            self.buf_owner = Arc::new(());
        }
        let (bk, bv) = self.buf.as_ref().ok_or_else(|| {
            MistralError::BadInput("internal: KV buffer missing after allocation".into())
        })?;
        bk.slice_set(&k.contiguous()?, 2, self.len)?;
        bv.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len = needed;
        Ok((bk.narrow(2, 0, needed)?, bv.narrow(2, 0, needed)?))
    }

    fn capacity(&self) -> usize {
        self.buf
            .as_ref()
            .and_then(|(k, _)| k.dim(2).ok())
            .unwrap_or(0)
    }

    fn len(&self) -> usize {
        self.len
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
        KvCache::with_capacity(num_hops, batch, 0)
    }

    /// An empty cache whose buffers are allocated for `capacity` positions at the first forward pass (prompt +
    /// new tokens of a generation call), so decoding never reallocates. Longer runs still work: a full buffer
    /// doubles.
    pub fn with_capacity(num_hops: usize, batch: usize, capacity: usize) -> KvCache {
        let slot = KvSlot {
            reserve: capacity,
            ..KvSlot::default()
        };
        KvCache {
            slots: vec![slot; num_hops],
            batch,
        }
    }

    /// Positions each hop's buffer holds before it must grow (0 before the first forward pass).
    pub fn capacity(&self) -> usize {
        self.slots.first().map_or(0, KvSlot::capacity)
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
            .find_map(|s| s.buf.as_ref().map(|(k, _)| k.device().clone()))
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
            // index_select makes fresh buffers (capacity kept), so no other slot shares them.
            if let Some((k, v)) = slot.buf.take() {
                slot.buf = Some((k.index_select(&index, 0)?, v.index_select(&index, 0)?));
                slot.buf_owner = Arc::new(());
            }
        }
        self.batch = rows.len();
        Ok(())
    }

    /// Forgets everything, keeping the shape.
    pub fn clear(&mut self) {
        for slot in &mut self.slots {
            slot.buf = None;
            slot.len = 0;
        }
    }
}
