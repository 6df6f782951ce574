//! A merge that is a fixed weighted sum of a tensor's rows (linear; slerp with its per-tensor coefficients) as a
//! candle op over the stacked rows: on the CPU the merge crate's own kernel ([`WeightedSum::apply`]), on CUDA
//! `weighted_sum.cu`.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape};
use evomerge_merge::methods::{SumStart, WeightedSum};

use crate::error::{EvolveError, Result};

/// Most rows (base included) one launch takes.
pub const MAX_SUM_ROWS: usize = super::MAX_INPUTS + 1;

/// The CUDA source of the kernel, after the shared loads and stores (compiled with NVRTC at the first launch).
pub const SUM_SOURCE: &str = concat!(include_str!("merge_common.cuh"), include_str!("weighted_sum.cu"));

/// The kernel's parameters (layout shared with `weighted_sum.cu`'s `SumParams`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SumParams {
    pub numel: u64,
    pub coefficient: [f32; MAX_SUM_ROWS],
    pub n_rows: u32,
    pub from_zero: u32,
    pub fused: u32,
    pub has_divisor: u32,
    pub divisor: f32,
}

/// One tensor's weighted-sum merge as a candle op over its stacked rows.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub struct SumOp {
    form: WeightedSum,
    params: SumParams,
    out_dtype: DType,
}

impl SumOp {
    pub fn new(form: &WeightedSum, out_dtype: DType, numel: usize) -> Result<SumOp> {
        let rows = form.coefficients.len();
        if rows > MAX_SUM_ROWS {
            return Err(EvolveError::Model(format!("the GPU merge sums at most {MAX_SUM_ROWS} rows, this tensor has {rows}")));
        }
        let mut coefficient = [0f32; MAX_SUM_ROWS];
        coefficient[..rows].copy_from_slice(&form.coefficients);
        let params = SumParams {
            numel: numel as u64,
            coefficient,
            n_rows: rows as u32,
            from_zero: u32::from(form.start == SumStart::Zero),
            fused: u32::from(form.fused),
            has_divisor: u32::from(form.divisor.is_some()),
            divisor: form.divisor.unwrap_or(1.0),
        };
        Ok(SumOp { form: form.clone(), params, out_dtype })
    }
}

impl CustomOp1 for SumOp {
    fn name(&self) -> &'static str {
        "evomerge-sum-merge"
    }

    /// The CPU kernel itself (what the GPU kernel must equal): f32 out, rounded by the live model's write.
    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (values, numel) = super::stacked_f32(storage, layout)?;
        let rows: Vec<&[f32]> = values.chunks(numel.max(1)).collect();
        if rows.len() != self.form.coefficients.len() {
            candle_core::bail!("{} rows for {} coefficients", rows.len(), self.form.coefficients.len());
        }
        let mut out = vec![0f32; numel];
        self.form.apply(&rows, &mut out);
        Ok((CpuStorage::F32(out), Shape::from(numel)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        super::cuda::launch(&super::cuda::SUM, &self.params, self.out_dtype, storage, layout)
    }
}
