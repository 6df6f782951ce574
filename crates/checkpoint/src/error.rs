//! The one error type of this crate. Every variant names the file, model or tensor involved so
//! that a user can tell what is wrong without a debugger.

use std::path::PathBuf;

/// Everything that can go wrong while reading, resolving or writing a checkpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    // ---- locating a model ----
    /// Neither a local path nor something that looks like a hub id.
    #[error("model `{spec}` is not an existing directory and not a hub id of the form `org/name[@revision]`")]
    NotFound { spec: String },
    /// A path that exists but is not a directory.
    #[error("{path}: is not a directory; pass the model directory (the one holding config.json)")]
    NotADirectory { path: PathBuf },
    /// The hub could not provide the model (offline and not cached, download failure, ...).
    #[error("hub model `{spec}`: {message}")]
    Hub { spec: String, message: String },

    // ---- model directory ----
    /// The model directory has no `config.json`.
    #[error("{dir}: no config.json; is this a Hugging Face model directory?")]
    MissingConfig { dir: PathBuf },
    /// `config.json` is not valid JSON (or not a JSON object).
    #[error("{path}: invalid config.json: {detail}")]
    InvalidConfig { path: PathBuf, detail: String },
    /// No weights in the directory.
    #[error("{dir}: no model.safetensors or model.safetensors.index.json{hint}")]
    NoWeights { dir: PathBuf, hint: String },
    /// Plain I/O failure on a named file.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    // ---- safetensors file layer ----
    /// The file is too short to even hold the 8-byte header length.
    #[error("{path}: truncated safetensors file: {len} bytes, fewer than the 8-byte header length prefix")]
    FileTooShort { path: PathBuf, len: u64 },
    /// The header length prefix is larger than the limit we accept.
    #[error("{path}: safetensors header length {header_len} bytes is absurdly large (limit {limit} bytes); the file is corrupt or not safetensors")]
    HeaderTooLarge { path: PathBuf, header_len: u64, limit: u64 },
    /// The header length prefix points past the end of the file.
    #[error("{path}: safetensors header length {header_len} bytes is larger than the rest of the file ({available} bytes); the file is truncated or not safetensors")]
    HeaderBeyondFile { path: PathBuf, header_len: u64, available: u64 },
    /// The header bytes are not valid JSON.
    #[error("{path}: invalid safetensors header JSON: {source}")]
    InvalidHeaderJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The header is JSON but does not describe tensors the way safetensors does.
    #[error("{path}: invalid safetensors header: {detail}")]
    InvalidHeader { path: PathBuf, detail: String },
    /// A tensor is stored with a dtype this toolkit does not handle.
    #[error("{path}: tensor `{tensor}` has dtype {dtype}; only F32, F16 and BF16 are supported")]
    UnsupportedDtype { path: PathBuf, tensor: String, dtype: String },
    /// A tensor's byte range does not match its shape and dtype.
    #[error("{path}: tensor `{tensor}` ({dtype} {shape:?}) needs {expected} bytes but its data_offsets span {actual} bytes")]
    TensorSizeMismatch {
        path: PathBuf,
        tensor: String,
        dtype: String,
        shape: Vec<usize>,
        expected: u64,
        actual: u64,
    },
    /// A tensor's data offsets point outside the data section of the file.
    #[error("{path}: tensor `{tensor}` data_offsets [{begin}, {end}) lie outside the file's data section ({data_len} bytes)")]
    OffsetsOutsideFile { path: PathBuf, tensor: String, begin: u64, end: u64, data_len: u64 },
    /// The header is consistent but the file ends before the tensor data does.
    #[error("{path}: truncated safetensors file: the header describes {expected} bytes of tensor data but only {actual} are present")]
    TruncatedData { path: PathBuf, expected: u64, actual: u64 },
    /// Two tensors share bytes.
    #[error("{path}: tensors `{first}` and `{second}` have overlapping data_offsets")]
    OverlappingTensors { path: PathBuf, first: String, second: String },

    // ---- sharded checkpoints ----
    /// `model.safetensors.index.json` is malformed.
    #[error("{path}: invalid safetensors index: {detail}")]
    InvalidIndex { path: PathBuf, detail: String },
    /// A shard named by the index would be read from outside the model directory.
    #[error("{index}: shard `{shard}` escapes the model directory; shard names must be plain file names inside it")]
    ShardEscapesDir { index: PathBuf, shard: String },
    /// A shard named by the index does not exist.
    #[error("{index}: shard `{shard}` does not exist; the download may be incomplete")]
    MissingShard { index: PathBuf, shard: String },
    /// The same tensor is stored in two shard files.
    #[error("tensor `{tensor}` is stored twice: in {first} and in {second}")]
    DuplicateTensor { tensor: String, first: PathBuf, second: PathBuf },
    /// The index says a tensor is in a shard whose header does not list it.
    #[error("{index}: lists tensor `{tensor}` in shard `{shard}`, but that shard does not contain it")]
    IndexMismatch { index: PathBuf, tensor: String, shard: String },

    // ---- lookups ----
    /// A tensor asked for is not in the model.
    #[error("model {model}: has no tensor `{tensor}`")]
    MissingTensor { model: String, tensor: String },

    // ---- writer ----
    /// The output directory exists and `force` was not given.
    #[error("{path}: output directory already exists; choose another path or pass --force to replace it")]
    OutputExists { path: PathBuf },
    /// The tensor plan handed to the writer is unusable.
    #[error("invalid write plan: {detail}")]
    InvalidPlan { detail: String },
    /// `write_tensor` was called with a name that is not in the plan.
    #[error("tensor `{tensor}` was not in the write plan")]
    UnplannedTensor { tensor: String },
    /// `write_tensor` got the wrong number of bytes or values.
    #[error("tensor `{tensor}`: planned as {dtype} {shape:?} ({expected} {unit}) but got {actual} {unit}")]
    WrongTensorSize {
        tensor: String,
        dtype: String,
        shape: Vec<usize>,
        expected: usize,
        actual: usize,
        unit: &'static str,
    },
    /// `write_tensor` was called twice for the same tensor.
    #[error("tensor `{tensor}` was written twice")]
    AlreadyWritten { tensor: String },
    /// `finish` was called before every planned tensor was written.
    #[error("{count} planned tensor(s) were never written (first: {first})")]
    Incomplete { count: usize, first: String },
}

impl CheckpointError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CheckpointError::Io { path: path.into(), source }
    }
}
