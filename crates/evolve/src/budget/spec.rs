//! `task.budget`: how many search items a candidate answers. Written as `full`, `racing`,
//! `{subset: N, stratify: FIELD}`, `{racing: {batch, min_items, confidence}}` or
//! `{irt: N, calibration: G}`; parsed by hand so that a wrong form says which forms exist.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Value};

/// The recipe's `task.budget`.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Budget {
    /// Every search item, every trial (the paper's search).
    #[default]
    Full,
    /// A fixed, seeded subset of `items` search items (stratified by the custom rows' field
    /// `stratify` when given), the same for every trial.
    Subset { items: usize, stratify: Option<String> },
    /// Items in seeded batches; a candidate stops once it is worse than the incumbent.
    Racing(RacingSpec),
    /// `anchors` items, and an IRT estimate of the full-set score fitted on the first
    /// `calibration` generations (scored on every item).
    Irt { anchors: usize, calibration: u64 },
}

/// Racing's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RacingSpec {
    /// Items evaluated between two looks at the race.
    pub batch: usize,
    /// No candidate is dropped before it has answered this many items.
    pub min_items: usize,
    /// Probability that a candidate is not dropped when it is in fact at least as good as the
    /// incumbent (over all looks of its race: Bonferroni).
    pub confidence: f64,
}

impl Default for RacingSpec {
    fn default() -> Self {
        RacingSpec { batch: 16, min_items: 32, confidence: 0.95 }
    }
}

/// Generations scored on the full set before the IRT model is fitted, when not given.
pub const DEFAULT_CALIBRATION: u64 = 1;

impl Budget {
    pub fn is_full(&self) -> bool {
        *self == Budget::Full
    }

    /// The name used in tables and file names.
    pub fn name(&self) -> String {
        match self {
            Budget::Full => "full".into(),
            Budget::Subset { items, .. } => format!("subset:{items}"),
            Budget::Racing(_) => "racing".into(),
            Budget::Irt { anchors, .. } => format!("irt:{anchors}"),
        }
    }

    /// What is wrong with the values (the form itself was checked when parsing).
    pub fn check(&self) -> std::result::Result<(), String> {
        match self {
            Budget::Full => Ok(()),
            Budget::Subset { items: 0, .. } => Err("subset: must be at least 1 item".into()),
            Budget::Subset { .. } => Ok(()),
            Budget::Racing(r) => {
                if r.batch == 0 {
                    return Err("racing.batch must be at least 1".into());
                }
                if !(r.confidence > 0.0 && r.confidence < 1.0) {
                    return Err(format!("racing.confidence must be in (0, 1), got {}", r.confidence));
                }
                Ok(())
            }
            Budget::Irt { anchors, calibration } => {
                if *anchors < 2 {
                    return Err("irt: needs at least 2 anchor items".into());
                }
                if *calibration == 0 {
                    return Err("irt.calibration must be at least 1 generation (the IRT model is fitted on them)".into());
                }
                Ok(())
            }
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Budget::Full => json!("full"),
            Budget::Subset { items, stratify: None } => json!({ "subset": items }),
            Budget::Subset { items, stratify: Some(f) } => json!({ "subset": items, "stratify": f }),
            Budget::Racing(r) => json!({ "racing": { "batch": r.batch, "min_items": r.min_items, "confidence": r.confidence } }),
            Budget::Irt { anchors, calibration } => json!({ "irt": anchors, "calibration": calibration }),
        }
    }

    fn from_value(v: &Value) -> std::result::Result<Budget, String> {
        const FORMS: &str = "use `full`, `racing`, `{subset: N}` (optionally with `stratify: FIELD`), \
                             `{racing: {batch: 16, min_items: 32, confidence: 0.95}}` or `{irt: N}` (optionally with `calibration: G`)";
        match v {
            Value::String(s) if s == "full" => Ok(Budget::Full),
            Value::String(s) if s == "racing" => Ok(Budget::Racing(RacingSpec::default())),
            Value::String(s) => Err(format!("unknown budget `{s}`; {FORMS}")),
            Value::Object(m) => {
                let modes: Vec<&str> = ["subset", "racing", "irt"].into_iter().filter(|k| m.contains_key(*k)).collect();
                let allowed: &[&str] = match modes.as_slice() {
                    ["subset"] => &["subset", "stratify"],
                    ["racing"] => &["racing"],
                    ["irt"] => &["irt", "calibration"],
                    [] => return Err(format!("the budget names no mode; {FORMS}")),
                    _ => return Err(format!("the budget names {} modes ({}); give one", modes.len(), modes.join(", "))),
                };
                if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
                    return Err(format!("unknown key `{k}` for the {} budget; it takes {}", modes[0], allowed.join(", ")));
                }
                match modes[0] {
                    "subset" => Ok(Budget::Subset {
                        items: count(&m["subset"], "subset")?,
                        stratify: match m.get("stratify") {
                            None | Some(Value::Null) => None,
                            Some(Value::String(s)) => Some(s.clone()),
                            Some(other) => return Err(format!("stratify names a field of the data rows, got {other}")),
                        },
                    }),
                    "racing" => racing(&m["racing"]).map(Budget::Racing),
                    _ => Ok(Budget::Irt {
                        anchors: count(&m["irt"], "irt")?,
                        calibration: match m.get("calibration") {
                            None => DEFAULT_CALIBRATION,
                            Some(c) => count(c, "calibration")? as u64,
                        },
                    }),
                }
            }
            other => Err(format!("unreadable budget {other}; {FORMS}")),
        }
    }
}

fn count(v: &Value, key: &str) -> std::result::Result<usize, String> {
    v.as_u64().map(|n| n as usize).ok_or_else(|| format!("{key} takes a whole number, got {v}"))
}

fn racing(v: &Value) -> std::result::Result<RacingSpec, String> {
    let mut spec = RacingSpec::default();
    let m = match v {
        Value::Null => return Ok(spec),
        Value::Object(m) => m,
        other => return Err(format!("racing takes a map of settings (batch, min_items, confidence), got {other}")),
    };
    for (k, value) in m {
        match k.as_str() {
            "batch" => spec.batch = count(value, "racing.batch")?,
            "min_items" => spec.min_items = count(value, "racing.min_items")?,
            "confidence" => {
                spec.confidence = value.as_f64().ok_or_else(|| format!("racing.confidence takes a number, got {value}"))?
            }
            other => return Err(format!("unknown racing setting `{other}`; use batch, min_items, confidence")),
        }
    }
    Ok(spec)
}

impl Serialize for Budget {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Budget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Budget::from_value(&value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> std::result::Result<Budget, String> {
        serde_norway::from_str::<Budget>(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn every_form_parses_and_round_trips() {
        let cases = [
            ("full", Budget::Full),
            ("racing", Budget::Racing(RacingSpec::default())),
            ("{subset: 40}", Budget::Subset { items: 40, stratify: None }),
            ("{subset: 40, stratify: qtype}", Budget::Subset { items: 40, stratify: Some("qtype".into()) }),
            ("{racing: {batch: 8, confidence: 0.9}}", Budget::Racing(RacingSpec { batch: 8, min_items: 32, confidence: 0.9 })),
            ("{irt: 20}", Budget::Irt { anchors: 20, calibration: 1 }),
            ("{irt: 20, calibration: 2}", Budget::Irt { anchors: 20, calibration: 2 }),
        ];
        for (yaml, want) in cases {
            let got = parse(yaml).unwrap();
            assert_eq!(got, want, "{yaml}");
            let text = serde_json::to_string(&got).unwrap();
            assert_eq!(serde_json::from_str::<Budget>(&text).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn wrong_forms_say_what_exists() {
        for (yaml, needle) in [
            ("cheap", "unknown budget `cheap`"),
            ("{subset: 4, irt: 3}", "give one"),
            ("{subset: 4, calibration: 3}", "unknown key `calibration` for the subset budget"),
            ("{racing: {alpha: 1}}", "unknown racing setting `alpha`"),
            ("{irt: -3}", "whole number"),
            ("{}", "names no mode"),
        ] {
            let e = parse(yaml).unwrap_err();
            assert!(e.contains(needle), "{yaml}: {e}");
        }
        assert!(Budget::Subset { items: 0, stratify: None }.check().is_err());
        assert!(Budget::Racing(RacingSpec { confidence: 1.0, ..Default::default() }).check().is_err());
        assert!(Budget::Irt { anchors: 1, calibration: 1 }.check().is_err());
    }
}
