//! Hugging Face checkpoint I/O for evomerge.
//!
//! * [`Checkpoint`] opens a model directory (`config.json` plus `model.safetensors` or a sharded set
//!   with `model.safetensors.index.json`) or a hub id `org/name[@revision]` (via the local cache,
//!   downloading only what is missing). Files are memory-mapped; opening validates every header
//!   and each tensor is read lazily as a [`TensorView`] borrowing the map.
//! * [`CheckpointWriter`] writes a model directory atomically: shards are planned up front,
//!   tensors are written in any order from many threads, and the finished directory is renamed
//!   into place only when complete. Dropping an unfinished writer removes its temporary directory.
//!
//! Every failure is a [`CheckpointError`] naming the file, model or tensor at fault.

mod dtype;
mod error;
mod header;
pub mod hub;
mod reader;
mod writer;

pub use dtype::{bf16_bits_to_f32, decode_to_f32, encode_from_f32, f32_to_bf16_bits, f32_to_bytes, Dtype};
pub use error::CheckpointError;
pub use header::MAX_HEADER_BYTES;
pub use hub::{is_processor_file, HubId, AUXILIARY_FILES};
pub use reader::{layer_index, read_tensor_file, Checkpoint, FileTensor, TensorInfo, TensorView, CONFIG_FILE, INDEX_FILE, SINGLE_FILE};
pub use writer::{write_checkpoint, CheckpointWriter, TensorPlan, WriteOptions, DEFAULT_MAX_SHARD_BYTES};
