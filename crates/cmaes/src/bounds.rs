//! Keeping candidates inside the box.
//!
//! The default, [`BoundHandling::Transform`], is pycma's idea (Hansen's `BoundTransform`):
//! the search runs unconstrained and each candidate is passed through a periodic map onto
//! [lower, upper] that is the identity in the inside of the interval and quadratic near the
//! bounds (C¹ continuous). A bound is then just a point where the map flattens, so an optimum
//! on the boundary is approached like any interior optimum. The alternative,
//! [`BoundHandling::ResampleClip`] (the `cmaes` library's rule, used by Optuna), redraws an
//! infeasible candidate up to `max_resamples` times and then clips it; it is fine for interior
//! optima, but when the optimum lies on a bound the mean drifts outside and σ can diverge.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoundHandling {
    #[default]
    Transform,
    ResampleClip,
}

/// Width of the quadratic zone next to a finite bound `b` of an interval of width `width`.
fn zone(b: f64, width: f64) -> f64 {
    (width / 2.0).min(0.05 * b.abs().max(1.0))
}

/// Maps an unconstrained value onto [lower, upper] (either side may be infinite).
pub fn to_box(x: f64, lower: f64, upper: f64) -> f64 {
    if lower == upper {
        return lower;
    }
    let (lo_fin, up_fin) = (lower.is_finite(), upper.is_finite());
    if !lo_fin && !up_fin {
        return x;
    }
    let width = upper - lower;
    let al = if lo_fin { zone(lower, width) } else { 1.0 };
    let au = if up_fin { zone(upper, width) } else { 1.0 };
    let mut y = x;
    if lo_fin && up_fin {
        // Fold into one period [start, start + period).
        let start = lower - 2.0 * al - width / 2.0;
        let period = 2.0 * (width + al + au);
        if y < start || y > upper + 2.0 * au + width / 2.0 {
            y -= period * ((y - start) / period).floor();
        }
    }
    if up_fin && y > upper + au {
        y -= 2.0 * (y - upper - au); // mirror at upper + au
    }
    if lo_fin && y < lower - al {
        y += 2.0 * (lower - al - y); // mirror at lower − al
    }
    if lo_fin && y < lower + al {
        y = lower + sq(y - (lower - al)) / (4.0 * al);
    }
    if up_fin && y > upper - au {
        y = upper - sq(y - (upper + au)) / (4.0 * au);
    }
    y.clamp(lower, upper) // rounding must never leave the box
}

/// A preimage under [`to_box`] of a point inside [lower, upper] (used for x0).
pub fn from_box(y: f64, lower: f64, upper: f64) -> f64 {
    if lower == upper || (!lower.is_finite() && !upper.is_finite()) {
        return y;
    }
    let width = upper - lower;
    if lower.is_finite() {
        let al = zone(lower, width);
        if y < lower + al {
            return lower - al + (4.0 * al * (y - lower).max(0.0)).sqrt();
        }
    }
    if upper.is_finite() {
        let au = zone(upper, width);
        if y > upper - au {
            return upper + au - (4.0 * au * (upper - y).max(0.0)).sqrt();
        }
    }
    y
}

/// x² by one multiplication (`powi` may differ in the last bit between platforms).
fn sq(x: f64) -> f64 {
    x * x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transform_is_inside_identity_in_the_middle_and_flat_at_the_bounds() {
        let (lo, up) = (0.0, 1.0);
        let mut rng = crate::rng::Rng::from_seed(3);
        for _ in 0..10_000 {
            let x = 10.0 * rng.standard_normal();
            let y = to_box(x, lo, up);
            assert!((lo..=up).contains(&y), "{x} -> {y}");
        }
        assert_eq!(to_box(0.5, lo, up), 0.5);
        assert_eq!(to_box(0.07, lo, up), 0.07);
        assert_eq!(to_box(-0.05, lo, up), 0.0); // lower − al maps onto the bound
        assert_eq!(to_box(1.05, lo, up), 1.0);
        // Continuous across the zone edges, and periodic.
        assert!((to_box(0.05 - 1e-12, lo, up) - 0.05).abs() < 1e-11);
        assert!((to_box(0.3 + 2.2, lo, up) - 0.3).abs() < 1e-12);
        for y in [0.0, 0.01, 0.04, 0.5, 0.97, 1.0] {
            assert!((to_box(from_box(y, lo, up), lo, up) - y).abs() < 1e-15, "{y}");
        }
    }

    #[test]
    fn one_sided_and_degenerate_bounds() {
        assert_eq!(to_box(-7.0, f64::NEG_INFINITY, f64::INFINITY), -7.0);
        assert_eq!(to_box(5.0, 1.0, f64::INFINITY), 5.0);
        assert!(to_box(-30.0, 1.0, f64::INFINITY) >= 1.0);
        assert!(to_box(30.0, f64::NEG_INFINITY, -2.0) <= -2.0);
        assert_eq!(to_box(3.0, 2.0, 2.0), 2.0);
    }
}
