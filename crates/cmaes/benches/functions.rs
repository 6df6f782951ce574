//! Runs the optimiser on the benchmark functions described by a JSON spec and prints one JSON
//! line per run. Driven by `bench/compare_pycma.py`, which gives pycma the same problems:
//!
//! ```text
//! cargo bench -p evomerge-cmaes --bench functions -- SPEC.json
//! ```
//!
//! SPEC.json: `[{"function": "rosenbrock", "x0": [...], "sigma0": 0.5, "seed": 1,
//!              "restarts": 0, "max_evals": 100000, "target": 1e-8}, ...]`

use evomerge_cmaes::{CmaEs, Config};
use serde::Deserialize;

#[derive(Deserialize)]
struct Problem {
    function: String,
    x0: Vec<f64>,
    sigma0: f64,
    seed: u64,
    restarts: usize,
    max_evals: u64,
    target: f64,
}

fn sphere(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum()
}

fn ellipsoid(x: &[f64]) -> f64 {
    let n = x.len();
    x.iter()
        .enumerate()
        .map(|(i, v)| 1e6_f64.powf(i as f64 / (n as f64 - 1.0)) * v * v)
        .sum()
}

fn rosenbrock(x: &[f64]) -> f64 {
    x.windows(2).map(|w| 100.0 * (w[1] - w[0] * w[0]).powi(2) + (1.0 - w[0]).powi(2)).sum()
}

fn rastrigin(x: &[f64]) -> f64 {
    10.0 * x.len() as f64
        + x.iter().map(|v| v * v - 10.0 * (2.0 * std::f64::consts::PI * v).cos()).sum::<f64>()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; the spec is the first argument ending in .json.
    let Some(path) = std::env::args().skip(1).find(|a| a.ends_with(".json")) else {
        eprintln!("usage: cargo bench -p evomerge-cmaes --bench functions -- SPEC.json");
        return Ok(());
    };
    let problems: Vec<Problem> = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    for p in problems {
        let f: fn(&[f64]) -> f64 = match p.function.as_str() {
            "sphere" => sphere,
            "ellipsoid" => ellipsoid,
            "rosenbrock" => rosenbrock,
            "rastrigin" => rastrigin,
            other => return Err(format!("unknown function {other}").into()),
        };
        let config = Config::new(p.x0.clone(), p.sigma0)
            .with_seed(p.seed)
            .with_restarts(p.restarts)
            .with_max_evals(p.max_evals);
        let start = std::time::Instant::now();
        let mut es = CmaEs::new(config)?;
        let mut reached = None;
        while !es.is_stopped() {
            let xs = es.ask()?;
            let fs: Vec<f64> = xs.iter().map(|x| f(x)).collect();
            es.tell(&fs)?;
            if fs.iter().any(|v| *v < p.target) {
                reached = Some(es.evaluations());
                break;
            }
        }
        let line = serde_json::json!({
            "function": p.function,
            "dim": p.x0.len(),
            "seed": p.seed,
            "evals": reached,
            "total_evals": es.evaluations(),
            "best": es.best().map(|b| b.fitness),
            "stop": es.stop_reason().map(|r| r.name()),
            "restarts": es.restarts().len(),
            "seconds": start.elapsed().as_secs_f64(),
        });
        println!("{line}");
    }
    Ok(())
}
