//! Parsing and validating one safetensors file: the 8-byte little-endian header length, the JSON
//! header, and every tensor's data offsets. Written by hand (rather than with
//! `safetensors::SafeTensors`) so that each way a file can be broken gets its own error that names
//! the file and the tensor.

use std::path::Path;

use serde_json::Value;

use crate::dtype::{safetensors_dtype_bits, is_known_safetensors_dtype, Dtype};
use crate::error::CheckpointError;

/// Headers larger than this are rejected before reading them (the safetensors crate uses the same bound).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Where one tensor lives inside a file, after validation.
#[derive(Debug, Clone)]
pub(crate) struct RawTensor {
    pub name: String,
    /// `Ok` for F32/F16/BF16; otherwise the safetensors dtype name, reported when the tensor is read.
    pub dtype: Result<Dtype, String>,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub start: usize,
    pub end: usize,
}

/// A validated header: the tensors in header order (`__metadata__` is checked, then dropped).
#[derive(Debug)]
pub(crate) struct ParsedHeader {
    pub tensors: Vec<RawTensor>,
}

/// Parses and validates the safetensors file whose full contents are `bytes`.
pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<ParsedHeader, CheckpointError> {
    let file_len = bytes.len() as u64;
    if file_len < 8 {
        return Err(CheckpointError::FileTooShort { path: path.to_path_buf(), len: file_len });
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap_or([0; 8]));
    if header_len > MAX_HEADER_BYTES {
        return Err(CheckpointError::HeaderTooLarge {
            path: path.to_path_buf(),
            header_len,
            limit: MAX_HEADER_BYTES,
        });
    }
    if header_len > file_len - 8 {
        return Err(CheckpointError::HeaderBeyondFile {
            path: path.to_path_buf(),
            header_len,
            available: file_len - 8,
        });
    }
    let data_start = 8 + header_len as usize;
    let header_bytes = &bytes[8..data_start];
    let invalid = |detail: String| CheckpointError::InvalidHeader { path: path.to_path_buf(), detail };

    let header: Value = serde_json::from_slice(header_bytes)
        .map_err(|source| CheckpointError::InvalidHeaderJson { path: path.to_path_buf(), source })?;
    let Value::Object(entries) = header else {
        return Err(invalid("the header is not a JSON object".into()));
    };

    let mut tensors = Vec::with_capacity(entries.len());
    for (name, info) in entries {
        if name == "__metadata__" {
            if !info.is_object() {
                return Err(invalid("`__metadata__` is not a JSON object".into()));
            }
            continue;
        }
        tensors.push(parse_entry(path, name, &info)?);
    }
    check_layout(path, &mut tensors, data_start, bytes.len())?;
    Ok(ParsedHeader { tensors })
}

/// Reads `{"dtype": .., "shape": [..], "data_offsets": [begin, end]}` for one tensor and checks
/// that the byte range matches shape × dtype. Offsets are still relative to the data section.
fn parse_entry(path: &Path, name: String, info: &Value) -> Result<RawTensor, CheckpointError> {
    let invalid = |detail: String| CheckpointError::InvalidHeader { path: path.to_path_buf(), detail };
    let Value::Object(fields) = info else {
        return Err(invalid(format!("entry for tensor `{name}` is not a JSON object")));
    };
    let dtype_name = fields
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("tensor `{name}` has no string `dtype`")))?;
    if !is_known_safetensors_dtype(dtype_name) {
        return Err(invalid(format!("tensor `{name}` has unknown dtype `{dtype_name}`")));
    }
    let shape = fields
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(format!("tensor `{name}` has no `shape` array")))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| invalid(format!("tensor `{name}` has a shape entry that is not a non-negative integer")))?;
    let offsets = fields
        .get("data_offsets")
        .and_then(Value::as_array)
        .filter(|a| a.len() == 2)
        .ok_or_else(|| invalid(format!("tensor `{name}` has no `data_offsets` pair")))?;
    let (Some(begin), Some(end)) = (offsets[0].as_u64(), offsets[1].as_u64()) else {
        return Err(invalid(format!("tensor `{name}` has data_offsets that are not non-negative integers")));
    };
    if end < begin {
        return Err(invalid(format!("tensor `{name}` has data_offsets [{begin}, {end}) that end before they begin")));
    }
    let numel = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    let expected = match (numel, safetensors_dtype_bits(dtype_name)) {
        (Some(n), Some(bits)) => n.checked_mul(bits as u64 / 8),
        (Some(n), None) => n.checked_mul(6).map(|b| b.div_ceil(8)), // packed sub-byte types: checked loosely below
        (None, _) => None,
    };
    let Some(expected) = expected else {
        return Err(invalid(format!("tensor `{name}` has a shape {shape:?} whose size overflows")));
    };
    let packed = safetensors_dtype_bits(dtype_name).is_none();
    if !packed && end - begin != expected {
        return Err(CheckpointError::TensorSizeMismatch {
            path: path.to_path_buf(),
            tensor: name,
            dtype: dtype_name.to_string(),
            shape,
            expected,
            actual: end - begin,
        });
    }
    let dtype = Dtype::from_safetensors_name(dtype_name).ok_or_else(|| dtype_name.to_string());
    // usize conversion is checked against the file size in `check_layout`.
    Ok(RawTensor {
        name,
        dtype,
        shape,
        start: usize::try_from(begin).unwrap_or(usize::MAX),
        end: usize::try_from(end).unwrap_or(usize::MAX),
    })
}

/// Checks that tensors do not overlap and lie inside the file, then makes their offsets absolute.
fn check_layout(path: &Path, tensors: &mut [RawTensor], data_start: usize, file_len: usize) -> Result<(), CheckpointError> {
    let data_len = (file_len - data_start) as u64;
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| (tensors[i].start, tensors[i].end));

    let mut contiguous = true;
    let mut cursor = 0usize;
    let mut previous: Option<usize> = None;
    for &i in &order {
        let t = &tensors[i];
        if let Some(p) = previous {
            // Zero-sized tensors occupy no bytes and cannot overlap anything.
            if t.start < tensors[p].end && t.end > t.start {
                return Err(CheckpointError::OverlappingTensors {
                    path: path.to_path_buf(),
                    first: tensors[p].name.clone(),
                    second: t.name.clone(),
                });
            }
        }
        if t.start != cursor {
            contiguous = false;
        }
        cursor = cursor.max(t.end);
        if t.end > t.start || previous.is_none() {
            previous = Some(i);
        }
    }
    if cursor as u64 > data_len {
        if contiguous {
            // A well-formed header whose data was cut short: the classic interrupted download.
            return Err(CheckpointError::TruncatedData { path: path.to_path_buf(), expected: cursor as u64, actual: data_len });
        }
        let Some(t) = tensors.iter().find(|t| t.end as u64 > data_len) else {
            return Err(CheckpointError::TruncatedData { path: path.to_path_buf(), expected: cursor as u64, actual: data_len });
        };
        return Err(CheckpointError::OffsetsOutsideFile {
            path: path.to_path_buf(),
            tensor: t.name.clone(),
            begin: t.start as u64,
            end: t.end as u64,
            data_len,
        });
    }
    for t in tensors.iter_mut() {
        t.start += data_start;
        t.end += data_start;
    }
    Ok(())
}
