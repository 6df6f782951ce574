//! The candidate merge on the live model's device. Each merged tensor's sources (base first, then the other
//! inputs) are uploaded once, in their stored dtype, as one stacked `[rows, numel]` tensor; each candidate then
//! runs one kernel per tensor over them and writes the result into the live model's weight on the device. Only the
//! candidate's few numbers (weights, DARE keys, rescale, sign rule, sum coefficients) travel.
//!
//! Two forms of the merge crate run here, each up to [`MAX_INPUTS`] inputs besides the base:
//! - the task-arithmetic family ([`evomerge_merge::methods::ElementwiseGta`]: task_arithmetic, dare_linear,
//!   dare_ties, ties; [`GtaOp`], `gta.cu`). TIES's threshold (the k-th largest |delta|) and tie cut are found on
//!   the device by bisecting the f32 bit patterns with counting passes ([`top_magnitude`]), the same numbers the
//!   CPU's selection finds, so only a few counts come back to the host;
//! - fixed weighted sums of the rows ([`evomerge_merge::methods::WeightedSum`]: linear, slerp; [`SumOp`],
//!   `weighted_sum.cu`). slerp's statistics (norms and dot product of its two rows) do not depend on `t`: they are
//!   computed once, at upload, by the merge crate's own function, so each candidate only recomputes two numbers.
//!
//! Every other tensor of a candidate goes through the CPU merger as before. The kernels' arithmetic is the CPU
//! kernels' operation for operation, and the DARE masks come from the same counter-based hash, so a GPU search
//! writes the weights a CPU search would (checked by scripts/gpu-check.sh on a GPU; on the CPU the ops run the
//! CPU kernels themselves).

use std::collections::HashMap;

use candle_core::{CpuStorage, DType, Device, Layout, Tensor};
use evomerge_checkpoint::Dtype;
use evomerge_merge::methods::{ElementKeep, ElementwiseGta};
use evomerge_merge::{InMemoryMerger, PlannedTensor};

use crate::error::{EvolveError, Result};

#[cfg(feature = "cuda")]
mod cuda;
mod gta;
mod weighted_sum;

pub use gta::{GtaOp, GtaParams, GTA_SOURCE};
pub use weighted_sum::{SumOp, SumParams, MAX_SUM_ROWS, SUM_SOURCE};

/// Most inputs (besides the base) one kernel launch takes.
pub const MAX_INPUTS: usize = 8;

/// One tensor's sources on the device, and the form its merge takes there.
enum Resident {
    /// `[1 + inputs, numel]`, base first.
    Gta(Tensor),
    /// `[rows, numel]` (the merger's `sum_rows`), with the tensor's sum statistics.
    Sum { rows: Tensor, statistics: Vec<f64> },
}

/// Sources resident on the device, by output tensor name.
pub struct DeviceMerge {
    device: Device,
    resident: HashMap<String, Resident>,
}

impl DeviceMerge {
    /// Uploads the sources of every tensor whose current plan (the merger's recipe) has a per-element or a
    /// weighted-sum form. bf16 sources stay bf16 on the device; any other stored dtype is uploaded as f32.
    pub fn new(merger: &InMemoryMerger<'_>, device: &Device) -> Result<DeviceMerge> {
        let mut resident = HashMap::new();
        for (index, tensor) in merger.plan().tensors.iter().enumerate() {
            let Some(rows) = merger.sum_rows(index) else { continue };
            if tensor.numel() == 0 {
                continue;
            }
            if matches!(merger.elementwise(index), Some(Ok(ref form)) if form.inputs.len() <= MAX_INPUTS) {
                resident.insert(tensor.name.clone(), Resident::Gta(stack_sources(merger, tensor, &rows, device)?));
                continue;
            }
            if rows.len() > MAX_SUM_ROWS {
                continue;
            }
            let Some(statistics) = merger.sum_statistics(index).transpose()? else { continue };
            if matches!(merger.weighted_sum(index, &statistics), Some(Ok(_))) {
                let rows = stack_sources(merger, tensor, &rows, device)?;
                resident.insert(tensor.name.clone(), Resident::Sum { rows, statistics });
            }
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
            let Some(resident) = self.resident.get(&tensor.name) else { continue };
            let merged = match resident {
                Resident::Gta(sources) => {
                    let Some(form) = merger.elementwise(index) else { continue };
                    let form = form?;
                    if form.inputs.len() + 1 != sources.dim(0).map_err(gpu)? {
                        continue;
                    }
                    let Some(form) = resolve_magnitudes(sources, &form)? else { continue };
                    let op = GtaOp::new(&form, out_dtype, sources.dim(1).map_err(gpu)?)?;
                    sources.apply_op1_no_bwd(&op)
                }
                Resident::Sum { rows, statistics } => {
                    let Some(form) = merger.weighted_sum(index, statistics) else { continue };
                    let form = form?;
                    if form.coefficients.len() != rows.dim(0).map_err(gpu)? {
                        continue;
                    }
                    let op = SumOp::new(&form, out_dtype, rows.dim(1).map_err(gpu)?)?;
                    rows.apply_op1_no_bwd(&op)
                }
            };
            let merged = merged.and_then(|t| t.reshape(tensor.shape.as_slice())).map_err(gpu)?;
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


/// The stacked sources a merge op gets on the CPU, as f32 (`[rows · numel]`), and `numel`.
fn stacked_f32(storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(Vec<f32>, usize)> {
    let (rows, numel) = layout.shape().dims2()?;
    let Some((start, _)) = layout.contiguous_offsets() else {
        candle_core::bail!("the stacked merge sources must be contiguous");
    };
    let values = match storage {
        CpuStorage::F32(v) => v[start..start + rows * numel].to_vec(),
        CpuStorage::BF16(v) => v[start..start + rows * numel].iter().map(|x| x.to_f32()).collect(),
        other => candle_core::bail!("merge sources must be bf16 or f32, got {:?}", candle_core::backend::BackendStorage::dtype(other)),
    };
    Ok((values, numel))
}
