//! Errors of the search, each saying what to change.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EvolveError {
    /// A recipe problem, with the key path (`genome.bounds.density`).
    #[error("recipe: {key}: {message}")]
    Recipe { key: String, message: String },
    #[error("recipe {path}: {message}")]
    RecipeFile { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Journal { path: PathBuf, message: String },
    #[error("{0}")]
    OutputDir(String),
    #[error(transparent)]
    Merge(#[from] evomerge_merge::MergeError),
    #[error(transparent)]
    Checkpoint(#[from] evomerge_checkpoint::CheckpointError),
    #[error("model: {0}")]
    Model(String),
    #[error("data: {0}")]
    Data(String),
    #[error("fitness: {0}")]
    Fitness(String),
    #[error("optimizer: {0}")]
    Optimizer(#[from] evomerge_cmaes::Error),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("plot: {0}")]
    Plot(String),
    #[error("interrupted")]
    Interrupted,
}

impl EvolveError {
    pub fn recipe(key: impl Into<String>, message: impl Into<String>) -> Self {
        EvolveError::Recipe { key: key.into(), message: message.into() }
    }
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        EvolveError::Io { context: context.into(), source }
    }
}

impl From<rusqlite::Error> for EvolveError {
    fn from(e: rusqlite::Error) -> Self {
        EvolveError::Journal { path: PathBuf::from("journal"), message: e.to_string() }
    }
}

pub type Result<T, E = EvolveError> = std::result::Result<T, E>;
