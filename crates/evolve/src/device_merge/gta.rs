//! The task-arithmetic family's merge of one tensor (task_arithmetic, dare_linear, dare_ties, ties) as a candle op
//! over the stacked sources: on the CPU the merge crate's own kernel ([`ElementwiseGta::apply`]), on CUDA `gta.cu`.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape};
use evomerge_merge::methods::{Consensus, ElementKeep, ElementScale, ElementwiseGta};
use evomerge_merge::sparsify::dare_cut;

use super::MAX_INPUTS;
use crate::error::{EvolveError, Result};

/// The CUDA source of the kernel, after the shared loads and stores (compiled with NVRTC at the first launch).
pub const GTA_SOURCE: &str = concat!(include_str!("merge_common.cuh"), include_str!("gta.cu"));

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
        let (values, numel) = super::stacked_f32(storage, layout)?;
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
        super::cuda::launch(&super::cuda::GTA, &self.params, self.out_dtype, storage, layout)
    }
}
