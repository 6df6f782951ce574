//! Score processing on the model's device, so that a decoding step reads back only the chosen ids (greedy) or the
//! `k` best `(index, score)` pairs of each prompt (beam search) instead of whole rows of logits.
//!
//! Each function does, with tensor ops, what its host counterpart in [`super::logits`] does on one row, in the
//! same f32 operations, so on the CPU the two give the same bits (tested below). On the CPU the host functions are
//! used (no readback to avoid there); tests run these on the CPU too.

use std::collections::HashSet;

use candle_core::{DType, Device, Tensor, D};

use super::GenerationError;

thread_local! {
    /// Tests set this to run the device path on the CPU.
    static DEVICE_PATH_ON_CPU: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether scores on `device` are processed there (any accelerator; the CPU only under test).
pub(crate) fn use_device_path(device: &Device) -> bool {
    !device.is_cpu() || DEVICE_PATH_ON_CPU.with(|c| c.get())
}

/// Makes generation on this thread score with the on-device path even when the model is on the CPU, so tests
/// (and anyone comparing the two) can run the code an accelerator runs. Off by default.
pub fn score_on_device_even_on_cpu(on: bool) {
    DEVICE_PATH_ON_CPU.with(|c| c.set(on));
}

/// Row-wise `log_softmax` (`x - max - ln(sum(exp(x - max)))`), as [`super::logits::log_softmax_in_place`]: rows
/// whose maximum is not finite are left as they are.
pub(crate) fn log_softmax_rows(scores: &Tensor) -> Result<Tensor, GenerationError> {
    let max = scores.max_keepdim(D::Minus1)?;
    let shifted = scores.broadcast_sub(&max)?;
    let log_sum = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let out = shifted.broadcast_sub(&log_sum)?;
    // `x - max - log_sum` is what the host computes: (x - max) first, then minus log_sum.
    let finite = max.abs()?.lt(f32::INFINITY)?;
    Ok(finite.broadcast_as(scores.shape())?.where_cond(&out, scores)?)
}

/// transformers' repetition penalty on every row: ids in `seen[row]` are divided by `penalty` when their score is
/// positive (or zero) and multiplied by it when negative, as [`super::logits::apply_repetition_penalty`].
pub(crate) fn repetition_penalty_rows(
    scores: &Tensor,
    seen: &[&HashSet<u32>],
    penalty: f32,
) -> Result<Tensor, GenerationError> {
    let (rows, vocab) = scores.dims2()?;
    let width = seen.iter().map(|s| s.len()).max().unwrap_or(0);
    if width == 0 || penalty == 1.0 {
        return Ok(scores.clone());
    }
    // Rows are padded to one width by repeating their first id (so every write to an id carries the same value);
    // a row with no ids reads and writes back id 0 unchanged.
    let mut ids = Vec::with_capacity(rows * width);
    let mut penalized_rows = Vec::with_capacity(rows);
    for set in seen {
        let mut row: Vec<u32> = set.iter().copied().filter(|&id| (id as usize) < vocab).collect();
        row.sort_unstable();
        penalized_rows.push(u8::from(!row.is_empty()));
        row.resize(width, row.first().copied().unwrap_or(0));
        ids.extend(row);
    }
    let device = scores.device();
    let ids = Tensor::from_vec(ids, (rows, width), device)?;
    let penalized_rows = Tensor::from_vec(penalized_rows, (rows, 1), device)?.broadcast_as((rows, width))?;
    let picked = scores.contiguous()?.gather(&ids, 1)?;
    let p = Tensor::new(penalty, device)?;
    let negative = picked.lt(0f32)?;
    let penalized = negative.where_cond(&picked.broadcast_mul(&p)?, &picked.broadcast_div(&p)?)?;
    let source = penalized_rows.where_cond(&penalized, &picked)?;
    Ok(scores.contiguous()?.scatter(&ids, &source, 1)?)
}

/// The `k` largest entries of every row with their column indices, best first, lower index first among equal
/// values, as [`super::logits::top_k`]; only these pairs leave the device. `None` when a row has fewer than `k`
/// finite entries to offer (NaN or -inf among the picks), where the host's rules for those values decide: the
/// caller then reads the rows back and uses the host function.
pub(crate) fn top_k_rows(scores: &Tensor, k: usize) -> Result<Option<Vec<Vec<(usize, f32)>>>, GenerationError> {
    let (rows, cols) = scores.dims2()?;
    let k = k.min(cols);
    let mut work = scores.to_dtype(DType::F32)?.contiguous()?;
    let taken = Tensor::full(f32::NEG_INFINITY, (rows, 1), scores.device())?;
    let mut indices = Vec::with_capacity(k);
    let mut values = Vec::with_capacity(k);
    for _ in 0..k {
        let best = work.argmax_keepdim(1)?;
        values.push(work.gather(&best, 1)?);
        work = work.scatter(&best, &taken, 1)?;
        indices.push(best);
    }
    if k == 0 {
        return Ok(Some(vec![Vec::new(); rows]));
    }
    let indices = Tensor::cat(&indices, 1)?.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    let values = Tensor::cat(&values, 1)?.to_vec2::<f32>()?;
    let mut out = Vec::with_capacity(rows);
    for (idx, val) in indices.into_iter().zip(values) {
        if val.iter().any(|v| !v.is_finite()) {
            return Ok(None);
        }
        out.push(idx.into_iter().map(|i| i as usize).zip(val).collect());
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::super::logits::{apply_repetition_penalty, log_softmax_in_place, top_k};
    use super::*;

    /// Deterministic pseudo-random rows with many exact ties (values on a coarse grid).
    fn rows(n: usize, m: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                (0..m)
                    .map(|_| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        ((state % 64) as f32 - 32.0) / 8.0
                    })
                    .collect()
            })
            .collect()
    }

    fn tensor(rows: &[Vec<f32>]) -> Tensor {
        let m = rows[0].len();
        Tensor::from_vec(rows.concat(), (rows.len(), m), &Device::Cpu).unwrap()
    }

    /// The sum of exponentials is reduced in another order than the host's running sum, so values may differ in
    /// the last bit (beam picks are compared end to end in tests/generation_*.rs).
    #[test]
    fn log_softmax_matches_the_host_to_rounding() {
        let mut host = rows(5, 301, 1);
        host[2] = vec![f32::NEG_INFINITY; 301];
        let got = log_softmax_rows(&tensor(&host)).unwrap().to_vec2::<f32>().unwrap();
        for row in host.iter_mut() {
            log_softmax_in_place(row);
        }
        for (g, w) in got.iter().zip(&host) {
            for (a, b) in g.iter().zip(w) {
                assert!(a.to_bits() == b.to_bits() || (a - b).abs() <= 4.0 * f32::EPSILON * b.abs().max(1.0), "{a} vs {b}");
            }
        }
    }

    #[test]
    fn repetition_penalty_matches_the_host() {
        let mut host = rows(3, 50, 2);
        let seen: Vec<HashSet<u32>> =
            vec![[0u32, 3, 7, 49].into_iter().collect(), HashSet::new(), [5u32, 60].into_iter().collect()];
        let refs: Vec<&HashSet<u32>> = seen.iter().collect();
        let got = repetition_penalty_rows(&tensor(&host), &refs, 1.3).unwrap().to_vec2::<f32>().unwrap();
        for (row, set) in host.iter_mut().zip(&seen) {
            apply_repetition_penalty(row, set, 1.3);
        }
        assert_eq!(got, host);
    }

    #[test]
    fn top_k_matches_the_host_with_ties() {
        for seed in 0..20 {
            let host = rows(4, 97, seed);
            let got = top_k_rows(&tensor(&host), 10).unwrap().expect("all finite");
            for (g, row) in got.iter().zip(&host) {
                assert_eq!(g, &top_k(row, 10), "seed {seed}");
            }
        }
    }

    #[test]
    fn top_k_defers_to_the_host_when_picks_are_not_finite() {
        let mut host = rows(2, 8, 3);
        host[1] = vec![f32::NEG_INFINITY; 8];
        host[1][3] = 1.0;
        assert!(top_k_rows(&tensor(&host), 3).unwrap().is_none());
        host[1][5] = f32::NAN;
        assert!(top_k_rows(&tensor(&host), 3).unwrap().is_none());
    }
}
