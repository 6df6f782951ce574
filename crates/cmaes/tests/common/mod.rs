#![allow(dead_code)]
use evomerge_cmaes::{CmaEs, Config};

pub fn sphere(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum()
}

pub fn rastrigin(x: &[f64]) -> f64 {
    10.0 * x.len() as f64
        + x.iter().map(|v| v * v - 10.0 * (2.0 * std::f64::consts::PI * v).cos()).sum::<f64>()
}

/// Runs until stop or `max_generations`, calling `inspect` on every generation.
pub fn drive(
    es: &mut CmaEs,
    f: impl Fn(&[f64]) -> f64,
    max_generations: usize,
    mut inspect: impl FnMut(&[Vec<f64>]),
) {
    for _ in 0..max_generations {
        if es.is_stopped() {
            break;
        }
        let xs = es.ask().expect("ask");
        inspect(&xs);
        let fs: Vec<f64> = xs.iter().map(|x| f(x)).collect();
        es.tell(&fs).expect("tell");
    }
}

pub fn new(config: Config) -> CmaEs {
    CmaEs::new(config).expect("valid config")
}
