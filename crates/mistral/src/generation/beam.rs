//! Beam search with the exact bookkeeping of transformers 5.23's `_beam_search` (the vectorised rewrite), so that
//! the same hypotheses win, down to its `-1e9` sentinels added in f32.
//!
//! Per prompt and step: log-softmax each beam's logits, apply the repetition penalty to those log-probabilities,
//! add the beam's running score, keep the best `max(2, 1 + #eos) * num_beams` continuations over all beams, mark
//! those that end (EOS, stop string, length), continue with the best `num_beams` that did not end, and let those
//! among the first `num_beams` that did end compete for the `num_beams` finished slots with
//! `score / generated_len ^ length_penalty`. A prompt is done once its early-stopping rule says no running beam can
//! improve the finished slots (then it leaves the batch) or its length budget is spent; its answer is the best
//! finished slot.

use std::collections::HashSet;

use super::batch::{decode_step, PromptBatch, RowState};
use super::config::EarlyStopping;
use super::logits::{apply_repetition_penalty, log_softmax_in_place, top_k};
use super::stop::{StopChecker, StopHit};
use super::{
    device, CausalLm, Completion, FinishReason, GenerationConfig, GenerationError, StepLogits,
};

/// transformers' sentinel for "not a candidate" scores.
const NEG: f32 = -1.0e9;

#[derive(Clone)]
struct Beam {
    tokens: Vec<u32>,
    score: f32,
    /// Ids the repetition penalty applies to (context + tokens); empty when the penalty is off.
    seen: HashSet<u32>,
    /// Which of the item's previous beams (cache rows) this one continues.
    parent: usize,
}

#[derive(Clone)]
struct Slot {
    tokens: Vec<u32>,
    score: f32,
    finished: bool,
    stop: Option<StopHit>,
}

struct Item {
    budget: usize,
    running: Vec<Beam>,
    slots: Vec<Slot>,
    improvable: bool,
}

struct Candidate {
    parent: usize,
    token: u32,
    /// The whole generated sequence, this token included.
    tokens: Vec<u32>,
    score: f32,
    hit: bool,
    stop: Option<StopHit>,
}

pub(crate) fn run<M: CausalLm>(
    model: &M,
    batch: &PromptBatch<'_>,
    config: &GenerationConfig,
    stops: &StopChecker<'_>,
) -> Result<Vec<Completion>, GenerationError> {
    let k = config.num_beams;
    let n = batch.prompts.len();
    let keep_per_step = 2usize.max(1 + config.eos_token_ids.len()) * k;
    let penalize = config.repetition_penalty != 1.0;

    let mut items: Vec<Item> = (0..n)
        .map(|prompt| {
            let seen: HashSet<u32> = if penalize {
                batch.prompts[prompt]
                    .context_ids()
                    .iter()
                    .copied()
                    .collect()
            } else {
                HashSet::new()
            };
            let running = (0..k)
                .map(|b| Beam {
                    tokens: Vec::new(),
                    score: if b == 0 { 0.0 } else { NEG },
                    seen: seen.clone(),
                    parent: b,
                })
                .collect();
            let slots = vec![
                Slot {
                    tokens: Vec::new(),
                    score: NEG,
                    finished: false,
                    stop: None
                };
                k
            ];
            Item {
                budget: batch.budget(config.max_new_tokens),
                running,
                slots,
                improvable: true,
            }
        })
        .collect();

    // Prefill each prompt once, then copy its cache row to its `k` beams.
    let mut active: Vec<usize> = (0..n).collect();
    // Prompt + every new token: the cache is allocated once and never grows while decoding.
    let capacity = batch.width() + batch.budget(config.max_new_tokens);
    let mut cache = model
        .new_cache_with_capacity(n, capacity)
        .map_err(GenerationError::Model)?;
    let (prefill_logits, prefill_rows) =
        batch.prefill(model, &active, config.pad_id(), &mut cache)?;
    let expand: Vec<usize> = (0..n).flat_map(|i| std::iter::repeat_n(i, k)).collect();
    model
        .reorder_cache(&mut cache, &expand)
        .map_err(GenerationError::Model)?;
    let mut rows: Vec<RowState> = expand.iter().map(|&i| prefill_rows[i].clone()).collect();
    let mut logits = prefill_logits.select_rows(&expand)?;
    let vocab = logits.vocab();

    let mut step = 0usize;
    loop {
        let generated_len = step + 1;
        let mut next_active = Vec::with_capacity(active.len());
        let mut reorder = Vec::with_capacity(active.len() * k);
        let mut next_tokens = Vec::with_capacity(active.len() * k);
        let continuations = best_continuations(&logits, &active, &items, config, keep_per_step)?;
        for ((pos, &item_index), best) in active.iter().enumerate().zip(continuations) {
            let item = &mut items[item_index];
            let candidates = select_candidates(item, best, vocab, config, stops, generated_len)?;
            advance_running(item, &candidates, k);
            update_finished(item, &candidates, config, generated_len);
            update_improvable(item, config, generated_len);
            let frozen = !item.improvable
                || (config.early_stopping == EarlyStopping::Always
                    && item.slots.iter().all(|s| s.finished))
                || generated_len >= item.budget;
            if !frozen {
                next_active.push(item_index);
                for beam in &item.running {
                    next_tokens.push(*beam.tokens.last().unwrap_or(&0));
                }
                reorder.extend(item.running.iter().map(|b| pos * k + b.parent));
            }
        }
        if next_active.is_empty() {
            break;
        }
        model
            .reorder_cache(&mut cache, &reorder)
            .map_err(GenerationError::Model)?;
        rows = reorder.iter().map(|&r| rows[r].clone()).collect();
        active = next_active;
        logits = decode_step(model, &next_tokens, &mut rows, &mut cache)?;
        step += 1;
    }

    Ok(items
        .into_iter()
        .map(|item| {
            let best = item.slots.into_iter().next().unwrap_or(Slot {
                tokens: Vec::new(),
                score: NEG,
                finished: false,
                stop: None,
            });
            let finish = match (&best.stop, best.tokens.last()) {
                (Some(hit), _) => FinishReason::Stop(hit.stop.clone()),
                (None, Some(t)) if config.eos_token_ids.contains(t) => FinishReason::Eos,
                _ => FinishReason::Length,
            };
            Completion {
                tokens: best.tokens,
                finish,
                stop_text: best.stop.map(|h| h.text),
                score: Some(best.score),
            }
        })
        .collect())
}

/// For each active item (its `k` beams are consecutive logits rows), the best `keep` continuations over all its
/// beams as `(beam * vocab + token, score)`, best first (transformers' `_get_top_k_continuations`): log-softmax each
/// beam's logits, apply the repetition penalty to those log-probabilities, add the beam's running score. On an
/// accelerator this runs there and only the chosen pairs come back; on the CPU it runs on the host rows.
fn best_continuations(
    logits: &StepLogits,
    active: &[usize],
    items: &[Item],
    config: &GenerationConfig,
    keep: usize,
) -> Result<Vec<Vec<(usize, f32)>>, GenerationError> {
    let beams: Vec<&Beam> = active.iter().flat_map(|&i| items[i].running.iter()).collect();
    let per_item = beams.len() / active.len().max(1);
    if device::use_device_path(logits.device()) {
        let mut scores = device::log_softmax_rows(logits.tensor())?;
        if config.repetition_penalty != 1.0 {
            let seen: Vec<&HashSet<u32>> = beams.iter().map(|b| &b.seen).collect();
            scores = device::repetition_penalty_rows(&scores, &seen, config.repetition_penalty)?;
        }
        let running: Vec<f32> = beams.iter().map(|b| b.score).collect();
        let running = candle_core::Tensor::from_vec(running, (beams.len(), 1), scores.device())?;
        let flat = scores.broadcast_add(&running)?.reshape((active.len(), ()))?;
        if let Some(best) = device::top_k_rows(&flat, keep)? {
            return Ok(best);
        }
    }
    let mut rows = logits.to_host()?;
    let mut out = Vec::with_capacity(active.len());
    for (item_rows, item_beams) in rows.chunks_mut(per_item.max(1)).zip(beams.chunks(per_item.max(1))) {
        let mut accumulated = Vec::with_capacity(item_rows.iter().map(Vec::len).sum());
        for (scores, beam) in item_rows.iter_mut().zip(item_beams) {
            log_softmax_in_place(scores);
            apply_repetition_penalty(scores, &beam.seen, config.repetition_penalty);
            accumulated.extend(scores.iter().map(|&s| s + beam.score));
        }
        out.push(top_k(&accumulated, keep));
    }
    Ok(out)
}

/// Turns an item's best continuations (from [`best_continuations`]) into candidates, marking those that end here.
fn select_candidates(
    item: &Item,
    best: Vec<(usize, f32)>,
    vocab: usize,
    config: &GenerationConfig,
    stops: &StopChecker<'_>,
    generated_len: usize,
) -> Result<Vec<Candidate>, GenerationError> {
    let mut candidates = Vec::with_capacity(best.len());
    for (index, score) in best {
        let parent = index / vocab;
        let token = (index % vocab) as u32;
        let mut tokens = Vec::with_capacity(generated_len);
        tokens.extend_from_slice(&item.running[parent].tokens);
        tokens.push(token);
        let mut stop = None;
        let hit = if config.eos_token_ids.contains(&token) || generated_len >= item.budget {
            true
        } else {
            stop = stops.check(&tokens)?;
            stop.is_some()
        };
        candidates.push(Candidate { parent, token, tokens, score, hit, stop });
    }
    Ok(candidates)
}

/// The next running beams: the best `k` candidates after pushing those that ended to `-1e9`
/// (transformers' `_get_running_beams_for_next_iteration`).
fn advance_running(item: &mut Item, candidates: &[Candidate], k: usize) {
    let masked: Vec<f32> = candidates
        .iter()
        .map(|c| if c.hit { c.score + NEG } else { c.score })
        .collect();
    let next: Vec<Beam> = top_k(&masked, k)
        .into_iter()
        .map(|(i, score)| {
            let c = &candidates[i];
            let mut seen = item.running[c.parent].seen.clone();
            if !seen.is_empty() {
                seen.insert(c.token);
            }
            Beam {
                tokens: c.tokens.clone(),
                score,
                seen,
                parent: c.parent,
            }
        })
        .collect();
    item.running = next;
}

/// Lets the first `k` candidates that ended compete for the finished slots (transformers' `_update_finished_beams`).
fn update_finished(
    item: &mut Item,
    candidates: &[Candidate],
    config: &GenerationConfig,
    generated_len: usize,
) {
    let k = item.slots.len();
    let divisor = (generated_len as f64).powf(config.length_penalty as f64) as f32;
    let full =
        config.early_stopping == EarlyStopping::Always && item.slots.iter().all(|s| s.finished);
    let mut merged: Vec<Slot> = item.slots.clone();
    for (i, c) in candidates.iter().enumerate() {
        let finished = c.hit && i < k;
        let mut score = c.score / divisor;
        if full {
            score += NEG;
        }
        if !item.improvable {
            score += NEG;
        }
        if !finished {
            score += NEG;
        }
        merged.push(Slot {
            tokens: c.tokens.clone(),
            score,
            finished,
            stop: c.stop.clone(),
        });
    }
    let scores: Vec<f32> = merged.iter().map(|s| s.score).collect();
    item.slots = top_k(&scores, k)
        .into_iter()
        .map(|(i, _)| merged[i].clone())
        .collect();
}

/// transformers' `_check_early_stop_heuristic`: can the best running beam still beat a finished slot?
fn update_improvable(item: &mut Item, config: &GenerationConfig, generated_len: usize) {
    let hypothetical_len =
        if config.early_stopping == EarlyStopping::Never && config.length_penalty > 0.0 {
            item.budget
        } else {
            generated_len
        };
    let best_running =
        item.running[0].score / (hypothetical_len as f64).powf(config.length_penalty as f64) as f32;
    let worst_finished = item
        .slots
        .iter()
        .map(|s| s.score)
        .fold(f32::INFINITY, f32::min);
    let improvable = item
        .slots
        .iter()
        .any(|s| best_running > if s.finished { worst_finished } else { NEG });
    item.improvable &= improvable;
}
