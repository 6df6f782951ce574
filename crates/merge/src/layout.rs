//! Tensor-name layouts: where a checkpoint keeps its language-model tensors. Merging works on
//! canonical (plain Mistral/Llama) names, so a LLaVA model's LLM merges with a plain LLM; tensors
//! outside the LLM (vision tower, projector, image_newline) have no canonical name.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `model.*`, `lm_head.*` (Mistral, Llama, ...).
    Plain,
    /// llava-hf: `language_model.model.*`, `language_model.lm_head.*`, next to `vision_tower.*`,
    /// `multi_modal_projector.*`, `image_newline`.
    LlavaHf,
    /// Newer transformers: `model.language_model.*` + `lm_head.*`, next to `model.vision_tower.*`,
    /// `model.multi_modal_projector.*`, `model.image_newline`.
    LlavaNested,
    /// Original LLaVA (liuhaotian): LLM tensors are plain `model.*`/`lm_head.*`, next to
    /// `model.vision_tower.*`, `model.mm_projector.*`, `model.image_newline`.
    Liuhaotian,
}

const LIUHAOTIAN_VISION: [&str; 3] = ["model.vision_tower.", "model.mm_projector.", "model.image_newline"];

impl Layout {
    /// Detect the layout from `config.json` (`model_type`) and the tensor names.
    pub fn detect(config: Option<&Value>, names: &[String]) -> Layout {
        if names.iter().any(|n| n.starts_with("language_model.")) {
            return Layout::LlavaHf;
        }
        if names.iter().any(|n| n.starts_with("model.language_model.")) {
            return Layout::LlavaNested;
        }
        let model_type = config.and_then(|c| c.get("model_type")).and_then(Value::as_str).unwrap_or("");
        let vlm_type = model_type.starts_with("llava");
        if vlm_type || names.iter().any(|n| LIUHAOTIAN_VISION.iter().any(|p| n.starts_with(p))) {
            return Layout::Liuhaotian;
        }
        Layout::Plain
    }

    /// Canonical LLM name of a stored tensor, or `None` for tensors outside the language model.
    pub fn canonical(&self, stored: &str) -> Option<String> {
        match self {
            Layout::Plain => Some(stored.to_string()),
            Layout::LlavaHf => stored.strip_prefix("language_model.").map(str::to_string),
            Layout::LlavaNested => {
                if let Some(rest) = stored.strip_prefix("model.language_model.") {
                    Some(format!("model.{rest}"))
                } else if stored.starts_with("lm_head.") {
                    Some(stored.to_string())
                } else {
                    None
                }
            }
            Layout::Liuhaotian => {
                if LIUHAOTIAN_VISION.iter().any(|p| stored.starts_with(p)) {
                    None
                } else {
                    Some(stored.to_string())
                }
            }
        }
    }

    /// Stored name of a canonical LLM tensor in this layout.
    pub fn stored(&self, canonical: &str) -> String {
        match self {
            Layout::Plain | Layout::Liuhaotian => canonical.to_string(),
            Layout::LlavaHf => format!("language_model.{canonical}"),
            Layout::LlavaNested => match canonical.strip_prefix("model.") {
                Some(rest) => format!("model.language_model.{rest}"),
                None => canonical.to_string(),
            },
        }
    }

    pub fn is_vlm(&self) -> bool {
        !matches!(self, Layout::Plain)
    }
}

/// Splits a canonical layer tensor name `<prefix>layers.<i>.<rest>` into (layer, rest).
pub fn split_layer(canonical: &str) -> Option<(usize, &str)> {
    let pos = canonical.find("layers.")?;
    if pos > 0 && !canonical[..pos].ends_with('.') {
        return None;
    }
    let after = &canonical[pos + "layers.".len()..];
    let dot = after.find('.')?;
    let index = after[..dot].parse().ok()?;
    Some((index, &after[dot + 1..]))
}

/// Canonical name of layer `index`'s tensor `rest`, using the prefix of `template`.
pub fn layer_name(template: &str, index: usize, rest: &str) -> String {
    let pos = template.find("layers.").unwrap_or(0);
    format!("{}layers.{index}.{rest}", &template[..pos])
}

/// Vocabulary-indexed tensors (rows = tokens): they may differ in row count between models.
pub fn is_vocab_tensor(canonical: &str) -> bool {
    canonical.contains("embed_tokens") || canonical.starts_with("lm_head.") || canonical.contains(".wte.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_round_trip() {
        for (layout, stored, canonical) in [
            (Layout::LlavaHf, "language_model.model.layers.3.mlp.up_proj.weight", "model.layers.3.mlp.up_proj.weight"),
            (Layout::LlavaHf, "language_model.lm_head.weight", "lm_head.weight"),
            (Layout::LlavaNested, "model.language_model.norm.weight", "model.norm.weight"),
            (Layout::LlavaNested, "lm_head.weight", "lm_head.weight"),
            (Layout::Liuhaotian, "model.embed_tokens.weight", "model.embed_tokens.weight"),
        ] {
            assert_eq!(layout.canonical(stored).as_deref(), Some(canonical));
            assert_eq!(layout.stored(canonical), stored);
        }
        assert_eq!(Layout::LlavaHf.canonical("vision_tower.encoder.layers.0.mlp.fc1.weight"), None);
        assert_eq!(Layout::LlavaNested.canonical("model.multi_modal_projector.linear_1.weight"), None);
        assert_eq!(Layout::Liuhaotian.canonical("model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.bias"), None);
        assert_eq!(Layout::Liuhaotian.canonical("model.image_newline"), None);
    }

    #[test]
    fn layer_names_split() {
        assert_eq!(split_layer("model.layers.12.self_attn.q_proj.weight"), Some((12, "self_attn.q_proj.weight")));
        assert_eq!(split_layer("model.norm.weight"), None);
        assert_eq!(split_layer("model.xlayers.1.a"), None);
        assert_eq!(layer_name("model.layers.0.mlp.up_proj.weight", 7, "mlp.up_proj.weight"), "model.layers.7.mlp.up_proj.weight");
    }
}
