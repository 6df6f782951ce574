//! `task_arithmetic`: base + λ·Σ wᵢ(xᵢ − base), optionally divided by Σ wᵢ (`normalize`).

use super::gta::{GeneralizedTaskArithmetic, Sparsification, GTA_PARAMS_PLAIN};

pub static TASK_ARITHMETIC: GeneralizedTaskArithmetic = GeneralizedTaskArithmetic {
    name: "task_arithmetic",
    sparsification: Sparsification::None,
    consensus: false,
    default_normalize: false,
    default_rescale: false,
    params: &GTA_PARAMS_PLAIN,
};
