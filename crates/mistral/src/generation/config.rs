//! Generation settings, with defaults and meanings taken from transformers 5.23's `GenerationConfig`.

use std::path::Path;

use serde::Deserialize;

use super::GenerationError;

/// When beam search stops adding finished hypotheses (transformers' `early_stopping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// transformers' default (`False`): stop once no running beam can beat the worst finished one, judging a
    /// running beam by its current length.
    #[default]
    Heuristic,
    /// `True`: stop as soon as `num_beams` hypotheses have finished.
    Always,
    /// `"never"`: the canonical beam search; with a positive length penalty it assumes running beams may reach
    /// `max_new_tokens`.
    Never,
}

/// How to generate. Build with [`GenerationConfig::default`] (greedy, 256 new tokens, no EOS) or
/// [`GenerationConfig::from_model_dir`] (EOS and pad ids from the checkpoint), then adjust fields.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// New tokens per prompt at most (EOS counts).
    pub max_new_tokens: usize,
    /// 1 = greedy decoding; more = beam search with that many beams.
    pub num_beams: usize,
    /// transformers' `repetition_penalty`: scores of tokens already in the row (prompt included) are divided by it
    /// when positive and multiplied by it when negative. In beam search it applies to log-probabilities, as in
    /// transformers. 1.0 = off.
    pub repetition_penalty: f32,
    /// Beam search: a finished hypothesis scores `sum_logprob / generated_len ^ length_penalty`.
    pub length_penalty: f32,
    pub early_stopping: EarlyStopping,
    /// A row ends when it produces any of these.
    pub eos_token_ids: Vec<u32>,
    /// Id placed in left padding (never attended to). Defaults to the first EOS id, then 0.
    pub pad_token_id: Option<u32>,
    /// vLLM-style stop strings: see the module docs.
    pub stop_strings: Vec<String>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: 256,
            num_beams: 1,
            repetition_penalty: 1.0,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            eos_token_ids: Vec::new(),
            pad_token_id: None,
            stop_strings: Vec::new(),
        }
    }
}

/// `eos_token_id` appears as a number, a list or null in the wild.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<u32> {
        match self {
            OneOrMany::One(id) => vec![id],
            OneOrMany::Many(ids) => ids,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EarlyStoppingJson {
    Flag(bool),
    Word(String),
}

/// The fields of `generation_config.json` / `config.json` we use; everything else is ignored.
#[derive(Debug, Default, Deserialize)]
struct CheckpointGenerationFields {
    eos_token_id: Option<OneOrMany>,
    pad_token_id: Option<u32>,
    max_new_tokens: Option<usize>,
    num_beams: Option<usize>,
    repetition_penalty: Option<f32>,
    length_penalty: Option<f32>,
    early_stopping: Option<EarlyStoppingJson>,
}

impl GenerationConfig {
    /// Defaults overlaid with the checkpoint's `generation_config.json` (as transformers does), falling back to
    /// `config.json` for the EOS and pad ids. A missing `generation_config.json` is fine; a malformed one is an
    /// error.
    pub fn from_model_dir(dir: &Path) -> Result<GenerationConfig, GenerationError> {
        let read = |name: &str| -> Result<Option<CheckpointGenerationFields>, GenerationError> {
            let path = dir.join(name);
            if !path.exists() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&path).map_err(|e| {
                GenerationError::Config(format!("cannot read {}: {e}", path.display()))
            })?;
            serde_json::from_str(&text).map(Some).map_err(|e| {
                GenerationError::Config(format!(
                    "{} is not a valid generation config: {e}",
                    path.display()
                ))
            })
        };
        let model = read("config.json")?.unwrap_or_default();
        let generation = read("generation_config.json")?.unwrap_or_default();
        let mut config = GenerationConfig {
            eos_token_ids: generation
                .eos_token_id
                .or(model.eos_token_id)
                .map(OneOrMany::into_vec)
                .unwrap_or_default(),
            pad_token_id: generation.pad_token_id.or(model.pad_token_id),
            ..GenerationConfig::default()
        };
        if let Some(n) = generation.max_new_tokens {
            config.max_new_tokens = n;
        }
        if let Some(n) = generation.num_beams {
            config.num_beams = n;
        }
        if let Some(p) = generation.repetition_penalty {
            config.repetition_penalty = p;
        }
        if let Some(p) = generation.length_penalty {
            config.length_penalty = p;
        }
        if let Some(e) = generation.early_stopping {
            config.early_stopping = match e {
                EarlyStoppingJson::Flag(false) => EarlyStopping::Heuristic,
                EarlyStoppingJson::Flag(true) => EarlyStopping::Always,
                EarlyStoppingJson::Word(w) if w == "never" => EarlyStopping::Never,
                EarlyStoppingJson::Word(w) => {
                    return Err(GenerationError::Config(format!(
                        "generation_config.json: early_stopping must be true, false or \"never\", not {w:?}"
                    )))
                }
            };
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the settings make sense, naming the first one that does not.
    pub fn validate(&self) -> Result<(), GenerationError> {
        let bad = |msg: String| Err(GenerationError::Config(msg));
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens must be at least 1".into());
        }
        if self.num_beams == 0 {
            return bad("num_beams must be at least 1".into());
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(format!(
                "repetition_penalty must be a positive number (1.0 = off), got {}",
                self.repetition_penalty
            ));
        }
        if !self.length_penalty.is_finite() {
            return bad(format!(
                "length_penalty must be finite, got {}",
                self.length_penalty
            ));
        }
        if self.stop_strings.iter().any(String::is_empty) {
            return bad("stop strings must not be empty".into());
        }
        Ok(())
    }

    /// The id written into left padding.
    pub(crate) fn pad_id(&self) -> u32 {
        self.pad_token_id
            .or(self.eos_token_ids.first().copied())
            .unwrap_or(0)
    }
}
