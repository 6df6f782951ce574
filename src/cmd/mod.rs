//! One module per subcommand: `Args` (clap) and `run`.

pub mod ask_tell;
pub mod eval;
pub mod evolve;
pub mod generate;
pub mod inspect;
pub mod logits;
pub mod merge;
pub mod score;
pub mod trials;
