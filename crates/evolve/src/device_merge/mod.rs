//! The candidate merge on the live model's device. Each merged tensor's sources (base first, then the other
//! inputs) are uploaded once, in their stored dtype, as one stacked `[1 + inputs, numel]` tensor; each candidate
//! then runs one kernel per tensor ([`GtaOp`], `gta.cu`) over them and writes the result into the live model's
//! weight on the device. Only the candidate's few numbers (weights, DARE keys, rescale, sign rule) travel.
//!
//! It covers the merges with a per-element form ([`evomerge_merge::methods::ElementwiseGta`]: task_arithmetic,
//! dare_linear, dare_ties, ties, up to [`MAX_INPUTS`] inputs); every other tensor of a candidate goes through the
//! CPU merger as before. TIES's threshold (the k-th largest |delta|) and tie cut are found on the device by
//! bisecting the f32 bit patterns with counting passes ([`top_magnitude`]), the same numbers the CPU's selection
//! finds, so only a few counts come back to the host. The kernel's arithmetic is the CPU kernel's operation for operation, and its
//! DARE masks come from the same counter-based hash, so a GPU search writes the weights a CPU search would
//! (checked by scripts/gpu-check.sh on a GPU; on the CPU the op runs the CPU kernel itself).

use std::collections::HashMap;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
use evomerge_checkpoint::Dtype;
use evomerge_merge::methods::{Consensus, ElementKeep, ElementScale, ElementwiseGta};
use evomerge_merge::sparsify::dare_cut;
use evomerge_merge::{InMemoryMerger, PlannedTensor, TensorJob};

use crate::error::{EvolveError, Result};

#[cfg(feature = "cuda")]
mod cuda;

/// Most inputs (besides the base) one kernel launch takes.
pub const MAX_INPUTS: usize = 8;

/// The CUDA source of the kernel (compiled with NVRTC at the first launch).
pub const KERNEL_SOURCE: &str = include_str!("gta.cu");

/// Sources resident on the device, by output tensor name.
pub struct DeviceMerge {
    device: Device,
    resident: HashMap<String, Tensor>,
}

impl DeviceMerge {
    /// Uploads the sources of every tensor whose current plan (the merger's recipe) has a per-element form.
    /// bf16 sources stay bf16 on the device; any other stored dtype is uploaded as f32.
    pub fn new(merger: &InMemoryMerger<'_>, device: &Device) -> Result<DeviceMerge> {
        let mut resident = HashMap::new();
        for (index, tensor) in merger.plan().tensors.iter().enumerate() {
            if !matches!(merger.elementwise(index), Some(Ok(ref form)) if form.inputs.len() <= MAX_INPUTS) {
                continue;
            }
            let TensorJob::Merge { base: Some(base), inputs, .. } = &tensor.job else { continue };
            let rows: Vec<(usize, &str)> = std::iter::once((base.model, base.name.as_str()))
                .chain(inputs.iter().map(|i| (i.model, i.name.as_str())))
                .collect();
            resident.insert(tensor.name.clone(), stack_sources(merger, tensor, &rows, device)?);
        }
        Ok(DeviceMerge { device: device.clone(), resident })
    }

    /// Number of tensors whose sources are resident.
    pub fn len(&self) -> usize {
        self.resident.len()
    }

    pub fn is_empty(&self) -> bool {
        self.resident.is_empty()
    }

    /// Merges, on the device, every tensor of the merger's current plan that has resident sources and a
    /// per-element form, handing each result (`[shape]`, in `out_dtype`; f32 on the CPU) to `write`. Returns, by
    /// plan index, which tensors were merged here: the caller merges the others on the CPU
    /// ([`InMemoryMerger::merge_into_except`]).
    pub fn merge_into(
        &self,
        merger: &InMemoryMerger<'_>,
        out_dtype: DType,
        mut write: impl FnMut(&PlannedTensor, &Tensor) -> Result<()>,
    ) -> Result<Vec<bool>> {
        let tensors = &merger.plan().tensors;
        let mut done = vec![false; tensors.len()];
        for (index, tensor) in tensors.iter().enumerate() {
            let Some(sources) = self.resident.get(&tensor.name) else { continue };
            let Some(form) = merger.elementwise(index) else { continue };
            let form = form?;
            if form.inputs.len() + 1 != sources.dim(0).map_err(gpu)? {
                continue;
            }
            let Some(form) = resolve_magnitudes(sources, &form)? else { continue };
            let op = GtaOp::new(&form, out_dtype, sources.dim(1).map_err(gpu)?)?;
            let merged = sources.apply_op1_no_bwd(&op).and_then(|t| t.reshape(tensor.shape.as_slice())).map_err(gpu)?;
            write(tensor, &merged)?;
            done[index] = true;
        }
        Ok(done)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
}

fn gpu(e: candle_core::Error) -> EvolveError {
    EvolveError::Model(format!("merge on the device: {e}"))
}

/// `form` with every TIES top-k plan resolved on the sources' device into its threshold and tie cut; `None` when
/// that cannot be done there exactly (non-finite deltas, more than `u32::MAX` entries): the CPU merges the tensor.
pub fn resolve_magnitudes(sources: &Tensor, form: &ElementwiseGta) -> Result<Option<ElementwiseGta>> {
    if !form.needs_magnitudes() {
        return Ok(Some(form.clone()));
    }
    let base = sources.get(0).and_then(|b| b.to_dtype(DType::F32)).map_err(gpu)?;
    let mut resolved = form.clone();
    for (row, input) in resolved.inputs.iter_mut().enumerate() {
        let ElementKeep::TopMagnitude { k } = input.keep else { continue };
        let magnitudes = sources
            .get(row + 1)
            .and_then(|x| x.to_dtype(DType::F32))
            .and_then(|x| x.sub(&base))
            .and_then(|d| d.abs())
            .map_err(gpu)?;
        match top_magnitude(&magnitudes, k).map_err(gpu)? {
            Some((threshold, tie_cut)) => input.keep = ElementKeep::Magnitude { threshold, tie_cut },
            None => return Ok(None),
        }
    }
    Ok(Some(resolved))
}

/// The k-th largest of `magnitudes` (|delta|, 1-D f32, 0 < k < len) and the index of the last entry equal to it
/// that survives when entries above it survive and ties are taken by position, exactly as
/// `evomerge_merge`'s selection picks them. Counting passes only: the threshold's bit pattern is bisected (for
/// non-negative finite floats, float order is the order of their bits), then, when the threshold is tied, the
/// tie cut's index. `None` when some magnitude is not finite or there are more than `u32::MAX` entries.
pub fn top_magnitude(magnitudes: &Tensor, k: usize) -> candle_core::Result<Option<(f32, usize)>> {
    let n = magnitudes.elem_count();
    if n > u32::MAX as usize || k == 0 || k >= n {
        return Ok(None);
    }
    let count = |mask: Tensor| -> candle_core::Result<usize> {
        Ok(mask.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()? as usize)
    };
    if count(magnitudes.le(f32::MAX)?)? != n {
        return Ok(None);
    }
    // Invariant: at least k magnitudes are ≥ from_bits(lo); fewer than k are ≥ from_bits(hi).
    let (mut lo, mut hi) = (0u32, f32::MAX.to_bits() + 1);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if count(magnitudes.ge(f32::from_bits(mid))?)? >= k {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let threshold = f32::from_bits(lo);
    let need = k - count(magnitudes.gt(threshold)?)?;
    let ties = magnitudes.eq(threshold)?;
    if count(ties.clone())? == need {
        return Ok(Some((threshold, n - 1)));
    }
    // The smallest index p with `need` ties at or before it.
    let index = Tensor::arange(0u32, n as u32, magnitudes.device())?;
    let (mut lo, mut hi) = (0u32, n as u32 - 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if count(ties.mul(&index.le(mid)?)?)? >= need {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(Some((threshold, lo as usize)))
}

/// The rows' stored tensors stacked into `[rows, numel]` on `device`: bf16 when every row is stored in bf16,
/// else f32.
fn stack_sources(
    merger: &InMemoryMerger<'_>,
    tensor: &PlannedTensor,
    rows: &[(usize, &str)],
    device: &Device,
) -> Result<Tensor> {
    let sources = merger.sources();
    let numel = tensor.numel();
    let all_bf16 = rows.iter().all(|&(m, name)| matches!(sources[m].raw(name), Some((Dtype::BF16, _))));
    let mut stacked = Vec::with_capacity(rows.len());
    for &(model, name) in rows {
        let row = match (all_bf16, sources[model].raw(name)) {
            (true, Some((Dtype::BF16, bytes))) => Tensor::from_raw_buffer(bytes, DType::BF16, &[numel], device).map_err(gpu)?,
            _ => {
                let mut values = Vec::with_capacity(numel);
                sources[model].read_f32(name, &mut values)?;
                Tensor::from_vec(values, numel, device).map_err(gpu)?
            }
        };
        if row.elem_count() != numel {
            return Err(EvolveError::Model(format!(
                "source `{name}` of model #{model} has {} values, `{}` needs {numel}",
                row.elem_count(),
                tensor.name
            )));
        }
        stacked.push(row);
    }
    Tensor::stack(&stacked, 0).map_err(gpu)
}

/// The kernel's parameters: the per-element form as plain numbers (layout shared with `gta.cu`'s `GtaParams`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GtaParams {
    pub numel: u64,
    pub key: [u64; MAX_INPUTS],
    pub cut: [u64; MAX_INPUTS],
    pub tie_cut: [u64; MAX_INPUTS],
    pub weight: [f32; MAX_INPUTS],
    pub scale: [f32; MAX_INPUTS],
    pub threshold: [f32; MAX_INPUTS],
    pub keep: [u32; MAX_INPUTS],
    pub scale_kind: [u32; MAX_INPUTS],
    pub n_inputs: u32,
    pub consensus: u32,
    pub normalize: u32,
    pub has_lambda: u32,
    pub lambda: f32,
    pub plain_divisor: f32,
}

/// One tensor's merge as a candle op over the stacked sources.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub struct GtaOp {
    form: ElementwiseGta,
    params: GtaParams,
    out_dtype: DType,
}

impl GtaOp {
    pub fn new(form: &ElementwiseGta, out_dtype: DType, numel: usize) -> Result<GtaOp> {
        if form.inputs.len() > MAX_INPUTS {
            return Err(EvolveError::Model(format!("the GPU merge takes at most {MAX_INPUTS} inputs")));
        }
        let mut p = GtaParams {
            numel: numel as u64,
            key: [0; MAX_INPUTS],
            cut: [0; MAX_INPUTS],
            tie_cut: [0; MAX_INPUTS],
            weight: [0.0; MAX_INPUTS],
            scale: [1.0; MAX_INPUTS],
            threshold: [0.0; MAX_INPUTS],
            keep: [0; MAX_INPUTS],
            scale_kind: [0; MAX_INPUTS],
            n_inputs: form.inputs.len() as u32,
            consensus: match form.consensus {
                None => 0,
                Some(Consensus::Sum) => 1,
                Some(Consensus::Count) => 2,
            },
            normalize: u32::from(form.normalize),
            has_lambda: u32::from(form.lambda.is_some()),
            lambda: form.lambda.unwrap_or(1.0),
            plain_divisor: form.plain_divisor,
        };
        for (k, input) in form.inputs.iter().enumerate() {
            p.weight[k] = input.weight;
            match input.keep {
                ElementKeep::All => p.keep[k] = 0,
                ElementKeep::None => p.keep[k] = 1,
                ElementKeep::Random { key, density } => {
                    p.keep[k] = 2;
                    p.key[k] = key;
                    p.cut[k] = dare_cut(density);
                }
                ElementKeep::Magnitude { threshold, tie_cut } => {
                    p.keep[k] = 3;
                    p.threshold[k] = threshold;
                    p.tie_cut[k] = tie_cut as u64;
                }
                ElementKeep::TopMagnitude { .. } => {
                    return Err(EvolveError::Model(
                        "the GPU merge needs TIES thresholds resolved first (resolve_magnitudes)".into(),
                    ))
                }
            }
            match input.scale {
                ElementScale::One => p.scale_kind[k] = 0,
                ElementScale::Div(s) => (p.scale_kind[k], p.scale[k]) = (1, s),
                ElementScale::Mul(s) => (p.scale_kind[k], p.scale[k]) = (2, s),
            }
        }
        Ok(GtaOp { form: form.clone(), params: p, out_dtype })
    }

    pub fn params(&self) -> &GtaParams {
        &self.params
    }
}

impl CustomOp1 for GtaOp {
    fn name(&self) -> &'static str {
        "evomerge-gta-merge"
    }

    /// The CPU kernel itself (what the GPU kernel must equal): f32 out, rounded by the live model's write.
    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, numel) = layout.shape().dims2()?;
        let Some((start, _)) = layout.contiguous_offsets() else {
            candle_core::bail!("the stacked merge sources must be contiguous");
        };
        let values: Vec<f32> = match storage {
            CpuStorage::F32(v) => v[start..start + rows * numel].to_vec(),
            CpuStorage::BF16(v) => v[start..start + rows * numel].iter().map(|x| x.to_f32()).collect(),
            other => candle_core::bail!("merge sources must be bf16 or f32, got {:?}", candle_core::backend::BackendStorage::dtype(other)),
        };
        let inputs: Vec<&[f32]> = values[numel..].chunks(numel).collect();
        let mut out = vec![0f32; numel];
        self.form.apply(&values[..numel], &inputs, &mut out);
        Ok((CpuStorage::F32(out), Shape::from(numel)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda::launch(&self.params, self.out_dtype, storage, layout)
    }
}
