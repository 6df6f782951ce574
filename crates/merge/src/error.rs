//! The merge crate's error type: every variant says what is wrong and, where it helps, what to do.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum MergeError {
    /// The recipe is not valid YAML or does not have the expected shape.
    #[error("cannot read the merge recipe: {0}")]
    Yaml(String),

    /// A recipe key has a bad value; `key` is the full path, e.g. `models[1].parameters.density`.
    #[error("{key}: {message}")]
    Config { key: String, message: String },

    #[error("unknown merge_method `{name}`; known methods: {}", known.join(", "))]
    UnknownMethod { name: String, known: Vec<String> },

    #[error("tensor `{tensor}` is missing from model `{model}` (all merged models need the same tensors)")]
    MissingTensor { tensor: String, model: String },

    #[error(
        "tensor `{tensor}` has shape {shape_a:?} in `{model_a}` but {shape_b:?} in `{model_b}`; \
         only the vocabulary rows of embeddings/lm_head may differ"
    )]
    ShapeMismatch {
        tensor: String,
        model_a: String,
        shape_a: Vec<usize>,
        model_b: String,
        shape_b: Vec<usize>,
    },

    #[error("parameter `{parameter}` is required by {method} for tensor `{tensor}` of model `{model}`; set it under models[].parameters or parameters")]
    MissingParameter { parameter: String, method: String, tensor: String, model: String },

    #[error("{0} is not supported yet")]
    Unsupported(String),

    /// A merge kernel was called with inputs that do not fit together (a programming error in callers
    /// of the tensor-level API, e.g. slices of different lengths).
    #[error("invalid merge inputs for `{tensor}`: {message}")]
    InvalidInputs { tensor: String, message: String },

    #[error(transparent)]
    Checkpoint(#[from] evomerge_checkpoint::CheckpointError),

    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },

    #[error("the merge was cancelled")]
    Cancelled,
}

impl MergeError {
    pub(crate) fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        MergeError::Config { key: key.into(), message: message.into() }
    }
}
