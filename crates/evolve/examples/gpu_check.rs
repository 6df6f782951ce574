//! The GPU checks of scripts/gpu-check.sh (issue #19), as one program built with `--features cuda`:
//!
//! ```text
//! gpu_check generate-parity --model tests/fixtures/mistral/generation/model [--device cuda]
//!     f32 logits of the device-generic path on the device vs the CPU (max |diff| ≤ 1e-3), and greedy and
//!     beam-search (3 beams) completions of a padded batch, which must be identical
//! gpu_check vlm-parity --model tests/fixtures/vision/llava --images tests/fixtures/vision/images [--device cuda]
//!     image features (vision tower + projector, f32) on the device vs the CPU (max |diff| ≤ 1e-3), and images/s
//!     through tower + projector on the device (a tiny fixture tower: a parity check, not a speed figure)
//! gpu_check merge-parity --fixtures tests/fixtures/merge [--device cuda]
//!     the candidate merge on the device vs the CPU merger, several DARE-TIES / DARE-linear / TIES / linear / slerp
//!     candidates, f32 and bf16 sources: the written weights must be equal bit for bit (so the DARE masks and TIES
//!     thresholds are identical)
//! gpu_check merge-bench --models DIR [--device cuda] [--candidates 5]
//!     DIR holds base/, ft1/, ft2/ (the 1.1 B set `cargo bench -p evomerge-merge --bench merge -- generate`
//!     writes): seconds per DARE-TIES and per TIES candidate merged into a live bf16 model on the device, resident sources vs
//!     the CPU merger + upload
//! gpu_check decode-bench --model DIR [--device cuda] [--batch 1,32] [--new-tokens 128] [--prompt-len 32]
//!     greedy decode tokens/s of our generation at each batch size (bf16 on a GPU)
//! ```
//! Each prints `RESULT <check> <key=value ...>` lines that the script gathers into its table. `--device cpu`
//! runs the same code on the CPU (what CI and a machine without a GPU can try).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use evomerge_evolve::device_merge::DeviceMerge;
use evomerge_evolve::generators::parse_device;
use evomerge_merge::{
    merge_to_dir, open_models, InMemoryMerger, MergeConfig, MergeError, MergeOptions, TensorSource,
};
use evomerge_mistral::generation::{generate, GenerationConfig, PromptInput};
use evomerge_mistral::prompt::TextTokenizer;
use evomerge_vision::{load_image, AlphaMode, LlavaModel, LoadOptions as VisionOptions};
use evomerge_mistral::{LoadOptions, Mistral};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    if let Err(e) = run() {
        eprintln!("gpu_check: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        return Err(
            "usage: gpu_check generate-parity|vlm-parity|merge-parity|merge-bench|decode-bench [options] (see the source's header)"
                .into(),
        );
    };
    let flags = parse_flags(&args[1..])?;
    let device = parse_device(flags.get("device").map_or("cuda", String::as_str))?;
    match command.as_str() {
        "generate-parity" => generate_parity(&path_flag(&flags, "model")?, &device),
        "merge-parity" => merge_parity(&path_flag(&flags, "fixtures")?, &device),
        "vlm-parity" => vlm_parity(&path_flag(&flags, "model")?, &path_flag(&flags, "images")?, &device),
        "merge-bench" => merge_bench(&path_flag(&flags, "models")?, &device, number(&flags, "candidates", 5)?),
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
        other => Err(format!("unknown check `{other}`: generate-parity, vlm-parity, merge-parity, merge-bench or decode-bench").into()),
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

/// A DARE recipe over `base`, `ft1`, `ft2` in `dir`.
fn recipe(dir: &Path, method: &str, d1: f64, d2: f64, shared: &str) -> Res<MergeConfig> {
    let yaml = format!(
        "models:\n  - model: base\n  - model: ft1\n    parameters: {{weight: 0.7, density: {d1}}}\n  \
         - model: ft2\n    parameters: {{weight: 0.45, density: {d2}}}\nmerge_method: {method}\n\
         base_model: base\nparameters: {{{shared}}}\ndtype: bfloat16\n"
    );
    let mut config = MergeConfig::from_yaml(&yaml)?;
    config.recipe_dir = Some(dir.to_path_buf());
    Ok(config)
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
    let mut config = MergeConfig::from_yaml(&yaml)?;
    config.recipe_dir = Some(dir.to_path_buf());
    Ok(config)
}

/// A slerp recipe from `base` to `ft1` in `dir`.
fn slerp_recipe(dir: &Path, t: f64) -> Res<MergeConfig> {
    let yaml = format!(
        "models:\n  - model: base\n  - model: ft1\nmerge_method: slerp\nbase_model: base\nparameters: {{t: {t}}}\n\
         dtype: bfloat16\n"
    );
    let mut config = MergeConfig::from_yaml(&yaml)?;
    config.recipe_dir = Some(dir.to_path_buf());
    Ok(config)
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
        let mut copy = MergeConfig::from_yaml(&yaml)?;
        copy.recipe_dir = Some(f32_dir.clone());
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

fn merge_bench(models: &Path, device: &Device, candidates: usize) -> Res<()> {
    let config = recipe(models, "dare_ties", 0.5, 0.5, "")?;
    let opened = open_models(&config)?;
    let sources: Vec<&dyn TensorSource> = opened.iter().map(|m| m as &dyn TensorSource).collect();
    let mut merger = InMemoryMerger::from_sources(&config, sources, 0)?;
    let opts = LoadOptions { device: device.clone(), dtype: Some(DType::BF16), cpu_kernels: false, ..Default::default() };
    let mut live = Mistral::from_dir(&models.join("base"), &opts)?;
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
        println!(
            "RESULT merge-bench method={method} path=device candidates={} median_seconds={:.4} min_seconds={:.4}",
            times.len(),
            times[times.len() / 2],
            times[0]
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
