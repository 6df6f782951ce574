//! The seam between evaluators and models: evaluators build [`Prompt`]s and read [`Completion`]s; a model
//! (the Mistral backbone, a LLaVA VLM, a scripted fake in tests, an API client) implements [`Generator`].
//! Nothing on this side knows about tensors or devices.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// An image handed to a generator undecoded: evaluators never decode pixels, the model side does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageInput {
    /// Encoded image bytes (PNG, JPEG, WebP ...) as stored in the dataset.
    Encoded(Vec<u8>),
    /// An image file on disk.
    Path(PathBuf),
}

/// One prompt: fully rendered text (template already applied) and, for VQA, one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub text: String,
    pub image: Option<ImageInput>,
}

impl Prompt {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            image: None,
        }
    }

    pub fn with_image(text: impl Into<String>, image: ImageInput) -> Self {
        Self {
            text: text.into(),
            image: Some(image),
        }
    }
}

/// How to decode. `num_beams == 1` means greedy search; there is no sampling because every evaluation
/// of the paper is deterministic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationSettings {
    pub max_new_tokens: usize,
    pub num_beams: usize,
    /// Hugging Face semantics: 1.0 = off.
    pub repetition_penalty: f32,
    /// The completion is cut before the first occurrence of any of these strings (vLLM's `stop`).
    pub stop: Vec<String>,
}

impl GenerationSettings {
    /// Checks the values a user can get wrong before any model time is spent.
    pub fn validate(&self) -> Result<(), GeneratorError> {
        if self.max_new_tokens == 0 {
            return Err(GeneratorError::InvalidSettings(
                "max_new_tokens must be at least 1".into(),
            ));
        }
        if self.num_beams == 0 {
            return Err(GeneratorError::InvalidSettings(
                "num_beams must be at least 1 (1 = greedy)".into(),
            ));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(GeneratorError::InvalidSettings(format!(
                "repetition_penalty must be a positive finite number, got {}",
                self.repetition_penalty
            )));
        }
        if self.stop.iter().any(|s| s.is_empty()) {
            return Err(GeneratorError::InvalidSettings(
                "a stop string must not be empty".into(),
            ));
        }
        Ok(())
    }
}

/// One generated answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completion {
    /// Decoded new tokens (special tokens skipped), cut at a stop string if one occurred.
    pub text: String,
    /// How many new tokens were generated (before any stop-string cut).
    pub new_tokens: usize,
    /// True when generation ended because the `max_new_tokens` budget ran out rather than at EOS or a
    /// stop string: such answers are often truncated, so every summary counts them.
    pub hit_max_new_tokens: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum GeneratorError {
    #[error("invalid generation settings: {0}")]
    InvalidSettings(String),
    #[error("the generator returned {got} completions for {expected} prompts")]
    CountMismatch { expected: usize, got: usize },
    #[error("prompt {index}: {message}")]
    BadPrompt { index: usize, message: String },
    #[error("generation failed: {0}")]
    Model(String),
}

/// Anything that turns prompts into completions, one completion per prompt, in order.
pub trait Generator {
    fn generate(
        &mut self,
        prompts: &[Prompt],
        settings: &GenerationSettings,
    ) -> Result<Vec<Completion>, GeneratorError>;

    /// A short human-readable description (model path, dtype, device) recorded in every summary.
    fn describe(&self) -> String {
        String::from("unnamed generator")
    }
}

/// Cuts `text` before the earliest occurrence of any stop string, returning whether a cut happened.
/// Shared by generators that cannot stop inside their decoding loop.
pub fn cut_at_stop<'a>(text: &'a str, stop: &[String]) -> (&'a str, bool) {
    let earliest = stop.iter().filter_map(|s| text.find(s.as_str())).min();
    match earliest {
        Some(at) => (&text[..at], true),
        None => (text, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_at_stop_takes_the_earliest_stop() {
        let stops = vec!["Instruction".to_string(), "Response:".to_string()];
        assert_eq!(
            cut_at_stop("a Response: b Instruction", &stops),
            ("a ", true)
        );
        assert_eq!(cut_at_stop("no stop here", &stops), ("no stop here", false));
    }

    #[test]
    fn settings_validation_names_the_bad_field() {
        let mut s = GenerationSettings {
            max_new_tokens: 0,
            num_beams: 1,
            repetition_penalty: 1.0,
            stop: vec![],
        };
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_new_tokens"));
        s.max_new_tokens = 4;
        s.repetition_penalty = f32::NAN;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("repetition_penalty"));
    }
}
