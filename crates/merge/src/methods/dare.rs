//! `dare_ties` and `dare_linear`: drop each task-vector entry with probability 1 − `density` (a
//! reproducible mask keyed on seed, tensor name and model) and rescale the kept ones (1/density by
//! default, as in the DARE paper; `rescale: l1` matches the l1 norm instead, as mergekit does).

use super::gta::{GeneralizedTaskArithmetic, Sparsification, GTA_PARAMS_CONSENSUS, GTA_PARAMS_PLAIN};

pub static DARE_TIES: GeneralizedTaskArithmetic = GeneralizedTaskArithmetic {
    name: "dare_ties",
    sparsification: Sparsification::Random,
    consensus: true,
    default_normalize: false,
    default_rescale: true,
    params: &GTA_PARAMS_CONSENSUS,
};

pub static DARE_LINEAR: GeneralizedTaskArithmetic = GeneralizedTaskArithmetic {
    name: "dare_linear",
    sparsification: Sparsification::Random,
    consensus: false,
    default_normalize: false,
    default_rescale: true,
    params: &GTA_PARAMS_PLAIN,
};
