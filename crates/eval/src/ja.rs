//! Japanese word segmentation exactly as the paper's `MecabTokenizer` does it (fugashi 1.3.1,
//! MeCab 0.996, UniDic-lite 1.0.8, `-Owakati`), in pure Rust:
//! emoji removal → neologdn 0.5.2 → whitespace collapse → MeCab Viterbi over the compiled
//! dictionary. [`JaTokenizer`] is the entry point; [`CharFallbackTokenizer`] is a dictionary-free
//! stand-in whose scores are *not* comparable with the paper's and must be labelled as such.
//!
//! The dictionary (about 260 MB) is not in the repository: `scripts/fetch-assets.sh` downloads
//! unidic-lite 1.0.8 from PyPI and caches its four binary files.

mod dict;
mod emoji_table;
pub mod mecab;
pub mod normalize;
#[cfg(test)]
mod synthetic;

use std::path::{Path, PathBuf};

pub use mecab::Mecab;
pub use normalize::{neologdn_normalize, normalize_answer, python_split, remove_emoji};

/// Environment variable naming the UniDic-lite dictionary directory.
pub const UNIDIC_DIR_ENV: &str = "EVOMERGE_UNIDIC_DIR";
/// Cache sub-directory `scripts/fetch-assets.sh` writes the dictionary to.
pub const UNIDIC_CACHE_SUBDIR: &str = "unidic-lite-1.0.8";

/// Errors from loading a MeCab dictionary.
#[derive(Debug, thiserror::Error)]
pub enum JaError {
    #[error(
        "MeCab dictionary not found: {file} is missing in {dir}; run scripts/fetch-assets.sh \
         (it downloads unidic-lite 1.0.8 from PyPI) and set EVOMERGE_UNIDIC_DIR to the directory it prints"
    )]
    DictionaryMissing { dir: PathBuf, file: &'static str },
    #[error(
        "no MeCab dictionary configured: EVOMERGE_UNIDIC_DIR is unset and ~/.cache/evomerge/unidic-lite-1.0.8 \
         does not exist; run scripts/fetch-assets.sh"
    )]
    NoDictionary,
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a usable MeCab dictionary file: {reason}")]
    Format { path: PathBuf, reason: String },
}

/// Something that turns an answer string into ROUGE tokens.
pub trait Tokenize: Send + Sync {
    fn tokenize(&self, text: &str) -> Vec<String>;
    /// Short name for reports, e.g. `mecab-unidic-lite` or `char-fallback`.
    fn name(&self) -> &'static str;
}

impl Tokenize for Box<dyn Tokenize> {
    fn tokenize(&self, text: &str) -> Vec<String> {
        (**self).tokenize(text)
    }
    fn name(&self) -> &'static str {
        (**self).name()
    }
}

/// The paper's tokenizer: [`normalize_answer`] then MeCab wakati with UniDic-lite.
pub struct JaTokenizer {
    mecab: Mecab,
}

impl JaTokenizer {
    /// Loads the MeCab dictionary files (`sys.dic`, `unk.dic`, `char.bin`, `matrix.bin`) from `dir`.
    pub fn load(dir: impl AsRef<Path>) -> Result<JaTokenizer, JaError> {
        Ok(JaTokenizer {
            mecab: Mecab::open(dir.as_ref())?,
        })
    }

    /// Loads from `$EVOMERGE_UNIDIC_DIR`, else `~/.cache/evomerge/unidic-lite-1.0.8`.
    pub fn from_env() -> Result<JaTokenizer, JaError> {
        JaTokenizer::load(default_dictionary_dir()?)
    }

    /// Where [`JaTokenizer::from_env`] looks for the dictionary.
    pub fn default_dir() -> Result<PathBuf, JaError> {
        default_dictionary_dir()
    }

    /// Tokens of `text` exactly as the paper's `MecabTokenizer.tokenize` returns them.
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        self.mecab.wakati(&normalize_answer(text))
    }

    /// MeCab wakati surfaces of `text` without the normalization steps.
    pub fn wakati(&self, text: &str) -> Vec<String> {
        self.mecab.wakati(text)
    }

    pub fn mecab(&self) -> &Mecab {
        &self.mecab
    }
}

impl Tokenize for JaTokenizer {
    fn tokenize(&self, text: &str) -> Vec<String> {
        JaTokenizer::tokenize(self, text)
    }
    fn name(&self) -> &'static str {
        "mecab-unidic-lite"
    }
}

/// Dictionary-free fallback: [`normalize_answer`], then one token per non-space character.
/// ROUGE over characters is systematically higher than over words, so every report made with it
/// must say `char-fallback`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CharFallbackTokenizer;

impl Tokenize for CharFallbackTokenizer {
    fn tokenize(&self, text: &str) -> Vec<String> {
        normalize_answer(text)
            .chars()
            .filter(|&c| c != ' ')
            .map(String::from)
            .collect()
    }
    fn name(&self) -> &'static str {
        "char-fallback"
    }
}

fn default_dictionary_dir() -> Result<PathBuf, JaError> {
    if let Some(dir) = std::env::var_os(UNIDIC_DIR_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or(JaError::NoDictionary)?;
    let dir = home
        .join(".cache")
        .join("evomerge")
        .join(UNIDIC_CACHE_SUBDIR);
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(JaError::NoDictionary)
    }
}
