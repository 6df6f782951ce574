//! Tokenizer and prompt templates: `tokenizer.json` through the `tokenizers` crate with BOS/EOS handling as the
//! checkpoint's `tokenizer_config.json` says, and plain-text templates with an `{input}` placeholder.
//!
//! BOS rule (what transformers 5.23 does for Llama/Mistral tokenizers): when `tokenizer_config.json` sets
//! `add_bos_token` and/or `add_eos_token`, they decide (an unset one defaults to BOS yes, EOS no) and the
//! post-processor in `tokenizer.json` is bypassed; when it sets neither, the post-processor decides (Mistral's adds
//! `<s>` in front).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::generation::{ModelError, TokenDecoder};

/// Errors from loading or using a tokenizer or a template.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid tokenizer: {reason}")]
    BadTokenizer { path: PathBuf, reason: String },
    #[error("{path} is not valid JSON: {source}")]
    BadTokenizerConfig {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("tokenizer_config.json names {role} token {token:?}, which is not in the tokenizer's vocabulary")]
    UnknownSpecialToken { role: &'static str, token: String },
    #[error("tokenizer_config.json sets add_{role}_token but names no {role} token")]
    MissingSpecialToken { role: &'static str },
    #[error("tokenizing failed: {0}")]
    Encode(String),
    #[error("decoding failed: {0}")]
    Decode(String),
    #[error("prompt template {origin} has no `{{input}}` placeholder; write `{{input}}` where the question goes")]
    NoPlaceholder { origin: String },
}

/// A special token in `tokenizer_config.json`: a plain string or an `AddedToken` object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SpecialToken {
    Text(String),
    Added { content: String },
}

impl SpecialToken {
    fn content(&self) -> &str {
        match self {
            SpecialToken::Text(s) => s,
            SpecialToken::Added { content } => content,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct TokenizerConfig {
    add_bos_token: Option<bool>,
    add_eos_token: Option<bool>,
    bos_token: Option<SpecialToken>,
    eos_token: Option<SpecialToken>,
}

/// A model's tokenizer.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    /// `Some(id)` when the config says to add BOS/EOS ourselves; `None` leaves it to the post-processor.
    bos: Option<Option<u32>>,
    eos: Option<Option<u32>>,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .finish()
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json` and, when present, `tokenizer_config.json` from a model folder.
    pub fn from_model_dir(dir: &Path) -> Result<TextTokenizer, PromptError> {
        let config = dir.join("tokenizer_config.json");
        TextTokenizer::from_files(
            &dir.join("tokenizer.json"),
            config.exists().then_some(config.as_path()),
        )
    }

    pub fn from_files(
        tokenizer_json: &Path,
        tokenizer_config: Option<&Path>,
    ) -> Result<TextTokenizer, PromptError> {
        if !tokenizer_json.exists() {
            return Err(PromptError::Io {
                path: tokenizer_json.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such file (the model needs a tokenizer.json)",
                ),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(tokenizer_json).map_err(|e| {
            PromptError::BadTokenizer {
                path: tokenizer_json.to_path_buf(),
                reason: e.to_string(),
            }
        })?;
        let config = match tokenizer_config {
            None => TokenizerConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| PromptError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
                serde_json::from_str(&text).map_err(|source| PromptError::BadTokenizerConfig {
                    path: path.to_path_buf(),
                    source,
                })?
            }
        };
        let lookup = |role: &'static str,
                      token: &Option<SpecialToken>|
         -> Result<Option<u32>, PromptError> {
            match token {
                None => Ok(None),
                Some(t) => inner.token_to_id(t.content()).map(Some).ok_or_else(|| {
                    PromptError::UnknownSpecialToken {
                        role,
                        token: t.content().to_string(),
                    }
                }),
            }
        };
        let bos_id = lookup("bos", &config.bos_token)?;
        let eos_id = lookup("eos", &config.eos_token)?;
        let rule = |role: &'static str, add: Option<bool>, id: Option<u32>| match (add, id) {
            (Some(true), None) => Err(PromptError::MissingSpecialToken { role }),
            (Some(true), id) => Ok(Some(id)),
            (Some(false), _) => Ok(Some(None)),
            (None, _) => Ok(None),
        };
        Ok(TextTokenizer {
            bos: rule("bos", config.add_bos_token, bos_id)?,
            eos: rule("eos", config.add_eos_token, eos_id)?,
            bos_id,
            eos_id,
            inner,
        })
    }

    /// Token ids of a prompt, with BOS/EOS as the checkpoint says.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, PromptError> {
        if self.bos.is_none() && self.eos.is_none() {
            return self.encode_with(text, true);
        }
        // The config decides; an end it leaves open takes transformers' Llama default (BOS yes, EOS no).
        let plain = self.encode_with(text, false)?;
        let mut ids = Vec::with_capacity(plain.len() + 2);
        if let Some(bos) = self.bos.unwrap_or(self.bos_id) {
            ids.push(bos);
        }
        ids.extend_from_slice(&plain);
        if let Some(eos) = self.eos.flatten() {
            ids.push(eos);
        }
        Ok(ids)
    }

    /// Token ids without any special tokens added.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, PromptError> {
        self.encode_with(text, false)
    }

    fn encode_with(&self, text: &str, special: bool) -> Result<Vec<u32>, PromptError> {
        self.inner
            .encode(text, special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| PromptError::Encode(e.to_string()))
    }

    /// Text of `ids`; with `skip_special_tokens` as transformers' `decode`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, PromptError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| PromptError::Decode(e.to_string()))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_id
    }

    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

impl TokenDecoder for TextTokenizer {
    fn decode_completion(&self, ids: &[u32]) -> Result<String, ModelError> {
        Ok(self.decode(ids, true)?)
    }
}

/// A prompt template: text used verbatim (trailing newline included) with every `{input}` replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTemplate {
    text: String,
}

/// The placeholder a template's input goes into.
pub const INPUT_PLACEHOLDER: &str = "{input}";

impl PromptTemplate {
    pub fn new(text: impl Into<String>, origin: &str) -> Result<PromptTemplate, PromptError> {
        let text = text.into();
        if !text.contains(INPUT_PLACEHOLDER) {
            return Err(PromptError::NoPlaceholder {
                origin: origin.to_string(),
            });
        }
        Ok(PromptTemplate { text })
    }

    /// Reads a template file as is: no trimming, so a trailing newline stays part of the prompt.
    pub fn from_file(path: &Path) -> Result<PromptTemplate, PromptError> {
        let text = std::fs::read_to_string(path).map_err(|source| PromptError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        PromptTemplate::new(text, &path.display().to_string())
    }

    /// The paper's MGSM-JA prompt (`evals/prompts/mgsm_ja.txt`): Alpaca-style Japanese instruction, no chat
    /// template, ending right after `### 応答:` with no newline (as the paper's code has it).
    pub fn mgsm_ja() -> PromptTemplate {
        PromptTemplate {
            text: include_str!("../../../evals/prompts/mgsm_ja.txt").to_string(),
        }
    }

    /// The paper's Japanese VQA prompt (`evals/prompts/ja_vqa.txt`), Llama-2 chat style with an `<image>` line.
    pub fn ja_vqa() -> PromptTemplate {
        PromptTemplate {
            text: include_str!("../../../evals/prompts/ja_vqa.txt").to_string(),
        }
    }

    pub fn render(&self, input: &str) -> String {
        self.text.replace(INPUT_PLACEHOLDER, input)
    }

    pub fn text(&self) -> &str {
        &self.text
    }
}
