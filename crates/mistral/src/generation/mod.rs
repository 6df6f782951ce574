//! Text generation over any causal language model: batched greedy decoding and beam search with the semantics of
//! transformers' `generate` (5.23), plus repetition penalty, EOS lists, `max_new_tokens` and vLLM-style stop strings.
//!
//! The model is reached only through the [`CausalLm`] trait, so the same code drives the plain Mistral, a layer-path
//! (data-flow) model and the language model inside a LLaVA-style VLM (whose first step feeds embeddings, see
//! [`PromptInput::Embeds`]).
//!
//! # Batching
//! Prompts of different lengths are left-padded into one batch. Each row's positions count its real tokens only
//! (`cumsum(mask) - 1`, as transformers does) and the attention mask hides the padding, so every row gets the tokens
//! it would get alone. Rows that finish leave the batch (their cache rows are dropped), so a long completion does not
//! make short ones pay. Beam search keeps `num_beams` rows per prompt and reorders them through
//! [`CausalLm::reorder_cache`].
//!
//! # Where this differs from transformers, on purpose
//! - Repetition penalty looks at the row's own tokens (prompt + generated), never at left padding. transformers also
//!   penalises the pad id in padded rows (with Mistral, pad = EOS, so batched and unbatched runs can differ there);
//!   this crate's output never depends on the batch a prompt is in.
//! - Stop strings follow vLLM (used by the paper's MGSM evaluation): generation of a row ends as soon as its decoded
//!   completion contains one of them, and the completion text is cut just before it (the stop string is not
//!   included; the token ids keep the tokens that spelled it).

mod batch;
mod beam;
mod config;
mod device;
mod greedy;
mod logits;
mod mistral;
mod stop;

use candle_core::Tensor;

pub use config::{EarlyStopping, GenerationConfig};
pub use device::score_on_device_even_on_cpu;

/// Errors a model implementation may return; boxed so that any crate's error type fits.
pub type ModelError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What one forward step feeds the model.
#[derive(Debug, Clone, Copy)]
pub enum StepInput<'a> {
    /// Token ids, `[batch][seq]`.
    Tokens(&'a [Vec<u32>]),
    /// Input embeddings `[batch, seq, hidden]` (a VLM's prefill, with image features spliced in).
    Embeds(&'a Tensor),
}

/// A causal language model as generation sees it.
///
/// Every call appends `seq` positions to each row of `cache`. `positions[b][s]` is the position id of each new
/// input (padding gets 0), `attention_mask[b]` has one entry per cached position plus the new ones
/// (`past + seq` entries; `false` = padding that no query may attend to). Causality among the new positions is the
/// model's business.
pub trait CausalLm {
    type Cache;

    /// An empty cache for `batch` rows.
    fn new_cache(&self, batch: usize) -> Result<Self::Cache, ModelError>;

    /// An empty cache for `batch` rows that will hold about `capacity` positions (prompt + new tokens), so a cache
    /// that preallocates can do so once. The default ignores the hint.
    fn new_cache_with_capacity(
        &self,
        batch: usize,
        capacity: usize,
    ) -> Result<Self::Cache, ModelError> {
        let _ = capacity;
        self.new_cache(batch)
    }

    /// Runs one step and returns the logits of each row's last new position, `[batch, vocab]` (any float dtype).
    fn forward_last(
        &self,
        input: StepInput<'_>,
        positions: &[Vec<u32>],
        attention_mask: &[Vec<bool>],
        cache: &mut Self::Cache,
    ) -> Result<Tensor, ModelError>;

    /// Makes row `i` of the cache a copy of old row `rows[i]` (rows may repeat or be dropped).
    fn reorder_cache(&self, cache: &mut Self::Cache, rows: &[usize]) -> Result<(), ModelError>;

    /// The longest sequence (prompt + completion) the model handles.
    fn max_context(&self) -> usize;
}

/// Turns token ids back into text; needed for stop strings.
pub trait TokenDecoder {
    /// The completion's text: special tokens skipped, as shown to a user.
    fn decode_completion(&self, ids: &[u32]) -> Result<String, ModelError>;
}

/// One prompt of a batch.
#[derive(Debug, Clone)]
pub enum PromptInput {
    /// Token ids (BOS included if the tokenizer adds one).
    Tokens(Vec<u32>),
    /// Input embeddings `[len, hidden]`; `context_ids` are the token ids the prompt stands for (what the repetition
    /// penalty considers already present, e.g. the text tokens and the image placeholder).
    Embeds {
        embeds: Tensor,
        context_ids: Vec<u32>,
    },
}

impl PromptInput {
    /// Positions the prompt occupies.
    pub fn len(&self) -> usize {
        match self {
            PromptInput::Tokens(ids) => ids.len(),
            PromptInput::Embeds { embeds, .. } => embeds.dims().first().copied().unwrap_or(0),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn context_ids(&self) -> &[u32] {
        match self {
            PromptInput::Tokens(ids) => ids,
            PromptInput::Embeds { context_ids, .. } => context_ids,
        }
    }
}

/// Why a completion ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced one of the EOS ids (it is the last token of [`Completion::tokens`]).
    Eos,
    /// `max_new_tokens` (or the model's context) was reached.
    Length,
    /// The decoded completion contains this stop string.
    Stop(String),
}

/// The result for one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Generated token ids, EOS included when the completion ended with one.
    pub tokens: Vec<u32>,
    pub finish: FinishReason,
    /// For [`FinishReason::Stop`]: the decoded completion, cut just before the stop string.
    pub stop_text: Option<String>,
    /// Beam search only: the hypothesis' summed log-probability divided by `length ^ length_penalty`.
    pub score: Option<f32>,
}

impl Completion {
    /// The generated ids without a trailing EOS (what gets decoded into text).
    pub fn content_tokens(&self) -> &[u32] {
        match self.finish {
            FinishReason::Eos => &self.tokens[..self.tokens.len().saturating_sub(1)],
            _ => &self.tokens,
        }
    }

    /// The completion's text: the stop-cut text if a stop string ended it, else the decoded content tokens.
    pub fn text(&self, decoder: &dyn TokenDecoder) -> Result<String, GenerationError> {
        match &self.stop_text {
            Some(text) => Ok(text.clone()),
            None => decoder
                .decode_completion(self.content_tokens())
                .map_err(GenerationError::Decode),
        }
    }
}

/// Errors from [`generate`].
#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    #[error("invalid generation settings: {0}")]
    Config(String),
    #[error(
        "prompt {index} is empty; every prompt needs at least one token (a BOS token will do)"
    )]
    EmptyPrompt { index: usize },
    #[error(
        "prompt {index} has {len} tokens but the model's context is {max}; shorten the prompt \
         (nothing would be left to generate)"
    )]
    PromptTooLong {
        index: usize,
        len: usize,
        max: usize,
    },
    #[error("a batch must be all token prompts or all embedding prompts; prompt {index} differs from prompt 0")]
    MixedPrompts { index: usize },
    #[error("prompt {index}: embeddings must be [len, hidden] with the same hidden size in every prompt, got {dims:?}")]
    BadEmbeds { index: usize, dims: Vec<usize> },
    #[error("stop strings were given but no tokenizer to decode completions with")]
    StopWithoutDecoder,
    #[error("the model returned logits of shape {dims:?}, expected [{rows}, vocab]")]
    BadLogits { dims: Vec<usize>, rows: usize },
    #[error("model forward failed: {0}")]
    Model(#[source] ModelError),
    #[error("decoding tokens failed: {0}")]
    Decode(#[source] ModelError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Generates a completion for every prompt, in order. Greedy when `config.num_beams == 1`, beam search otherwise.
/// `decoder` is needed only when `config.stop_strings` is not empty.
pub fn generate<M: CausalLm>(
    model: &M,
    prompts: &[PromptInput],
    config: &GenerationConfig,
    decoder: Option<&dyn TokenDecoder>,
) -> Result<Vec<Completion>, GenerationError> {
    config.validate()?;
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    let stops = stop::StopChecker::new(&config.stop_strings, decoder)?;
    let batch = batch::PromptBatch::new(prompts, model.max_context())?;
    if config.num_beams == 1 {
        greedy::run(model, &batch, config, &stops)
    } else {
        beam::run(model, &batch, config, &stops)
    }
}

/// One step's last-position logits `[rows, vocab]` in f32, still on the model's device: greedy decoding without a
/// repetition penalty takes the argmax there and reads back one id per row instead of the whole vocabulary.
pub(crate) struct StepLogits(Tensor);

impl StepLogits {
    /// Every row's scores on the host (repetition penalty, beam search).
    pub(crate) fn to_host(&self) -> Result<Vec<Vec<f32>>, GenerationError> {
        Ok(self.0.to_vec2::<f32>()?)
    }

    pub(crate) fn tensor(&self) -> &Tensor {
        &self.0
    }

    pub(crate) fn device(&self) -> &candle_core::Device {
        self.0.device()
    }

    /// Number of scores per row.
    pub(crate) fn vocab(&self) -> usize {
        self.0.dims().get(1).copied().unwrap_or(0)
    }

    /// Row `i` of the result is row `rows[i]` of these logits (copied on the device).
    pub(crate) fn select_rows(&self, rows: &[usize]) -> Result<StepLogits, GenerationError> {
        let ids: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let ids = Tensor::from_vec(ids, rows.len(), self.0.device())?;
        Ok(StepLogits(self.0.index_select(&ids, 0)?))
    }

    /// Each row's argmax, computed on the device, with [`logits::argmax`]'s rules: the first index on ties and
    /// never a NaN (NaNs become -inf first).
    pub(crate) fn argmax_rows(&self) -> Result<Vec<u32>, GenerationError> {
        argmax_rows(&self.0)
    }

    /// Each row's argmax after the repetition penalty on `seen[row]`: on an accelerator both run there and only
    /// the ids come back; on the CPU the host rows are scored.
    pub(crate) fn penalized_argmax_rows(
        &self,
        seen: &[&std::collections::HashSet<u32>],
        penalty: f32,
    ) -> Result<Vec<u32>, GenerationError> {
        if device::use_device_path(self.0.device()) {
            return argmax_rows(&device::repetition_penalty_rows(&self.0, seen, penalty)?);
        }
        let mut scores = self.to_host()?;
        for (row, set) in scores.iter_mut().zip(seen) {
            logits::apply_repetition_penalty(row, set, penalty);
        }
        Ok(scores.iter().map(|s| logits::argmax(s)).collect())
    }
}

/// Row-wise argmax of f32 scores on their device: first index on ties, NaNs never chosen.
fn argmax_rows(scores: &Tensor) -> Result<Vec<u32>, GenerationError> {
    let nan = scores.ne(scores)?;
    let neg_inf = Tensor::full(f32::NEG_INFINITY, scores.shape(), scores.device())?;
    let scores = nan.where_cond(&neg_inf, scores)?;
    Ok(scores.argmax(1)?.to_dtype(candle_core::DType::U32)?.to_vec1::<u32>()?)
}

/// Runs a model step and checks the logits' shape.
fn step_logits<M: CausalLm>(
    model: &M,
    input: StepInput<'_>,
    positions: &[Vec<u32>],
    mask: &[Vec<bool>],
    cache: &mut M::Cache,
) -> Result<StepLogits, GenerationError> {
    let rows = positions.len();
    let logits = model
        .forward_last(input, positions, mask, cache)
        .map_err(GenerationError::Model)?;
    let dims = logits.dims().to_vec();
    if dims.len() != 2 || dims[0] != rows || dims[1] == 0 {
        return Err(GenerationError::BadLogits { dims, rows });
    }
    Ok(StepLogits(logits.to_dtype(candle_core::DType::F32)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The on-device argmax picks what the host argmax picks: first index on ties, never a NaN.
    #[test]
    fn device_argmax_follows_the_host_rules() {
        let rows = vec![
            vec![0.5f32, 2.0, 2.0, -1.0],
            vec![f32::NAN, 1.0, 3.0, f32::NAN],
            vec![f32::NEG_INFINITY; 4],
            vec![-3.0, -2.0, f32::NAN, -2.5],
        ];
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let t = Tensor::from_vec(flat, (4, 4), &candle_core::Device::Cpu).unwrap();
        let want: Vec<u32> = rows.iter().map(|r| logits::argmax(r)).collect();
        assert_eq!(want, vec![1, 2, 0, 1]);
        assert_eq!(StepLogits(t).argmax_rows().unwrap(), want);
    }
}
