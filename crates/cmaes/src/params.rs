//! Strategy parameters (learning rates, weights, damping) from the dimension and population
//! size, following Hansen's tutorial "The CMA Evolution Strategy" (arXiv:1604.00772, the
//! equation numbers below) for full CMA-ES with active weights, and Ros & Hansen (2008) for
//! the separable variant.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    pub lambda: usize,
    pub mu: usize,
    /// Recombination weights, best first; the first `mu` are positive and sum to 1, the rest
    /// are the active (negative) weights (zero in the separable variant).
    pub weights: Vec<f64>,
    pub mueff: f64,
    pub cc: f64,
    pub cs: f64,
    pub c1: f64,
    pub cmu: f64,
    pub damps: f64,
    /// E‖N(0, I)‖.
    pub chi_n: f64,
}

impl Params {
    pub fn new(n: usize, lambda: usize, separable: bool) -> Self {
        let nf = n as f64;
        let mu = lambda / 2;
        // (49) w'_i = ln((λ+1)/2) − ln i
        let half = libm::log((lambda as f64 + 1.0) / 2.0);
        let raw: Vec<f64> = (1..=lambda).map(|i| half - libm::log(i as f64)).collect();
        let sum_sq = |ws: &[f64]| -> f64 {
            let s: f64 = ws.iter().sum();
            let q: f64 = ws.iter().map(|w| w * w).sum();
            if q == 0.0 {
                0.0
            } else {
                s * s / q
            }
        };
        let mueff = sum_sq(&raw[..mu]);
        let chi_n = nf.sqrt() * (1.0 - 1.0 / (4.0 * nf) + 1.0 / (21.0 * nf * nf));

        if separable {
            let positive_sum: f64 = raw[..mu].iter().sum();
            let mut weights: Vec<f64> = raw[..mu].iter().map(|w| w / positive_sum).collect();
            weights.resize(lambda, 0.0);
            // Ros & Hansen (2008): the full-CMA learning rate scaled by (n + 2) / 3, split
            // between rank-one (1/μeff) and rank-μ (1 − 1/μeff).
            let ccov = 2.0 / (mueff * sq(nf + 2f64.sqrt()))
                + (1.0 - 1.0 / mueff) * ((2.0 * mueff - 1.0) / (sq(nf + 2.0) + mueff)).min(1.0);
            let ccov_sep = (ccov * (nf + 2.0) / 3.0).min(1.0);
            let c1 = ccov_sep / mueff;
            let cmu = (ccov_sep * (1.0 - 1.0 / mueff)).min(1.0 - c1);
            let cs = (mueff + 2.0) / (nf + mueff + 3.0);
            let damps = damps(nf, mueff, cs);
            return Self { lambda, mu, weights, mueff, cc: 4.0 / (nf + 4.0), cs, c1, cmu, damps, chi_n };
        }

        let mueff_minus = sum_sq(&raw[mu..]);
        // (57), (58) with α_cov = 2
        let c1 = 2.0 / (sq(nf + 1.3) + mueff);
        let cmu = (1.0 - c1).min(2.0 * (mueff - 2.0 + 1.0 / mueff) / (sq(nf + 2.0) + mueff));
        // (50)–(53): negative weights scaled so that C stays positive definite.
        let alpha_mu = 1.0 + c1 / cmu;
        let alpha_mueff = 1.0 + 2.0 * mueff_minus / (mueff + 2.0);
        let alpha_posdef = (1.0 - c1 - cmu) / (nf * cmu);
        let alpha_min = alpha_mu.min(alpha_mueff).min(alpha_posdef);
        let positive_sum: f64 = raw.iter().filter(|w| **w > 0.0).sum();
        let negative_sum: f64 = raw.iter().filter(|w| **w < 0.0).map(|w| -w).sum();
        let weights = raw
            .iter()
            .map(|&w| if w >= 0.0 { w / positive_sum } else { alpha_min * w / negative_sum })
            .collect();
        // (55), (56)
        let cs = (mueff + 2.0) / (nf + mueff + 5.0);
        let cc = (4.0 + mueff / nf) / (nf + 4.0 + 2.0 * mueff / nf);
        let damps = damps(nf, mueff, cs);
        Self { lambda, mu, weights, mueff, cc, cs, c1, cmu, damps, chi_n }
    }

    pub fn weight_sum(&self) -> f64 {
        self.weights.iter().sum()
    }
}

fn damps(n: f64, mueff: f64, cs: f64) -> f64 {
    1.0 + 2.0 * (((mueff - 1.0) / (n + 1.0)).sqrt() - 1.0).max(0.0) + cs
}

/// x² by one multiplication (`powi` may differ in the last bit between platforms).
fn sq(x: f64) -> f64 {
    x * x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_weights_match_the_tutorial() {
        // n = 10, λ = 10: positive weights sum to 1, negative ones are bounded by α⁻.
        let p = Params::new(10, 10, false);
        assert_eq!(p.mu, 5);
        let pos: f64 = p.weights[..5].iter().sum();
        assert!((pos - 1.0).abs() < 1e-15);
        assert!(p.weights[5..].iter().all(|w| *w < 0.0));
        assert!(p.weights.windows(2).all(|w| w[0] > w[1]));
        assert!((p.mueff - 3.1672992814107026).abs() < 1e-12, "{}", p.mueff);
        assert!(p.c1 + p.cmu <= 1.0);
    }

    #[test]
    fn popsize_two_has_finite_parameters() {
        for sep in [false, true] {
            let p = Params::new(3, 2, sep);
            for x in [p.cc, p.cs, p.c1, p.cmu, p.damps, p.mueff] {
                assert!(x.is_finite(), "{p:?}");
            }
            assert!(p.weights.iter().all(|w| w.is_finite()));
        }
    }
}
