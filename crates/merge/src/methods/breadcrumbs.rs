//! `breadcrumbs` and `breadcrumbs_ties` (Model Breadcrumbs, arXiv 2312.06795): trim each task
//! vector to a band of magnitudes, dropping the `gamma` fraction of largest entries (outliers) and
//! the smallest ones so that a `density` fraction survives; `breadcrumbs_ties` then elects signs as
//! TIES does. Neither normalizes or rescales unless told (mergekit 0.1.5's defaults).

use super::gta::{GeneralizedTaskArithmetic, Sparsification, BREADCRUMBS_PARAMS_CONSENSUS, BREADCRUMBS_PARAMS_PLAIN};

pub static BREADCRUMBS: GeneralizedTaskArithmetic = GeneralizedTaskArithmetic {
    name: "breadcrumbs",
    sparsification: Sparsification::MagnitudeOutliers,
    consensus: false,
    default_normalize: false,
    default_rescale: false,
    params: &BREADCRUMBS_PARAMS_PLAIN,
};

pub static BREADCRUMBS_TIES: GeneralizedTaskArithmetic = GeneralizedTaskArithmetic {
    name: "breadcrumbs_ties",
    sparsification: Sparsification::MagnitudeOutliers,
    consensus: true,
    default_normalize: false,
    default_rescale: false,
    params: &BREADCRUMBS_PARAMS_CONSENSUS,
};
