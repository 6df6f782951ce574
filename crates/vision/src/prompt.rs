//! Prompts with one image: the token ids before and after the `<image>` marker. The marker stands for
//! the whole image feature sequence, which is spliced in between when the prompt is embedded.

use evomerge_mistral::prompt::TextTokenizer;
use tokenizers::Tokenizer;

use crate::error::{Result, VisionError};

/// The text marker for the image in a prompt.
pub const IMAGE_MARKER: &str = "<image>";

/// A prompt for one image: ids before the image (BOS included when the tokenizer adds one) and after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePrompt {
    pub before: Vec<u32>,
    pub after: Vec<u32>,
}

impl ImagePrompt {
    /// Splits token ids at the single `image_token_id` they must contain.
    pub fn from_ids(ids: &[u32], image_token_id: u32) -> Result<ImagePrompt> {
        let count = ids.iter().filter(|&&t| t == image_token_id).count();
        match count {
            0 => Err(VisionError::NoImageToken {
                token: format!("{IMAGE_MARKER} (id {image_token_id})"),
            }),
            1 => {
                let at = ids.iter().position(|&t| t == image_token_id).unwrap_or(0);
                Ok(ImagePrompt {
                    before: ids[..at].to_vec(),
                    after: ids[at + 1..].to_vec(),
                })
            }
            n => Err(VisionError::TooManyImageTokens {
                token: format!("{IMAGE_MARKER} (id {image_token_id})"),
                count: n,
            }),
        }
    }

    /// Tokenizes `text`, which must contain `<image>` exactly once. When the tokenizer knows `<image>` as a
    /// token (llava-hf), the whole text is encoded at once, as transformers' processor does; otherwise
    /// (original LLaVA tokenizers) the two sides are encoded separately, the BOS only on the first, as the
    /// original repository's `tokenizer_image_token` does.
    pub fn from_text(tokenizer: &Tokenizer, text: &str) -> Result<ImagePrompt> {
        let count = text.matches(IMAGE_MARKER).count();
        if count == 0 {
            return Err(VisionError::NoImageToken {
                token: IMAGE_MARKER.into(),
            });
        }
        if count > 1 {
            return Err(VisionError::TooManyImageTokens {
                token: IMAGE_MARKER.into(),
                count,
            });
        }
        let encode = |s: &str, special: bool| -> Result<Vec<u32>> {
            Ok(tokenizer
                .encode(s, special)
                .map_err(|e| VisionError::Tokenizer(e.to_string()))?
                .get_ids()
                .to_vec())
        };
        if let Some(id) = tokenizer.token_to_id(IMAGE_MARKER) {
            return ImagePrompt::from_ids(&encode(text, true)?, id);
        }
        let (left, right) = text.split_once(IMAGE_MARKER).unwrap_or((text, ""));
        Ok(ImagePrompt {
            before: encode(left, true)?,
            after: encode(right, false)?,
        })
    }

    /// As [`ImagePrompt::from_text`], with a model's [`TextTokenizer`] so that BOS/EOS follow its
    /// `tokenizer_config.json` (BOS before the image, EOS — if the config adds one — at the very end).
    pub fn from_text_tokenizer(tokenizer: &TextTokenizer, text: &str) -> Result<ImagePrompt> {
        let count = text.matches(IMAGE_MARKER).count();
        if count == 0 {
            return Err(VisionError::NoImageToken {
                token: IMAGE_MARKER.into(),
            });
        }
        if count > 1 {
            return Err(VisionError::TooManyImageTokens {
                token: IMAGE_MARKER.into(),
                count,
            });
        }
        let tok_err =
            |e: evomerge_mistral::prompt::PromptError| VisionError::Tokenizer(e.to_string());
        if let Some(id) = tokenizer.token_to_id(IMAGE_MARKER) {
            return ImagePrompt::from_ids(&tokenizer.encode(text).map_err(tok_err)?, id);
        }
        let (left, right) = text.split_once(IMAGE_MARKER).unwrap_or((text, ""));
        // Special tokens the tokenizer adds around a text: find them by encoding with and without them.
        let full = tokenizer.encode(left).map_err(tok_err)?;
        let plain = tokenizer.encode_plain(left).map_err(tok_err)?;
        let at = if plain.is_empty() {
            usize::from(full.first().is_some() && full.first() == tokenizer.bos_token_id().as_ref())
        } else {
            full.windows(plain.len())
                .position(|w| w == plain.as_slice())
                .unwrap_or(0)
        };
        let split = (at + plain.len()).min(full.len());
        let mut after = tokenizer.encode_plain(right).map_err(tok_err)?;
        after.extend_from_slice(&full[split..]);
        Ok(ImagePrompt {
            before: full[..split].to_vec(),
            after,
        })
    }

    /// Number of text tokens.
    pub fn text_len(&self) -> usize {
        self.before.len() + self.after.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_need_exactly_one_image_token() {
        assert_eq!(
            ImagePrompt::from_ids(&[1, 5, 9, 7], 9).unwrap(),
            ImagePrompt {
                before: vec![1, 5],
                after: vec![7]
            }
        );
        assert!(matches!(
            ImagePrompt::from_ids(&[1, 5], 9),
            Err(VisionError::NoImageToken { .. })
        ));
        assert!(matches!(
            ImagePrompt::from_ids(&[9, 5, 9], 9),
            Err(VisionError::TooManyImageTokens { count: 2, .. })
        ));
    }
}
