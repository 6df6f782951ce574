//! mergekit's arithmetic in a bf16/f16 recipe dtype (`--compute-dtype recipe`): torch computes
//! each elementwise operation on half-precision tensors in f32 and rounds the result to the dtype,
//! and sums over models (`sum(dim=0)`) in f32 rounded once at the end. TIES keeps the top `k`
//! magnitudes by `torch.argsort(descending=True)`, which on the CPU is libstdc++'s `std::sort`
//! (introsort): with bf16's many equal magnitudes, which of the tied entries survive depends on
//! that algorithm, so it is reproduced step for step (see [`super::torch_sort`]).

use evomerge_checkpoint::{f32_to_bf16_bits, Dtype};
use half::f16;

use super::gta::{Consensus, GeneralizedTaskArithmetic, Rescale, Sparsification};
use super::torch_sort::{torch_argsort_ascending, torch_argsort_descending};
use super::{ModelTensor, TensorContext};
use crate::params::ParamSet;
use crate::MergeError;

/// `v` rounded to the nearest `dtype` value (ties to even, as torch's casts), as f32.
#[inline]
pub fn round_to(dtype: Dtype, v: f32) -> f32 {
    match dtype {
        Dtype::F32 => v,
        Dtype::BF16 => f32::from_bits(u32::from(f32_to_bf16_bits(v)) << 16),
        Dtype::F16 => f16::from_f32(v).to_f32(),
    }
}

/// A Python float (f64) rounded straight to `dtype`, as `torch.tensor([...], dtype=...)` does.
/// Going through f32 first could round twice; only a value landing exactly halfway between two
/// bf16 values can differ, and then the f64 says which way.
pub(crate) fn round_f64_to(dtype: Dtype, v: f64) -> f32 {
    match dtype {
        Dtype::F32 => v as f32,
        Dtype::F16 => f16::from_f64(v).to_f32(),
        Dtype::BF16 => {
            let f = v as f32;
            let bits = f.to_bits();
            if bits & 0xFFFF == 0x8000 && f as f64 != v && f.is_finite() {
                // Nudge one f32 step towards the true value so the tie is broken its way.
                let towards_larger = v.abs() > (f as f64).abs();
                let nudged = f32::from_bits(if towards_larger { bits + 1 } else { bits - 1 });
                return round_to(Dtype::BF16, nudged);
            }
            round_to(Dtype::BF16, f)
        }
    }
}

impl GeneralizedTaskArithmetic {
    /// mergekit's `GeneralizedTaskArithmeticMerge.merge_group` in a half-precision dtype, for the
    /// variants it is reproduced for (`None` else): magnitude (TIES) and magnitude-with-outliers
    /// (Breadcrumbs) sparsification with or without the L1 rescale, and DARE/DELLA at density 1,
    /// where mergekit draws no random mask (its draws cannot be reproduced).
    pub(crate) fn gta_rounded(
        &self,
        dtype: Dtype,
        ctx: &TensorContext,
        shared: &ParamSet,
        base: &[f32],
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Option<Result<(), MergeError>> {
        let sparsified = inputs.iter().any(|i| i.params.float("density").unwrap_or(1.0) < 1.0);
        if sparsified {
            let deterministic = matches!(
                self.sparsification,
                Sparsification::None | Sparsification::Magnitude | Sparsification::MagnitudeOutliers
            );
            // mergekit's `rescale: true` is the L1 rescale; inverse density is evomerge's own.
            let rescale = self.rescale(shared);
            if !deterministic || (self.sparsification != Sparsification::None && rescale == Rescale::InverseDensity) {
                return None;
            }
        }
        Some(self.gta_rounded_supported(dtype, ctx, shared, base, inputs, out))
    }

    fn gta_rounded_supported(
        &self,
        dtype: Dtype,
        ctx: &TensorContext,
        shared: &ParamSet,
        base: &[f32],
        inputs: &[ModelTensor],
        out: &mut [f32],
    ) -> Result<(), MergeError> {
        let r = |v: f32| round_to(dtype, v);
        if inputs.is_empty() {
            out.copy_from_slice(base);
            return Ok(());
        }
        let weights: Vec<f32> = super::gta::input_f64s(ctx, inputs, "weight", self.name)?
            .into_iter()
            .map(|w| round_f64_to(dtype, w))
            .collect();
        let normalize = shared.bool("normalize").unwrap_or(self.default_normalize);
        let lambda = shared.float("lambda").unwrap_or(1.0);
        let rescale = self.rescale(shared);
        let consensus = match (self.consensus, shared.text("consensus_method")) {
            (false, _) => None,
            (true, Some("count")) => Some(Consensus::Count),
            (true, _) => Some(Consensus::Sum),
        };

        // Weighted, sparsified deltas, each rounded as torch rounds it.
        let mut deltas: Vec<Vec<f32>> = Vec::with_capacity(inputs.len());
        for (input, &w) in inputs.iter().zip(&weights) {
            let mut d: Vec<f32> = input.data.iter().zip(base).map(|(&x, &b)| r(x - b)).collect();
            let density = input.params.float("density").unwrap_or(1.0);
            let kept = match self.sparsification {
                _ if density >= 1.0 => None,
                Sparsification::Magnitude => Some(magnitude_keep(&d, density)),
                Sparsification::MagnitudeOutliers => {
                    Some(outlier_keep(&d, density, input.params.float("gamma").unwrap_or(0.01)))
                }
                _ => None,
            };
            if let Some(keep) = kept {
                let l1 = |d: &[f32]| r(d.iter().map(|v| v.abs() as f64).sum::<f64>() as f32);
                let before = l1(&d);
                for (v, kept) in d.iter_mut().zip(keep) {
                    if !kept {
                        *v *= 0.0;
                    }
                }
                if rescale == Rescale::L1 {
                    // mergekit's `rescaled_masked_tensor`: masked · (‖d‖₁ / ‖masked‖₁), sums
                    // rounded to the dtype, unless either is below 1e-7.
                    let after = l1(&d);
                    if before >= 1e-7 && after >= 1e-7 {
                        let factor = r(before / after);
                        for v in d.iter_mut() {
                            *v = r(*v * factor);
                        }
                    }
                }
            }
            for v in d.iter_mut() {
                *v = r(*v * w);
            }
            deltas.push(d);
        }

        let weight_sum = r(weights.iter().sum::<f32>());
        let plain_divisor = if weight_sum.abs() < 1e-8 { 1.0 } else { weight_sum };
        let lambda = (lambda != 1.0).then_some(lambda as f32);
        for (j, o) in out.iter_mut().enumerate() {
            let (mixed, divisor) = match consensus {
                None => (r(deltas.iter().map(|d| d[j]).sum::<f32>()), plain_divisor),
                Some(rule) => {
                    let vote: f32 = match rule {
                        Consensus::Sum => deltas.iter().map(|d| d[j]).sum(),
                        Consensus::Count => deltas.iter().map(|d| sign(d[j])).sum(),
                    };
                    let elected = if vote >= 0.0 { 1.0 } else { -1.0 };
                    let (mut mixed, mut divisor) = (0f32, 0f32);
                    for (d, &w) in deltas.iter().zip(&weights) {
                        if sign(d[j]) == elected {
                            mixed += d[j];
                            divisor += w;
                        }
                    }
                    let divisor = r(divisor);
                    (r(mixed), if divisor == 0.0 { 1.0 } else { divisor })
                }
            };
            let mut mixed = if normalize { r(mixed / divisor) } else { mixed };
            if let Some(l) = lambda {
                // torch multiplies by a Python scalar in f32 before rounding.
                mixed = r(mixed * l);
            }
            *o = r(base[j] + mixed);
        }
        Ok(())
    }
}

/// Which entries mergekit's `magnitude` keeps: the top k = max(1, int(density · numel)) of |d|
/// (Python floats) in `torch.argsort(descending=True)` order; none at density 0.
fn magnitude_keep(d: &[f32], density: f64) -> Vec<bool> {
    let n = d.len();
    let mut keep = vec![false; n];
    if density > 0.0 && n > 0 {
        let k = ((density * n as f64) as usize).max(1);
        let magnitudes: Vec<f32> = d.iter().map(|v| v.abs()).collect();
        for &i in torch_argsort_descending(&magnitudes).iter().take(k) {
            keep[i as usize] = true;
        }
    }
    keep
}

/// Which entries mergekit's `magnitude_outliers` keeps: in `torch.sort` (ascending) order of |d|,
/// the int(density · numel) entries after the smallest numel − kept − int(gamma · numel).
fn outlier_keep(d: &[f32], density: f64, gamma: f64) -> Vec<bool> {
    let n = d.len();
    let target = (density * n as f64) as usize;
    let top = (gamma * n as f64) as usize;
    let bottom = n.saturating_sub(target + top);
    let mut keep = vec![false; n];
    let magnitudes: Vec<f32> = d.iter().map(|v| v.abs()).collect();
    for &i in torch_argsort_ascending(&magnitudes).iter().skip(bottom).take(target) {
        keep[i as usize] = true;
    }
    keep
}

#[inline]
fn sign(x: f32) -> f32 {
    ((x > 0.0) as i32 - (x < 0.0) as i32) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f64_weights_round_once() {
        assert_eq!(round_f64_to(Dtype::BF16, 0.3), round_to(Dtype::BF16, 0.3));
        // 1 + 2^-8 + 2^-30 is above the bf16 midpoint 1 + 2^-8 but rounds to it in f32.
        let v = 1.0 + 2f64.powi(-8) + 2f64.powi(-30);
        assert_eq!(round_f64_to(Dtype::BF16, v), 1.0 + 2f32.powi(-7));
        assert_eq!(round_to(Dtype::BF16, v as f32), 1.0);
    }
}
