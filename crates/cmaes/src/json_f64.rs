//! JSON has no infinity: bound vectors may hold ±∞ (an unbounded side), so they are written as
//! numbers when finite and as the strings "inf" / "-inf" otherwise. NaN is refused.

use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Repr {
    Number(f64),
    Text(String),
}

fn to_repr(x: f64) -> Option<Repr> {
    if x.is_finite() {
        Some(Repr::Number(x))
    } else if x == f64::INFINITY {
        Some(Repr::Text("inf".into()))
    } else if x == f64::NEG_INFINITY {
        Some(Repr::Text("-inf".into()))
    } else {
        None
    }
}

fn from_repr(r: Repr) -> Result<f64, String> {
    match r {
        Repr::Number(x) => Ok(x),
        Repr::Text(s) => match s.as_str() {
            "inf" | "+inf" | "infinity" | "Infinity" => Ok(f64::INFINITY),
            "-inf" | "-infinity" | "-Infinity" => Ok(f64::NEG_INFINITY),
            other => Err(format!("expected a number, \"inf\" or \"-inf\", found {other:?}")),
        },
    }
}

pub fn serialize<S: Serializer>(values: &[f64], s: S) -> Result<S::Ok, S::Error> {
    let reprs: Option<Vec<Repr>> = values.iter().map(|&x| to_repr(x)).collect();
    reprs
        .ok_or_else(|| S::Error::custom("NaN cannot be stored in a bound"))?
        .serialize(s)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let reprs = Vec::<Repr>::deserialize(d)?;
    reprs
        .into_iter()
        .map(|r| from_repr(r).map_err(D::Error::custom))
        .collect()
}
