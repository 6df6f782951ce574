//! Parameter-space model merging with mergekit's semantics.
//!
//! A recipe ([`MergeConfig`], mergekit's YAML) is planned against its models ([`MergePlan`]):
//! every output tensor gets its inputs, per-tensor parameters (scalars, per-layer gradients,
//! name filters) and vocabulary handling. Each tensor is then merged by one function,
//! [`merge_tensor`], which runs a method from the registry ([`methods::get`]): `linear`,
//! `task_arithmetic`, `ties`, `dare_ties`, `dare_linear`, `breadcrumbs`, `breadcrumbs_ties`,
//! `della`, `della_linear`, `sce`, `model_stock`, `nearswap`, `arcee_fusion`, `ram`, `ramplus_tl`,
//! `slerp`, `nuslerp`, `multislerp`, `karcher`, `passthrough` (all 20 of mergekit 0.1.5).
//!
//! Two drivers share that path: [`merge_to_dir`] streams a merge from checkpoints on disk to a new
//! checkpoint (worker threads, bounded memory, atomic output), and [`InMemoryMerger`] hands merged
//! tensors to the caller, for the evolutionary search that merges many candidates in memory.
//!
//! Tokenizer merging (`tokenizer_source`, the `tokenizer:` section: `union`, `tokens`,
//! `pad_to_multiple_of`) reorders embedding/lm_head rows per model and writes the merged
//! `tokenizer.json` ([`vocab`]).
//!
//! LLaVA checkpoints (llava-hf, newer transformers and original layouts) merge their language model
//! with plain Mistral/Llama checkpoints; see [`layout::Layout`]. A recipe that merges a VLM writes
//! a VLM, even with a plain `base_model` (rule in [`plan`]).
//!
//! Model references may be `model+lora` (a PEFT LoRA folded in as it is read, [`lora`]); a
//! recipe may give per-module recipes (`modules:`, [`modules`]).

mod buffers;
pub mod config;
mod error;
mod execute;
pub mod layout;
pub mod lora;
mod memory;
mod output_config;
pub mod modules;
pub mod methods;
pub mod params;
pub mod plan;
pub mod source;
mod select;
pub mod sparsify;
mod stream;
pub mod vocab;

pub use config::{
    EmbeddingKind, EmbeddingSource, InputModel, InputSlice, MergeConfig, OutputModule, OutputSlice, RecipeDocument, TokenEmbedding,
    TokenizerSection,
};
pub use error::MergeError;
pub use execute::TensorOutput;
pub use memory::{InMemoryMerger, MergedTensor, MergedView};
pub use methods::{merge_tensor, BasePolicy, MergeMethod, ModelTensor, TensorContext};
pub use params::{ParamSet, ParamValue, Parameters, Setting};
pub use plan::{model_refs, MergePlan, PlannedTensor, TensorJob, VocabPermute};
pub use vocab::VocabMerge;
pub use source::{MemorySource, ResidentSource, TensorSource};
pub use lora::{LoraAdapter, ModelSource};
pub use stream::{merge_documents_to_dir, merge_to_dir, open_model, open_models, resolve_model_ref, write_plan, ComputeDtype, MergeOptions, MergeReport};
