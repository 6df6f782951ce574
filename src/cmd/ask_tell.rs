//! `evomerge ask-tell`: drive a CMA-ES search over JSON lines on stdin/stdout, so that any
//! program in any language, on any machine, can be the evaluator.
//!
//! For every generation one line `{"generation": g, "candidates": [[x, ...], ...]}` goes out
//! and one line `{"fitness": [f, ...]}` (same order, lower is better) is read back. When a
//! stopping criterion holds, `{"stop": "<criterion>", "best": {"x": [...], "fitness": f},
//! "evaluations": n}` is printed and the command exits 0. On end of input the state is saved
//! (with `--state`) and the command exits 0; run again with the same `--state FILE` it asks
//! exactly the candidates the interrupted run would have asked next.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use evomerge_cmaes::{CmaEs, Config};
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Number of genes (dimensions of the search space).
    #[arg(long)]
    pub dim: usize,
    /// Initial mean: one number for all dimensions or a comma-separated list.
    #[arg(long, allow_hyphen_values = true)]
    pub x0: String,
    /// Initial step size [default: 1/6 of the narrowest bounded interval, else 1].
    #[arg(long)]
    pub sigma0: Option<f64>,
    /// Lower bounds: one number or a comma-separated list ("-inf" leaves a side open).
    #[arg(long, allow_hyphen_values = true)]
    pub lower: Option<String>,
    /// Upper bounds: one number or a comma-separated list ("inf" leaves a side open).
    #[arg(long, allow_hyphen_values = true)]
    pub upper: Option<String>,
    /// Candidates per generation [default: 4 + floor(3 ln dim)].
    #[arg(long)]
    pub popsize: Option<usize>,
    /// Seed of the random generator; the same seed gives the same search.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop after this many evaluations (over all restarts).
    #[arg(long)]
    pub max_evals: Option<u64>,
    /// Stop as soon as a fitness at or below this is reported.
    #[arg(long, allow_hyphen_values = true)]
    pub ftarget: Option<f64>,
    /// Save the state here after every generation and on end of input; resume from it when
    /// it exists (the command-line settings are then taken from the file).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Separable CMA-ES (diagonal covariance), for many genes.
    #[arg(long)]
    pub separable: bool,
    /// IPOP restarts with doubled population when a run converges.
    #[arg(long, default_value_t = 0)]
    pub restarts: usize,
    /// Generations with flat fitness (best = 75th percentile) tolerated before a run stops
    /// [default: 1, as pycma]. Raise it for coarse fitness such as an accuracy on few items.
    #[arg(long)]
    pub tolflatfitness: Option<u64>,
    /// CMA-ES with margin: discretisation step per gene (one number or a list; 0 =
    /// continuous). Discrete genes need finite bounds; e.g. 1 on [0, 1] is an on/off gene.
    #[arg(long)]
    pub steps: Option<String>,
}

#[derive(Serialize)]
struct GenerationLine<'a> {
    generation: u64,
    candidates: &'a [Vec<f64>],
}

#[derive(Serialize)]
struct BestOut<'a> {
    x: &'a [f64],
    fitness: f64,
}

#[derive(Serialize)]
struct StopLine<'a> {
    stop: &'a str,
    best: Option<BestOut<'a>>,
    evaluations: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = config_from_args(&args)?;
    let mut es = match &args.state {
        Some(path) if path.exists() => resume(path, &config)?,
        _ => CmaEs::new(config).context("invalid search settings")?,
    };
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut line = String::new();
    loop {
        if let Some(reason) = es.stop_reason() {
            let best = es.best().map(|b| BestOut { x: &b.x, fitness: b.fitness });
            let stop = StopLine { stop: reason.name(), best, evaluations: es.evaluations() };
            writeln!(out, "{}", serde_json::to_string(&stop)?)?;
            out.flush()?;
            return save(&es, args.state.as_deref());
        }
        let candidates = es.ask()?;
        let generation = GenerationLine { generation: es.generations(), candidates: &candidates };
        writeln!(out, "{}", serde_json::to_string(&generation)?)?;
        out.flush()?;

        line.clear();
        if input.read_line(&mut line).context("cannot read stdin")? == 0 {
            // End of input: keep the state as of the last complete tell (the pending
            // generation is re-asked identically on resume).
            return save(&es, args.state.as_deref());
        }
        let fitness = parse_fitness(line.trim(), es.generations())?;
        let restarts_before = es.restarts().len();
        es.tell(&fitness).with_context(|| format!("generation {}", es.generations()))?;
        if let Some(r) = es.restarts().get(restarts_before) {
            tracing::info!(
                "run stopped on {} after {} evaluations; IPOP restart with popsize {}",
                r.reason,
                r.evaluations,
                r.popsize
            );
        }
        save(&es, args.state.as_deref())?;
    }
}

fn config_from_args(args: &Args) -> anyhow::Result<Config> {
    let n = args.dim;
    if n == 0 {
        bail!("--dim must be at least 1");
    }
    let x0 = parse_vector("--x0", &args.x0, n)?;
    let lower = args.lower.as_deref().map(|s| parse_vector("--lower", s, n)).transpose()?;
    let upper = args.upper.as_deref().map(|s| parse_vector("--upper", s, n)).transpose()?;
    let bounds = match (lower, upper) {
        (None, None) => None,
        (lower, upper) => Some((
            lower.unwrap_or_else(|| vec![f64::NEG_INFINITY; n]),
            upper.unwrap_or_else(|| vec![f64::INFINITY; n]),
        )),
    };
    let sigma0 = args.sigma0.unwrap_or_else(|| {
        let narrowest = bounds
            .as_ref()
            .map(|(lo, up)| lo.iter().zip(up).map(|(l, u)| u - l).filter(|w| w.is_finite() && *w > 0.0))
            .and_then(|widths| widths.reduce(f64::min));
        narrowest.map_or(1.0, |w| w / 6.0)
    });
    let mut config = Config::new(x0, sigma0).with_seed(args.seed).with_restarts(args.restarts);
    if let Some((lo, up)) = bounds {
        config = config.with_bounds(lo, up);
    }
    if let Some(p) = args.popsize {
        config = config.with_popsize(p);
    }
    if let Some(m) = args.max_evals {
        config = config.with_max_evals(m);
    }
    if let Some(steps) = &args.steps {
        config = config.with_steps(parse_vector("--steps", steps, n)?);
    }
    config.separable = args.separable;
    config.tolerances.ftarget = args.ftarget;
    if let Some(t) = args.tolflatfitness {
        config.tolerances.tolflatfitness = t;
    }
    config.validate().context("invalid search settings")?;
    Ok(config)
}

/// One number (repeated `n` times) or exactly `n` comma-separated numbers.
fn parse_vector(flag: &str, text: &str, n: usize) -> anyhow::Result<Vec<f64>> {
    let values = text
        .split(',')
        .map(|s| {
            let s = s.trim();
            s.parse::<f64>().with_context(|| format!("{flag}: {s:?} is not a number"))
        })
        .collect::<anyhow::Result<Vec<f64>>>()?;
    if let Some(bad) = values.iter().find(|v| v.is_nan()) {
        bail!("{flag}: {bad} is not allowed");
    }
    match values.len() {
        1 => Ok(vec![values[0]; n]),
        len if len == n => Ok(values),
        len => bail!("{flag} has {len} values; give one number or --dim = {n} comma-separated numbers"),
    }
}

fn parse_fitness(line: &str, generation: u64) -> anyhow::Result<Vec<f64>> {
    let malformed = || {
        format!("generation {generation}: expected a line {{\"fitness\": [f, ...]}}, got {:?}", truncate(line))
    };
    let value: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(err) => {
            if line.contains("NaN") || line.contains("Infinity") {
                bail!("generation {generation}: fitness contains NaN or Infinity; every fitness must be a finite number");
            }
            return Err(err).with_context(malformed);
        }
    };
    let Some(items) = value.get("fitness").and_then(|f| f.as_array()) else {
        bail!(malformed());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            serde_json::Value::Number(num) => num
                .as_f64()
                .with_context(|| format!("generation {generation}: fitness[{i}] = {num} is out of range")),
            serde_json::Value::Null => {
                bail!("generation {generation}: fitness[{i}] is null (NaN?); every fitness must be a finite number")
            }
            other => bail!("generation {generation}: fitness[{i}] = {other} is not a number"),
        })
        .collect()
}

fn truncate(line: &str) -> String {
    line.chars().take(120).collect()
}

fn resume(path: &Path, config: &Config) -> anyhow::Result<CmaEs> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the state file {}", path.display()))?;
    let es = CmaEs::from_json(&text).with_context(|| {
        format!("{} is not a usable ask-tell state (delete it to start afresh)", path.display())
    })?;
    if es.dim() != config.dim() {
        bail!(
            "the state file {} holds a {}-dimensional search but --dim is {}; use another --state file",
            path.display(),
            es.dim(),
            config.dim()
        );
    }
    if es.config() != config {
        tracing::warn!(
            "resuming from {}: its settings are used, the differing command-line settings are ignored",
            path.display()
        );
    }
    Ok(es)
}

/// Writes the state atomically: a temporary file in the same directory, then a rename, so an
/// interruption never leaves a half-written state.
fn save(es: &CmaEs, path: Option<&Path>) -> anyhow::Result<()> {
    let Some(path) = path else { return Ok(()) };
    let json = es.to_json()?;
    let mut tmp_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(json.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("cannot write the state file {}", path.display()))?;
    Ok(())
}
