//! `ties`: trim each task vector to its top-`density` magnitudes, elect a sign per entry
//! (`consensus_method: sum` (default) or `count`), and average the agreeing entries (disjoint mean).

use super::gta::{GeneralizedTaskArithmetic, Sparsification, GTA_PARAMS_CONSENSUS};

pub static TIES: GeneralizedTaskArithmetic = GeneralizedTaskArithmetic {
    name: "ties",
    sparsification: Sparsification::Magnitude,
    consensus: true,
    default_normalize: true,
    default_rescale: false,
    params: &GTA_PARAMS_CONSENSUS,
};
