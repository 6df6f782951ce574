//! CMA-ES with margin (Hamano, Saito, Nomura & Shirakawa, GECCO 2022, arXiv:2205.13482).
//!
//! A discrete gene is sampled continuously and rounded to its nearest level (after an affine
//! stretch `A`). Plain CMA-ES lets the variance of such a gene collapse while the mean sits
//! well inside one level, so the gene freezes. After every update the margin correction keeps
//! the probability of landing on a neighbouring level at least α: by moving the mean towards
//! the threshold (one neighbour) or by widening `A` (neighbours on both sides).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiscreteGene {
    pub index: usize,
    pub lower: f64,
    pub step: f64,
    pub levels: usize,
}

impl DiscreteGene {
    fn value(&self, k: usize) -> f64 {
        self.lower + k as f64 * self.step
    }
    /// The threshold between level k and k + 1.
    fn threshold(&self, k: usize) -> f64 {
        self.lower + (k as f64 + 0.5) * self.step
    }
    fn nearest(&self, x: f64) -> usize {
        let k = ((x - self.lower) / self.step + 0.5).floor();
        if k.is_nan() || k <= 0.0 {
            0
        } else {
            (k as usize).min(self.levels - 1)
        }
    }
    /// Thresholds just below and just above the level the mean `m` rounds to (equal at the
    /// two end levels, where only one neighbour exists).
    fn limits(&self, m: f64) -> (f64, f64) {
        let pos = self.nearest(m) as isize;
        let top = self.levels as isize - 2;
        let lo = (pos - 1).clamp(0, top) as usize;
        let up = pos.clamp(0, top) as usize;
        (self.threshold(lo), self.threshold(up))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Margin {
    pub alpha: f64,
    pub genes: Vec<DiscreteGene>,
    /// Affine stretch of each discrete gene (1 for continuous ones).
    pub stretch: Vec<f64>,
}

impl Margin {
    /// The value handed to the evaluator for sampled `raw` given the current `mean`.
    pub fn encode(&self, raw: &[f64], mean: &[f64]) -> Vec<f64> {
        let mut x = raw.to_vec();
        for g in &self.genes {
            let i = g.index;
            let stretched = mean[i] + self.stretch[i] * (raw[i] - mean[i]);
            x[i] = g.value(g.nearest(stretched));
        }
        x
    }

    /// The margin correction, applied after each distribution update. `diag_c` is the
    /// diagonal of the covariance matrix.
    pub fn correct(&mut self, mean: &mut [f64], sigma: f64, diag_c: &[f64]) {
        let alpha = self.alpha;
        for g in &self.genes {
            let i = g.index;
            let (lim_low, lim_up) = g.limits(mean[i]);
            let sd = diag_c[i].sqrt();
            let scale = sigma * self.stretch[i] * sd;
            let low = norm_cdf((lim_low - mean[i]) / scale);
            let up = 1.0 - norm_cdf((lim_up - mean[i]) / scale);
            let mid = 1.0 - (low + up);
            if low.max(up) > 0.5 {
                // One neighbour: pull the mean towards the threshold until the neighbour has
                // probability α.
                if low.min(up) < alpha {
                    let dist = sigma * self.stretch[i] * sd * chi2_1_isf(2.0 * alpha).sqrt();
                    let sign = sign(mean[i] - lim_up);
                    mean[i] = lim_up + sign * dist;
                }
            } else {
                // Neighbours on both sides: keep both tails at least α/2 by fitting mean and
                // stretch to the corrected tail probabilities, σ and C unchanged.
                let low = low.max(alpha / 2.0);
                let up = up.max(alpha / 2.0);
                let denom = low + mid + up - 1.5 * alpha;
                let excess = 1.0 - low - up - mid;
                let mod_low = (low + excess * (low - alpha / 2.0) / denom).clamp(1e-10, 0.5 - 1e-10);
                let mod_up = (up + excess * (up - alpha / 2.0) / denom).clamp(1e-10, 0.5 - 1e-10);
                let chi_low = chi2_1_isf(2.0 * mod_low).sqrt();
                let chi_up = chi2_1_isf(2.0 * mod_up).sqrt();
                self.stretch[i] = (lim_up - lim_low) / ((chi_low + chi_up) * sigma * sd);
                mean[i] = (lim_low * chi_up + lim_up * chi_low) / (chi_low + chi_up);
            }
        }
    }
}

fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// Standard normal CDF.
pub fn norm_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// Inverse survival function of χ² with one degree of freedom: the x with P(χ² > x) = p,
/// i.e. erfc(√(x/2)) = p, found by bisection (monotone, deterministic, ~1e-15 relative).
pub fn chi2_1_isf(p: f64) -> f64 {
    if p >= 1.0 {
        return 0.0;
    }
    if p <= 0.0 {
        return f64::INFINITY;
    }
    let (mut a, mut b) = (0.0_f64, 1.0_f64);
    while libm::erfc((b / 2.0).sqrt()) > p {
        b *= 2.0;
    }
    for _ in 0..200 {
        let m = 0.5 * (a + b);
        if m <= a || m >= b {
            break;
        }
        if libm::erfc((m / 2.0).sqrt()) > p {
            a = m;
        } else {
            b = m;
        }
    }
    0.5 * (a + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chi2_quantiles_match_known_values() {
        // scipy.stats.chi2.isf(p, 1) for p = 0.05, 0.01, 1e-4
        assert!((chi2_1_isf(0.05) - 3.8414588206941285).abs() < 1e-12);
        assert!((chi2_1_isf(0.01) - 6.634896601021217).abs() < 1e-12);
        assert!((chi2_1_isf(1e-4) - 15.136705226623397).abs() < 1e-10);
        assert!((norm_cdf(1.0) - 0.8413447460685429).abs() < 1e-15);
    }

    #[test]
    fn encoding_rounds_to_levels_inside_the_box() {
        let m = Margin {
            alpha: 0.01,
            genes: vec![DiscreteGene { index: 0, lower: 0.0, step: 1.0, levels: 2 }],
            stretch: vec![1.0, 1.0],
        };
        assert_eq!(m.encode(&[0.7, 3.3], &[0.0, 0.0]), vec![1.0, 3.3]);
        assert_eq!(m.encode(&[-5.0, 3.3], &[0.0, 0.0]), vec![0.0, 3.3]);
        assert_eq!(m.encode(&[9.0, 3.3], &[0.0, 0.0]), vec![1.0, 3.3]);
    }
}
