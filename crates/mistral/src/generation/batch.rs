//! Left-padded batches: the prefill inputs, and the per-row masks and positions that decoding steps extend.

use candle_core::Tensor;

use super::{step_logits, CausalLm, GenerationError, PromptInput, StepInput, StepLogits};

/// Validated prompts, ready to be prefilled.
pub(crate) struct PromptBatch<'a> {
    pub prompts: &'a [PromptInput],
    pub max_context: usize,
}

impl<'a> PromptBatch<'a> {
    pub fn new(prompts: &'a [PromptInput], max_context: usize) -> Result<Self, GenerationError> {
        let embeds = matches!(prompts.first(), Some(PromptInput::Embeds { .. }));
        let mut hidden = None;
        for (index, prompt) in prompts.iter().enumerate() {
            if matches!(prompt, PromptInput::Embeds { .. }) != embeds {
                return Err(GenerationError::MixedPrompts { index });
            }
            if let PromptInput::Embeds { embeds, .. } = prompt {
                let dims = embeds.dims();
                if dims.len() != 2 || *hidden.get_or_insert(dims[1]) != dims[1] {
                    return Err(GenerationError::BadEmbeds {
                        index,
                        dims: dims.to_vec(),
                    });
                }
            }
            let len = prompt.len();
            if len == 0 {
                return Err(GenerationError::EmptyPrompt { index });
            }
            if len >= max_context {
                return Err(GenerationError::PromptTooLong {
                    index,
                    len,
                    max: max_context,
                });
            }
        }
        Ok(PromptBatch {
            prompts,
            max_context,
        })
    }

    /// New tokens any prompt may get: `max_new_tokens`, or fewer where the context runs out. The cache holds the
    /// left padding too, so the longest prompt of the call sets the limit for all.
    pub fn budget(&self, max_new_tokens: usize) -> usize {
        max_new_tokens.min(self.max_context - self.width())
    }

    /// Length of the longest prompt: every row's cache starts this long.
    pub fn width(&self) -> usize {
        self.prompts.iter().map(PromptInput::len).max().unwrap_or(0)
    }

    /// Prefills the prompts `which` (in that order) as one left-padded batch into `cache`; returns each row's
    /// last-position logits and the row states to continue from.
    pub fn prefill<M: CausalLm>(
        &self,
        model: &M,
        which: &[usize],
        pad_id: u32,
        cache: &mut M::Cache,
    ) -> Result<(StepLogits, Vec<RowState>), GenerationError> {
        let width = which
            .iter()
            .map(|&i| self.prompts[i].len())
            .max()
            .unwrap_or(0);
        let mut rows = Vec::with_capacity(which.len());
        let mut positions = Vec::with_capacity(which.len());
        for &i in which {
            let len = self.prompts[i].len();
            let pad = width - len;
            let mut mask = vec![false; pad];
            mask.resize(width, true);
            let mut pos = vec![0u32; pad];
            pos.extend(0..len as u32);
            positions.push(pos);
            rows.push(RowState {
                mask,
                next_position: len as u32,
            });
        }
        let masks: Vec<Vec<bool>> = rows.iter().map(|r| r.mask.clone()).collect();
        let logits = match &self.prompts[which[0]] {
            PromptInput::Tokens(_) => {
                let ids: Vec<Vec<u32>> = which
                    .iter()
                    .map(|&i| {
                        let ids = self.prompts[i].context_ids();
                        let mut row = vec![pad_id; width - ids.len()];
                        row.extend_from_slice(ids);
                        row
                    })
                    .collect();
                step_logits(model, StepInput::Tokens(&ids), &positions, &masks, cache)?
            }
            PromptInput::Embeds { .. } => {
                let embeds = self.padded_embeds(which, width)?;
                step_logits(model, StepInput::Embeds(&embeds), &positions, &masks, cache)?
            }
        };
        Ok((logits, rows))
    }

    fn padded_embeds(&self, which: &[usize], width: usize) -> Result<Tensor, GenerationError> {
        let mut padded = Vec::with_capacity(which.len());
        for &i in which {
            let PromptInput::Embeds { embeds, .. } = &self.prompts[i] else {
                return Err(GenerationError::MixedPrompts { index: i });
            };
            let (len, hidden) = embeds.dims2()?;
            let row = if len < width {
                let zeros = Tensor::zeros((width - len, hidden), embeds.dtype(), embeds.device())?;
                Tensor::cat(&[&zeros, embeds], 0)?
            } else {
                embeds.clone()
            };
            padded.push(row);
        }
        Ok(Tensor::stack(&padded, 0)?)
    }
}

/// What a decoding step needs about one batch row.
#[derive(Debug, Clone)]
pub(crate) struct RowState {
    /// One entry per cached position: `false` for left padding.
    pub mask: Vec<bool>,
    /// Position id of the row's next token.
    pub next_position: u32,
}

/// Feeds one new token per row; `rows[i]` is the state of cache row `i`.
pub(crate) fn decode_step<M: CausalLm>(
    model: &M,
    tokens: &[u32],
    rows: &mut [RowState],
    cache: &mut M::Cache,
) -> Result<StepLogits, GenerationError> {
    let ids: Vec<Vec<u32>> = tokens.iter().map(|&t| vec![t]).collect();
    let positions: Vec<Vec<u32>> = rows.iter().map(|r| vec![r.next_position]).collect();
    for row in rows.iter_mut() {
        row.mask.push(true);
        row.next_position += 1;
    }
    let masks: Vec<Vec<bool>> = rows.iter().map(|r| r.mask.clone()).collect();
    step_logits(model, StepInput::Tokens(&ids), &positions, &masks, cache)
}
