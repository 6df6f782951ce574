//! Reused f32 buffers for the streaming merger. A tensor's inputs and output are tens to hundreds
//! of megabytes; allocating them fresh for every tensor costs a page fault and a page clear per
//! 4 KiB (a third of the CPU time of a merge, measured), so freed buffers are kept for the next
//! tensors, within a byte limit on everything the pool has handed out or holds.

use std::sync::Mutex;

pub(crate) struct BufferPool {
    limit_bytes: usize,
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<Vec<f32>>,
    idle_bytes: usize,
    /// Capacity of the buffers handed out and not yet given back.
    live_bytes: usize,
}

const F32: usize = std::mem::size_of::<f32>();

impl BufferPool {
    pub fn new(limit_bytes: usize) -> Self {
        BufferPool { limit_bytes, state: Mutex::new(PoolState::default()) }
    }

    /// A buffer with capacity for at least `len` values: an idle one that is not more than twice
    /// as large (holding whatever it held before, so callers that overwrite every value need not
    /// clear it), else a new empty one (first dropping idle buffers if it would not fit the limit).
    pub fn take(&self, len: usize) -> Vec<f32> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let fit = state
            .idle
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len && b.capacity() <= len.saturating_mul(2).max(1 << 16))
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        if let Some(i) = fit {
            let buffer = state.idle.swap_remove(i);
            let bytes = buffer.capacity() * F32;
            state.idle_bytes -= bytes;
            state.live_bytes += bytes;
            return buffer;
        }
        let bytes = len * F32;
        while !state.idle.is_empty() && state.live_bytes + state.idle_bytes + bytes > self.limit_bytes {
            // Drop the largest idle buffer first: it is the least likely to fit what comes next
            // (tensors are merged largest first).
            let largest = (0..state.idle.len()).max_by_key(|&i| state.idle[i].capacity()).unwrap_or(0);
            let dropped = state.idle.swap_remove(largest);
            state.idle_bytes -= dropped.capacity() * F32;
        }
        state.live_bytes += bytes;
        drop(state);
        Vec::with_capacity(len)
    }

    /// Return a buffer from [`BufferPool::take`] for reuse.
    pub fn give(&self, buffer: Vec<f32>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = buffer.capacity() * F32;
        state.live_bytes = state.live_bytes.saturating_sub(bytes);
        if buffer.capacity() == 0 || state.live_bytes + state.idle_bytes + bytes > self.limit_bytes {
            return;
        }
        state.idle_bytes += bytes;
        state.idle.push(buffer);
    }
}

/// Encode `values` to `dtype` in place and return the encoded bytes (a prefix of the buffer's
/// memory), so writing a merged tensor needs no second buffer.
pub(crate) fn encode_in_place(dtype: evomerge_checkpoint::Dtype, values: &mut [f32]) -> &[u8] {
    let len = values.len();
    // SAFETY: the byte view covers exactly the memory of `values`, which we borrow mutably for the
    // lifetime of the view; u8 has no alignment or validity requirements.
    let bytes: &mut [u8] = unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), len * F32) };
    let size = dtype.size_of();
    if size == F32 {
        // f32 values are already their little-endian bytes on little-endian machines.
        if cfg!(target_endian = "big") {
            for c in bytes.chunks_exact_mut(F32) {
                let v = f32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        return bytes;
    }
    // Block by block, front to back: block k's output lands at or before the bytes of block k's
    // input, which was copied out first, so nothing is overwritten before it is read.
    const BLOCK: usize = 4096;
    let mut staged = [0f32; BLOCK];
    let mut start = 0;
    while start < len {
        let n = BLOCK.min(len - start);
        for (s, c) in staged[..n].iter_mut().zip(bytes[start * F32..(start + n) * F32].chunks_exact(F32)) {
            *s = f32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
        }
        evomerge_checkpoint::encode_from_f32(dtype, &staged[..n], &mut bytes[start * size..(start + n) * size]);
        start += n;
    }
    &bytes[..len * size]
}

#[cfg(test)]
mod tests {
    use super::*;
    use evomerge_checkpoint::{encode_from_f32, Dtype};

    #[test]
    fn in_place_encoding_matches_the_checkpoint_encoder() {
        for dtype in [Dtype::BF16, Dtype::F16, Dtype::F32] {
            for len in [0usize, 1, 7, 4096, 4097, 3 * 4096 + 5, 100_003] {
                let values: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin() * 10.0 + (i % 7) as f32 * 1e-3).collect();
                let mut want = vec![0u8; len * dtype.size_of()];
                encode_from_f32(dtype, &values, &mut want);
                let mut buffer = values.clone();
                assert_eq!(encode_in_place(dtype, &mut buffer), &want[..], "{dtype:?}, {len} values");
            }
        }
    }

    #[test]
    fn pool_reuses_buffers_and_respects_its_limit() {
        let pool = BufferPool::new(10 * 100_000 * F32);
        let a = pool.take(100_000);
        let a_ptr = a.as_ptr();
        pool.give(a);
        let b = pool.take(90_000);
        assert_eq!(b.as_ptr(), a_ptr, "a close fit is reused");
        pool.give(b);
        // Much smaller requests do not pin a large buffer.
        let small = pool.take(10);
        assert_ne!(small.as_ptr(), a_ptr);
        pool.give(small);
        // Requests beyond the limit drop idle buffers rather than growing past it.
        let big = pool.take(9 * 100_000 + 50_000);
        let state = pool.state.lock().unwrap();
        assert!(state.live_bytes + state.idle_bytes <= 10 * 100_000 * F32 + 10 * F32);
        drop(state);
        pool.give(big);
    }
}
