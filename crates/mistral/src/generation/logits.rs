//! Score processing on one row of logits, in f32 like transformers: repetition penalty, argmax, log-softmax and a
//! top-k that breaks ties towards the lower index.

use std::collections::HashSet;

/// transformers' `RepetitionPenaltyLogitsProcessor`: every id in `seen` (deduplicated) has its score divided by
/// `penalty` when positive (or zero) and multiplied by it when negative.
pub(crate) fn apply_repetition_penalty(scores: &mut [f32], seen: &HashSet<u32>, penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    for &id in seen {
        if let Some(score) = scores.get_mut(id as usize) {
            *score = if *score < 0.0 {
                *score * penalty
            } else {
                *score / penalty
            };
        }
    }
}

/// Index of the largest score; the first one on ties (as `torch.argmax`). NaNs are never chosen.
pub(crate) fn argmax(scores: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_score = f32::NEG_INFINITY;
    for (i, &s) in scores.iter().enumerate() {
        if s > best_score {
            best = i;
            best_score = s;
        }
    }
    best as u32
}

/// `log_softmax` in place: `x - max - ln(sum(exp(x - max)))`.
pub(crate) fn log_softmax_in_place(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return;
    }
    let sum: f32 = scores.iter().map(|&s| (s - max).exp()).sum();
    let log_sum = sum.ln();
    for s in scores.iter_mut() {
        *s = *s - max - log_sum;
    }
}

/// The `k` largest values of `scores` with their indices, best first; among equal values the lower index first.
pub(crate) fn top_k(scores: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut best: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
    for (i, &s) in scores.iter().enumerate() {
        if s.is_nan() {
            continue;
        }
        if best.len() == k {
            // `best` is sorted best first; strictly better than the current last to enter.
            match best.last() {
                Some(&(_, worst)) if s > worst => {}
                _ => continue,
            }
        }
        // Insert after every entry that is >= s, which keeps earlier indices ahead on ties.
        let at = best.partition_point(|&(_, v)| v >= s);
        best.insert(at, (i, s));
        best.truncate(k);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_scores() {
        let mut scores = vec![2.0, -2.0, 0.0, 3.0];
        let seen: HashSet<u32> = [0, 1, 2, 9].into_iter().collect();
        apply_repetition_penalty(&mut scores, &seen, 2.0);
        assert_eq!(scores, vec![1.0, -4.0, 0.0, 3.0]);
    }

    #[test]
    fn argmax_takes_the_first_of_equal_maxima() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, f32::NAN]), 1);
    }

    #[test]
    fn top_k_orders_best_first_and_breaks_ties_by_index() {
        let got = top_k(&[0.5, 2.0, 2.0, -1.0, 3.0, 2.0], 4);
        assert_eq!(got, vec![(4, 3.0), (1, 2.0), (2, 2.0), (5, 2.0)]);
        assert_eq!(top_k(&[1.0], 3), vec![(0, 1.0)]);
    }

    #[test]
    fn log_softmax_exponentiates_to_one() {
        let mut s = vec![1.0f32, 2.0, 3.0, -50.0];
        log_softmax_in_place(&mut s);
        let total: f32 = s.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!(s.iter().all(|&x| x <= 0.0));
    }
}
