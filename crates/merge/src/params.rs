//! Merge parameters: the values a recipe may give (scalar, per-layer gradient, name-filtered), their
//! declared types, and their resolution for one tensor with mergekit's precedence and interpolation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One scalar as written in the recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Number(f64),
    Text(String),
}

/// A scalar, or a list of scalars interpolated across the layers of a slice ("gradient").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Scalar(Scalar),
    Gradient(Vec<Scalar>),
}

/// `{filter: self_attn, value: ...}`: applies to tensors whose name contains `filter`
/// (no filter or `*` applies to all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditional {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    pub value: Value,
}

/// Everything a parameter key may hold in a recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Setting {
    Value(Value),
    Conditional(Conditional),
    Conditionals(Vec<Conditional>),
}

impl From<f64> for Setting {
    fn from(value: f64) -> Self {
        Setting::Value(Value::Scalar(Scalar::Number(value)))
    }
}

impl From<Vec<f64>> for Setting {
    fn from(values: Vec<f64>) -> Self {
        Setting::Value(Value::Gradient(values.into_iter().map(Scalar::Number).collect()))
    }
}

/// A parameter map as written under `parameters:`.
pub type Parameters = BTreeMap<String, Setting>;

/// A resolved parameter value for one tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Float(f64),
    Bool(bool),
    Text(String),
}

/// The type a method declares for a parameter.
#[derive(Debug, Clone, Copy)]
pub enum ParamKind {
    /// A number, optionally restricted to `[min, max]`.
    Float { min: Option<f64>, max: Option<f64> },
    /// A whole number (resolved as a float holding an integer), optionally restricted to `[min, max]`.
    Integer { min: Option<f64>, max: Option<f64> },
    Bool,
    /// `true`/`false` or one of the listed words.
    BoolOrChoice(&'static [&'static str]),
    /// One of the listed words.
    Choice(&'static [&'static str]),
}

/// Which inputs a parameter is given for (mergekit's parameter scopes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamScope {
    /// One value for the whole tensor (e.g. `t`, `lambda`, `normalize`).
    Shared,
    /// One value per input model, the base model included (e.g. linear `weight`).
    Input,
    /// One value per input model other than the base (e.g. ties `weight`, `density`).
    NonBase,
}

/// What happens when a parameter is not set anywhere.
#[derive(Debug, Clone, Copy)]
pub enum ParamDefault {
    Required,
    /// Left unset; the method treats absence itself (e.g. passthrough `scale`).
    Absent,
    Float(f64),
    Bool(bool),
    Text(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub kind: ParamKind,
    pub scope: ParamScope,
    pub default: ParamDefault,
}

impl ParamSpec {
    pub const fn new(name: &'static str, kind: ParamKind, scope: ParamScope, default: ParamDefault) -> Self {
        ParamSpec { name, kind, scope, default }
    }

    /// Convert and range-check one scalar; the error message is meant to follow the key path.
    pub fn validate(&self, scalar: &Scalar) -> Result<ParamValue, String> {
        match (&self.kind, scalar) {
            (ParamKind::Float { min, max }, _) => {
                let value = match scalar {
                    Scalar::Number(v) => *v,
                    // YAML 1.1 readers (like mergekit's) leave `1e-3` as text; accept it as a number.
                    Scalar::Text(text) => text
                        .trim()
                        .parse::<f64>()
                        .map_err(|_| format!("expected a number, found `{text}`"))?,
                    Scalar::Bool(b) => return Err(format!("expected a number, found `{b}`")),
                };
                if !value.is_finite() {
                    return Err(format!("{value} is not a finite number"));
                }
                let below = min.is_some_and(|m| value < m);
                let above = max.is_some_and(|m| value > m);
                if below || above {
                    let lo = min.map_or("-inf".to_string(), |m| m.to_string());
                    let hi = max.map_or("inf".to_string(), |m| m.to_string());
                    return Err(format!("{value} is outside [{lo}, {hi}]"));
                }
                Ok(ParamValue::Float(value))
            }
            (ParamKind::Integer { min, max }, _) => {
                let as_float = ParamSpec { kind: ParamKind::Float { min: *min, max: *max }, ..*self };
                let value = as_float.validate(scalar)?;
                match value {
                    ParamValue::Float(v) if v.fract() == 0.0 => Ok(value),
                    _ => Err(format!("expected a whole number, found `{}`", scalar_text(scalar))),
                }
            }
            (ParamKind::Bool, Scalar::Bool(b)) => Ok(ParamValue::Bool(*b)),
            (ParamKind::Bool, other) => Err(format!("expected true or false, found `{}`", scalar_text(other))),
            (ParamKind::BoolOrChoice(_), Scalar::Bool(b)) => Ok(ParamValue::Bool(*b)),
            (ParamKind::BoolOrChoice(words) | ParamKind::Choice(words), Scalar::Text(t)) if words.contains(&t.as_str()) => {
                Ok(ParamValue::Text(t.clone()))
            }
            (ParamKind::BoolOrChoice(words), other) => Err(format!(
                "expected true, false or one of {}, found `{}`",
                words.join(", "),
                scalar_text(other)
            )),
            (ParamKind::Choice(words), other) => {
                Err(format!("expected one of {}, found `{}`", words.join(", "), scalar_text(other)))
            }
        }
    }

    fn default_value(&self) -> Option<ParamValue> {
        match self.default {
            ParamDefault::Required | ParamDefault::Absent => None,
            ParamDefault::Float(v) => Some(ParamValue::Float(v)),
            ParamDefault::Bool(v) => Some(ParamValue::Bool(v)),
            ParamDefault::Text(v) => Some(ParamValue::Text(v.to_string())),
        }
    }
}

fn scalar_text(scalar: &Scalar) -> String {
    match scalar {
        Scalar::Bool(b) => b.to_string(),
        Scalar::Number(n) => n.to_string(),
        Scalar::Text(t) => t.clone(),
    }
}

/// Resolved parameters for one input (or the shared ones) of one tensor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParamSet(BTreeMap<&'static str, ParamValue>);

impl ParamSet {
    pub fn new() -> Self {
        ParamSet::default()
    }

    pub fn set(&mut self, name: &'static str, value: ParamValue) -> &mut Self {
        self.0.insert(name, value);
        self
    }

    pub fn with_float(mut self, name: &'static str, value: f64) -> Self {
        self.0.insert(name, ParamValue::Float(value));
        self
    }

    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.0.get(name)
    }

    pub fn float(&self, name: &str) -> Option<f64> {
        match self.0.get(name) {
            Some(ParamValue::Float(v)) => Some(*v),
            _ => None,
        }
    }

    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.0.get(name) {
            Some(ParamValue::Bool(v)) => Some(*v),
            _ => None,
        }
    }

    pub fn text(&self, name: &str) -> Option<&str> {
        match self.0.get(name) {
            Some(ParamValue::Text(v)) => Some(v),
            _ => None,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &ParamValue)> {
        self.0.iter().map(|(k, v)| (*k, v))
    }
}

/// Evaluate one setting for a tensor at layer position `t` in [0, 1] (mergekit's `evaluate_setting`):
/// the first conditional whose filter is a substring of `tensor_name` wins; numeric gradients are
/// interpolated linearly between neighbouring list entries, other gradients pick an entry.
/// `None` when no conditional matches (the next, less specific, scope is consulted).
pub fn evaluate(setting: &Setting, spec: &ParamSpec, tensor_name: &str, t: f64) -> Result<Option<ParamValue>, String> {
    match setting {
        Setting::Value(value) => evaluate_value(value, spec, t).map(Some),
        Setting::Conditional(cond) => evaluate_conditionals(std::slice::from_ref(cond), spec, tensor_name, t),
        Setting::Conditionals(conds) => evaluate_conditionals(conds, spec, tensor_name, t),
    }
}

fn evaluate_conditionals(
    conds: &[Conditional],
    spec: &ParamSpec,
    tensor_name: &str,
    t: f64,
) -> Result<Option<ParamValue>, String> {
    for cond in conds {
        let matches = match cond.filter.as_deref() {
            None | Some("*") => true,
            Some(filter) => !tensor_name.is_empty() && tensor_name.contains(filter),
        };
        if matches {
            return evaluate_value(&cond.value, spec, t).map(Some);
        }
    }
    Ok(None)
}

fn evaluate_value(value: &Value, spec: &ParamSpec, t: f64) -> Result<ParamValue, String> {
    match value {
        Value::Scalar(s) => spec.validate(s),
        Value::Gradient(list) => {
            if list.is_empty() {
                return Err("a gradient list needs at least one value".into());
            }
            let values = list.iter().map(|s| spec.validate(s)).collect::<Result<Vec<_>, _>>()?;
            let floats: Option<Vec<f64>> = values
                .iter()
                .map(|v| match v {
                    ParamValue::Float(f) => Some(*f),
                    _ => None,
                })
                .collect();
            let scaled = t * (list.len() - 1) as f64;
            let i0 = (scaled as usize).min(list.len() - 1);
            match floats {
                Some(f) => {
                    let i1 = (i0 + 1).min(list.len() - 1);
                    let frac = scaled - i0 as f64;
                    let v = (1.0 - frac) * f[i0] + frac * f[i1];
                    spec.validate(&Scalar::Number(v))
                }
                None => Ok(values[i0].clone()),
            }
        }
    }
}

/// Check every scalar a setting can produce (so range errors surface at load time, naming the key).
pub fn validate_setting(setting: &Setting, spec: &ParamSpec, key: &str) -> Result<(), crate::MergeError> {
    let check_value = |value: &Value, key: &str| -> Result<(), crate::MergeError> {
        match value {
            Value::Scalar(s) => spec.validate(s).map(|_| ()).map_err(|m| crate::MergeError::config(key, m)),
            Value::Gradient(list) => {
                if list.is_empty() {
                    return Err(crate::MergeError::config(key, "a gradient list needs at least one value"));
                }
                for (i, s) in list.iter().enumerate() {
                    spec.validate(s).map_err(|m| crate::MergeError::config(format!("{key}[{i}]"), m))?;
                }
                Ok(())
            }
        }
    };
    match setting {
        Setting::Value(v) => check_value(v, key),
        Setting::Conditional(c) => check_value(&c.value, &format!("{key}.value")),
        Setting::Conditionals(conds) => {
            for (i, c) in conds.iter().enumerate() {
                check_value(&c.value, &format!("{key}[{i}].value"))?;
            }
            Ok(())
        }
    }
}

/// Resolve one parameter from scopes ordered most specific first; falls back to the default.
pub fn resolve(
    spec: &ParamSpec,
    scopes: &[Option<&Parameters>],
    tensor_name: &str,
    t: f64,
) -> Result<Option<ParamValue>, String> {
    for scope in scopes.iter().flatten() {
        if let Some(setting) = scope.get(spec.name) {
            if let Some(value) = evaluate(setting, spec, tensor_name, t)? {
                return Ok(Some(value));
            }
        }
    }
    Ok(spec.default_value())
}
