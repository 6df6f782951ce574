//! Element types we read and write, and fast conversions between their little-endian bytes and
//! `f32`. Tensor data borrowed from a memory map need not be aligned for its element type, so
//! every conversion has an aligned fast path (slice cast) and an unaligned byte-wise path; both
//! are plain loops the compiler vectorises.

use half::{f16, slice::HalfFloatSliceExt};

/// Floating-point element types of a checkpoint tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dtype {
    F32,
    F16,
    BF16,
}

impl Dtype {
    /// Bytes per element.
    pub fn size_of(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
        }
    }

    /// The name safetensors uses in its header (`F32`, `F16`, `BF16`).
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
        }
    }

    /// Parses a safetensors header dtype name; `None` for anything but F32/F16/BF16.
    pub fn from_safetensors_name(name: &str) -> Option<Dtype> {
        match name {
            "F32" => Some(Dtype::F32),
            "F16" => Some(Dtype::F16),
            "BF16" => Some(Dtype::BF16),
            _ => None,
        }
    }

    /// Parses the names users and configs use: `float32`/`f32`/`fp32`, `float16`/`f16`/`fp16`/`half`,
    /// `bfloat16`/`bf16` (case-insensitive), as well as the safetensors names.
    pub fn parse(name: &str) -> Option<Dtype> {
        match name.to_ascii_lowercase().as_str() {
            "float32" | "f32" | "fp32" | "float" => Some(Dtype::F32),
            "float16" | "f16" | "fp16" | "half" => Some(Dtype::F16),
            "bfloat16" | "bf16" => Some(Dtype::BF16),
            _ => None,
        }
    }

    /// The name `torch_dtype` uses in `config.json` (`float32`, `float16`, `bfloat16`).
    pub fn torch_name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F16 => "float16",
            Dtype::BF16 => "bfloat16",
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Dtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dtype::parse(s).ok_or_else(|| format!("unknown dtype `{s}`; expected float32, float16 or bfloat16"))
    }
}

impl From<Dtype> for safetensors::Dtype {
    fn from(d: Dtype) -> Self {
        match d {
            Dtype::F32 => safetensors::Dtype::F32,
            Dtype::F16 => safetensors::Dtype::F16,
            Dtype::BF16 => safetensors::Dtype::BF16,
        }
    }
}

impl TryFrom<safetensors::Dtype> for Dtype {
    type Error = safetensors::Dtype;
    /// Fails (returning the dtype) for anything but F32/F16/BF16.
    fn try_from(d: safetensors::Dtype) -> Result<Self, Self::Error> {
        match d {
            safetensors::Dtype::F32 => Ok(Dtype::F32),
            safetensors::Dtype::F16 => Ok(Dtype::F16),
            safetensors::Dtype::BF16 => Ok(Dtype::BF16),
            other => Err(other),
        }
    }
}

/// Byte size of every dtype name the safetensors format defines, for validating headers of
/// tensors we cannot convert (so their offsets are still checked). Sub-byte types count as 1.
pub(crate) fn safetensors_dtype_bits(name: &str) -> Option<usize> {
    Some(match name {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "F4" | "F6_E2M3" | "F6_E3M2" => return None, // packed types: size checks need care; treat as unknown-size
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        _ => return None,
    })
}

/// Whether `name` is any dtype the safetensors format defines.
pub(crate) fn is_known_safetensors_dtype(name: &str) -> bool {
    safetensors_dtype_bits(name).is_some() || matches!(name, "F4" | "F6_E2M3" | "F6_E3M2")
}

/// Decodes little-endian `bytes` of `dtype` into `out` (`out.len()` elements).
///
/// # Panics
/// If `bytes.len() != out.len() * dtype.size_of()`; callers check sizes first.
pub fn decode_to_f32(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
    assert_eq!(bytes.len(), out.len() * dtype.size_of(), "decode_to_f32: byte length does not match output length");
    match dtype {
        Dtype::F32 => {
            #[cfg(target_endian = "little")]
            if let Ok(src) = bytemuck::try_cast_slice::<u8, f32>(bytes) {
                out.copy_from_slice(src);
                return;
            }
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        Dtype::BF16 => {
            #[cfg(target_endian = "little")]
            if let Ok(src) = bytemuck::try_cast_slice::<u8, u16>(bytes) {
                // bf16 is the top half of an f32: a shift, which vectorises well.
                for (o, &b) in out.iter_mut().zip(src) {
                    *o = bf16_bits_to_f32(b);
                }
                return;
            }
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16_bits_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        Dtype::F16 => {
            #[cfg(target_endian = "little")]
            if let Ok(src) = bytemuck::try_cast_slice::<u8, f16>(bytes) {
                // half uses F16C when the CPU has it.
                src.convert_to_f32_slice(out);
                return;
            }
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
    }
}

/// Encodes `values` as little-endian `dtype` bytes into `out` (`values.len() * dtype.size_of()`
/// bytes). f16 and bf16 round to nearest, ties to even, as `torch.Tensor.to` does.
///
/// # Panics
/// If `out.len() != values.len() * dtype.size_of()`.
pub fn encode_from_f32(dtype: Dtype, values: &[f32], out: &mut [u8]) {
    assert_eq!(out.len(), values.len() * dtype.size_of(), "encode_from_f32: output length does not match input");
    match dtype {
        Dtype::F32 => {
            for (c, v) in out.chunks_exact_mut(4).zip(values) {
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        Dtype::BF16 => {
            #[cfg(target_endian = "little")]
            if let Ok(dst) = bytemuck::try_cast_slice_mut::<u8, u16>(out) {
                for (o, v) in dst.iter_mut().zip(values) {
                    *o = f32_to_bf16_bits(*v);
                }
                return;
            }
            for (c, v) in out.chunks_exact_mut(2).zip(values) {
                c.copy_from_slice(&f32_to_bf16_bits(*v).to_le_bytes());
            }
        }
        Dtype::F16 => {
            #[cfg(target_endian = "little")]
            if let Ok(dst) = bytemuck::try_cast_slice_mut::<u8, f16>(out) {
                dst.convert_from_f32_slice(values);
                return;
            }
            for (c, v) in out.chunks_exact_mut(2).zip(values) {
                c.copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
    }
}

/// bf16 bits -> f32, exactly: bf16 is the top half of an f32.
#[inline]
pub fn bf16_bits_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// f32 -> bf16 bits exactly as torch (c10::BFloat16) does: round to nearest, ties to even, and
/// every NaN becomes the canonical quiet NaN 0x7FC0.
#[inline]
pub fn f32_to_bf16_bits(v: f32) -> u16 {
    if v.is_nan() {
        return 0x7FC0;
    }
    let bits = v.to_bits();
    let rounding_bias = 0x7FFF + ((bits >> 16) & 1);
    (bits.wrapping_add(rounding_bias) >> 16) as u16
}

/// Encodes `values` as a freshly allocated little-endian byte vector of `dtype`.
pub fn f32_to_bytes(dtype: Dtype, values: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; values.len() * dtype.size_of()];
    encode_from_f32(dtype, values, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 lies exactly between two bf16 values (1 and 1 + 2^-7): ties go to the even one (1).
        let tie = f32::from_bits(0x3F80_8000);
        let above = f32::from_bits(0x3F80_8001);
        let bytes = f32_to_bytes(Dtype::BF16, &[tie, above]);
        assert_eq!(u16::from_le_bytes([bytes[0], bytes[1]]), 0x3F80);
        assert_eq!(u16::from_le_bytes([bytes[2], bytes[3]]), 0x3F81);
    }

    #[test]
    fn roundtrip_all_dtypes_aligned_and_unaligned() {
        let values: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) * 0.25).collect();
        for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
            let bytes = f32_to_bytes(dtype, &values);
            let mut out = vec![0f32; values.len()];
            decode_to_f32(dtype, &bytes, &mut out);
            assert_eq!(out, values, "{dtype} aligned");
            // Same bytes at an odd address exercise the unaligned path.
            let mut shifted = vec![0u8; bytes.len() + 1];
            shifted[1..].copy_from_slice(&bytes);
            let mut out2 = vec![0f32; values.len()];
            decode_to_f32(dtype, &shifted[1..], &mut out2);
            assert_eq!(out2, values, "{dtype} unaligned");
        }
    }

    #[test]
    fn parses_user_names() {
        assert_eq!(Dtype::parse("bfloat16"), Some(Dtype::BF16));
        assert_eq!(Dtype::parse("FP16"), Some(Dtype::F16));
        assert_eq!(Dtype::parse("float32"), Some(Dtype::F32));
        assert_eq!(Dtype::parse("int8"), None);
        assert_eq!("BF16".parse::<Dtype>(), Ok(Dtype::BF16));
    }
}
