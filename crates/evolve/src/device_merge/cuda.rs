//! Launching `gta.cu` on CUDA: NVRTC compiles it once per device (no FMA contraction, IEEE division), one
//! thread per entry in a grid-stride loop.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{CudaStorage, DType, Layout, Shape};

use super::{GtaParams, KERNEL_SOURCE};

// SAFETY: `GtaParams` is `#[repr(C)]` plain data whose layout is `gta.cu`'s `GtaParams`.
unsafe impl DeviceRepr for GtaParams {}

const MODULE: &str = "evomerge_gta_merge";

fn ptx() -> candle_core::Result<String> {
    static PTX: std::sync::OnceLock<std::result::Result<String, String>> = std::sync::OnceLock::new();
    PTX.get_or_init(|| {
        let opts = CompileOptions {
            fmad: Some(false),
            prec_div: Some(true),
            ftz: Some(false),
            use_fast_math: Some(false),
            ..Default::default()
        };
        compile_ptx_with_opts(KERNEL_SOURCE, opts).map(|p| p.to_src()).map_err(|e| e.to_string())
    })
    .clone()
    .map_err(|e| candle_core::Error::Msg(format!("compiling the GPU merge kernel: {e}")))
}

pub(super) fn launch(
    params: &GtaParams,
    out_dtype: DType,
    storage: &CudaStorage,
    layout: &Layout,
) -> candle_core::Result<(CudaStorage, Shape)> {
    let dev = storage.device().clone();
    let (rows, numel) = layout.shape().dims2()?;
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("the stacked merge sources must be contiguous");
    };
    if rows != params.n_inputs as usize + 1 || numel as u64 != params.numel {
        candle_core::bail!("merge sources [{rows}, {numel}] do not fit the plan's {} inputs", params.n_inputs);
    }
    let ptx = ptx()?;
    let cfg = LaunchConfig::for_num_elems(numel.min(1 << 24) as u32);
    let (src_name, out_name) = (
        match &storage.slice {
            CudaStorageSlice::BF16(_) => "bf16",
            CudaStorageSlice::F32(_) => "f32",
            _ => candle_core::bail!("merge sources must be bf16 or f32"),
        },
        match out_dtype {
            DType::BF16 => "bf16",
            DType::F32 => "f32",
            other => candle_core::bail!("the GPU merge writes bf16 or f32, not {other:?}"),
        },
    );
    let func = dev.get_or_load_custom_func(&format!("gta_merge_{src_name}_{out_name}"), MODULE, &ptx)?;
    let mut builder = func.builder();
    let out = match (&storage.slice, out_dtype) {
        (CudaStorageSlice::BF16(src), DType::BF16) => {
            let src = src.slice(start..end);
            // SAFETY: every entry is written by the kernel.
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
