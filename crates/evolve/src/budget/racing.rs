//! Racing a candidate against the incumbent on the same items. Items come in one seeded order,
//! the same for every candidate, in batches; after each batch the paired differences
//! `d_i = candidate_i − incumbent_i` on the items answered so far are tested: the candidate is
//! dropped once `mean(d) + z · sd(d) / √n < 0`, i.e. once it is worse than the incumbent with the
//! stated confidence. `z` is the normal quantile of `1 − (1 − confidence) / looks` (Bonferroni over
//! the looks a race can take), so the chance of dropping a candidate that is in fact at least as
//! good as the incumbent stays below `1 − confidence` however many times its race is looked at
//! (with the normal approximation of the paired mean).
//!
//! A dropped candidate's fitness is the paired estimate `incumbent + mean(d)`: consistent (it tends
//! to the full-set score as items grow) and, by the drop rule, below the incumbent's. A survivor
//! answers every item, so its fitness is exact. CMA-ES ranks the generation by these values: the
//! survivors' order is exact, and every survivor that beats the incumbent ranks above every dropped
//! candidate (whose estimate is below the incumbent), so the candidates that move the search are
//! ranked without error.

use super::spec::RacingSpec;

/// The looks a race over `total` items takes at most: after each batch with at least `min_items`
/// answered and items still left.
pub fn looks(spec: &RacingSpec, total: usize) -> usize {
    let batch = spec.batch.max(1);
    (1..)
        .map(|k| (k * batch).min(total))
        .take_while(|&n| n < total)
        .filter(|&n| n >= spec.min_items.max(2))
        .count()
}

/// The drop threshold: `z` such that a one-sided normal test at each look has level
/// `(1 − confidence) / looks`.
pub fn z_threshold(spec: &RacingSpec, total: usize) -> f64 {
    let looks = looks(spec, total).max(1) as f64;
    normal_quantile(1.0 - (1.0 - spec.confidence) / looks)
}

/// The race of one candidate.
pub struct Race<'a> {
    spec: RacingSpec,
    /// The incumbent's score on every item, in item order.
    incumbent: &'a [f64],
    incumbent_mean: f64,
    z: f64,
    ids: Vec<usize>,
    scores: Vec<f64>,
}

impl<'a> Race<'a> {
    pub fn new(spec: RacingSpec, incumbent: &'a [f64]) -> Race<'a> {
        let incumbent_mean = incumbent.iter().sum::<f64>() / incumbent.len().max(1) as f64;
        Race { spec, incumbent, incumbent_mean, z: z_threshold(&spec, incumbent.len()), ids: Vec::new(), scores: Vec::new() }
    }

    /// Record the candidate's scores on `ids`.
    pub fn observe(&mut self, ids: &[usize], scores: &[f64]) {
        self.ids.extend_from_slice(ids);
        self.scores.extend_from_slice(scores);
    }

    pub fn answered(&self) -> usize {
        self.ids.len()
    }

    /// `Some(estimate)` once the candidate is worse than the incumbent with the race's confidence.
    pub fn dropped(&self) -> Option<f64> {
        let n = self.ids.len();
        if n < self.spec.min_items.max(2) || n >= self.incumbent.len() {
            return None;
        }
        let d: Vec<f64> = self.ids.iter().zip(&self.scores).map(|(&i, &s)| s - self.incumbent[i]).collect();
        let mean = d.iter().sum::<f64>() / n as f64;
        let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let upper = mean + self.z * (var / n as f64).sqrt();
        (upper < 0.0).then_some(self.incumbent_mean + mean)
    }

    /// The items answered and their scores, in the order answered.
    pub fn into_answers(self) -> (Vec<usize>, Vec<f64>) {
        (self.ids, self.scores)
    }
}

/// A seeded permutation of `0..n` (SplitMix64-driven Fisher–Yates): the one item order of a search.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
    for i in (1..n).rev() {
        let j = (splitmix(&mut state) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

pub(crate) fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9).
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.383577518672690e2, -3.066479806614716e1, 2.506628277459239];
    const B: [f64; 5] = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let p = p.clamp(1e-300, 1.0 - 1e-16);
    let low = 0.02425;
    if p < low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5]) / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -normal_quantile(1.0 - p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_race(spec: RacingSpec, incumbent: &[f64], candidate: &[f64], order: &[usize]) -> Option<(usize, f64)> {
        let mut race = Race::new(spec, incumbent);
        for chunk in order.chunks(spec.batch) {
            let scores: Vec<f64> = chunk.iter().map(|&i| candidate[i]).collect();
            race.observe(chunk, &scores);
            if let Some(e) = race.dropped() {
                return Some((race.answered(), e));
            }
        }
        None
    }

    #[test]
    fn quantiles_and_looks() {
        assert!((normal_quantile(0.975) - 1.959964).abs() < 1e-5);
        assert!((normal_quantile(0.05) + 1.644854).abs() < 1e-5);
        assert!((normal_quantile(0.999) - 3.090232).abs() < 1e-5);
        let spec = RacingSpec { batch: 16, min_items: 32, confidence: 0.95 };
        // Looks after 32, 48, ..., 176 of 186 items.
        assert_eq!(looks(&spec, 186), 10);
        assert!((z_threshold(&spec, 186) - normal_quantile(1.0 - 0.005)).abs() < 1e-12);
        let mut p = permutation(186, 7);
        assert_ne!(p, (0..186).collect::<Vec<_>>());
        p.sort_unstable();
        assert_eq!(p, (0..186).collect::<Vec<_>>());
        assert_eq!(permutation(50, 3), permutation(50, 3));
    }

    /// The eventual best candidate trails the incumbent on the first 120 items of the race order
    /// (a few more losses than wins) and leads only on the last 80: it must survive to the end,
    /// where a rule without a confidence bound (drop when behind) would have dropped it.
    #[test]
    fn a_candidate_that_leads_only_late_is_never_dropped() {
        let spec = RacingSpec::default();
        let n = 200;
        let order = permutation(n, 11);
        let incumbent = vec![0.5; n];
        let mut candidate = vec![0.5; n];
        for (rank, &item) in order.iter().enumerate() {
            candidate[item] = match rank {
                r if r < 120 && r % 12 == 5 => 0.0,
                r if r < 120 && r % 20 == 7 => 1.0,
                r if r >= 120 && r % 4 == 0 => 1.0,
                _ => 0.5,
            };
        }
        let best_mean = candidate.iter().sum::<f64>() / n as f64;
        assert!(best_mean > 0.5 + 0.03, "the constructed candidate must be the better one ({best_mean})");
        assert_eq!(run_race(spec, &incumbent, &candidate, &order), None, "the eventual best was dropped");
        // It does trail for most of the race: a rule with no confidence bound drops it.
        let behind_at_first_look = order[..spec.min_items].iter().map(|&i| candidate[i] - incumbent[i]).sum::<f64>() < 0.0;
        assert!(behind_at_first_look);
        let careless = RacingSpec { confidence: 0.5, ..spec };
        let mut race = Race::new(careless, &incumbent);
        race.z = 0.0;
        let mut dropped = false;
        for chunk in order.chunks(spec.batch) {
            let scores: Vec<f64> = chunk.iter().map(|&i| candidate[i]).collect();
            race.observe(chunk, &scores);
            dropped |= race.dropped().is_some();
        }
        assert!(dropped, "the case is not hard: even a careless rule keeps it");
        // Equal to the incumbent everywhere (zero variance): never dropped either.
        assert_eq!(run_race(spec, &incumbent, &incumbent, &order), None);
    }

    #[test]
    fn a_clearly_worse_candidate_is_dropped_early_with_a_consistent_estimate() {
        let spec = RacingSpec::default();
        let n = 200;
        let order = permutation(n, 11);
        let incumbent: Vec<f64> = (0..n).map(|i| if i % 2 == 0 { 1.0 } else { 0.0 }).collect();
        let candidate: Vec<f64> = (0..n).map(|i| if i % 5 == 0 { 1.0 } else { 0.0 }).collect();
        let (answered, estimate) = run_race(spec, &incumbent, &candidate, &order).expect("dropped");
        assert!(answered <= 64, "dropped only after {answered} items");
        let inc_mean = 0.5;
        assert!(estimate < inc_mean, "the estimate {estimate} is not below the incumbent");
        // The paired estimate on the answered items is within a few standard errors of the truth (0.2).
        assert!((estimate - 0.2).abs() < 0.2, "estimate {estimate}");
    }

    /// The drop rule's false-drop rate, measured: candidates exactly as good as the incumbent in
    /// distribution are dropped less often than 1 − confidence.
    #[test]
    fn equally_good_candidates_are_rarely_dropped() {
        let spec = RacingSpec::default();
        let n = 186;
        let order = permutation(n, 1);
        let mut state = 99u64;
        let mut coin = || f64::from(u8::from(splitmix(&mut state) % 2 == 0));
        let incumbent: Vec<f64> = (0..n).map(|_| coin()).collect();
        let mut dropped = 0;
        let runs = 400;
        for _ in 0..runs {
            // The candidate scores like the incumbent on average but disagrees on many items.
            let candidate: Vec<f64> = incumbent.iter().map(|&s| if coin() == 1.0 { s } else { coin() }).collect();
            let true_gap: f64 = candidate.iter().zip(&incumbent).map(|(c, i)| c - i).sum::<f64>() / n as f64;
            if true_gap >= 0.0 && run_race(spec, &incumbent, &candidate, &order).is_some() {
                dropped += 1;
            }
        }
        assert!(dropped as f64 / runs as f64 <= 0.05, "{dropped} of {runs} at-least-as-good candidates dropped");
    }
}
