//! `evomerge inspect MODEL`: what a checkpoint holds — architecture, layers, dtypes, parameter
//! count, shards — and optionally every tensor. Reads headers only.

use std::collections::BTreeMap;

use anyhow::Context;
use evomerge_checkpoint::Checkpoint;
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct Args {
    /// Model directory, or hub id `org/name[@revision]` (read from the local Hugging Face cache,
    /// downloaded if missing).
    pub model: String,
    /// Also list every tensor with its dtype, shape and shard file.
    #[arg(long)]
    pub tensors: bool,
    /// Print machine-readable JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let ckpt = Checkpoint::open(&args.model).with_context(|| format!("cannot open model `{}`", args.model))?;
    let summary = summarize(&ckpt, args.tensors);
    let text = if args.json { serde_json::to_string_pretty(&summary)? + "\n" } else { render_text(&summary) };
    // `evomerge inspect ... | head` closing the pipe early is not an error.
    match std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn summarize(ckpt: &Checkpoint, with_tensors: bool) -> Value {
    let config_usize = |key: &str| ckpt.text_config_value(key).and_then(Value::as_u64);
    let mut summary = json!({
        "model": ckpt.label(),
        "dir": ckpt.dir().display().to_string(),
        "architecture": ckpt.architecture(),
        "model_type": ckpt.model_type(),
        "num_layers": ckpt.num_layers(),
        "hidden_size": ckpt.hidden_size(),
        "vocab_size": config_usize("vocab_size"),
        "config_dtype": ckpt.config().get("torch_dtype").or_else(|| ckpt.config().get("dtype")).cloned(),
        "dtypes": ckpt.dtype_counts(),
        "parameters": ckpt.parameter_count(),
        "num_tensors": ckpt.tensor_names().len(),
        "num_shards": ckpt.safetensors_files().len(),
        "file_bytes": ckpt.total_bytes(),
        "tensor_bytes": ckpt.tensor_bytes(),
    });
    if with_tensors {
        let mut list = Vec::new();
        for name in ckpt.tensor_names() {
            // Tensors of unsupported dtypes are still listed, under their stored dtype name.
            let entry = match ckpt.tensor_info(name) {
                Ok(info) => json!({ "name": name, "dtype": info.dtype.as_str(), "shape": info.shape, "file": info.file }),
                Err(err) => json!({ "name": name, "error": err.to_string() }),
            };
            list.push(entry);
        }
        summary["tensors"] = Value::Array(list);
    }
    summary
}

fn render_text(s: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let show = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let dtypes: BTreeMap<String, u64> = s["dtypes"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect())
        .unwrap_or_default();
    let dtypes = dtypes.iter().map(|(d, n)| format!("{d} ({n} tensors)")).collect::<Vec<_>>().join(", ");
    let params = s["parameters"].as_u64().unwrap_or(0);
    let rows = [
        ("model", show(&s["model"])),
        ("directory", show(&s["dir"])),
        ("architecture", show(&s["architecture"])),
        ("model_type", show(&s["model_type"])),
        ("layers", show(&s["num_layers"])),
        ("hidden_size", show(&s["hidden_size"])),
        ("vocab_size", show(&s["vocab_size"])),
        ("dtypes", dtypes),
        ("parameters", format!("{} ({})", group_digits(params), human_count(params))),
        ("tensors", show(&s["num_tensors"])),
        (
            "shards",
            format!("{} ({})", show(&s["num_shards"]), human_bytes(s["file_bytes"].as_u64().unwrap_or(0))),
        ),
    ];
    for (key, value) in rows {
        let _ = writeln!(out, "{:<14}{value}", format!("{key}:"));
    }
    if let Some(tensors) = s["tensors"].as_array() {
        out.push('\n');
        let shape_of = |t: &Value| {
            let dims: Vec<String> =
                t["shape"].as_array().map(|a| a.iter().map(|d| d.to_string()).collect()).unwrap_or_default();
            format!("[{}]", dims.join(", "))
        };
        let width = tensors.iter().filter_map(|t| t["name"].as_str()).map(str::len).max().unwrap_or(4);
        let shape_width = tensors.iter().map(|t| shape_of(t).len()).max().unwrap_or(2);
        for t in tensors {
            let name = t["name"].as_str().unwrap_or("");
            if let Some(err) = t["error"].as_str() {
                let _ = writeln!(out, "{name:<width$}  ({err})");
                continue;
            }
            let _ = writeln!(out, "{name:<width$}  {:<5} {:<shape_width$}  {}", show(&t["dtype"]), shape_of(t), show(&t["file"]));
        }
    }
    out
}

fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn human_count(n: u64) -> String {
    let n = n as f64;
    match n {
        n if n >= 1e9 => format!("{:.2} B", n / 1e9),
        n if n >= 1e6 => format!("{:.2} M", n / 1e6),
        n if n >= 1e3 => format!("{:.1} K", n / 1e3),
        n => format!("{n}"),
    }
}

fn human_bytes(n: u64) -> String {
    let n = n as f64;
    match n {
        n if n >= 1e9 => format!("{:.2} GB", n / 1e9),
        n if n >= 1e6 => format!("{:.2} MB", n / 1e6),
        n if n >= 1e3 => format!("{:.1} KB", n / 1e3),
        n => format!("{n} B"),
    }
}
