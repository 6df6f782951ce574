//! Errors of the vision crate: every variant names the file, tensor or setting at fault and, where
//! there is one, what the user can do about it.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = VisionError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum VisionError {
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

    #[error("cannot decode image {what}: {reason} (supported: PNG, JPEG, WebP; the file may be corrupt or truncated)")]
    ImageDecode { what: String, reason: String },

    #[error(
        "image {what} is empty ({width}x{height} pixels); give an image with at least one pixel"
    )]
    EmptyImage {
        what: String,
        width: u32,
        height: u32,
    },

    #[error(
        "image {what} is {width}x{height} pixels, more than the {limit} pixels this tool accepts"
    )]
    ImageTooLarge {
        what: String,
        width: u32,
        height: u32,
        limit: u64,
    },

    #[error("invalid vision config: {field}: {reason}")]
    InvalidConfig { field: String, reason: String },

    #[error("{0}")]
    UnsupportedModel(String),

    #[error("tensor `{name}` is missing from the checkpoint ({hint})")]
    MissingTensor { name: String, hint: String },

    #[error("tensor `{name}` has shape {actual:?}, expected {expected:?} from the config")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },

    #[error("pixel values have shape {actual:?}, expected {expected}")]
    PixelShape {
        actual: Vec<usize>,
        expected: String,
    },

    #[error(
        "the prompt has no `{token}`; put `{token}` where the image belongs (one image per prompt)"
    )]
    NoImageToken { token: String },

    #[error(
        "the prompt has {count} `{token}` markers; this model takes exactly one image per prompt"
    )]
    TooManyImageTokens { token: String, count: usize },

    #[error("image features ({features}) do not fit the model: {reason}")]
    FeatureMismatch { features: usize, reason: String },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error(transparent)]
    Checkpoint(#[from] evomerge_checkpoint::CheckpointError),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl VisionError {
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> VisionError {
        VisionError::InvalidConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
