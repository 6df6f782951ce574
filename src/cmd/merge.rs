//! `evomerge merge CONFIG.yml --out DIR`: merge models as a mergekit-style recipe says and write
//! the result as a Hugging Face model directory (atomically: nothing is left behind on failure).

use std::path::PathBuf;

use anyhow::Context;
use evomerge_merge::{merge_documents_to_dir, merge_to_dir, ComputeDtype, MergeConfig, MergeOptions};

#[derive(clap::Args)]
pub struct Args {
    /// The merge recipe (mergekit YAML: models or slices, merge_method, base_model, parameters, dtype).
    pub config: PathBuf,
    /// Output model directory (must not exist unless --force).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Seed for the random parts of a merge (DARE drop masks); same seed, same output.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Replace an existing output directory (only once the new model is complete).
    #[arg(long)]
    pub force: bool,
    /// Maximum size of one safetensors shard, e.g. 5GB, 500MB, 2GiB.
    #[arg(long, default_value = "5GB", value_parser = parse_size)]
    pub shard_size: u64,
    /// Working memory the merge may use for tensor buffers, e.g. 1GB.
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub memory: u64,
    /// What the merge computes in: `f32` (default; most accurate) or `recipe`, the recipe's
    /// `dtype` as mergekit does (reproduces its bf16 outputs; not for DARE/DELLA below density 1,
    /// whose masks are random).
    #[arg(long, default_value = "f32", value_parser = parse_compute_dtype)]
    pub compute_dtype: ComputeDtype,
}

fn parse_compute_dtype(text: &str) -> Result<ComputeDtype, String> {
    match text {
        "f32" | "float32" => Ok(ComputeDtype::F32),
        "recipe" => Ok(ComputeDtype::Recipe),
        other => Err(format!("unknown compute dtype `{other}`; use `f32` or `recipe` (the recipe's dtype, as mergekit)")),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let documents = MergeConfig::documents_from_file(&args.config)?;
    let options = MergeOptions {
        seed: args.seed,
        threads: args.threads,
        force: args.force,
        max_shard_bytes: args.shard_size,
        progress: true,
        memory_budget_bytes: usize::try_from(args.memory).unwrap_or(usize::MAX),
        compute_dtype: args.compute_dtype,
    };
    let failed = || format!("merge of {} failed; nothing was written to {}", args.config.display(), args.out.display());
    let reports = if documents.len() == 1 {
        vec![merge_to_dir(&documents[0].config, &args.out, &options).with_context(failed)?]
    } else {
        // A mergekit-multi file: named documents into OUT/<name>, the final one into OUT.
        merge_documents_to_dir(&documents, &args.out, &options).with_context(failed)?
    };
    for (document, report) in documents.iter().zip(&reports) {
        eprintln!(
            "merged {} tensors with {} into {} in {:.1}s ({:.2} GB read, {:.2} GB/s)",
            report.tensors,
            document.config.merge_method,
            report.out_dir.display(),
            report.seconds,
            report.bytes_read as f64 / 1e9,
            report.bytes_read as f64 / 1e9 / report.seconds.max(1e-9),
        );
        if let Some(vlm) = &report.output_vlm {
            eprintln!("the output is a VLM: vision tower, projector, config and processor files from {vlm}");
        }
    }
    Ok(())
}

/// Sizes like `5GB`, `500MB`, `2GiB`, `1000000` (bytes).
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a size like 5GB or 500MB"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown size unit `{other}` in `{text}`; use B, KB, MB, GB, KiB, MiB or GiB")),
    };
    let bytes = value * scale;
    if bytes < 1.0 {
        return Err(format!("size `{text}` must be at least one byte"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("5GB"), Ok(5_000_000_000));
        assert_eq!(parse_size("2GiB"), Ok(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("1234"), Ok(1234));
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("0").is_err());
    }
}
