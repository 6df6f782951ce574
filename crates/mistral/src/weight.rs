//! A weight tensor the model overwrites in place: the phase-2 search writes every candidate's merged
//! weights into one live model, so a write must not allocate a new tensor each time.
//!
//! Candle tensors share their storage when cloned, and candle cannot tell whether a storage is shared. A
//! write into shared storage would show through in whoever else holds it (another model, a tensor handed
//! out by [`crate::Mistral::parameter`], the map the model was loaded from). So the model tracks sharing
//! itself: a [`Weight`] is written in place only while it knows it is the storage's only holder, that is
//!
//! - its `Arc` is unique (no clone of the model or of a layer holds it), and
//! - the tensor was never handed out ([`Weight::share`]) and did not come from a source that may keep it.
//!
//! Otherwise the write gives this model new storage first (copy on write), so everybody else keeps the
//! values they had; later writes then go in place.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Device, InplaceOp1, Layout, Storage, Tensor};
use half::slice::HalfFloatSliceExt;

use crate::cpu_ops::parallel_for;
use crate::error::{MistralError, Result};

#[derive(Debug, Clone)]
pub(crate) struct Weight(Arc<Held>);

#[derive(Debug)]
struct Held {
    tensor: Tensor,
    /// Someone outside the model may hold a tensor on this storage.
    shared: AtomicBool,
}

impl Weight {
    /// A weight whose storage nothing else holds (read from a file, or just converted).
    pub(crate) fn owned(tensor: Tensor) -> Weight {
        Weight::with_sharing(tensor, false)
    }

    /// A weight whose storage may be held elsewhere (e.g. a tensor from a map the caller keeps): the first
    /// write copies it.
    pub(crate) fn shared(tensor: Tensor) -> Weight {
        Weight::with_sharing(tensor, true)
    }

    fn with_sharing(tensor: Tensor, shared: bool) -> Weight {
        Weight(Arc::new(Held {
            tensor,
            shared: AtomicBool::new(shared),
        }))
    }

    /// The tensor, to keep: it shares the model's storage, so the model's next write to this weight copies
    /// first and the returned tensor keeps its values.
    pub(crate) fn share(&self) -> Tensor {
        // Relaxed is enough: a write needs `&mut self` and a unique `Arc`, so it cannot run concurrently
        // with this call on another thread.
        self.0.shared.store(true, Ordering::Relaxed);
        self.0.tensor.clone()
    }

    /// This weight in `dtype` on `device`: shared with `self` (copy on write) when nothing changes,
    /// otherwise new storage.
    pub(crate) fn converted(&self, dtype: DType, device: &Device) -> Result<Weight> {
        let t = &self.0.tensor;
        if t.dtype() == dtype && t.device().same_device(device) {
            return Ok(self.clone());
        }
        // At least one of the two conversions runs and allocates, so the result is held by nobody else.
        Ok(Weight::owned(t.to_device(device)?.to_dtype(dtype)?))
    }

    /// Whether a write may go into the current storage.
    fn writable(&mut self) -> bool {
        match Arc::get_mut(&mut self.0) {
            Some(held) => !*held.shared.get_mut() && held.tensor.is_contiguous(),
            None => false,
        }
    }

    /// The host address of the storage's first element (`None` off the CPU), to show that writes go in place.
    pub(crate) fn data_addr(&self) -> Option<usize> {
        let (storage, layout) = self.0.tensor.storage_and_layout();
        let Storage::Cpu(cpu) = &*storage else {
            return None;
        };
        let offset = layout.start_offset();
        Some(match cpu {
            CpuStorage::F32(v) => v.as_ptr().wrapping_add(offset) as usize,
            CpuStorage::F16(v) => v.as_ptr().wrapping_add(offset) as usize,
            CpuStorage::BF16(v) => v.as_ptr().wrapping_add(offset) as usize,
            CpuStorage::F64(v) => v.as_ptr().wrapping_add(offset) as usize,
            _ => return None,
        })
    }

    /// Overwrites the values with `data` (row-major f32, as many elements as the weight), rounded to the
    /// weight's dtype to nearest even (as `half` and candle's `to_dtype` do).
    ///
    /// On the CPU the conversion writes straight into the existing storage. On CUDA (and Metal) the data is
    /// converted on the host and copied into the existing device buffer with candle's `slice_set`, which
    /// needs one temporary device tensor per write.
    pub(crate) fn write_f32(&mut self, data: &[f32]) -> Result<()> {
        let (shape, dtype, device) = {
            let t = &self.0.tensor;
            (t.shape().clone(), t.dtype(), t.device().clone())
        };
        if data.len() != shape.elem_count() {
            return Err(MistralError::BadInput(format!(
                "internal: {} values written into a weight of shape {:?}",
                data.len(),
                shape.dims()
            )));
        }
        check_writable_dtype(dtype)?;
        if !self.writable() {
            let fresh = Tensor::from_slice(data, shape, &Device::Cpu)?
                .to_dtype(dtype)?
                .to_device(&device)?;
            *self = Weight::owned(fresh);
            return Ok(());
        }
        let t = &self.0.tensor;
        if device.is_cpu() {
            t.inplace_op1(&WriteF32(data))?;
        } else {
            let src = Tensor::from_slice(data, shape, &Device::Cpu)?
                .to_dtype(dtype)?
                .to_device(&device)?;
            t.slice_set(&src, 0, 0)?;
        }
        Ok(())
    }

    /// Overwrites the values with `value` (same shape, any float dtype, any device), converted to the
    /// weight's dtype. A host f32 tensor is read in place; others are converted first (one temporary).
    pub(crate) fn write(&mut self, value: &Tensor) -> Result<()> {
        let (dtype, device) = (self.0.tensor.dtype(), self.0.tensor.device().clone());
        if device.is_cpu() || is_host_f32(value) {
            return with_host_f32(value, |data| self.write_f32(data));
        }
        // A device model and a value that is not host f32: convert on the device, copy on the device.
        let src = value.to_device(&device)?.to_dtype(dtype)?.contiguous()?;
        if self.writable() {
            self.0.tensor.slice_set(&src, 0, 0)?;
        } else {
            // `src` may be `value` itself (nothing to convert): take a copy the caller does not hold.
            *self = Weight::owned(src.copy()?);
        }
        Ok(())
    }
}

impl std::ops::Deref for Weight {
    type Target = Tensor;

    fn deref(&self) -> &Tensor {
        &self.0.tensor
    }
}

fn check_writable_dtype(dtype: DType) -> Result<()> {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 | DType::F64 => Ok(()),
        other => Err(MistralError::BadDtype {
            name: "(model weights)".into(),
            dtype: format!("{other:?}"),
            reason: "only f32, f16, bf16 and f64 weights can be written".into(),
        }),
    }
}

fn is_host_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous()
}

/// Runs `f` on the elements of `t` as row-major f32: borrowed from a contiguous f32 CPU tensor, converted
/// into a temporary otherwise.
pub(crate) fn with_host_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    if is_host_f32(t) {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F32(v)), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        {
            if let Some(data) = v.get(start..end) {
                return f(data);
            }
        }
    }
    let data = t
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    f(&data)
}

/// Elements per parallel task of a conversion: large enough that the task overhead is noise.
const CHUNK: usize = 1 << 16;

/// Candle's in-place hook: converts the f32 data straight into the storage.
struct WriteF32<'a>(&'a [f32]);

impl InplaceOp1 for WriteF32<'_> {
    fn name(&self) -> &'static str {
        "write-f32"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let src = self.0;
        let range = layout
            .contiguous_offsets()
            .filter(|(start, end)| end - start == src.len());
        let Some((start, end)) = range else {
            candle_core::bail!(
                "write-f32: the weight is not a contiguous block of {} values",
                src.len()
            )
        };
        let out_of_range =
            || candle_core::Error::Msg("write-f32: layout outside the storage".into());
        match storage {
            CpuStorage::F32(v) => convert_chunks(
                v.get_mut(start..end).ok_or_else(out_of_range)?,
                src,
                |d, s| d.copy_from_slice(s),
            ),
            CpuStorage::BF16(v) => convert_chunks(
                v.get_mut(start..end).ok_or_else(out_of_range)?,
                src,
                |d, s| d.convert_from_f32_slice(s),
            ),
            CpuStorage::F16(v) => convert_chunks(
                v.get_mut(start..end).ok_or_else(out_of_range)?,
                src,
                |d, s| d.convert_from_f32_slice(s),
            ),
            CpuStorage::F64(v) => convert_chunks(
                v.get_mut(start..end).ok_or_else(out_of_range)?,
                src,
                |d, s| d.iter_mut().zip(s).for_each(|(d, &s)| *d = f64::from(s)),
            ),
            other => candle_core::bail!("write-f32: cannot write into {:?} storage", other.dtype()),
        }
        Ok(())
    }
}

/// `f(dst_chunk, src_chunk)` over matching chunks of `dst` and `src` (equal lengths), on candle's CPU pool
/// (writes are never called from inside a parallel task, where the pool would not nest).
fn convert_chunks<T: Send>(dst: &mut [T], src: &[f32], f: impl Fn(&mut [T], &[f32]) + Sync) {
    let len = dst.len().min(src.len());
    let dst_ptr = SendMut(dst.as_mut_ptr());
    parallel_for(len.div_ceil(CHUNK), |c| {
        let range = c * CHUNK..((c + 1) * CHUNK).min(len);
        // SAFETY: chunk `c` writes only its own range of `dst`, which is `len` elements long.
        let d =
            unsafe { std::slice::from_raw_parts_mut(dst_ptr.get().add(range.start), range.len()) };
        f(d, &src[range]);
    });
}

/// A pointer that parallel tasks may share because each writes a disjoint part of what it points to.
struct SendMut<T>(*mut T);
// SAFETY: only used to hand disjoint regions of one slice to parallel tasks.
unsafe impl<T: Send> Send for SendMut<T> {}
unsafe impl<T: Send> Sync for SendMut<T> {}
impl<T> SendMut<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}
