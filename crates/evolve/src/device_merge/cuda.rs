//! Launching the merge kernels (`gta.cu`, `weighted_sum.cu`) on CUDA: NVRTC compiles each once per process (no FMA
//! contraction, IEEE division), one thread per entry in a grid-stride loop, over the stacked sources in bf16 or
//! f32, writing bf16 or f32.

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{CudaStorage, DType, Layout, Shape};

use super::gta::{GtaParams, GTA_SOURCE};
use super::weighted_sum::{SumParams, SUM_SOURCE};

// SAFETY: both are `#[repr(C)]` plain data whose layouts are their kernels' structs of the same names.
unsafe impl DeviceRepr for GtaParams {}
unsafe impl DeviceRepr for SumParams {}

/// A kernel's parameters: how many rows and entries its stacked sources must have (its loop bound).
pub(super) trait KernelParams: DeviceRepr {
    fn rows(&self) -> usize;
    fn numel(&self) -> u64;
}

impl KernelParams for GtaParams {
    fn rows(&self) -> usize {
        self.n_inputs as usize + 1
    }
    fn numel(&self) -> u64 {
        self.numel
    }
}

impl KernelParams for SumParams {
    fn rows(&self) -> usize {
        self.n_rows as usize
    }
    fn numel(&self) -> u64 {
        self.numel
    }
}

/// One kernel source: its functions are `{prefix}_{source dtype}_{output dtype}`.
pub(super) struct Kernel {
    module: &'static str,
    prefix: &'static str,
    source: &'static str,
    ptx: OnceLock<Result<String, String>>,
}

pub(super) static GTA: Kernel = Kernel { module: "evomerge_gta_merge", prefix: "gta_merge", source: GTA_SOURCE, ptx: OnceLock::new() };
pub(super) static SUM: Kernel = Kernel { module: "evomerge_sum_merge", prefix: "sum_merge", source: SUM_SOURCE, ptx: OnceLock::new() };

impl Kernel {
    fn ptx(&self) -> candle_core::Result<String> {
        self.ptx
            .get_or_init(|| {
                let opts = CompileOptions {
                    fmad: Some(false),
                    prec_div: Some(true),
                    ftz: Some(false),
                    use_fast_math: Some(false),
                    ..Default::default()
                };
                compile_ptx_with_opts(self.source, opts).map(|p| p.to_src()).map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|e| candle_core::Error::Msg(format!("compiling the GPU merge kernel {}: {e}", self.module)))
    }
}

/// Runs `kernel` over the stacked sources (`[rows, numel]`, the shape `params` describe).
pub(super) fn launch<P: KernelParams>(
    kernel: &Kernel,
    params: &P,
    out_dtype: DType,
    storage: &CudaStorage,
    layout: &Layout,
) -> candle_core::Result<(CudaStorage, Shape)> {
    let dev = storage.device().clone();
    let (rows, numel) = layout.shape().dims2()?;
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("the stacked merge sources must be contiguous");
    };
    if rows != params.rows() || numel as u64 != params.numel() {
        candle_core::bail!("merge sources [{rows}, {numel}] do not fit the plan's [{}, {}]", params.rows(), params.numel());
    }
    let ptx = kernel.ptx()?;
    let cfg = LaunchConfig::for_num_elems(numel.min(1 << 24) as u32);
    let src_name = match &storage.slice {
        CudaStorageSlice::BF16(_) => "bf16",
        CudaStorageSlice::F32(_) => "f32",
        _ => candle_core::bail!("merge sources must be bf16 or f32"),
    };
    let out_name = match out_dtype {
        DType::BF16 => "bf16",
        DType::F32 => "f32",
        other => candle_core::bail!("the GPU merge writes bf16 or f32, not {other:?}"),
    };
    let func = dev.get_or_load_custom_func(&format!("{}_{src_name}_{out_name}", kernel.prefix), kernel.module, &ptx)?;
    let mut builder = func.builder();
    // SAFETY (allocations): every entry is written by the kernel.
    let out = match (&storage.slice, out_dtype) {
        (CudaStorageSlice::BF16(src), DType::BF16) => {
            let src = src.slice(start..end);
            let out = unsafe { dev.alloc::<half::bf16>(numel)? };
            builder.arg(&src).arg(&out).arg(params);
            unsafe { builder.launch(cfg) }.w()?;
            CudaStorageSlice::BF16(out)
        }
        (CudaStorageSlice::BF16(src), _) => {
            let src = src.slice(start..end);
            let out = unsafe { dev.alloc::<f32>(numel)? };
            builder.arg(&src).arg(&out).arg(params);
            unsafe { builder.launch(cfg) }.w()?;
            CudaStorageSlice::F32(out)
        }
        (CudaStorageSlice::F32(src), DType::BF16) => {
            let src = src.slice(start..end);
            let out = unsafe { dev.alloc::<half::bf16>(numel)? };
            builder.arg(&src).arg(&out).arg(params);
            unsafe { builder.launch(cfg) }.w()?;
            CudaStorageSlice::BF16(out)
        }
        (CudaStorageSlice::F32(src), _) => {
            let src = src.slice(start..end);
            let out = unsafe { dev.alloc::<f32>(numel)? };
            builder.arg(&src).arg(&out).arg(params);
            unsafe { builder.launch(cfg) }.w()?;
            CudaStorageSlice::F32(out)
        }
        _ => candle_core::bail!("merge sources must be bf16 or f32"),
    };
    Ok((CudaStorage { slice: out, device: dev }, Shape::from(numel)))
}
