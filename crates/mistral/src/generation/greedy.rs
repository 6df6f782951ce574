//! Greedy decoding of a left-padded batch; finished rows leave the batch.

use std::collections::HashSet;

use super::batch::{decode_step, PromptBatch};
use super::stop::StopChecker;
use super::{CausalLm, Completion, FinishReason, GenerationConfig, GenerationError};

pub(crate) fn run<M: CausalLm>(
    model: &M,
    batch: &PromptBatch<'_>,
    config: &GenerationConfig,
    stops: &StopChecker<'_>,
) -> Result<Vec<Completion>, GenerationError> {
    let n = batch.prompts.len();
    let mut active: Vec<usize> = (0..n).collect();
    // Prompt + every new token: the cache is allocated once and never grows while decoding.
    let capacity = batch.width() + batch.budget(config.max_new_tokens);
    let mut cache = model
        .new_cache_with_capacity(n, capacity)
        .map_err(GenerationError::Model)?;
    let (mut logits, mut rows) = batch.prefill(model, &active, config.pad_id(), &mut cache)?;
    let penalize = config.repetition_penalty != 1.0;
    let mut seen: Vec<HashSet<u32>> = batch
        .prompts
        .iter()
        .map(|p| {
            if penalize {
                p.context_ids().iter().copied().collect()
            } else {
                HashSet::new()
            }
        })
        .collect();
    let mut generated: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut done: Vec<Option<Completion>> = vec![None; n];

    loop {
        // Without a penalty only the chosen ids need to leave the device.
        let chosen: Vec<u32> = match penalize {
            false => logits.argmax_rows()?,
            true => {
                let rows: Vec<&HashSet<u32>> = active.iter().map(|&prompt| &seen[prompt]).collect();
                logits.penalized_argmax_rows(&rows, config.repetition_penalty)?
            }
        };
        let mut keep = Vec::with_capacity(active.len());
        let mut next_tokens = Vec::with_capacity(active.len());
        for (row, &prompt) in active.iter().enumerate() {
            let token = chosen[row];
            generated[prompt].push(token);
            if penalize {
                seen[prompt].insert(token);
            }
            let (finish, stop_text) = if config.eos_token_ids.contains(&token) {
                (Some(FinishReason::Eos), None)
            } else if let Some(hit) = stops.check(&generated[prompt])? {
                (Some(FinishReason::Stop(hit.stop)), Some(hit.text))
            } else if generated[prompt].len() >= batch.budget(config.max_new_tokens) {
                (Some(FinishReason::Length), None)
            } else {
                (None, None)
            };
            match finish {
                Some(finish) => {
                    done[prompt] = Some(Completion {
                        tokens: std::mem::take(&mut generated[prompt]),
                        finish,
                        stop_text,
                        score: None,
                    })
                }
                None => {
                    keep.push(row);
                    next_tokens.push(token);
                }
            }
        }
        if keep.is_empty() {
            break;
        }
        if keep.len() < active.len() {
            model
                .reorder_cache(&mut cache, &keep)
                .map_err(GenerationError::Model)?;
            rows = keep.iter().map(|&r| rows[r].clone()).collect();
            active = keep.iter().map(|&r| active[r]).collect();
        }
        logits = decode_step(model, &next_tokens, &mut rows, &mut cache)?;
    }
    Ok(done
        .into_iter()
        .map(|c| c.expect("every prompt finishes before the loop ends"))
        .collect())
}
