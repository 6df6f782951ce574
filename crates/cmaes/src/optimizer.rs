//! The public optimiser: ask/tell over a sequence of runs (IPOP), global best, budget, and
//! the serializable state.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::run::{Covariance, Run};
use crate::{Config, Error, StopReason};

/// Bumped whenever the state layout changes incompatibly.
const STATE_VERSION: u32 = 1;

/// The best candidate seen so far (over all restarts), as handed to the evaluator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub x: Vec<f64>,
    pub fitness: f64,
    /// Evaluations done when it was found (1-based index of the evaluation).
    pub evaluation: u64,
}

/// A generation that was asked but not yet told.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Pending {
    raw: Vec<Vec<f64>>,
    candidates: Vec<Vec<f64>>,
}

/// A restart that happened, kept for the record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestartRecord {
    pub reason: StopReason,
    pub evaluations: u64,
    pub popsize: usize,
}

/// CMA-ES with ask/tell. See the crate documentation for an example.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CmaEs {
    version: u32,
    config: Config,
    run: Run,
    rng: Rng,
    evaluations: u64,
    /// Generations told over all runs.
    generations: u64,
    best: Option<Best>,
    pending: Option<Pending>,
    restarts: Vec<RestartRecord>,
    stopped: Option<StopReason>,
}

impl CmaEs {
    /// Validates `config` and sets up the first run.
    pub fn new(config: Config) -> Result<Self, Error> {
        config.validate()?;
        let run = Run::new(&config, config.base_popsize());
        let rng = Rng::from_seed(config.seed);
        Ok(Self {
            version: STATE_VERSION,
            config,
            run,
            rng,
            evaluations: 0,
            generations: 0,
            best: None,
            pending: None,
            restarts: Vec::new(),
            stopped: None,
        })
    }

    /// The candidates of the next generation, each inside the bounds. Calling `ask` again
    /// before `tell` returns the same generation.
    pub fn ask(&mut self) -> Result<Vec<Vec<f64>>, Error> {
        if let Some(reason) = self.stopped {
            return Err(Error::Stopped(reason));
        }
        if let Some(p) = &self.pending {
            return Ok(p.candidates.clone());
        }
        let lambda = self.run.params.lambda;
        let bounds = self.config.bounds.as_ref();
        let (mut raw, mut candidates) = (Vec::with_capacity(lambda), Vec::with_capacity(lambda));
        for _ in 0..lambda {
            let s = self.run.sample(&mut self.rng, bounds, self.config.bound_handling, self.config.max_resamples);
            raw.push(s.raw);
            candidates.push(s.x);
        }
        self.pending = Some(Pending { raw, candidates: candidates.clone() });
        Ok(candidates)
    }

    /// Reports the fitness (lower is better) of every candidate of the pending generation, in
    /// the order `ask` returned them. Afterwards [`CmaEs::stop_reason`] says whether the
    /// search is over; a run that stops while restarts remain is replaced by a larger one.
    pub fn tell(&mut self, fitness: &[f64]) -> Result<(), Error> {
        let Some(pending) = &self.pending else {
            return Err(Error::NothingAsked);
        };
        let lambda = pending.candidates.len();
        if fitness.len() != lambda {
            return Err(Error::FitnessCount { expected: lambda, got: fitness.len() });
        }
        if let Some(index) = fitness.iter().position(|f| !f.is_finite()) {
            return Err(Error::InvalidFitness { index, value: fitness[index] });
        }
        let pending = self.pending.take().ok_or(Error::NothingAsked)?;
        let mut order: Vec<usize> = (0..lambda).collect();
        order.sort_by(|&a, &b| fitness[a].total_cmp(&fitness[b]));
        let first = order[0];
        if self.best.as_ref().is_none_or(|b| fitness[first] < b.fitness) {
            self.best = Some(Best {
                x: pending.candidates[first].clone(),
                fitness: fitness[first],
                evaluation: self.evaluations + first as u64 + 1,
            });
        }
        self.evaluations += lambda as u64;
        self.generations += 1;
        let ranked_raw: Vec<&[f64]> = order.iter().map(|&k| pending.raw[k].as_slice()).collect();
        let ranked_fitness: Vec<f64> = order.iter().map(|&k| fitness[k]).collect();
        self.run.update(&ranked_raw, &ranked_fitness);

        let t = &self.config.tolerances;
        let global = if t.ftarget.is_some_and(|target| fitness[first] <= target) {
            Some(StopReason::Ftarget)
        } else if self.config.max_evals.is_some_and(|m| self.evaluations >= m) {
            Some(StopReason::Maxevals)
        } else {
            None
        };
        if let Some(reason) = global {
            self.stopped = Some(reason);
        } else if let Some(reason) = self.run.stop_reason(&self.config) {
            if self.restarts.len() < self.config.restarts {
                let popsize = self.run.params.lambda * 2;
                self.restarts.push(RestartRecord { reason, evaluations: self.evaluations, popsize });
                self.run = Run::new(&self.config, popsize);
            } else {
                self.stopped = Some(reason);
            }
        }
        Ok(())
    }

    /// Why the search ended, once it has.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.stopped
    }
    pub fn is_stopped(&self) -> bool {
        self.stopped.is_some()
    }
    pub fn best(&self) -> Option<&Best> {
        self.best.as_ref()
    }
    pub fn evaluations(&self) -> u64 {
        self.evaluations
    }
    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn dim(&self) -> usize {
        self.config.dim()
    }
    /// Candidates per generation in the current run.
    pub fn popsize(&self) -> usize {
        self.run.params.lambda
    }
    /// Generations told so far, over all restarts (the index of the next generation).
    pub fn generations(&self) -> u64 {
        self.generations
    }
    /// Generations told in the current run.
    pub fn generation(&self) -> u64 {
        self.run.generation
    }
    /// Mean of the current sampling distribution (in the search's own coordinates: with
    /// [`crate::BoundHandling::Transform`] these may lie outside the box).
    pub fn mean(&self) -> &[f64] {
        &self.run.mean
    }
    pub fn sigma(&self) -> f64 {
        self.run.sigma
    }
    /// Restarts done so far, oldest first.
    pub fn restarts(&self) -> &[RestartRecord] {
        &self.restarts
    }

    /// The whole state (configuration, distribution, RNG, pending generation) as JSON; floats
    /// are written so that they read back bit for bit.
    pub fn to_json(&self) -> Result<String, Error> {
        Ok(serde_json::to_string(self)?)
    }

    /// Restores a state written by [`CmaEs::to_json`]; the search continues exactly as if it
    /// had never stopped.
    pub fn from_json(json: &str) -> Result<Self, Error> {
        let state: Self = serde_json::from_str(json)?;
        state.check()?;
        Ok(state)
    }

    /// Guards against hand-edited or truncated-and-patched state files.
    fn check(&self) -> Result<(), Error> {
        let bad = |msg: String| Err(Error::StateInconsistent(msg));
        if self.version != STATE_VERSION {
            return bad(format!("state version {} (this build reads {STATE_VERSION})", self.version));
        }
        self.config.validate()?;
        let n = self.config.dim();
        let r = &self.run;
        let lambda = r.params.lambda;
        if !self.rng.is_valid() {
            return bad("the random generator state is all zero".into());
        }
        if r.mean.len() != n || r.ps.len() != n || r.pc.len() != n || r.params.weights.len() != lambda {
            return bad(format!("vectors do not match dimension {n} / popsize {lambda}"));
        }
        let cov_ok = match &r.cov {
            Covariance::Full { c, b, d, .. } => {
                !self.config.separable && c.len() == n * n && b.len() == n * n && d.len() == n
            }
            Covariance::Diagonal { c } => self.config.separable && c.len() == n,
        };
        if !cov_ok {
            return bad(format!("covariance does not match dimension {n} and the variant"));
        }
        if !(r.sigma.is_finite() && r.sigma > 0.0) {
            return bad(format!("sigma = {}", r.sigma));
        }
        if let Some(p) = &self.pending {
            let shapes_ok = p.raw.len() == lambda
                && p.candidates.len() == lambda
                && p.raw.iter().chain(&p.candidates).all(|x| x.len() == n);
            if !shapes_ok {
                return bad("the pending generation does not match dimension and popsize".into());
            }
        }
        if let Some(m) = &r.margin {
            if m.stretch.len() != n || m.genes.iter().any(|g| g.index >= n || g.levels < 2) {
                return bad("margin genes do not match the dimension".into());
            }
        }
        Ok(())
    }
}
