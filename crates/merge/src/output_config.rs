//! The merged model's `config.json` and chat template: its language model's layer count, vocabulary size and
//! dtype set for the output layout (nested `text_config` or flat), and the template the recipe names or its
//! sources carry.

use std::collections::BTreeSet;

use evomerge_checkpoint::Dtype;
use serde_json::Value;

use crate::config::MergeConfig;
use crate::layout::Layout;
use crate::source::TensorSource;
use crate::MergeError;

/// Output config: layer count, vocabulary size and dtype of the merged model, whose layout is
/// `layout`.
pub(crate) fn update_config(config: &mut Value, layout: Layout, layers: usize, vocab_rows: Option<usize>, dtype: Option<Dtype>) {
    let Some(obj) = config.as_object_mut() else { return };
    // llava-hf and newer transformers LLaVA configs keep the language model's hyper-parameters in
    // `text_config`; one left out (all defaults) is created, since top-level keys would be ignored.
    // Original LLaVA configs are flat, like plain LLMs'.
    let nested = matches!(layout, Layout::LlavaHf | Layout::LlavaNested);
    if nested && !obj.get("text_config").is_some_and(Value::is_object) {
        obj.insert("text_config".into(), Value::Object(Default::default()));
    }
    if let Some(rows) = vocab_rows {
        // Older LlavaConfigs repeat the text vocabulary size at the top.
        if obj.get("text_config").is_some_and(Value::is_object) && obj.contains_key("vocab_size") {
            obj.insert("vocab_size".into(), Value::from(rows));
        }
    }
    let text = match obj.get_mut("text_config").and_then(Value::as_object_mut) {
        Some(text) => {
            set_llm_shape(text, layers, vocab_rows);
            // The merged LLM takes the output dtype; `vision_config`'s is left, as the vision
            // tower is copied as stored.
            if let Some(dtype) = dtype {
                for k in ["dtype", "torch_dtype"] {
                    if text.contains_key(k) {
                        text.insert(k.to_string(), Value::from(dtype.torch_name()));
                    }
                }
            }
            true
        }
        None => false,
    };
    if !text {
        set_llm_shape(obj, layers, vocab_rows);
    }
    if let Some(dtype) = dtype {
        let keys: BTreeSet<&str> = ["dtype", "torch_dtype"].into_iter().filter(|k| obj.contains_key(*k)).collect();
        if keys.is_empty() {
            obj.insert("torch_dtype".into(), Value::from(dtype.torch_name()));
        }
        for k in keys {
            obj.insert(k.to_string(), Value::from(dtype.torch_name()));
        }
    }
}

fn set_llm_shape(target: &mut serde_json::Map<String, Value>, layers: usize, vocab_rows: Option<usize>) {
    target.insert("num_hidden_layers".into(), Value::from(layers));
    if let Some(rows) = vocab_rows {
        target.insert("vocab_size".into(), Value::from(rows));
    }
}

/// The recipe's `chat_template` as text. `auto` takes the template most input models have
/// (as mergekit; on a tie the first in recipe order), or none when no model has one.
pub(crate) fn resolve_chat_template(config: &MergeConfig, sources: &[&dyn TensorSource]) -> Result<Option<String>, MergeError> {
    let Some(value) = config.chat_template.as_deref() else { return Ok(None) };
    if let Some(text) = crate::config::chat_template_text(value)? {
        return Ok(Some(text));
    }
    let mut counts: Vec<(String, usize)> = Vec::new();
    for source in sources {
        let Some(template) = source.files_dir().and_then(model_chat_template) else { continue };
        match counts.iter_mut().find(|(t, _)| *t == template) {
            Some((_, n)) => *n += 1,
            None => counts.push((template, 1)),
        }
    }
    // `max_by_key` keeps the last maximum; reverse so the first in recipe order wins ties.
    Ok(counts.into_iter().rev().max_by_key(|(_, n)| *n).map(|(t, _)| t))
}

/// A model directory's chat template (`chat_template.jinja`, else `tokenizer_config.json`'s
/// string `chat_template`), trimmed as mergekit compares them.
fn model_chat_template(dir: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("chat_template.jinja")).ok().or_else(|| {
        let config: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?).ok()?;
        config.get("chat_template")?.as_str().map(str::to_string)
    })?;
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_update_follows_the_output_layout() {
        let mut nested = json!({
            "model_type": "llava", "vocab_size": 10, "torch_dtype": "float16",
            "text_config": {"torch_dtype": "float16", "vocab_size": 10, "num_hidden_layers": 2},
            "vision_config": {"torch_dtype": "float16"}
        });
        update_config(&mut nested, Layout::LlavaHf, 3, Some(12), Some(Dtype::BF16));
        assert_eq!(
            nested,
            json!({
                "model_type": "llava", "vocab_size": 12, "torch_dtype": "bfloat16",
                "text_config": {"torch_dtype": "bfloat16", "vocab_size": 12, "num_hidden_layers": 3},
                "vision_config": {"torch_dtype": "float16"}
            })
        );
        let mut flat = json!({"model_type": "llava_mistral", "num_hidden_layers": 2, "vocab_size": 10});
        update_config(&mut flat, Layout::Liuhaotian, 3, Some(12), None);
        assert_eq!(flat, json!({"model_type": "llava_mistral", "num_hidden_layers": 3, "vocab_size": 12}));
        let mut bare = json!({"model_type": "llava"});
        update_config(&mut bare, Layout::LlavaNested, 3, None, None);
        assert_eq!(bare, json!({"model_type": "llava", "text_config": {"num_hidden_layers": 3}}));
    }
}
