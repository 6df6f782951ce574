//! vLLM-style stop strings: after each new token the completion is decoded; the first stop string (in the order
//! given) found in it ends the row, and the text is cut just before it.

use super::{GenerationError, TokenDecoder};

pub(crate) struct StopChecker<'a> {
    stops: &'a [String],
    decoder: Option<&'a dyn TokenDecoder>,
}

/// A stop string that matched, and the completion text before it.
#[derive(Debug, Clone)]
pub(crate) struct StopHit {
    pub stop: String,
    pub text: String,
}

impl<'a> StopChecker<'a> {
    pub fn new(
        stops: &'a [String],
        decoder: Option<&'a dyn TokenDecoder>,
    ) -> Result<Self, GenerationError> {
        if !stops.is_empty() && decoder.is_none() {
            return Err(GenerationError::StopWithoutDecoder);
        }
        Ok(StopChecker { stops, decoder })
    }

    /// Checks the generated tokens so far (EOS excluded).
    pub fn check(&self, generated: &[u32]) -> Result<Option<StopHit>, GenerationError> {
        let Some(decoder) = self.decoder.filter(|_| !self.stops.is_empty()) else {
            return Ok(None);
        };
        let text = decoder
            .decode_completion(generated)
            .map_err(GenerationError::Decode)?;
        for stop in self.stops {
            if let Some(at) = text.find(stop.as_str()) {
                return Ok(Some(StopHit {
                    stop: stop.clone(),
                    text: text[..at].to_string(),
                }));
            }
        }
        Ok(None)
    }
}
