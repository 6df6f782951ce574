//! The mergeable Mistral/Llama decoder: exact forward pass, batched generation, and data-flow-space
//! inference over a path of layers drawn from a pool.

pub mod generation;
pub mod prompt;
