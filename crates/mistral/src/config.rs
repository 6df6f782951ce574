//! `config.json` of Mistral, Llama and `evomistral` checkpoints, in both layouts found in the wild: the classic
//! one (`rope_theta` at top level, as on the hub's Mistral-7B models) and the newer one (`rope_parameters`, as
//! transformers ≥ 5 writes).

use std::path::Path;

use serde_json::Value;

use crate::error::{MistralError, Result};

/// Which architecture family the checkpoint declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelType {
    Mistral,
    Llama,
    /// SakanaAI's data-flow merge format: a Mistral layer pool plus `model.input_layers`/`model.input_scales`.
    EvoMistral,
}

/// The decoder's hyper-parameters, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub model_type: ModelType,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    /// Layers stored in the checkpoint (for `evomistral`: the size of the layer pool).
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    /// Mistral only: a token attends to itself and the `sliding_window - 1` tokens before it.
    pub sliding_window: Option<usize>,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// `evomistral` only: the length of the layer path.
    pub num_hops: Option<usize>,
}

// Defaults are transformers 5.23's where a field is optional there.
const DEFAULT_ROPE_THETA: f64 = 10_000.0;
const DEFAULT_RMS_EPS: f64 = 1e-6;
const DEFAULT_MISTRAL_SLIDING_WINDOW: usize = 4096;

impl Config {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| MistralError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|source| MistralError::Json {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_json(&value)
    }

    /// Validates a parsed `config.json`.
    pub fn from_json(v: &Value) -> Result<Config> {
        let model_type = match v.get("model_type").and_then(Value::as_str) {
            Some("mistral") => ModelType::Mistral,
            Some("llama") => ModelType::Llama,
            Some("evomistral") => ModelType::EvoMistral,
            Some(other) => return Err(MistralError::UnsupportedModelType(other.to_string())),
            None => return Err(MistralError::MissingConfigField("model_type")),
        };
        let hidden_size = required_usize(v, "hidden_size")?;
        let num_attention_heads = required_usize(v, "num_attention_heads")?;
        let num_key_value_heads =
            optional_usize(v, "num_key_value_heads")?.unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(MistralError::InvalidConfig {
                field: "num_key_value_heads",
                reason: format!(
                    "{num_key_value_heads} does not divide num_attention_heads = {num_attention_heads}"
                ),
            });
        }
        let head_dim = match optional_usize(v, "head_dim")? {
            Some(d) => d,
            None => hidden_size / num_attention_heads,
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(MistralError::InvalidConfig {
                field: "head_dim",
                reason: format!("{head_dim} must be even and positive for rotary embeddings"),
            });
        }
        let rope_theta = rope_theta(v)?;
        let hidden_act = v
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("silu");
        if hidden_act != "silu" {
            return Err(MistralError::InvalidConfig {
                field: "hidden_act",
                reason: format!("`{hidden_act}` is not supported (only `silu`)"),
            });
        }
        for field in ["attention_bias", "mlp_bias"] {
            if v.get(field).and_then(Value::as_bool) == Some(true) {
                return Err(MistralError::InvalidConfig {
                    field,
                    reason: "projection biases are not supported (Mistral and Llama-2/3 have none)"
                        .into(),
                });
            }
        }
        let sliding_window = match model_type {
            ModelType::Llama => None,
            ModelType::Mistral | ModelType::EvoMistral => match v.get("sliding_window") {
                None => Some(DEFAULT_MISTRAL_SLIDING_WINDOW),
                Some(Value::Null) => None,
                Some(_) => Some(required_usize(v, "sliding_window")?),
            },
        };
        let rms_norm_eps = match v.get("rms_norm_eps") {
            None | Some(Value::Null) => DEFAULT_RMS_EPS,
            Some(x) => x.as_f64().ok_or(MistralError::InvalidConfig {
                field: "rms_norm_eps",
                reason: format!("expected a number, found {x}"),
            })?,
        };
        let num_hops = match model_type {
            ModelType::EvoMistral => Some(required_usize(v, "num_hops")?),
            _ => None,
        };
        let config = Config {
            model_type,
            vocab_size: required_usize(v, "vocab_size")?,
            hidden_size,
            intermediate_size: required_usize(v, "intermediate_size")?,
            num_hidden_layers: required_usize(v, "num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps,
            rope_theta,
            max_position_embeddings: required_usize(v, "max_position_embeddings")?,
            sliding_window,
            tie_word_embeddings: v
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            bos_token_id: optional_usize(v, "bos_token_id")?.map(|x| x as u32),
            eos_token_ids: eos_ids(v)?,
            num_hops,
        };
        for (field, value) in [
            ("vocab_size", config.vocab_size),
            ("hidden_size", config.hidden_size),
            ("intermediate_size", config.intermediate_size),
            ("num_attention_heads", config.num_attention_heads),
            ("max_position_embeddings", config.max_position_embeddings),
        ] {
            if value == 0 {
                return Err(MistralError::InvalidConfig {
                    field,
                    reason: "must be positive".into(),
                });
            }
        }
        Ok(config)
    }

    /// How many query heads share one key/value head.
    pub fn num_kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Whether two configs describe layers that can sit in one layer pool and feed each other.
    pub fn layers_compatible(&self, other: &Config) -> Result<()> {
        let fields = [
            ("hidden_size", self.hidden_size, other.hidden_size),
            (
                "intermediate_size",
                self.intermediate_size,
                other.intermediate_size,
            ),
            (
                "num_attention_heads",
                self.num_attention_heads,
                other.num_attention_heads,
            ),
            (
                "num_key_value_heads",
                self.num_key_value_heads,
                other.num_key_value_heads,
            ),
            ("head_dim", self.head_dim, other.head_dim),
        ];
        for (name, a, b) in fields {
            if a != b {
                return Err(MistralError::IncompatiblePool(format!(
                    "{name} is {a} in one model and {b} in the other"
                )));
            }
        }
        if self.rope_theta != other.rope_theta {
            return Err(MistralError::IncompatiblePool(format!(
                "rope_theta is {} in one model and {} in the other",
                self.rope_theta, other.rope_theta
            )));
        }
        Ok(())
    }

    /// The config as a Mistral `config.json` (classic layout) plus `extra` fields.
    pub fn to_json(&self) -> Value {
        let model_type = match self.model_type {
            ModelType::Mistral => "mistral",
            ModelType::Llama => "llama",
            ModelType::EvoMistral => "evomistral",
        };
        let mut v = serde_json::json!({
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "sliding_window": self.sliding_window,
            "tie_word_embeddings": self.tie_word_embeddings,
            "bos_token_id": self.bos_token_id,
        });
        let eos = match self.eos_token_ids.as_slice() {
            [] => Value::Null,
            [one] => Value::from(*one),
            many => Value::from(many.to_vec()),
        };
        v["eos_token_id"] = eos;
        if let Some(h) = self.num_hops {
            v["num_hops"] = Value::from(h);
        }
        v
    }
}

fn required_usize(v: &Value, field: &'static str) -> Result<usize> {
    optional_usize(v, field)?.ok_or(MistralError::MissingConfigField(field))
}

fn optional_usize(v: &Value, field: &'static str) -> Result<Option<usize>> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or(MistralError::InvalidConfig {
                field,
                reason: format!("expected a non-negative integer, found {x}"),
            }),
    }
}

/// `rope_theta` from either layout; only the default (unscaled) rotary embedding is supported.
fn rope_theta(v: &Value) -> Result<f64> {
    let params = v
        .get("rope_parameters")
        .or_else(|| v.get("rope_scaling"))
        .filter(|p| !p.is_null());
    if let Some(p) = params {
        let kind = p
            .get("rope_type")
            .or_else(|| p.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        if kind != "default" {
            return Err(MistralError::InvalidConfig {
                field: "rope_parameters",
                reason: format!("rope_type `{kind}` is not supported (only `default`)"),
            });
        }
        if let Some(theta) = p.get("rope_theta") {
            return theta.as_f64().ok_or(MistralError::InvalidConfig {
                field: "rope_parameters",
                reason: format!("rope_theta must be a number, found {theta}"),
            });
        }
    }
    match v.get("rope_theta") {
        None | Some(Value::Null) => Ok(DEFAULT_ROPE_THETA),
        Some(t) => t.as_f64().ok_or(MistralError::InvalidConfig {
            field: "rope_theta",
            reason: format!("expected a number, found {t}"),
        }),
    }
}

fn eos_ids(v: &Value) -> Result<Vec<u32>> {
    match v.get("eos_token_id") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|x| {
                x.as_u64()
                    .map(|n| n as u32)
                    .ok_or(MistralError::InvalidConfig {
                        field: "eos_token_id",
                        reason: format!("expected token ids, found {x}"),
                    })
            })
            .collect(),
        Some(x) => x
            .as_u64()
            .map(|n| vec![n as u32])
            .ok_or(MistralError::InvalidConfig {
                field: "eos_token_id",
                reason: format!("expected a token id, found {x}"),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> Value {
        serde_json::json!({
            "model_type": "mistral", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 32
        })
    }

    #[test]
    fn classic_and_new_layouts_agree() {
        let mut classic = minimal();
        classic["rope_theta"] = 1e6.into();
        let mut newer = minimal();
        newer["rope_parameters"] = serde_json::json!({"rope_type": "default", "rope_theta": 1e6});
        let a = Config::from_json(&classic).unwrap();
        let b = Config::from_json(&newer).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.rope_theta, 1e6);
        assert_eq!(a.head_dim, 4);
        assert_eq!(a.num_key_value_heads, 2);
        assert_eq!(
            a.sliding_window,
            Some(4096),
            "transformers' Mistral default"
        );
    }

    #[test]
    fn missing_fields_are_named() {
        for field in [
            "hidden_size",
            "vocab_size",
            "num_hidden_layers",
            "intermediate_size",
            "model_type",
        ] {
            let mut v = minimal();
            v.as_object_mut().unwrap().remove(field);
            let err = Config::from_json(&v).unwrap_err();
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn unsupported_rope_and_heads_are_refused() {
        let mut v = minimal();
        v["rope_parameters"] = serde_json::json!({"rope_type": "yarn", "rope_theta": 1e6});
        assert!(Config::from_json(&v)
            .unwrap_err()
            .to_string()
            .contains("yarn"));
        let mut v = minimal();
        v["num_key_value_heads"] = 3.into();
        assert!(Config::from_json(&v)
            .unwrap_err()
            .to_string()
            .contains("num_key_value_heads"));
        let mut v = minimal();
        v["attention_bias"] = true.into();
        let err = Config::from_json(&v).unwrap_err().to_string();
        assert!(err.contains("attention_bias"), "{err}");
    }
}
