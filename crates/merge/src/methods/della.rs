//! `della` and `della_linear` (DELLA-Merging's MAGPRUNE, arXiv 2406.11617): drop task-vector
//! entries at random with a keep probability ranked on magnitude within each row (`density ±
//! epsilon`, larger entries kept more often), reproducibly seeded like DARE, and rescale the kept
//! ones (by default ÷ their keep probability, as in the paper; `rescale: l1` is mergekit 0.1.5's
//! l1-norm rescale). `della` elects signs and normalizes as TIES does; `della_linear` sums.

use super::gta::{GeneralizedTaskArithmetic, Sparsification, DELLA_PARAMS_CONSENSUS, DELLA_PARAMS_PLAIN};

pub static DELLA: GeneralizedTaskArithmetic = GeneralizedTaskArithmetic {
    name: "della",
    sparsification: Sparsification::Della,
    consensus: true,
    default_normalize: true,
    default_rescale: true,
    params: &DELLA_PARAMS_CONSENSUS,
};

pub static DELLA_LINEAR: GeneralizedTaskArithmetic = GeneralizedTaskArithmetic {
    name: "della_linear",
    sparsification: Sparsification::Della,
    consensus: false,
    default_normalize: false,
    default_rescale: true,
    params: &DELLA_PARAMS_PLAIN,
};
