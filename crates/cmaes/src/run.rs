//! One CMA-ES run: the sampling distribution N(m, σ²C), its update from a ranked generation,
//! and the per-run stopping criteria. [`crate::CmaEs`] strings runs together (IPOP).

use serde::{Deserialize, Serialize};

use crate::bounds::{from_box, to_box, BoundHandling};
use crate::config::{levels, Bounds, Config};
use crate::eigen::symmetric_eigen;
use crate::margin::{DiscreteGene, Margin};
use crate::params::Params;
use crate::rng::Rng;
use crate::StopReason;

/// σ is kept below this so that a diverging run stops on a criterion instead of overflowing.
const SIGMA_MAX: f64 = 1e300;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Covariance {
    /// Full matrix `c` (row-major) with its eigenbasis `b` (columns) and the square roots `d`
    /// of its eigenvalues, as of generation `eigen_generation` (updated lazily).
    Full {
        c: Vec<f64>,
        b: Vec<f64>,
        d: Vec<f64>,
        eigen_generation: u64,
    },
    /// Separable CMA-ES: only the diagonal.
    Diagonal { c: Vec<f64> },
}

/// Fitness records for the stopping criteria.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Best fitness of the last 10 + ⌈30n/λ⌉ generations, newest last.
    pub recent_best: Vec<f64>,
    /// Range of the fitness values of the latest generation.
    pub last_range: f64,
    /// Best and median fitness of every fifth generation, newest last (for tolstagnation).
    pub sparse_best: Vec<f64>,
    pub sparse_median: Vec<f64>,
    pub flat_generations: u64,
    /// Best fitness of this run and the run's evaluation count when it was found.
    pub best: Option<f64>,
    pub best_evaluations: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub params: Params,
    pub mean: Vec<f64>,
    pub sigma: f64,
    pub sigma0: f64,
    pub cov: Covariance,
    pub ps: Vec<f64>,
    pub pc: Vec<f64>,
    pub generation: u64,
    pub evaluations: u64,
    pub margin: Option<Margin>,
    pub history: History,
}

/// A sampled candidate: `raw` is what the distribution produced (and what the update uses),
/// `x` what the evaluator receives (inside the box, discrete genes on their levels).
pub struct Sample {
    pub raw: Vec<f64>,
    pub x: Vec<f64>,
}

impl Run {
    pub fn new(config: &Config, lambda: usize) -> Self {
        let n = config.dim();
        let params = Params::new(n, lambda, config.separable);
        let cov = if config.separable {
            Covariance::Diagonal { c: vec![1.0; n] }
        } else {
            let mut eye = vec![0.0; n * n];
            for i in 0..n {
                eye[i * n + i] = 1.0;
            }
            Covariance::Full { c: eye.clone(), b: eye, d: vec![1.0; n], eigen_generation: 0 }
        };
        let margin = config.steps.as_ref().and_then(|steps| {
            let bounds = config.bounds.as_ref()?;
            let genes: Vec<DiscreteGene> = steps
                .iter()
                .enumerate()
                .filter(|(_, s)| **s > 0.0)
                .map(|(index, &step)| DiscreteGene {
                    index,
                    lower: bounds.lower[index],
                    step,
                    levels: levels(bounds.lower[index], bounds.upper[index], step),
                })
                .collect();
            if genes.is_empty() {
                return None;
            }
            let alpha = config.margin.unwrap_or(1.0 / (n as f64 * lambda as f64));
            Some(Margin { alpha, genes, stretch: vec![1.0; n] })
        });
        // With the transform the search runs in unconstrained coordinates: start from a
        // preimage of x0.
        let mut mean = config.x0.clone();
        if let (Some(b), BoundHandling::Transform) = (&config.bounds, config.bound_handling) {
            let discrete = |i: usize| margin.as_ref().is_some_and(|m: &Margin| m.genes.iter().any(|g| g.index == i));
            for (i, m) in mean.iter_mut().enumerate() {
                if !discrete(i) {
                    *m = from_box(*m, b.lower[i], b.upper[i]);
                }
            }
        }
        Self {
            params,
            mean,
            sigma: config.sigma0,
            sigma0: config.sigma0,
            cov,
            ps: vec![0.0; n],
            pc: vec![0.0; n],
            generation: 0,
            evaluations: 0,
            margin,
            history: History {
                recent_best: Vec::new(),
                last_range: f64::MAX,
                sparse_best: Vec::new(),
                sparse_median: Vec::new(),
                flat_generations: 0,
                best: None,
                best_evaluations: 0,
            },
        }
    }

    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    fn is_discrete(&self, i: usize) -> bool {
        self.margin.as_ref().is_some_and(|m| m.genes.iter().any(|g| g.index == i))
    }

    /// Refreshes the eigendecomposition when it is older than 1/(10·n·(c1+cμ)) generations
    /// (Hansen's lazy update: C changes little per generation).
    pub fn refresh_eigen(&mut self) {
        let n = self.dim();
        let gap = 1.0 / (10.0 * n as f64 * (self.params.c1 + self.params.cmu));
        if let Covariance::Full { c, b, d, eigen_generation } = &mut self.cov {
            if (self.generation - *eigen_generation) as f64 <= gap {
                return;
            }
            let (values, vectors) = symmetric_eigen(c, n);
            let largest = values.iter().cloned().fold(0.0_f64, f64::max);
            let floor = if largest > 0.0 { largest * 1e-20 } else { 1e-300 };
            let repaired = values.iter().any(|v| *v < floor);
            let values: Vec<f64> = values.into_iter().map(|v| v.max(floor)).collect();
            if repaired {
                // Numerical drift made C indefinite: rebuild it from the clamped spectrum.
                for i in 0..n {
                    for j in 0..n {
                        c[i * n + j] =
                            (0..n).map(|k| vectors[i * n + k] * values[k] * vectors[j * n + k]).sum();
                    }
                }
            }
            *d = values.iter().map(|v| v.sqrt()).collect();
            *b = vectors;
            *eigen_generation = self.generation;
        }
    }

    /// y = B·D·z (or √diag(C)·z).
    fn transform(&self, z: &[f64]) -> Vec<f64> {
        let n = self.dim();
        match &self.cov {
            Covariance::Full { b, d, .. } => {
                let dz: Vec<f64> = (0..n).map(|k| d[k] * z[k]).collect();
                (0..n).map(|i| (0..n).map(|k| b[i * n + k] * dz[k]).sum()).collect()
            }
            Covariance::Diagonal { c } => (0..n).map(|i| c[i].sqrt() * z[i]).collect(),
        }
    }

    /// C^(-1/2)·y = B·D⁻¹·Bᵀ·y (or y/√diag(C)).
    fn inverse_sqrt(&self, y: &[f64]) -> Vec<f64> {
        let n = self.dim();
        match &self.cov {
            Covariance::Full { b, d, .. } => {
                let t: Vec<f64> =
                    (0..n).map(|k| (0..n).map(|i| b[i * n + k] * y[i]).sum::<f64>() / d[k]).collect();
                (0..n).map(|i| (0..n).map(|k| b[i * n + k] * t[k]).sum()).collect()
            }
            Covariance::Diagonal { c } => (0..n).map(|i| y[i] / c[i].sqrt()).collect(),
        }
    }

    pub fn diag_c(&self) -> Vec<f64> {
        let n = self.dim();
        match &self.cov {
            Covariance::Full { c, .. } => (0..n).map(|i| c[i * n + i]).collect(),
            Covariance::Diagonal { c } => c.clone(),
        }
    }

    /// Draws one candidate and maps it into the box (see [`BoundHandling`]).
    pub fn sample(&self, rng: &mut Rng, bounds: Option<&Bounds>, handling: BoundHandling, max_resamples: usize) -> Sample {
        let n = self.dim();
        let draw = |rng: &mut Rng| -> Vec<f64> {
            let z: Vec<f64> = (0..n).map(|_| rng.standard_normal()).collect();
            let y = self.transform(&z);
            (0..n).map(|i| self.mean[i] + self.sigma * y[i]).collect()
        };
        let mut raw = draw(rng);
        if let (Some(b), BoundHandling::ResampleClip) = (bounds, handling) {
            let feasible = |x: &[f64]| {
                (0..n).all(|i| self.is_discrete(i) || (x[i] >= b.lower[i] && x[i] <= b.upper[i]))
            };
            let mut attempts = 0;
            while !feasible(&raw) && attempts < max_resamples {
                raw = draw(rng);
                attempts += 1;
            }
            for (i, r) in raw.iter_mut().enumerate() {
                if !self.is_discrete(i) {
                    *r = r.clamp(b.lower[i], b.upper[i]);
                }
            }
        }
        let mut x = match &self.margin {
            Some(m) => m.encode(&raw, &self.mean),
            None => raw.clone(),
        };
        if let (Some(b), BoundHandling::Transform) = (bounds, handling) {
            for (i, v) in x.iter_mut().enumerate() {
                if !self.is_discrete(i) {
                    *v = to_box(raw[i], b.lower[i], b.upper[i]);
                }
            }
        }
        Sample { raw, x }
    }

    /// Updates the distribution from the raw samples sorted best first with their fitness.
    pub fn update(&mut self, ranked_raw: &[&[f64]], ranked_fitness: &[f64]) {
        let n = self.dim();
        let p = self.params.clone();
        self.generation += 1;
        self.evaluations += p.lambda as u64;
        self.record(ranked_fitness);

        let ys: Vec<Vec<f64>> = ranked_raw
            .iter()
            .map(|x| (0..n).map(|i| (x[i] - self.mean[i]) / self.sigma).collect())
            .collect();
        let mut yw = vec![0.0; n];
        for (w, y) in p.weights[..p.mu].iter().zip(&ys) {
            for i in 0..n {
                yw[i] += w * y[i];
            }
        }
        for (m, y) in self.mean.iter_mut().zip(&yw) {
            *m += self.sigma * y;
        }

        // Cumulative step-size adaptation.
        let cw = self.inverse_sqrt(&yw);
        let ps_gain = (p.cs * (2.0 - p.cs) * p.mueff).sqrt();
        for (ps, c) in self.ps.iter_mut().zip(&cw) {
            *ps = (1.0 - p.cs) * *ps + ps_gain * c;
        }
        let ps_norm = self.ps.iter().map(|v| v * v).sum::<f64>().sqrt();
        let correction = (1.0 - libm::pow(1.0 - p.cs, 2.0 * self.generation as f64)).sqrt();
        let hsig = ps_norm / correction < (1.4 + 2.0 / (n as f64 + 1.0)) * p.chi_n;
        let pc_gain = if hsig { (p.cc * (2.0 - p.cc) * p.mueff).sqrt() } else { 0.0 };
        for (pc, y) in self.pc.iter_mut().zip(&yw) {
            *pc = (1.0 - p.cc) * *pc + pc_gain * y;
        }
        let delta_hsig = if hsig { 0.0 } else { p.cc * (2.0 - p.cc) };
        let decay = 1.0 + p.c1 * delta_hsig - p.c1 - p.cmu * p.weight_sum();

        // Active weights: a negative weight is rescaled by n / ‖C^(-1/2) y‖² so that bad steps
        // shrink C by a bounded amount whatever their length.
        let weights: Vec<f64> = p
            .weights
            .iter()
            .zip(&ys)
            .map(|(&w, y)| {
                if w >= 0.0 {
                    w
                } else {
                    let norm_sq: f64 = self.inverse_sqrt(y).iter().map(|v| v * v).sum();
                    w * n as f64 / (norm_sq + 1e-300)
                }
            })
            .collect();

        let pc = self.pc.clone();
        match &mut self.cov {
            Covariance::Full { c, .. } => {
                for i in 0..n {
                    for j in i..n {
                        let mut rank_mu = 0.0;
                        for (w, y) in weights.iter().zip(&ys) {
                            rank_mu += w * y[i] * y[j];
                        }
                        let v = decay * c[i * n + j] + p.c1 * pc[i] * pc[j] + p.cmu * rank_mu;
                        c[i * n + j] = v;
                        c[j * n + i] = v;
                    }
                }
            }
            Covariance::Diagonal { c } => {
                for i in 0..n {
                    let rank_mu: f64 = weights.iter().zip(&ys).map(|(w, y)| w * y[i] * y[i]).sum();
                    c[i] = decay * c[i] + p.c1 * pc[i] * pc[i] + p.cmu * rank_mu;
                }
            }
        }

        let log_step = ((p.cs / p.damps) * (ps_norm / p.chi_n - 1.0)).min(1.0);
        self.sigma = (self.sigma * libm::exp(log_step)).min(SIGMA_MAX);

        if let Some(margin) = &mut self.margin {
            let diag = match &self.cov {
                Covariance::Full { c, .. } => (0..n).map(|i| c[i * n + i]).collect(),
                Covariance::Diagonal { c } => c.clone(),
            };
            margin.correct(&mut self.mean, self.sigma, &diag);
        }
        self.refresh_eigen();
    }

    fn record(&mut self, f: &[f64]) {
        let n = self.dim() as f64;
        let lambda = f.len();
        let h = &mut self.history;
        let cap = 10 + (30.0 * n / lambda as f64).ceil() as usize;
        h.recent_best.push(f[0]);
        if h.recent_best.len() > cap {
            h.recent_best.remove(0);
        }
        h.last_range = f[lambda - 1] - f[0];
        if self.generation % 5 == 0 {
            let median =
                if lambda % 2 == 1 { f[lambda / 2] } else { 0.5 * (f[lambda / 2 - 1] + f[lambda / 2]) };
            h.sparse_best.push(f[0]);
            h.sparse_median.push(median);
            if h.sparse_best.len() > 20_000 {
                h.sparse_best.remove(0);
                h.sparse_median.remove(0);
            }
        }
        if f[0] < f[(0.75 * lambda as f64) as usize] {
            h.flat_generations = 0;
        } else {
            h.flat_generations += 1;
        }
        if h.best.is_none_or(|b| f[0] < b) {
            h.best = Some(f[0]);
            h.best_evaluations = self.evaluations;
        }
    }

    /// The first per-run stopping criterion that holds, in pycma's order.
    pub fn stop_reason(&self, config: &Config) -> Option<StopReason> {
        let t = &config.tolerances;
        let n = self.dim();
        let nf = n as f64;
        let lambda = self.params.lambda as f64;
        let h = &self.history;
        let maxiter =
            t.maxiter.unwrap_or((100.0 + 150.0 * sq(nf + 3.0) / lambda.sqrt()).floor() as u64);
        if self.generation >= maxiter {
            return Some(StopReason::Maxiter);
        }
        let sd: Vec<f64> = self.diag_c().iter().map(|c| self.sigma * c.sqrt()).collect();
        if sd.iter().any(|s| *s > self.sigma0 * t.tolfacupx) {
            return Some(StopReason::Tolfacupx);
        }
        if sd.iter().all(|s| *s < t.tolx) && self.pc.iter().all(|p| (self.sigma * p).abs() < t.tolx) {
            return Some(StopReason::Tolx);
        }
        let range = |v: &[f64]| {
            v.iter().cloned().fold(f64::MIN, f64::max) - v.iter().cloned().fold(f64::MAX, f64::min)
        };
        let hist_range = range(&h.recent_best);
        if h.last_range < t.tolfun && hist_range < t.tolfun {
            return Some(StopReason::Tolfun);
        }
        if h.recent_best.len() > 9 && hist_range < t.tolfunhist {
            return Some(StopReason::Tolfunhist);
        }
        let stagnation = t.tolstagnation.unwrap_or((100.0 + 100.0 * libm::pow(nf, 1.5) / lambda) as u64);
        if stagnation > 0 && self.stagnates(stagnation) {
            return Some(StopReason::Tolstagnation);
        }
        let (dmax, dmin) = match &self.cov {
            Covariance::Full { d, .. } => (
                d.iter().cloned().fold(f64::MIN, f64::max),
                d.iter().cloned().fold(f64::MAX, f64::min),
            ),
            Covariance::Diagonal { c } => (
                c.iter().cloned().fold(f64::MIN, f64::max).sqrt(),
                c.iter().cloned().fold(f64::MAX, f64::min).sqrt(),
            ),
        };
        if self.sigma / dmax > self.sigma0 * t.tolupsigma {
            return Some(StopReason::Tolupsigma);
        }
        if (0..n).any(|i| self.mean[i] == self.mean[i] + 0.2 * sd[i]) {
            return Some(StopReason::Noeffectcoord);
        }
        if let Covariance::Full { b, d, .. } = &self.cov {
            let k = (self.generation % n as u64) as usize;
            if (0..n).all(|i| self.mean[i] == self.mean[i] + 0.1 * self.sigma * d[k] * b[i * n + k]) {
                return Some(StopReason::Noeffectaxis);
            }
        }
        if dmax > t.tolconditioncov.sqrt() * dmin {
            return Some(StopReason::Tolconditioncov);
        }
        if h.flat_generations > t.tolflatfitness {
            return Some(StopReason::Tolflatfitness);
        }
        None
    }

    /// pycma's tolstagnation: the best and the median fitness of the newest stretch of
    /// (sparse) history are no better than those of the stretch before it.
    fn stagnates(&self, stagnation: u64) -> bool {
        let h = &self.history;
        let nf = self.dim() as f64;
        let lambda = self.params.lambda as f64;
        let len = h.sparse_best.len();
        let l = (stagnation as f64 / 10.0).max(len as f64 / 10.0) as usize;
        if l == 0
            || (self.generation as f64) <= nf * (5.0 + 100.0 / lambda)
            || ((self.evaluations - h.best_evaluations) as f64 / lambda) <= stagnation as f64 / 2.0
            || len <= 100
            || 2 * l >= len
        {
            return false;
        }
        let newest = |v: &[f64]| median(&v[len - l..]);
        let before = |v: &[f64]| median(&v[len - 2 * l..len - l]);
        newest(&h.sparse_median) >= before(&h.sparse_median) && newest(&h.sparse_best) >= before(&h.sparse_best)
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let k = s.len();
    if k % 2 == 1 {
        s[k / 2]
    } else {
        0.5 * (s[k / 2 - 1] + s[k / 2])
    }
}

/// x² by one multiplication (`powi` may differ in the last bit between platforms).
fn sq(x: f64) -> f64 {
    x * x
}
