//! What a search is asked to do: start point, step size, box, variant, restarts, budget and
//! stopping tolerances. Validated once, in [`Config::validate`], before any sampling.

use serde::{Deserialize, Serialize};

use crate::{BoundHandling, Error};

/// Box constraints; `-inf`/`inf` leave a side open. Candidates handed out always lie inside
/// (see [`BoundHandling`] for how).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    #[serde(with = "crate::json_f64")]
    pub lower: Vec<f64>,
    #[serde(with = "crate::json_f64")]
    pub upper: Vec<f64>,
}

/// Stopping tolerances, named and defaulted as in pycma. `None` means "derived from the
/// dimension and population size" (pycma's formula) for the two integer ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tolerances {
    /// Stop when the best values of the last 10 + ⌈30n/λ⌉ generations and all values of the
    /// current one lie within this range.
    pub tolfun: f64,
    /// Stop when the best values of the last 10 + ⌈30n/λ⌉ generations lie within this range.
    pub tolfunhist: f64,
    /// Stop when every coordinate's standard deviation and evolution path are below this.
    pub tolx: f64,
    /// Stop when σ / σ0 exceeds this times the largest principal standard deviation.
    pub tolupsigma: f64,
    /// Stop when a coordinate's standard deviation grows past σ0 times this (divergence).
    pub tolfacupx: f64,
    /// Stop when the condition number of the covariance matrix exceeds this.
    pub tolconditioncov: f64,
    /// Stop after more than this many consecutive generations with flat fitness (the best
    /// equals the 75th percentile).
    pub tolflatfitness: u64,
    /// Generations without improvement of best and median before stopping;
    /// default ⌊100 + 100·n^1.5/λ⌋. `Some(0)` disables the criterion.
    pub tolstagnation: Option<u64>,
    /// Generations per run; default ⌊100 + 150·(n+3)²/√λ⌋.
    pub maxiter: Option<u64>,
    /// Stop when a fitness at or below this is seen (off by default).
    pub ftarget: Option<f64>,
}

impl Default for Tolerances {
    fn default() -> Self {
        Self {
            tolfun: 1e-11,
            tolfunhist: 1e-12,
            tolx: 1e-11,
            tolupsigma: 1e20,
            tolfacupx: 1e3,
            tolconditioncov: 1e14,
            tolflatfitness: 1,
            tolstagnation: None,
            maxiter: None,
            ftarget: None,
        }
    }
}

/// The configuration of a search. Build it with [`Config::new`] and the `with_*` methods.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Initial mean, one value per dimension.
    pub x0: Vec<f64>,
    /// Initial step size (standard deviation of every coordinate at the start).
    pub sigma0: f64,
    /// Candidates per generation; default 4 + ⌊3 ln n⌋. Doubled on every IPOP restart.
    pub popsize: Option<usize>,
    pub bounds: Option<Bounds>,
    /// How candidates are kept inside `bounds`.
    #[serde(default)]
    pub bound_handling: BoundHandling,
    pub seed: u64,
    /// Separable CMA-ES: a diagonal covariance (linear cost per candidate; for large n).
    pub separable: bool,
    /// CMA-ES with margin: per-dimension discretisation step, 0 for a continuous dimension.
    /// A discrete dimension takes the levels lower, lower + step, … ≤ upper (finite bounds
    /// needed); the candidate handed out holds the level, the search keeps a continuous value.
    pub steps: Option<Vec<f64>>,
    /// Margin α (minimum probability of leaving the current level); default 1/(n·λ).
    pub margin: Option<f64>,
    /// IPOP restarts: on a stopping criterion other than the budget, start again from x0 with
    /// twice the population, up to this many times.
    pub restarts: usize,
    /// Budget of evaluations over all restarts.
    pub max_evals: Option<u64>,
    /// With [`BoundHandling::ResampleClip`]: attempts before an infeasible candidate is clipped.
    pub max_resamples: usize,
    pub tolerances: Tolerances,
}

impl Config {
    pub fn new(x0: Vec<f64>, sigma0: f64) -> Self {
        Self {
            x0,
            sigma0,
            popsize: None,
            bounds: None,
            bound_handling: BoundHandling::default(),
            seed: 0,
            separable: false,
            steps: None,
            margin: None,
            restarts: 0,
            max_evals: None,
            max_resamples: 100,
            tolerances: Tolerances::default(),
        }
    }

    pub fn dim(&self) -> usize {
        self.x0.len()
    }

    pub fn with_bounds(mut self, lower: Vec<f64>, upper: Vec<f64>) -> Self {
        self.bounds = Some(Bounds { lower, upper });
        self
    }
    pub fn with_bound_handling(mut self, handling: BoundHandling) -> Self {
        self.bound_handling = handling;
        self
    }
    pub fn with_popsize(mut self, popsize: usize) -> Self {
        self.popsize = Some(popsize);
        self
    }
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    pub fn separable(mut self, separable: bool) -> Self {
        self.separable = separable;
        self
    }
    pub fn with_steps(mut self, steps: Vec<f64>) -> Self {
        self.steps = Some(steps);
        self
    }
    pub fn with_restarts(mut self, restarts: usize) -> Self {
        self.restarts = restarts;
        self
    }
    pub fn with_max_evals(mut self, max_evals: u64) -> Self {
        self.max_evals = Some(max_evals);
        self
    }

    /// Population size of the first run.
    pub fn base_popsize(&self) -> usize {
        self.popsize
            .unwrap_or_else(|| 4 + (3.0 * libm::log(self.dim().max(1) as f64)).floor() as usize)
    }

    /// Checks everything a user can get wrong, naming the offending value.
    pub fn validate(&self) -> Result<(), Error> {
        let n = self.dim();
        if n == 0 {
            return Err(Error::NoDimensions);
        }
        finite("x0", &self.x0)?;
        if !(self.sigma0.is_finite() && self.sigma0 > 0.0) {
            return Err(Error::InvalidSigma(self.sigma0));
        }
        if self.base_popsize() < 2 {
            return Err(Error::PopsizeTooSmall(self.base_popsize()));
        }
        if let Some(b) = &self.bounds {
            same_len("lower", n, b.lower.len())?;
            same_len("upper", n, b.upper.len())?;
            for i in 0..n {
                let (lo, up) = (b.lower[i], b.upper[i]);
                if lo.is_nan() || up.is_nan() || lo == f64::INFINITY || up == f64::NEG_INFINITY {
                    let (what, value) = if lo.is_nan() || lo == f64::INFINITY {
                        ("lower", lo)
                    } else {
                        ("upper", up)
                    };
                    return Err(Error::NotFinite { what, index: i, value });
                }
                if lo > up {
                    return Err(Error::LowerAboveUpper { index: i, lower: lo, upper: up });
                }
                let x = self.x0[i];
                if x < lo || x > up {
                    return Err(Error::X0OutsideBounds { index: i, value: x, lower: lo, upper: up });
                }
            }
        }
        if let Some(steps) = &self.steps {
            same_len("steps", n, steps.len())?;
            finite("steps", steps)?;
            for (i, &step) in steps.iter().enumerate() {
                if step <= 0.0 {
                    continue;
                }
                let (lo, up) = match &self.bounds {
                    Some(b) => (b.lower[i], b.upper[i]),
                    None => (f64::NEG_INFINITY, f64::INFINITY),
                };
                if !(lo.is_finite() && up.is_finite()) || levels(lo, up, step) < 2 {
                    return Err(Error::InvalidDiscreteDimension { index: i, step, lower: lo, upper: up });
                }
            }
        }
        if let Some(m) = self.margin {
            if !(m > 0.0 && m < 0.5) {
                return Err(Error::InvalidMargin(m));
            }
        }
        Ok(())
    }
}

/// Number of levels lower, lower + step, … that do not pass upper (with a relative slack so
/// that e.g. [0, 1] with step 0.1 has 11 levels despite rounding).
pub(crate) fn levels(lower: f64, upper: f64, step: f64) -> usize {
    ((upper - lower) / step + 1e-9).floor() as usize + 1
}

fn finite(what: &'static str, xs: &[f64]) -> Result<(), Error> {
    match xs.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(Error::NotFinite { what, index, value: xs[index] }),
        None => Ok(()),
    }
}

fn same_len(what: &'static str, expected: usize, got: usize) -> Result<(), Error> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::LengthMismatch { what, expected, got })
    }
}
