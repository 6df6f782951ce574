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
pub mod worker;

use anyhow::Context;
use candle_core::{DType, Device};

/// Opens `--device` with the library's parser, naming the flag in errors.
pub fn device_arg(spec: &str) -> anyhow::Result<Device> {
    evomerge_evolve::generators::parse_device(spec).with_context(|| format!("--device {spec:?}"))
}

/// Parses `--dtype` with the library's parser, naming the flag in errors.
pub fn dtype_arg(spec: Option<&str>) -> anyhow::Result<Option<DType>> {
    evomerge_evolve::generators::parse_dtype(spec)
        .with_context(|| format!("--dtype {:?}", spec.unwrap_or_default()))
}
