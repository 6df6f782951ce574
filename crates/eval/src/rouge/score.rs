//! Per-pair ROUGE scores over already tokenized text, as `rouge_score.rouge_scorer` 0.1.2.

use std::collections::HashMap;

/// Precision, recall and F-measure of one ROUGE type for one pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Score {
    pub precision: f64,
    pub recall: f64,
    pub fmeasure: f64,
}

impl Score {
    fn from_pr(precision: f64, recall: f64) -> Score {
        Score {
            precision,
            recall,
            fmeasure: fmeasure(precision, recall),
        }
    }
}

/// ROUGE-1, ROUGE-2 and ROUGE-L of one reference/prediction pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ItemScores {
    pub rouge1: Score,
    pub rouge2: Score,
    #[serde(rename = "rougeL")]
    pub rouge_l: Score,
}

/// `rouge_score.scoring.fmeasure`: harmonic mean, 0 when both are 0.
pub fn fmeasure(precision: f64, recall: f64) -> f64 {
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}

/// ROUGE-N: clipped n-gram overlap. Precision divides by `max(#prediction n-grams, 1)`, recall by
/// `max(#reference n-grams, 1)`, as `_score_ngrams` does.
pub fn rouge_n<S: AsRef<str>>(reference: &[S], prediction: &[S], n: usize) -> Score {
    let (r, p) = intern(reference, prediction);
    rouge_n_ids(&r, &p, n)
}

/// Maps both token lists to small integer ids (equal strings, equal ids) so n-grams and the LCS
/// compare integers.
fn intern<S: AsRef<str>>(reference: &[S], prediction: &[S]) -> (Vec<u32>, Vec<u32>) {
    fn map<'a, S: AsRef<str>>(ids: &mut HashMap<&'a str, u32>, tokens: &'a [S]) -> Vec<u32> {
        tokens
            .iter()
            .map(|t| {
                let next = ids.len() as u32;
                *ids.entry(t.as_ref()).or_insert(next)
            })
            .collect()
    }
    let mut ids = HashMap::with_capacity(reference.len() + prediction.len());
    let r = map(&mut ids, reference);
    let p = map(&mut ids, prediction);
    (r, p)
}

fn rouge_n_ids(reference: &[u32], prediction: &[u32], n: usize) -> Score {
    fn counts(tokens: &[u32], n: usize) -> HashMap<&[u32], usize> {
        let mut map = HashMap::new();
        if n > 0 && tokens.len() >= n {
            for window in tokens.windows(n) {
                *map.entry(window).or_insert(0) += 1;
            }
        }
        map
    }
    let reference_counts = counts(reference, n);
    let prediction_counts = counts(prediction, n);
    let overlap: usize = reference_counts
        .iter()
        .map(|(gram, &c)| c.min(prediction_counts.get(gram).copied().unwrap_or(0)))
        .sum();
    let reference_total = if n > 0 {
        reference.len().saturating_sub(n - 1)
    } else {
        0
    };
    let prediction_total = if n > 0 {
        prediction.len().saturating_sub(n - 1)
    } else {
        0
    };
    Score::from_pr(
        overlap as f64 / prediction_total.max(1) as f64,
        overlap as f64 / reference_total.max(1) as f64,
    )
}

fn rouge_l_ids(reference: &[u32], prediction: &[u32]) -> Score {
    if reference.is_empty() || prediction.is_empty() {
        return Score::default();
    }
    let lcs = lcs_length(reference, prediction) as f64;
    Score::from_pr(lcs / prediction.len() as f64, lcs / reference.len() as f64)
}

/// Length of the longest common subsequence (token equality).
pub fn lcs_length<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diagonal = 0;
        for (j, y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if x == y {
                diagonal + 1
            } else {
                above.max(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// ROUGE-L: LCS-based; all zero when either side has no tokens.
pub fn rouge_l<S: AsRef<str>>(reference: &[S], prediction: &[S]) -> Score {
    let (r, p) = intern(reference, prediction);
    rouge_l_ids(&r, &p)
}

/// Alias of [`rouge_l`] under the name the evaluators use.
pub fn score_l<S: AsRef<str>>(reference_tokens: &[S], prediction_tokens: &[S]) -> Score {
    rouge_l(reference_tokens, prediction_tokens)
}

/// All three types for one tokenized pair.
pub fn score_tokens<S: AsRef<str>>(reference: &[S], prediction: &[S]) -> ItemScores {
    let (r, p) = intern(reference, prediction);
    ItemScores {
        rouge1: rouge_n_ids(&r, &p, 1),
        rouge2: rouge_n_ids(&r, &p, 2),
        rouge_l: rouge_l_ids(&r, &p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcs_and_ngrams_on_small_cases() {
        let r = ["白い", "犬", "が", "いる"];
        let p = ["犬", "が", "白い", "いる"];
        assert_eq!(lcs_length(&r, &p), 3);
        let l = rouge_l(&r, &p);
        assert_eq!((l.precision, l.recall), (0.75, 0.75));
        let two = rouge_n(&r, &p, 2);
        assert_eq!(two.precision, 1.0 / 3.0);
        assert_eq!(rouge_l::<&str>(&[], &["a"]), Score::default());
        // Clipped counts: "a a a" vs "a": one match.
        let one = rouge_n(&["a"], &["a", "a", "a"], 1);
        assert_eq!((one.precision, one.recall), (1.0 / 3.0, 1.0));
        // No bigrams on either side: precision and recall 0 (divide by max(0,1)).
        assert_eq!(rouge_n(&["a"], &["a"], 2), Score::default());
    }
}
