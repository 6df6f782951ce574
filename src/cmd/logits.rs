//! `evomerge logits`: a model's logits for given token ids, written as safetensors (tensor `logits`
//! [seq, vocab] f32) for parity checks against other implementations.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use evomerge_mistral::{evomistral, LayerPath, LoadOptions, Mistral, ScaleConvention, ScaleLookup};

#[derive(clap::Args)]
pub struct Args {
    /// Model directory or hub id `org/name[@revision]` (mistral, llama or evomistral).
    #[arg(long)]
    pub model: String,
    /// Token ids, comma-separated (e.g. `1,2,3`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub ids: Vec<u32>,
    /// Output file (safetensors with one tensor `logits` [seq, vocab] f32).
    #[arg(long)]
    pub out: PathBuf,
    /// Compute dtype: f32, f16 or bf16 (default: the checkpoint's; bf16 runs as f32 on CPU).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Extra models whose layers join the layer pool after the main model's (for --path).
    #[arg(long = "pool")]
    pub pool: Vec<String>,
    /// Layer path over the pool: comma-separated `LAYER[:SCALE]`, e.g. `0,1,2:0.8,1`.
    #[arg(long)]
    pub path: Option<String>,
    /// How --path scales apply: `released` (evomistral: scales the previous layer's MLP branch) or `paper`
    /// (scales the whole hidden state entering the hop).
    #[arg(long, default_value = "released")]
    pub scale_convention: String,
    /// For evomistral checkpoints: read hop t's scale as input_scales[t] (`hop`) or
    /// input_scales[input_layers[t]] (`layer`, as SakanaAI's vLLM fork indexes it).
    #[arg(long, default_value = "hop")]
    pub evomistral_scales: String,
    /// Image for a vision-language (LLaVA) model: its features replace the ids' single `<image>` token id
    /// (the output then has one row per feature position).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// How LLaVA models turn images into tiles: `native`, `single` or `anyres`.
    #[arg(long, default_value = "native")]
    pub image_mode: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(image) = &args.image {
        return run_with_image(&args, image);
    }
    let opts = LoadOptions {
        dtype: super::dtype_arg(args.dtype.as_deref())?,
        ..LoadOptions::default()
    };
    let lookup = match args.evomistral_scales.as_str() {
        "hop" => ScaleLookup::ByHop,
        "layer" => ScaleLookup::ByLayer,
        other => bail!("--evomistral-scales `{other}` is not `hop` or `layer`"),
    };
    let ckpt = evomerge_checkpoint::Checkpoint::open(&args.model)
        .with_context(|| format!("cannot open model `{}`", args.model))?;
    let config = evomerge_mistral::Config::from_json(ckpt.config())
        .with_context(|| format!("model `{}`", args.model))?;
    let mut model = if config.model_type == evomerge_mistral::ModelType::EvoMistral {
        evomistral::load(&config, &ckpt, &opts, lookup)?
    } else {
        Mistral::load(&config, &ckpt, &opts)?
    };
    if !args.pool.is_empty() {
        let others = args
            .pool
            .iter()
            .map(|spec| {
                Mistral::open(spec, &opts)
                    .with_context(|| format!("cannot load pool model `{spec}`"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        model = model.with_pool(&others.iter().collect::<Vec<_>>())?;
    }
    if let Some(spec) = &args.path {
        let convention = match args.scale_convention.as_str() {
            "released" => ScaleConvention::ReleasedBranch,
            "paper" => ScaleConvention::PaperStream,
            other => bail!("--scale-convention `{other}` is not `released` or `paper`"),
        };
        model.set_path(LayerPath::parse(spec, convention)?)?;
    }
    let n = args.ids.len();
    let ids = Tensor::from_vec(args.ids, (1, n), model.device())?;
    let positions = evomerge_mistral::sequential_positions(1, n, 0, model.device())?;
    let mut cache = model.new_cache(1);
    let logits = model
        .forward(&ids, &positions, None, &mut cache)?
        .squeeze(0)?
        .to_device(&Device::Cpu)?;
    let tensors = HashMap::from([("logits".to_string(), logits)]);
    candle_core::safetensors::save(&tensors, &args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    Ok(())
}

/// Logits of a LLaVA model for `--ids` with `--image` spliced in at its `<image>` token (evomerge-vision).
fn run_with_image(args: &Args, image: &std::path::Path) -> anyhow::Result<()> {
    if !args.pool.is_empty() || args.path.is_some() {
        bail!("--image cannot be combined with --pool or --path");
    }
    let opts = evomerge_vision::LoadOptions {
        dtype: super::dtype_arg(args.dtype.as_deref())?,
        mode: evomerge_vision::cli::parse_mode(&args.image_mode)?,
        ..Default::default()
    };
    let logits = evomerge_vision::cli::logits_with_image(&args.model, &args.ids, image, &opts)
        .with_context(|| format!("vision-language model `{}` with image {}", args.model, image.display()))?;
    let tensors = HashMap::from([("logits".to_string(), logits)]);
    candle_core::safetensors::save(&tensors, &args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    Ok(())
}
