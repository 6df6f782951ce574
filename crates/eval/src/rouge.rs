//! ROUGE-1/2/L as `rouge_score` 0.1.2 computes them with a custom tokenizer (no lower-casing, no
//! stemming), its `BootstrapAggregator` with numpy's legacy MT19937 stream reproduced bit for bit,
//! and the paper's Japanese VQA scoring (`rouge_ja`, `compute_score` with the `_ja` variant).
//!
//! Typical use:
//! ```no_run
//! use evomerge_eval::{ja::JaTokenizer, rouge::{RougeJa, NumpyRandomState}};
//! let rouge = RougeJa::new(JaTokenizer::from_env()?);
//! let items = rouge.score_pairs(&[("白い犬です", "白い犬")]);
//! let mut rng = NumpyRandomState::seed(42);
//! let summary = rouge.aggregate(&items, &mut rng);
//! println!("rougeL mean {:.2}, bootstrap mid {:.2}", summary.rouge_l.mean, summary.rouge_l.mid);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bootstrap;
mod score;

pub use bootstrap::{bootstrap, BootstrapInterval, NumpyRandomState};
pub use score::{fmeasure, rouge_l, rouge_n, score_l, score_tokens, ItemScores, Score};

use crate::ja::Tokenize;

/// The three ROUGE types in the order `rouge_score` aggregates them (and draws random numbers).
pub const ROUGE_TYPES: [&str; 3] = ["rouge1", "rouge2", "rougeL"];

/// One ROUGE type's aggregate F-measure on the 0–100 scale.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct TypeSummary {
    /// Plain mean of the per-item F-measures ×100 (seed-independent).
    pub mean: f64,
    /// Bootstrap 2.5th percentile of the resampled means ×100.
    pub low: f64,
    /// Bootstrap median ×100: the number the paper reports.
    pub mid: f64,
    /// Bootstrap 97.5th percentile ×100.
    pub high: f64,
}

/// Aggregate of a scored set.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Summary {
    pub n: usize,
    pub rouge1: TypeSummary,
    pub rouge2: TypeSummary,
    #[serde(rename = "rougeL")]
    pub rouge_l: TypeSummary,
}

/// The paper's `rouge_ja`: a tokenizer plus ROUGE-1/2/L per pair and the bootstrap aggregate.
pub struct RougeJa<T: Tokenize> {
    tokenizer: T,
}

impl<T: Tokenize> RougeJa<T> {
    pub fn new(tokenizer: T) -> Self {
        RougeJa { tokenizer }
    }

    pub fn tokenizer(&self) -> &T {
        &self.tokenizer
    }

    /// Scores `(reference, prediction)` pairs, in order.
    pub fn score_pairs<R: AsRef<str>, P: AsRef<str>>(&self, pairs: &[(R, P)]) -> Vec<ItemScores> {
        pairs
            .iter()
            .map(|(r, p)| self.score_pair(r.as_ref(), p.as_ref()))
            .collect()
    }

    /// [`RougeJa::score_pairs`] on `threads` OS threads (0: all available cores). Same result,
    /// same order; scoring is pure, so only the wall time changes.
    pub fn score_pairs_parallel<R: AsRef<str> + Sync, P: AsRef<str> + Sync>(
        &self,
        pairs: &[(R, P)],
        threads: usize,
    ) -> Vec<ItemScores> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        if threads <= 1 || pairs.len() < 2 * threads {
            return self.score_pairs(pairs);
        }
        let chunk = pairs.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = pairs
                .chunks(chunk)
                .map(|part| scope.spawn(move || self.score_pairs(part)))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| match h.join() {
                    Ok(items) => items,
                    Err(panic) => std::panic::resume_unwind(panic),
                })
                .collect()
        })
    }

    pub fn score_pair(&self, reference: &str, prediction: &str) -> ItemScores {
        score_tokens(
            &self.tokenizer.tokenize(reference),
            &self.tokenizer.tokenize(prediction),
        )
    }

    /// `BootstrapAggregator().aggregate()` (1000 resamples, 95 % interval), drawing rouge1, then
    /// rouge2, then rougeL from `rng`, plus the plain means. `rng` carries over between calls as
    /// numpy's global state does. An empty set gives NaN everywhere and draws nothing.
    pub fn aggregate(&self, items: &[ItemScores], rng: &mut NumpyRandomState) -> Summary {
        aggregate(items, rng)
    }
}

/// See [`RougeJa::aggregate`].
pub fn aggregate(items: &[ItemScores], rng: &mut NumpyRandomState) -> Summary {
    let summarize = |scores: Vec<Score>, rng: &mut NumpyRandomState| {
        let mean = scores.iter().map(|s| s.fmeasure).sum::<f64>() / scores.len() as f64 * 100.0;
        let interval = bootstrap(&scores, rng, 1000, 0.95);
        TypeSummary {
            mean,
            low: interval.low.fmeasure * 100.0,
            mid: interval.mid.fmeasure * 100.0,
            high: interval.high.fmeasure * 100.0,
        }
    };
    Summary {
        n: items.len(),
        rouge1: summarize(items.iter().map(|i| i.rouge1).collect(), rng),
        rouge2: summarize(items.iter().map(|i| i.rouge2).collect(), rng),
        rouge_l: summarize(items.iter().map(|i| i.rouge_l).collect(), rng),
    }
}

/// The paper's `compute_score` for Japanese VQA: `rouge_ja` on all pairs, then (when a Japanese
/// probability is available) `rouge_ja` again where a prediction whose reference is Japanese
/// (`p_ja(reference) >= 0.5`) but which is not itself Japanese (`p_ja(prediction) < 0.5`) is
/// replaced by the empty string. Both aggregates draw from the same `rng`, in that order.
pub struct JaVqaReport {
    pub items: Vec<ItemScores>,
    pub summary: Summary,
    /// Per-item scores and aggregate of the `_ja` pass; `None` without a language detector.
    pub items_ja: Option<Vec<ItemScores>>,
    pub summary_ja: Option<Summary>,
}

/// Runs [`JaVqaReport`]'s computation. `p_ja` gives the Japanese probability of a text (see
/// [`crate::langid::JapaneseDetector`]); pass `None` to skip the `_ja` pass.
pub fn compute_score<T: Tokenize, R: AsRef<str> + Sync, P: AsRef<str> + Sync>(
    rouge: &RougeJa<T>,
    pairs: &[(R, P)],
    p_ja: Option<&dyn Fn(&str) -> f32>,
    rng: &mut NumpyRandomState,
) -> JaVqaReport {
    // Scoring is pure; use every core (the bootstrap stays sequential: it is one RNG stream).
    let items = rouge.score_pairs_parallel(pairs, 0);
    let summary = aggregate(&items, rng);
    let (items_ja, summary_ja) = match p_ja {
        None => (None, None),
        Some(p_ja) => {
            let ja: Vec<ItemScores> = pairs
                .iter()
                .zip(&items)
                .map(|((r, p), scored)| {
                    if p_ja(r.as_ref()) >= 0.5 && p_ja(p.as_ref()) < 0.5 {
                        rouge.score_pair(r.as_ref(), "")
                    } else {
                        *scored
                    }
                })
                .collect();
            let s = aggregate(&ja, rng);
            (Some(ja), Some(s))
        }
    };
    JaVqaReport {
        items,
        summary,
        items_ja,
        summary_ja,
    }
}

/// [`compute_score`] with a [`crate::langid::JapaneseDetector`] deciding the `_ja` pass (`None`:
/// no `_ja` pass).
pub fn compute_score_with_detector<T: Tokenize, R: AsRef<str> + Sync, P: AsRef<str> + Sync>(
    rouge: &RougeJa<T>,
    pairs: &[(R, P)],
    detector: Option<&crate::langid::JapaneseDetector>,
    rng: &mut NumpyRandomState,
) -> JaVqaReport {
    match detector {
        Some(d) => {
            let p_ja = |t: &str| d.p_ja(t);
            compute_score(rouge, pairs, Some(&p_ja), rng)
        }
        None => compute_score(rouge, pairs, None, rng),
    }
}
