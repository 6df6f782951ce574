//! Why a search (or one run of an IPOP sequence) stopped. Names follow pycma's termination
//! dictionary so that logs read the same.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopReason {
    /// A fitness at or below `Tolerances::ftarget` was seen.
    Ftarget,
    /// The evaluation budget (`Config::max_evals`) is spent.
    Maxevals,
    Maxiter,
    Tolfun,
    Tolfunhist,
    Tolx,
    Tolupsigma,
    Tolfacupx,
    Tolstagnation,
    Tolconditioncov,
    Noeffectaxis,
    Noeffectcoord,
    Tolflatfitness,
}

impl StopReason {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ftarget => "ftarget",
            Self::Maxevals => "maxevals",
            Self::Maxiter => "maxiter",
            Self::Tolfun => "tolfun",
            Self::Tolfunhist => "tolfunhist",
            Self::Tolx => "tolx",
            Self::Tolupsigma => "tolupsigma",
            Self::Tolfacupx => "tolfacupx",
            Self::Tolstagnation => "tolstagnation",
            Self::Tolconditioncov => "tolconditioncov",
            Self::Noeffectaxis => "noeffectaxis",
            Self::Noeffectcoord => "noeffectcoord",
            Self::Tolflatfitness => "tolflatfitness",
        }
    }

    /// Budget and target stops end the whole search; the others only end a run, after which
    /// IPOP may restart with a larger population.
    pub fn ends_search(self) -> bool {
        matches!(self, Self::Ftarget | Self::Maxevals)
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
