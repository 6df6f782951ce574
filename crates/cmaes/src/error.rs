use crate::StopReason;

/// Everything that can go wrong configuring, driving or restoring an optimiser.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the search space must have at least one dimension")]
    NoDimensions,
    #[error("{what} has {got} values but the search space has {expected} dimensions")]
    LengthMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{what}[{index}] = {value} is not a finite number")]
    NotFinite {
        what: &'static str,
        index: usize,
        value: f64,
    },
    #[error("sigma0 = {0} must be a positive finite number (the initial step size)")]
    InvalidSigma(f64),
    #[error("popsize = {0} is too small: CMA-ES needs at least 2 candidates per generation")]
    PopsizeTooSmall(usize),
    #[error("lower bound {lower} is above upper bound {upper} in dimension {index}")]
    LowerAboveUpper { index: usize, lower: f64, upper: f64 },
    #[error("x0[{index}] = {value} lies outside the bounds [{lower}, {upper}]; start inside the box")]
    X0OutsideBounds {
        index: usize,
        value: f64,
        lower: f64,
        upper: f64,
    },
    #[error("discrete dimension {index} (step {step}) needs finite bounds with at least two levels in [{lower}, {upper}]")]
    InvalidDiscreteDimension {
        index: usize,
        step: f64,
        lower: f64,
        upper: f64,
    },
    #[error("margin = {0} must lie in (0, 0.5)")]
    InvalidMargin(f64),
    #[error("tell() was called without a pending generation; call ask() first")]
    NothingAsked,
    #[error("expected {expected} fitness values (one per candidate, in order) but got {got}")]
    FitnessCount { expected: usize, got: usize },
    #[error("fitness[{index}] is {value}; every fitness must be a finite number (use a large finite penalty for failures)")]
    InvalidFitness { index: usize, value: f64 },
    #[error("the search has stopped ({0}); nothing more to ask")]
    Stopped(StopReason),
    #[error("cannot read the optimiser state: {0}")]
    StateFormat(#[from] serde_json::Error),
    #[error("the optimiser state is inconsistent: {0}")]
    StateInconsistent(String),
}
