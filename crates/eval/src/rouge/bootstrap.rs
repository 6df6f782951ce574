//! `rouge_score.scoring.BootstrapAggregator` with numpy 1.26's legacy global RNG reproduced: MT19937
//! seeded like `np.random.seed(int)`, `np.random.choice(np.arange(n), size=n)` as masked
//! rejection sampling on 32-bit draws, sequential f64 means, and `np.percentile(method="linear")`.
//! The paper reports the bootstrap median, whose value depends on this exact stream.

use super::score::Score;

const MT_N: usize = 624;
const MT_M: usize = 397;

/// numpy's legacy `RandomState` (MT19937). Clone it to branch; keep one instance across calls to
/// continue the stream as numpy's global state does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumpyRandomState {
    key: [u32; MT_N],
    pos: usize,
}

impl NumpyRandomState {
    /// `np.random.seed(seed)` for an integer seed (MT19937 `init_genrand`).
    pub fn seed(seed: u32) -> NumpyRandomState {
        let mut key = [0u32; MT_N];
        key[0] = seed;
        for i in 1..MT_N {
            key[i] = 1_812_433_253u32
                .wrapping_mul(key[i - 1] ^ (key[i - 1] >> 30))
                .wrapping_add(i as u32);
        }
        NumpyRandomState { key, pos: MT_N }
    }

    /// A state as `np.random.get_state()` gives it: the 624-word key and the position.
    pub fn from_state(key: [u32; MT_N], pos: usize) -> NumpyRandomState {
        NumpyRandomState {
            key,
            pos: pos.min(MT_N),
        }
    }

    /// The key and position, as `np.random.get_state()[1:3]`.
    pub fn state(&self) -> (&[u32; MT_N], usize) {
        (&self.key, self.pos)
    }

    fn twist(&mut self) {
        for i in 0..MT_N {
            let y = (self.key[i] & 0x8000_0000) | (self.key[(i + 1) % MT_N] & 0x7fff_ffff);
            let mut v = self.key[(i + MT_M) % MT_N] ^ (y >> 1);
            if y & 1 == 1 {
                v ^= 0x9908_b0df;
            }
            self.key[i] = v;
        }
        self.pos = 0;
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.pos >= MT_N {
            self.twist();
        }
        let mut y = self.key[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// One draw of legacy `randint(0, n)` (n ≥ 1, n ≤ 2^32): mask rejection, no draw when n == 1.
    pub fn below(&mut self, n: u64) -> u64 {
        let range = n.saturating_sub(1);
        if range == 0 {
            return 0;
        }
        if range >= 0xffff_ffff {
            return self.next_u32() as u64;
        }
        let mut mask = range;
        for shift in [1, 2, 4, 8, 16] {
            mask |= mask >> shift;
        }
        loop {
            let v = (self.next_u32() as u64) & mask;
            if v <= range {
                return v;
            }
        }
    }

    /// `np.random.choice(np.arange(n), size=n)` into `out`.
    pub fn choice_indices(&mut self, n: usize, out: &mut Vec<usize>) {
        out.clear();
        out.extend((0..n).map(|_| self.below(n as u64) as usize));
    }
}

/// Low, mid (median) and high percentiles of the bootstrap means, per component.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BootstrapInterval {
    pub low: Score,
    pub mid: Score,
    pub high: Score,
}

/// `BootstrapAggregator._bootstrap_resample` for one score type. Empty input gives NaN and
/// consumes nothing.
pub fn bootstrap(
    scores: &[Score],
    rng: &mut NumpyRandomState,
    n_samples: usize,
    confidence: f64,
) -> BootstrapInterval {
    let nan = Score {
        precision: f64::NAN,
        recall: f64::NAN,
        fmeasure: f64::NAN,
    };
    if scores.is_empty() || n_samples == 0 {
        return BootstrapInterval {
            low: nan,
            mid: nan,
            high: nan,
        };
    }
    let n = scores.len();
    let mut means: [Vec<f64>; 3] = [
        Vec::with_capacity(n_samples),
        Vec::with_capacity(n_samples),
        Vec::with_capacity(n_samples),
    ];
    let mut idx = Vec::with_capacity(n);
    for _ in 0..n_samples {
        rng.choice_indices(n, &mut idx);
        let (mut p, mut r, mut f) = (0.0f64, 0.0f64, 0.0f64);
        for &i in &idx {
            p += scores[i].precision;
            r += scores[i].recall;
            f += scores[i].fmeasure;
        }
        means[0].push(p / n as f64);
        means[1].push(r / n as f64);
        means[2].push(f / n as f64);
    }
    for column in means.iter_mut() {
        column.sort_by(f64::total_cmp);
    }
    let delta = (1.0 - confidence) / 2.0;
    // numpy receives percentages and divides them by 100 again.
    let quantiles = [
        100.0 * delta / 100.0,
        100.0 * 0.5 / 100.0,
        100.0 * (1.0 - delta) / 100.0,
    ];
    let at = |q: f64| Score {
        precision: percentile_linear(&means[0], q),
        recall: percentile_linear(&means[1], q),
        fmeasure: percentile_linear(&means[2], q),
    };
    BootstrapInterval {
        low: at(quantiles[0]),
        mid: at(quantiles[1]),
        high: at(quantiles[2]),
    }
}

/// numpy 1.26 `percentile(..., method="linear")` on sorted values, `q` in [0, 1].
fn percentile_linear(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    let virtual_index = (n - 1) as f64 * q;
    let below = (virtual_index.floor() as usize).min(n - 1);
    let above = (below + 1).min(n - 1);
    let gamma = virtual_index - below as f64;
    let (a, b) = (sorted[below], sorted[above]);
    let diff = b - a;
    if gamma >= 0.5 {
        b - diff * (1.0 - gamma)
    } else {
        a + diff * gamma
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_first_outputs() {
        // numpy 1.26.4: RandomState(5489).randint(0, 2**32, size=2, dtype=np.uint64).
        let mut rng = NumpyRandomState::seed(5489);
        assert_eq!(rng.next_u32(), 3_499_211_612);
        assert_eq!(rng.next_u32(), 581_869_302);
    }

    #[test]
    fn choice_matches_numpy() {
        // numpy 1.26.4: np.random.RandomState(42).choice(np.arange(7), size=10)
        let mut rng = NumpyRandomState::seed(42);
        let draws: Vec<u64> = (0..10).map(|_| rng.below(7)).collect();
        assert_eq!(draws, vec![6, 3, 4, 6, 2, 4, 4, 6, 1, 2]);
    }
}
