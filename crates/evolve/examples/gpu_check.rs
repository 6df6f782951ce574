//! The GPU checks of scripts/gpu-check.sh (issue #19), as one program built with `--features cuda`:
//!
//! ```text
//! gpu_check generate-parity --model tests/fixtures/mistral/generation/model [--device cuda]
//!     f32 logits of the device-generic path on the device vs the CPU (max |diff| ≤ 1e-3), and greedy and
//!     beam-search (3 beams) completions of a padded batch, which must be identical
//! gpu_check vlm-parity --model tests/fixtures/vision/llava --images tests/fixtures/vision/images [--device cuda]
//!     image features (vision tower + projector, f32) on the device vs the CPU (max |diff| ≤ 1e-3), and images/s
//!     through tower + projector on the device (a tiny fixture tower: a parity check, not a speed figure)
//! gpu_check vlm-bench [--device cuda] [--dtype bf16|f16|f32] [--images 32] [--batch 1,8] [--layers L]
//!                     [--config tests/fixtures/vision/llava_v1_6_mistral_7b/config.json] [--anyres-image 640x480]
//!     images/s through a FULL-SIZE tower + projector: LLaVA-1.6-Mistral-7B's shapes read from its published config
//!     (CLIP ViT-L/14 at 336 px, 24 layers of which the feature layer −2 runs 23; projector mlp2x_gelu
//!     1024→4096→4096) with random weights made on the device (no checkpoint needed). Two figures: per 336-px crop
//!     at each batch size, and per anyres image: the crate's own preprocessing of a synthetic photo of
//!     --anyres-image (4:3, like Visual Genome's) gives the crop count (5: the global view and a 2 x 2 grid of tiles)
//!     and the feature count, then tower + projector + anyres packing run on those 5 crops at once (host-side
//!     preprocessing is reported apart). --layers runs fewer tower layers (a CPU dry run).
//! gpu_check merge-parity --fixtures tests/fixtures/merge [--device cuda]
//!     the candidate merge on the device vs the CPU merger, several DARE-TIES / DARE-linear / TIES / linear / slerp
//!     candidates, f32 and bf16 sources: the written weights must be equal bit for bit (so the DARE masks and TIES
//!     thresholds are identical)
//! gpu_check merge-bench --models DIR [--device cuda] [--candidates 5] [--target-params 7.24e9]
//!     DIR holds base/, ft1/, ft2/ (the 1.1 B set `cargo bench -p evomerge-merge --bench merge -- generate`
//!     writes): seconds per DARE-TIES and per TIES candidate merged into a live bf16 model on the device, resident sources vs
//!     the CPU merger + upload; and the median extrapolated to a --target-params model (Mistral-7B: 7.24e9) by the
//!     ratio of parameter counts (the merge streams each source once), under its own `extrapolated_` key
//! gpu_check decode-bench --model DIR [--device cuda] [--batch 1,32] [--new-tokens 128] [--prompt-len 32]
//!     greedy decode tokens/s of our generation at each batch size (bf16 on a GPU)
//! gpu_check vqa-extrapolate --model DIR [--device cuda] [--beams 5] [--new-tokens 64] [--prompt-len 640]
//!                           [--items 500] [--max-tokens 512] [--target-params 7.24e9] [--repeats 3] [--dtype D]
//!                           [--tower-ms-per-item MS | --crops-per-item 1 --layers L --images 8 --config FILE]
//!     end-to-end seconds of JA-VG-VQA-500-shaped work, EXTRAPOLATED from measurements on DIR (the 1.1 B set's
//!     base/): beam search (5 beams) on one prompt of --prompt-len tokens (default 640 = LLaVA-1.6's 576 single-tile
//!     image features, how the paper evaluated, + 64 text tokens; anyres would be ~2400 and does not fit the 1.1 B
//!     set's 2048 context) times the prefill (`generate` of 1 token) and the decode step ((`generate` of 1 + N
//!     tokens − prefill) / N, no EOS so every beam runs). Per item: tower + projector (the vlm-bench encoder at
//!     --crops-per-item crops, measured inline, or --tower-ms-per-item) + prefill + --max-tokens × step (an upper
//!     bound: every answer runs to the limit, and the step is measured at the prompt's length, not 512 tokens
//!     later); × --items. Scaled to a --target-params LLM (LLaVA-1.6's Mistral-7B: 7.24e9) by the ratio of
//!     parameter bytes, same dtype: decode is memory-bandwidth bound (every step reads every weight once; KV-cache
//!     reads are left out) and prefill's FLOPs also grow with the parameter count; the tower is full-size already
//!     and is not scaled. Measured and extrapolated figures are separate keys (`measured_*`, `extrapolated_*`).
//! ```
//! Each prints `RESULT <check> <key=value ...>` lines that the script gathers into its table. `--device cpu`
//! runs the same code on the CPU (what CI and a machine without a GPU can try).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use evomerge_evolve::device_merge::DeviceMerge;
use evomerge_evolve::generators::{device_name, parse_device, parse_dtype};
use evomerge_merge::{
    merge_to_dir, open_models, InMemoryMerger, MergeConfig, MergeError, MergeOptions, TensorSource,
};
use evomerge_mistral::generation::{generate, GenerationConfig, PromptInput};
use evomerge_mistral::prompt::TextTokenizer;
use evomerge_vision::{
    load_image, preprocess, AlphaMode, ImageEncoder, ImageMode, LlavaConfig, LlavaModel, LoadOptions as VisionOptions,
    PixelValues,
};
use evomerge_mistral::{LoadOptions, Mistral};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    if let Err(e) = run() {
        eprintln!("gpu_check: {e}");
        std::process::exit(1);
    }
}

const CHECKS: &str = "generate-parity, vlm-parity, vlm-bench, merge-parity, merge-bench, decode-bench or vqa-extrapolate";

/// LLaVA-1.6-Mistral-7B's published configuration (tower, projector and text shapes), from the repository root.
const LLAVA_1_6_CONFIG: &str = "tests/fixtures/vision/llava_v1_6_mistral_7b/config.json";

fn run() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        return Err(format!("usage: gpu_check CHECK [options], CHECK one of {CHECKS} (see the source's header)").into());
    };
    let flags = parse_flags(&args[1..])?;
    let device = parse_device(flags.get("device").map_or("cuda", String::as_str))?;
    match command.as_str() {
        "generate-parity" => generate_parity(&path_flag(&flags, "model")?, &device),
        "merge-parity" => merge_parity(&path_flag(&flags, "fixtures")?, &device),
        "vlm-parity" => vlm_parity(&path_flag(&flags, "model")?, &path_flag(&flags, "images")?, &device),
        "vlm-bench" => vlm_bench(&flags, &device),
        "merge-bench" => merge_bench(&path_flag(&flags, "models")?, &device, number(&flags, "candidates", 5)?, float(&flags, "target-params", 7.24e9)?),
        "decode-bench" => {
            let batches = flags.get("batch").map_or("1,32", String::as_str);
            let batches = batches.split(',').map(str::parse).collect::<Result<Vec<usize>, _>>()?;
            decode_bench(
                &path_flag(&flags, "model")?,
                &device,
                &batches,
                number(&flags, "new-tokens", 128)?,
                number(&flags, "prompt-len", 32)?,
            )
        }
        "vqa-extrapolate" => vqa_extrapolate(&flags, &device),
        other => Err(format!("unknown check `{other}`: {CHECKS}").into()),
    }
}

fn parse_flags(args: &[String]) -> Res<BTreeMap<String, String>> {
    let mut flags = BTreeMap::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let name = flag.strip_prefix("--").ok_or_else(|| format!("expected --flag, got `{flag}`"))?;
        let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
        flags.insert(name.to_string(), value.clone());
    }
    Ok(flags)
}

fn path_flag(flags: &BTreeMap<String, String>, name: &str) -> Res<PathBuf> {
    Ok(PathBuf::from(flags.get(name).ok_or_else(|| format!("--{name} DIR is needed"))?))
}

fn number(flags: &BTreeMap<String, String>, name: &str, default: usize) -> Res<usize> {
    Ok(flags.get(name).map(|v| v.parse()).transpose().map_err(|e| format!("--{name}: {e}"))?.unwrap_or(default))
}

fn float(flags: &BTreeMap<String, String>, name: &str, default: f64) -> Res<f64> {
    let value = flags.get(name).map(|v| v.parse::<f64>()).transpose().map_err(|e| format!("--{name}: {e}"))?;
    match value.unwrap_or(default) {
        v if v.is_finite() && v > 0.0 => Ok(v),
        v => Err(format!("--{name}: {v} is not a positive number").into()),
    }
}

/// `--dtype bf16|f16|f32` (the CLI's parser); by default bf16 on an accelerator and f32 on the CPU (as decode-bench).
fn dtype_flag(flags: &BTreeMap<String, String>, device: &Device) -> Res<DType> {
    let given = parse_dtype(flags.get("dtype").map(String::as_str)).map_err(|e| format!("--dtype: {e}"))?;
    Ok(given.unwrap_or(if device.is_cpu() { DType::F32 } else { DType::BF16 }))
}

fn generate_parity(dir: &Path, device: &Device) -> Res<()> {
    let load = |device: &Device| {
        let opts = LoadOptions { device: device.clone(), dtype: Some(DType::F32), cpu_kernels: false, ..Default::default() };
        Mistral::from_dir(dir, &opts)
    };
    let (on_cpu, on_device) = (load(&Device::Cpu)?, load(device)?);
    let tokenizer = TextTokenizer::from_model_dir(dir)?;
    let texts = ["The cat", "Once upon a time, in a land far away", "1 2 3"];
    let prompts: Vec<Vec<u32>> = texts.iter().map(|t| tokenizer.encode(t)).collect::<Result<_, _>>()?;
    // Logits of the longest prompt, every position.
    let ids = &prompts[1];
    let logits = |m: &Mistral| -> Res<Vec<f32>> {
        let input = Tensor::from_vec(ids.clone(), (1, ids.len()), m.device())?;
        let positions = evomerge_mistral::sequential_positions(1, ids.len(), 0, m.device())?;
        let out = m.forward(&input, &positions, None, &mut m.new_cache(1))?;
        Ok(out.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let (a, b) = (logits(&on_cpu)?, logits(&on_device)?);
    let max_diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    println!("RESULT generate-parity logits_max_abs_diff={max_diff:.2e} {}", if max_diff <= 1e-3 { "ok" } else { "DIFFERS" });
    let mut failed = max_diff > 1e-3;
    let base = GenerationConfig::from_model_dir(dir)?;
    for beams in [1, 3] {
        let config = GenerationConfig { max_new_tokens: 32, num_beams: beams, ..base.clone() };
        let inputs: Vec<PromptInput> = prompts.iter().cloned().map(PromptInput::Tokens).collect();
        let want = generate(&on_cpu, &inputs, &config, None)?;
        let got = generate(&on_device, &inputs, &config, None)?;
        let same = want.iter().zip(&got).all(|(w, g)| w.tokens == g.tokens && w.finish == g.finish);
        println!("RESULT generate-parity num_beams={beams} rows={} {}", got.len(), if same { "identical" } else { "DIFFERS" });
        failed |= !same;
    }
    if failed {
        return Err("generation parity failed".into());
    }
    Ok(())
}

fn vlm_parity(model: &Path, images: &Path, device: &Device) -> Res<()> {
    let spec = model.to_str().ok_or("the model path is not UTF-8")?;
    let load = |device: &Device| {
        LlavaModel::load(spec, &VisionOptions { device: device.clone(), dtype: Some(DType::F32), ..Default::default() })
    };
    let (on_cpu, on_device) = (load(&Device::Cpu)?, load(device)?);
    let mut pictures = Vec::new();
    for name in ["rgb.jpg", "size_170x120.png", "size_200x57.png", "gray.png"] {
        pictures.push(load_image(&images.join(name), AlphaMode::default())?);
    }
    let mut max_diff = 0f32;
    for picture in &pictures {
        let a = on_cpu.features_of(picture)?.flatten_all()?.to_vec1::<f32>()?;
        let b = on_device.features_of(picture)?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        if a.len() != b.len() {
            return Err("feature shapes differ between the CPU and the device".into());
        }
        max_diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(max_diff, f32::max);
    }
    println!("RESULT vlm-parity features_max_abs_diff={max_diff:.2e} {}", if max_diff <= 1e-3 { "ok" } else { "DIFFERS" });
    let rounds = 20;
    device.synchronize()?;
    let started = Instant::now();
    for _ in 0..rounds {
        for picture in &pictures {
            on_device.features_of(picture)?;
        }
    }
    device.synchronize()?;
    let per_second = (rounds * pictures.len()) as f64 / started.elapsed().as_secs_f64();
    println!("RESULT vlm-parity fixture_images_per_second={per_second:.1} (tiny fixture tower)");
    if max_diff > 1e-3 {
        return Err("VLM feature parity failed".into());
    }
    Ok(())
}

/// LLaVA-1.6's tower + projector with random weights on `device`: shapes from the LLaVA config at `--config`
/// (default [`LLAVA_1_6_CONFIG`]), all the layers its feature selection reads unless `--layers` runs fewer (the
/// output of layer L is then the feature layer).
fn full_size_encoder(flags: &BTreeMap<String, String>, device: &Device, dtype: DType) -> Res<(LlavaConfig, ImageEncoder)> {
    let path = PathBuf::from(flags.get("config").map_or(LLAVA_1_6_CONFIG, String::as_str));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let config = LlavaConfig::from_json(&json, path.parent().unwrap_or(Path::new(".")))?;
    let mut spec = config.encoder.clone();
    if let Some(layers) = flags.get("layers") {
        let layers: usize = layers.parse().map_err(|e| format!("--layers: {e}"))?;
        if layers == 0 || layers > spec.vision.num_hidden_layers {
            return Err(format!("--layers: {layers}, the tower has 1..={} layers", spec.vision.num_hidden_layers).into());
        }
        spec.feature_layers = vec![layers as isize];
    }
    let encoder = ImageEncoder::random(&spec, config.text_hidden_size()?, device, dtype, 0.02)?;
    device.synchronize()?;
    Ok((config, encoder))
}

/// `crops` normalised-looking 3 x S x S crops (values in about ±2, varied so nothing is constant).
fn synthetic_crops(encoder: &ImageEncoder, crops: usize) -> PixelValues {
    let side = encoder.spec().vision.image_size;
    let data = (0..crops * 3 * side * side).map(|i| ((i as f32 * 0.618_034).fract() - 0.5) * 4.0).collect();
    PixelValues { data, tiles: crops, height: side, width: side, original_size: (side, side) }
}

/// Seconds per crop through tower + projector, `batch` crops per call, at least `crops` crops after one warm-up
/// call. Includes uploading the pixels from the host, as a real evaluation does.
fn seconds_per_crop(encoder: &ImageEncoder, device: &Device, batch: usize, crops: usize) -> Res<f64> {
    let pixels = synthetic_crops(encoder, batch.max(1));
    encoder.tile_features(&pixels)?;
    device.synchronize()?;
    let calls = crops.div_ceil(pixels.tiles).max(1);
    let started = Instant::now();
    for _ in 0..calls {
        encoder.tile_features(&pixels)?;
    }
    device.synchronize()?;
    Ok(started.elapsed().as_secs_f64() / (calls * pixels.tiles) as f64)
}

/// Parameters of the tower layers that run (CLIP's shapes; the unused post-LayerNorm is never loaded).
fn tower_parameters(encoder: &ImageEncoder) -> usize {
    let v = &encoder.spec().vision;
    let layers = encoder.tower().layers_loaded();
    let per_layer = 4 * (v.hidden_size * v.hidden_size + v.hidden_size)
        + 2 * v.hidden_size * v.intermediate_size
        + v.intermediate_size
        + 5 * v.hidden_size;
    let embeddings = v.hidden_size * (3 * v.patch_size * v.patch_size + 1 + v.grid() * v.grid() + 1 + 2);
    embeddings + layers * per_layer
}

/// Parameters of the projector into a `text_hidden`-wide language model (one selected layer's features in).
fn projector_parameters(encoder: &ImageEncoder, text_hidden: usize) -> usize {
    let spec = encoder.spec();
    let bias = usize::from(spec.projector.bias);
    let first = text_hidden * (spec.vision.hidden_size * spec.feature_layers.len() + bias);
    first + spec.projector.layers.saturating_sub(1) * text_hidden * (text_hidden + bias)
}

fn vlm_bench(flags: &BTreeMap<String, String>, device: &Device) -> Res<()> {
    let dtype = dtype_flag(flags, device)?;
    let crops = number(flags, "images", 32)?;
    let batches = flags.get("batch").map_or("1,8", String::as_str);
    let batches = batches.split(',').map(str::parse).collect::<Result<Vec<usize>, _>>().map_err(|e| format!("--batch: {e}"))?;
    let started = Instant::now();
    let (config, encoder) = full_size_encoder(flags, device, dtype)?;
    let (dev, layers) = (device_name(device), encoder.tower().layers_loaded());
    let v = &encoder.spec().vision;
    println!(
        "RESULT vlm-bench device={dev} dtype={dtype:?} weights=random tower_layers={layers}/{} hidden={} image_size={} \
         projector={}x{}->{} tower_params={:.3}e9 projector_params={:.3}e9 build_seconds={:.2}",
        v.num_hidden_layers,
        v.hidden_size,
        v.image_size,
        encoder.spec().projector.layers,
        v.hidden_size,
        config.text_hidden_size()?,
        tower_parameters(&encoder) as f64 / 1e9,
        projector_parameters(&encoder, config.text_hidden_size()?) as f64 / 1e9,
        started.elapsed().as_secs_f64()
    );
    for &batch in &batches {
        let seconds = seconds_per_crop(&encoder, device, batch, crops)?;
        println!(
            "RESULT vlm-bench device={dev} dtype={dtype:?} unit=crop336 tower_layers={layers} batch={batch} \
             crops={} images_per_s={:.2} ms_per_image={:.3}",
            crops.div_ceil(batch.max(1)).max(1) * batch.max(1),
            1.0 / seconds,
            seconds * 1e3
        );
    }
    if !matches!(config.native_mode, ImageMode::AnyRes { .. }) {
        return Ok(());
    }
    // Anyres: the crate's preprocessing decides the crops of a photo-shaped image; all of them go through at once.
    let size = flags.get("anyres-image").map_or("640x480", String::as_str);
    let (w, h) = size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .filter(|(w, h)| *w > 0 && *h > 0)
        .ok_or_else(|| format!("--anyres-image: `{size}` (WIDTHxHEIGHT)"))?;
    let photo = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 239) as u8]));
    let started = Instant::now();
    let pixels = preprocess(&photo, &config.processor, &config.native_mode);
    let preprocess_ms = started.elapsed().as_secs_f64() * 1e3;
    let features = encoder.encode(&pixels, &config.native_mode)?.dim(0)?;
    device.synchronize()?;
    let images = crops.div_ceil(pixels.tiles).max(1);
    let started = Instant::now();
    for _ in 0..images {
        encoder.encode(&pixels, &config.native_mode)?;
    }
    device.synchronize()?;
    let seconds = started.elapsed().as_secs_f64() / images as f64;
    println!(
        "RESULT vlm-bench device={dev} dtype={dtype:?} unit=anyres_image image={w}x{h} crops_per_image={} \
         features_per_image={features} tower_layers={layers} batch={} images={images} images_per_s={:.2} \
         ms_per_image={:.3} host_preprocess_ms_per_image={preprocess_ms:.1}",
        pixels.tiles,
        pixels.tiles,
        1.0 / seconds,
        seconds * 1e3
    );
    Ok(())
}

/// The merge recipe `yaml`, its model paths relative to `dir`.
fn config_in(dir: &Path, yaml: &str) -> Res<MergeConfig> {
    let mut config = MergeConfig::from_yaml(yaml)?;
    config.recipe_dir = Some(dir.to_path_buf());
    Ok(config)
}

/// A DARE recipe over `base`, `ft1`, `ft2` in `dir`.
fn recipe(dir: &Path, method: &str, d1: f64, d2: f64, shared: &str) -> Res<MergeConfig> {
    let yaml = format!(
        "models:\n  - model: base\n  - model: ft1\n    parameters: {{weight: 0.7, density: {d1}}}\n  \
         - model: ft2\n    parameters: {{weight: 0.45, density: {d2}}}\nmerge_method: {method}\n\
         base_model: base\nparameters: {{{shared}}}\ndtype: bfloat16\n"
    );
    config_in(dir, &yaml)
}

const CANDIDATES: [(&str, f64, f64, &str); 7] = [
    ("dare_ties", 0.5, 0.5, ""),
    ("dare_ties", 0.2, 0.9, "normalize: true, lambda: 1.2"),
    ("dare_ties", 0.7, 0.3, "consensus_method: count"),
    ("dare_linear", 0.6, 0.4, ""),
    ("dare_ties", 0.9, 0.1, "rescale: false"),
    ("ties", 0.5, 0.5, ""),
    ("ties", 0.1, 0.8, "consensus_method: count"),
];

/// A linear recipe over `base`, `ft1`, `ft2` in `dir` with these weights.
fn linear_recipe(dir: &Path, w: [f64; 3], shared: &str) -> Res<MergeConfig> {
    let yaml = format!(
        "models:\n  - model: base\n    parameters: {{weight: {}}}\n  - model: ft1\n    parameters: {{weight: {}}}\n  \
         - model: ft2\n    parameters: {{weight: {}}}\nmerge_method: linear\nparameters: {{{shared}}}\ndtype: bfloat16\n",
        w[0], w[1], w[2]
    );
    config_in(dir, &yaml)
}

/// A slerp recipe from `base` to `ft1` in `dir`.
fn slerp_recipe(dir: &Path, t: f64) -> Res<MergeConfig> {
    let yaml = format!(
        "models:\n  - model: base\n  - model: ft1\nmerge_method: slerp\nbase_model: base\nparameters: {{t: {t}}}\n\
         dtype: bfloat16\n"
    );
    config_in(dir, &yaml)
}

/// The candidates merge-parity checks, by family (one device merge per family: the first candidate's plan), each
/// with a label.
fn parity_families(dir: &Path) -> Res<Vec<Vec<(String, MergeConfig)>>> {
    let mut gta = Vec::new();
    for (method, d1, d2, shared) in CANDIDATES {
        gta.push((format!("{method}/{d1}/{d2}/{shared:?}"), recipe(dir, method, d1, d2, shared)?));
    }
    let mut linear = Vec::new();
    for (w, shared) in [([0.2, 0.5, 0.3], ""), ([1.0, -0.4, 0.7], ""), ([0.1, 0.6, 0.25], "normalize: false")] {
        linear.push((format!("linear/{w:?}/{shared:?}"), linear_recipe(dir, w, shared)?));
    }
    let mut slerp = Vec::new();
    for t in [0.5, 0.13, 0.0, 1.0] {
        slerp.push((format!("slerp/{t}"), slerp_recipe(dir, t)?));
    }
    Ok(vec![gta, linear, slerp])
}

fn write_cpu(m: &mut Mistral, name: &str, values: &[f32]) -> Result<(), MergeError> {
    m.write_f32(name, values).map_err(|e| MergeError::Unsupported(e.to_string()))
}

/// Merges the merger's current candidate into `model` on its device, through the device merge where it can.
fn merge_on_device(merger: &InMemoryMerger<'_>, dm: &DeviceMerge, model: &mut Mistral, out: DType) -> Res<usize> {
    let mut failed = None;
    let done = dm.merge_into(merger, out, |t, v| {
        if let Err(e) = model.set_tensor(&t.name, v) {
            failed = Some(e.to_string());
        }
        Ok(())
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    merger.merge_into_except(false, |i| done[i], |view| write_cpu(model, &view.tensor.name, view.values))?;
    Ok(done.iter().filter(|d| **d).count())
}

fn weights_f32(m: &Mistral) -> Res<BTreeMap<String, Vec<f32>>> {
    let mut out = BTreeMap::new();
    for name in m.parameter_names() {
        let t = m.parameter(&name)?.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.flatten_all()?;
        out.insert(name, t.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// Number of entries whose bits differ, over every weight.
fn differing(a: &BTreeMap<String, Vec<f32>>, b: &BTreeMap<String, Vec<f32>>) -> usize {
    a.iter()
        .map(|(name, x)| match b.get(name) {
            Some(y) if y.len() == x.len() => x.iter().zip(y).filter(|(p, q)| p.to_bits() != q.to_bits()).count(),
            _ => x.len(),
        })
        .sum()
}

fn merge_parity(fixtures: &Path, device: &Device) -> Res<()> {
    let f32_dir = fixtures.join("models");
    // bf16 copies of the fixtures (a one-model linear merge rounds them), so bf16 sources are uploaded as such.
    let tmp = tempfile::tempdir()?;
    for model in ["base", "ft1", "ft2"] {
        let yaml = format!("models:\n  - model: {model}\n    parameters: {{weight: 1.0}}\nmerge_method: linear\ndtype: bfloat16\n");
        let copy = config_in(&f32_dir, &yaml)?;
        merge_to_dir(&copy, &tmp.path().join(model), &MergeOptions { progress: false, ..Default::default() })?;
    }
    for (dir, live_dtype) in [(&f32_dir, DType::F32), (&f32_dir, DType::BF16), (&tmp.path().to_path_buf(), DType::BF16)] {
        let sources_dtype = if dir == &f32_dir { "f32" } else { "bf16" };
        for family in parity_families(dir)? {
            let Some((_, initial)) = family.first() else { continue };
            let opened = open_models(initial)?;
            let sources: Vec<&dyn TensorSource> = opened.iter().map(|m| m as &dyn TensorSource).collect();
            let mut merger = InMemoryMerger::from_sources(initial, sources, 5)?;
            let dm = DeviceMerge::new(&merger, device)?;
            let load = |device: &Device| {
                let opts = LoadOptions { device: device.clone(), dtype: Some(live_dtype), cpu_kernels: false, ..Default::default() };
                Mistral::from_dir(&dir.join("base"), &opts)
            };
            let (mut on_cpu, mut on_device) = (load(&Device::Cpu)?, load(device)?);
            for (label, candidate) in &family {
                merger.set_config(candidate)?;
                merger.merge_into(false, |view| write_cpu(&mut on_cpu, &view.tensor.name, view.values))?;
                let merged_on_device = merge_on_device(&merger, &dm, &mut on_device, live_dtype)?;
                let diff = differing(&weights_f32(&on_cpu)?, &weights_f32(&on_device)?);
                println!(
                    "RESULT merge-parity sources={sources_dtype} live={live_dtype:?} candidate={label} \
                     tensors_on_device={merged_on_device} differing_entries={diff} {}",
                    if diff == 0 { "identical" } else { "DIFFERS" }
                );
                if diff != 0 || merged_on_device == 0 {
                    return Err(format!("merge parity failed for {label}").into());
                }
            }
        }
    }
    Ok(())
}

fn merge_bench(models: &Path, device: &Device, candidates: usize, target_params: f64) -> Res<()> {
    let config = recipe(models, "dare_ties", 0.5, 0.5, "")?;
    let opened = open_models(&config)?;
    let sources: Vec<&dyn TensorSource> = opened.iter().map(|m| m as &dyn TensorSource).collect();
    let mut merger = InMemoryMerger::from_sources(&config, sources, 0)?;
    let opts = LoadOptions { device: device.clone(), dtype: Some(DType::BF16), cpu_kernels: false, ..Default::default() };
    let mut live = Mistral::from_dir(&models.join("base"), &opts)?;
    let params: usize = merger.plan().tensors.iter().map(|t| t.numel()).sum();
    let started = Instant::now();
    let dm = DeviceMerge::new(&merger, device)?;
    device.synchronize()?;
    println!("RESULT merge-bench upload_seconds={:.2} resident_tensors={}", started.elapsed().as_secs_f64(), dm.len());
    // TIES's threshold search is many counting passes: fast on a GPU, minutes per candidate through candle's CPU
    // ops, so a CPU dry run times DARE-TIES only.
    let methods: &[&str] = if device.is_cpu() { &["dare_ties"] } else { &["dare_ties", "ties"] };
    for &method in methods {
        let mut times = Vec::new();
        for k in 0..candidates.max(1) {
            let (d1, d2) = (0.3 + 0.1 * (k % 5) as f64, 0.7 - 0.1 * (k % 5) as f64);
            merger.set_config(&recipe(models, method, d1, d2, "")?)?;
            let started = Instant::now();
            merge_on_device(&merger, &dm, &mut live, DType::BF16)?;
            device.synchronize()?;
            times.push(started.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "RESULT merge-bench method={method} path=device candidates={} median_seconds={median:.4} min_seconds={:.4}",
            times.len(),
            times[0]
        );
        // The merge reads every source once and writes the model once: its time scales with the parameter count.
        println!(
            "RESULT merge-bench method={method} path=device model_params={:.3}e9 target_params={:.3}e9 \
             assumption=time_scales_with_params extrapolated_target_median_seconds={:.3}",
            params as f64 / 1e9,
            target_params / 1e9,
            median * target_params / params as f64
        );
    }
    // What the search did before: merge on the CPU, copy every tensor to the device.
    let started = Instant::now();
    merger.merge_into(false, |view| write_cpu(&mut live, &view.tensor.name, view.values))?;
    device.synchronize()?;
    println!("RESULT merge-bench path=cpu+upload candidates=1 seconds={:.3}", started.elapsed().as_secs_f64());
    Ok(())
}

fn decode_bench(model_dir: &Path, device: &Device, batches: &[usize], new_tokens: usize, prompt_len: usize) -> Res<()> {
    let dtype = if device.is_cpu() { DType::F32 } else { DType::BF16 };
    let opts = LoadOptions { device: device.clone(), dtype: Some(dtype), ..Default::default() };
    let model = Mistral::from_dir(model_dir, &opts)?;
    let vocab = model.config().vocab_size as u32;
    let config = GenerationConfig { max_new_tokens: new_tokens, eos_token_ids: Vec::new(), ..GenerationConfig::default() };
    for &batch in batches {
        let prompts: Vec<PromptInput> = (0..batch)
            .map(|row| PromptInput::Tokens((0..prompt_len).map(|i| (1 + (row * 7919 + i * 104_729) as u32) % vocab).collect()))
            .collect();
        // One short warm-up (kernel compilation, allocations), then the timed run.
        let warm = GenerationConfig { max_new_tokens: 4, ..config.clone() };
        generate(&model, &prompts, &warm, None)?;
        device.synchronize()?;
        let started = Instant::now();
        let out = generate(&model, &prompts, &config, None)?;
        device.synchronize()?;
        let seconds = started.elapsed().as_secs_f64();
        let tokens: usize = out.iter().map(|c| c.tokens.len()).sum();
        println!(
            "RESULT decode-bench engine=evomerge dtype={dtype:?} batch={batch} prompt_len={prompt_len} new_tokens={tokens} \
             seconds={seconds:.3} tokens_per_second={:.1}",
            tokens as f64 / seconds
        );
    }
    Ok(())
}

/// Best wall seconds of `repeats` runs of `f` (at least one), the device synchronised around each.
fn best_seconds(device: &Device, repeats: usize, mut f: impl FnMut() -> Res<()>) -> Res<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        device.synchronize()?;
        let started = Instant::now();
        f()?;
        device.synchronize()?;
        best = best.min(started.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn vqa_extrapolate(flags: &BTreeMap<String, String>, device: &Device) -> Res<()> {
    let model_dir = path_flag(flags, "model")?;
    let beams = number(flags, "beams", 5)?.max(1);
    let new_tokens = number(flags, "new-tokens", 64)?.max(1);
    let prompt_len = number(flags, "prompt-len", 640)?.max(1);
    let items = number(flags, "items", 500)?;
    let max_tokens = number(flags, "max-tokens", 512)?;
    let target_params = float(flags, "target-params", 7.24e9)?;
    let repeats = number(flags, "repeats", 3)?;
    let dtype = dtype_flag(flags, device)?;
    let dev = device_name(device);

    // Tower + projector per item: given, or timed on the full-size encoder (dropped before the LLM loads).
    let (tower_seconds, tower_source) = match flags.get("tower-ms-per-item") {
        Some(_) => (float(flags, "tower-ms-per-item", 1.0)? / 1e3, "tower_source=given".to_string()),
        None => {
            let crops_per_item = number(flags, "crops-per-item", 1)?.max(1);
            let (_, encoder) = full_size_encoder(flags, device, dtype)?;
            let per_crop = seconds_per_crop(&encoder, device, crops_per_item, number(flags, "images", 8)?)?;
            let source = format!(
                "tower_source=inline tower_crops_per_item={crops_per_item} tower_layers={}/{}",
                encoder.tower().layers_loaded(),
                encoder.spec().vision.num_hidden_layers
            );
            (per_crop * crops_per_item as f64, source)
        }
    };

    let opts = LoadOptions { device: device.clone(), dtype: Some(dtype), ..Default::default() };
    let model = Mistral::from_dir(&model_dir, &opts)?;
    let mut params = 0usize;
    for name in model.parameter_names() {
        params += model.parameter(&name)?.elem_count();
    }
    if prompt_len + new_tokens + 1 > model.max_context() {
        return Err(format!(
            "--prompt-len {prompt_len} + --new-tokens {new_tokens} exceed the model's context of {} positions",
            model.max_context()
        )
        .into());
    }
    let vocab = model.config().vocab_size;
    let prompt = vec![PromptInput::Tokens((0..prompt_len).map(|i| (1 + i * 104_729 % (vocab - 1)) as u32).collect())];
    // No EOS: every beam runs the full length, so each step is a 5-row decode step.
    let config = GenerationConfig { num_beams: beams, eos_token_ids: Vec::new(), ..GenerationConfig::default() };
    let with_new = |n: usize| GenerationConfig { max_new_tokens: n, ..config.clone() };
    generate(&model, &prompt, &with_new(2), None)?; // warm-up: kernels, allocations
    let prefill = best_seconds(device, repeats, || Ok(generate(&model, &prompt, &with_new(1), None).map(drop)?))?;
    let mut generated = 0;
    let full = best_seconds(device, repeats, || {
        generated = generate(&model, &prompt, &with_new(1 + new_tokens), None)?[0].tokens.len();
        Ok(())
    })?;
    if generated != 1 + new_tokens {
        return Err(format!("beam search produced {generated} tokens, expected {}", 1 + new_tokens).into());
    }
    let step = (full - prefill) / new_tokens as f64;
    if step <= 0.0 {
        return Err(format!(
            "{new_tokens} decode steps took no measurable time beyond the prefill ({full:.4} s vs {prefill:.4} s); \
             raise --new-tokens"
        )
        .into());
    }
    println!(
        "RESULT vqa-extrapolate device={dev} dtype={dtype:?} model_params={:.3}e9 beams={beams} prompt_len={prompt_len} \
         {tower_source} measured_tower_s_per_item={tower_seconds:.4} measured_prefill_s={prefill:.4} \
         measured_decode_step_s={step:.5} measured_decode_steps={new_tokens}",
        params as f64 / 1e9
    );
    let llm_seconds = prefill + max_tokens as f64 * step;
    let item = tower_seconds + llm_seconds;
    println!(
        "RESULT vqa-extrapolate items={items} max_tokens={max_tokens} llm=measured_model \
         extrapolated_item_s={item:.3} extrapolated_total_s={:.1}",
        item * items as f64
    );
    // Decode reads every weight once per step and prefill's FLOPs are ~2 x params per token: both grow with the
    // parameter count (same dtype, so with the parameter bytes). The tower is full-size already.
    let scale = target_params / params as f64;
    let item = tower_seconds + llm_seconds * scale;
    println!(
        "RESULT vqa-extrapolate items={items} max_tokens={max_tokens} llm=target target_params={target_params:.3e} \
         assumption=llm_time_scales_with_param_bytes llm_scale={scale:.2} extrapolated_item_s={item:.3} \
         extrapolated_total_s={:.1} extrapolated_total_min={:.1}",
        item * items as f64,
        item * items as f64 / 60.0
    );
    Ok(())
}
