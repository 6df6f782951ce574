//! The mergeable Mistral/Llama decoder: an exact forward pass (parity with transformers), a KV cache with
//! one slot per hop, and data-flow-space inference over a path of layers drawn from a pool of one or more
//! models, including SakanaAI's `evomistral` checkpoints.
//!
//! ```no_run
//! # fn main() -> Result<(), evomerge_mistral::MistralError> {
//! use evomerge_mistral::{LoadOptions, Mistral, sequential_positions};
//! let model = Mistral::from_dir(std::path::Path::new("my-model"), &LoadOptions::default())?;
//! let ids = candle_core::Tensor::new(&[[1u32, 5, 9]], model.device())?;
//! let mut cache = model.new_cache(1);
//! let positions = sequential_positions(1, 3, 0, model.device())?;
//! let logits = model.forward(&ids, &positions, None, &mut cache)?; // [1, 3, vocab] f32
//! # Ok(()) }
//! ```

pub mod cache;
pub mod config;
mod cpu_attention;
mod cpu_matmul;
mod cpu_ops;
pub mod error;
pub mod evomistral;
pub mod generation;
pub mod layers;
pub mod model;
pub mod path;
pub mod prompt;
mod weight;
pub mod weights;

pub use cache::KvCache;
pub use config::{Config, ModelType};
pub use error::MistralError;
pub use model::{sequential_positions, Mistral};
pub use path::{Hop, LayerPath, ScaleConvention, ScaleLookup};
pub use weights::{LoadOptions, TensorSource, WeightNames};
