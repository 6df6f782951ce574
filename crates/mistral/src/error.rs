//! The crate's error type: every failure names what is wrong and, where it helps, what to do.

use std::path::PathBuf;

/// Errors from loading, configuring or running a Mistral/Llama model.
#[derive(Debug, thiserror::Error)]
pub enum MistralError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("config.json: required field `{0}` is missing")]
    MissingConfigField(&'static str),
    #[error("config.json: field `{field}` is invalid: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    #[error("unsupported model_type `{0}`: this crate runs `mistral`, `llama` and `evomistral` checkpoints")]
    UnsupportedModelType(String),
    #[error("weight `{0}` is missing from the checkpoint")]
    MissingTensor(String),
    #[error("weight `{name}` has shape {actual:?} but the config implies {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("weight `{name}` has dtype {dtype}, which cannot be used here ({reason})")]
    BadDtype {
        name: String,
        dtype: String,
        reason: String,
    },
    #[error("no weight named `{0}` in this model (names look like `model.layers.0.self_attn.q_proj.weight`)")]
    UnknownParameter(String),
    #[error("layer path: {0}")]
    InvalidPath(String),
    #[error("hop {hop} names layer {layer}, but the layer pool has only {pool_len} layers (0..{pool_len})")]
    LayerOutOfRange {
        hop: usize,
        layer: usize,
        pool_len: usize,
    },
    #[error("models cannot share a layer pool: {0}")]
    IncompatiblePool(String),
    #[error(
        "sequence of {requested} positions exceeds the model's context of {max} (max_position_embeddings); \
         shorten the prompt or lower max_new_tokens"
    )]
    ContextOverflow { requested: usize, max: usize },
    #[error("input: {0}")]
    BadInput(String),
    #[error("evomistral checkpoint: {0}")]
    Evomistral(String),
    #[error(transparent)]
    Checkpoint(#[from] evomerge_checkpoint::CheckpointError),
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = MistralError> = std::result::Result<T, E>;
