//! MGSM-JA as the paper scores it: the zero-shot Japanese chain-of-thought prompt, greedy decoding with
//! 1024 new tokens and the vLLM stop strings, and the numeric answer taken from the completion.
//!
//! Two extraction modes:
//! * [`ExtractionMode::Paper`] reproduces the reference exactly: the last match of Python's
//!   `re.findall(r"\d*\.?\d+", text)` parsed with `float()`. Its quirks are kept on purpose: "1,000" gives
//!   `0` (the comma splits the number), "-5" gives `5` (minus signs are dropped), any Unicode decimal digit
//!   counts (full-width "１２" gives `12`).
//! * [`ExtractionMode::Strict`] is a corrected extractor, never used for the paper's numbers: thousands
//!   separators, negative numbers and full-width punctuation are read as a person would (see
//!   [`extract_strict`]).
//!
//! Correctness is exact float equality with `answer_number`, as in the reference (`answer == pred`).

use std::io::{BufRead, Write};
use std::str::FromStr;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::generator::GenerationSettings;

/// The reference prompt (`JA_ALPACA_COT_TEMPLATE` in the paper's code), `{input}` = the question.
/// It ends right after `### 応答:` with no newline: the reference is a Python triple-quoted string that
/// closes on that line.
pub const MGSM_JA_PROMPT: &str = include_str!("../../../evals/prompts/mgsm_ja.txt");

/// vLLM stop strings of the reference (`CausalLMWithvLLM.post_init`).
pub const MGSM_STOP: [&str; 4] = ["Instruction:", "Instruction", "Response:", "Response"];

/// `max_tokens` of the reference sampling parameters.
pub const MGSM_MAX_NEW_TOKENS: usize = 1024;

/// Greedy decoding, 1024 new tokens, the reference stop strings.
pub fn generation_settings() -> GenerationSettings {
    GenerationSettings {
        max_new_tokens: MGSM_MAX_NEW_TOKENS,
        num_beams: 1,
        repetition_penalty: 1.0,
        stop: MGSM_STOP.iter().map(|s| s.to_string()).collect(),
    }
}

/// Fills the prompt template (Python's `str.format(input=...)` with a single `{input}` field).
pub fn render_prompt(template: &str, question: &str) -> String {
    template.replace("{input}", question)
}

/// Which answer extractor to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtractionMode {
    /// Bit-for-bit the paper's regex and `float()`, quirks included.
    #[default]
    Paper,
    /// The corrected extractor: thousands separators, negatives, full-width punctuation.
    Strict,
}

impl ExtractionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ExtractionMode::Paper => "paper",
            ExtractionMode::Strict => "strict",
        }
    }
}

impl FromStr for ExtractionMode {
    type Err = MgsmError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "paper" => Ok(Self::Paper),
            "strict" => Ok(Self::Strict),
            other => Err(MgsmError::UnknownMode(other.to_string())),
        }
    }
}

impl std::fmt::Display for ExtractionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MgsmError {
    #[error("unknown extraction mode {0:?}: use \"paper\" (the reference's regex) or \"strict\"")]
    UnknownMode(String),
    #[error("line {line}: {message}")]
    BadLine { line: usize, message: String },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Extracts the answer with the chosen mode.
pub fn extract_answer(text: &str, mode: ExtractionMode) -> Option<f64> {
    match mode {
        ExtractionMode::Paper => extract_paper(text),
        ExtractionMode::Strict => extract_strict(text),
    }
}

fn paper_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // Rust's `\d` is Unicode general category Nd, as Python's `\d` is for `str` patterns; both engines
    // return the same leftmost-first, non-overlapping matches for this pattern.
    RE.get_or_init(|| Regex::new(r"\d*\.?\d+").expect("constant regex compiles"))
}

/// The paper's `extract_answer_number`: last match of `\d*\.?\d+`, `float()` of it, `None` when no match.
///
/// Known divergence: Rust's regex tables follow a newer Unicode version than the reference's Python, so
/// decimal digits of scripts added in Unicode 15+ (e.g. Kawi, Nag Mundari, Garay) match here and not there.
pub fn extract_paper(text: &str) -> Option<f64> {
    let last = paper_regex().find_iter(text).last()?;
    parse_unicode_decimal(last.as_str())
}

/// Parses a string of Unicode decimal digits with at most one '.', as Python's `float()` does: every
/// decimal digit (any script) is first mapped to its ASCII value.
fn parse_unicode_decimal(s: &str) -> Option<f64> {
    let ascii: String = s
        .chars()
        .map(|c| {
            if c == '.' {
                Some('.')
            } else {
                decimal_digit_value(c).map(|d| (b'0' + d) as char)
            }
        })
        .collect::<Option<String>>()?;
    ascii.parse::<f64>().ok()
}

/// The numeric value of a Unicode decimal digit (category Nd).
///
/// Unicode encodes every Nd digit in contiguous runs of ten, 0 to 9; adjacent runs (the mathematical
/// digits U+1D7CE..U+1D7FF) are whole runs too, so the value is the distance from the start of the run
/// modulo ten.
pub fn decimal_digit_value(c: char) -> Option<u8> {
    if c.is_ascii_digit() {
        return Some(c as u8 - b'0');
    }
    if !is_unicode_decimal(c) {
        return None;
    }
    let mut start = c as u32;
    while let Some(prev) = start.checked_sub(1).and_then(char::from_u32) {
        if !is_unicode_decimal(prev) {
            break;
        }
        start -= 1;
    }
    Some(((c as u32 - start) % 10) as u8)
}

fn is_unicode_decimal(c: char) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"^\d$").expect("constant regex compiles"));
    let mut buf = [0u8; 4];
    re.is_match(c.encode_utf8(&mut buf))
}

/// The corrected extractor (`strict` mode). Returns the last number in the text where:
/// * any Unicode decimal digit counts, and full-width `．` `，` and the minus signs `−` (U+2212) and `－`
///   (U+FF0D) are read as their ASCII forms;
/// * a run like `1,234,567.5` with commas every three digits is one number (1234567.5); commas that are not
///   thousands separators ("1,2") separate numbers;
/// * a `-` directly before the number is a minus sign unless it follows an ASCII letter or a digit ("3-5" is a
///   range, "ID-7" a label);
/// * trailing sentence punctuation is not part of the number ("5." is 5).
pub fn extract_strict(text: &str) -> Option<f64> {
    let chars: Vec<char> = text.chars().map(normalize_strict_char).collect();
    let mut last = None;
    let mut i = 0;
    while i < chars.len() {
        let starts_number = chars[i].is_ascii_digit()
            || (chars[i] == '.' && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()));
        if !starts_number {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == ',' || chars[i] == '.') {
            i += 1;
        }
        let mut run: String = chars[start..i].iter().collect();
        while run.ends_with(['.', ',']) {
            run.pop();
        }
        let negative = start > 0
            && chars[start - 1] == '-'
            && !(start > 1 && chars[start - 2].is_ascii_alphanumeric());
        let mut tokens = strict_tokens(&run);
        if negative {
            if let Some(first) = tokens.first_mut() {
                *first = -*first;
            }
        }
        if let Some(v) = tokens.pop() {
            last = Some(v);
        }
    }
    last
}

fn normalize_strict_char(c: char) -> char {
    match c {
        '．' => '.',
        '，' => ',',
        '−' | '－' => '-',
        _ => match decimal_digit_value(c) {
            Some(d) => (b'0' + d) as char,
            None => c,
        },
    }
}

/// Numbers in a run of ASCII digits, commas and dots (no leading or trailing separator).
fn strict_tokens(run: &str) -> Vec<f64> {
    static GROUPED: OnceLock<Regex> = OnceLock::new();
    let grouped = GROUPED.get_or_init(|| {
        Regex::new(r"^\d{1,3}(,\d{3})+(\.\d+)?$").expect("constant regex compiles")
    });
    if grouped.is_match(run) {
        return run.replace(',', "").parse().ok().into_iter().collect();
    }
    run.split(',')
        .flat_map(|part| {
            paper_regex()
                .find_iter(part)
                .filter_map(|m| m.as_str().parse::<f64>().ok())
        })
        .collect()
}

/// The reference's correctness check: `answer == pred` (a missing prediction is never correct).
pub fn is_correct(pred: Option<f64>, answer_number: f64) -> bool {
    pred == Some(answer_number)
}

/// The reference's `acc_ja` language condition: fastText `__label__ja` probability strictly above 0.5
/// (for MGSM; the VQA `_ja` scores use `>= 0.5`).
pub const ACC_JA_THRESHOLD: f64 = 0.5;

/// Scores one completion: extracted prediction and correctness.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scored {
    pub pred: Option<f64>,
    pub correct: bool,
}

pub fn score(completion: &str, answer_number: f64, mode: ExtractionMode) -> Scored {
    let pred = extract_answer(completion, mode);
    Scored {
        pred,
        correct: is_correct(pred, answer_number),
    }
}

/// Input line of `evomerge score mgsm`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreInput {
    completion: String,
    answer_number: serde_json::Value,
}

/// Output line of `evomerge score mgsm`.
#[derive(Debug, Serialize)]
struct ScoreOutput {
    pred: Option<f64>,
    correct: bool,
}

/// Totals of [`score_jsonl`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreTotals {
    pub mode: ExtractionMode,
    pub items: usize,
    pub correct: usize,
    pub no_number: usize,
    /// correct / items (0 when there are no items).
    pub acc: f64,
}

/// Reads `{"completion": ..., "answer_number": ...}` lines and writes one `{"pred", "correct"}` line per
/// input line, in order. Blank lines are rejected (they would shift the line correspondence).
pub fn score_jsonl(
    input: impl BufRead,
    mut output: impl Write,
    mode: ExtractionMode,
) -> Result<ScoreTotals, MgsmError> {
    let mut totals = ScoreTotals {
        mode,
        items: 0,
        correct: 0,
        no_number: 0,
        acc: 0.0,
    };
    for (index, line) in input.lines().enumerate() {
        let line_no = index + 1;
        let line = line?;
        let bad = |message: String| MgsmError::BadLine {
            line: line_no,
            message,
        };
        if line.trim().is_empty() {
            return Err(bad(
                "empty line; expected {\"completion\": ..., \"answer_number\": ...}".into(),
            ));
        }
        let parsed: ScoreInput = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        let answer = answer_number_value(&parsed.answer_number).map_err(bad)?;
        let scored = score(&parsed.completion, answer, mode);
        totals.items += 1;
        totals.correct += scored.correct as usize;
        totals.no_number += scored.pred.is_none() as usize;
        let out = ScoreOutput {
            pred: scored.pred,
            correct: scored.correct,
        };
        serde_json::to_writer(&mut output, &out).map_err(|e| MgsmError::Io(e.into()))?;
        output.write_all(b"\n")?;
    }
    if totals.items > 0 {
        totals.acc = totals.correct as f64 / totals.items as f64;
    }
    Ok(totals)
}

/// `answer_number` as a JSON number, or a string holding one (some exports quote it).
pub fn answer_number_value(value: &serde_json::Value) -> Result<f64, String> {
    match value {
        serde_json::Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| format!("answer_number {n} is not representable as a float")),
        serde_json::Value::String(s) => s
            .trim()
            .replace(',', "")
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("answer_number {s:?} is not a number")),
        other => Err(format!("answer_number must be a number, got {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_mode_keeps_the_reference_quirks() {
        assert_eq!(extract_paper("答えは1,000円です"), Some(0.0));
        assert_eq!(extract_paper("-5度"), Some(5.0));
        assert_eq!(extract_paper("１２個"), Some(12.0));
        assert_eq!(extract_paper("1.2.3"), Some(0.3));
        assert_eq!(extract_paper("数字なし"), None);
        assert_eq!(extract_paper("𝟓"), Some(5.0));
        assert_eq!(extract_paper("٣٤"), Some(34.0));
    }

    #[test]
    fn strict_mode_reads_numbers_as_written() {
        assert_eq!(extract_strict("答えは1,000円です"), Some(1000.0));
        assert_eq!(extract_strict("合計は 1,234,567.5 ドル。"), Some(1234567.5));
        assert_eq!(extract_strict("気温は-5度"), Some(-5.0));
        assert_eq!(extract_strict("気温は−３．５度"), Some(-3.5));
        assert_eq!(extract_strict("3-5個"), Some(5.0));
        assert_eq!(extract_strict("ID-7"), Some(7.0));
        assert_eq!(extract_strict("差は-12です"), Some(-12.0));
        assert_eq!(extract_strict("答え: 18."), Some(18.0));
        assert_eq!(extract_strict("1,2"), Some(2.0));
        assert_eq!(extract_strict("１，０００"), Some(1000.0));
        assert_eq!(extract_strict("なし"), None);
        assert_eq!(extract_strict("1,0000"), Some(0.0));
    }

    #[test]
    fn mode_parsing_rejects_unknown_names() {
        assert_eq!(
            "paper".parse::<ExtractionMode>().unwrap(),
            ExtractionMode::Paper
        );
        assert!("lenient"
            .parse::<ExtractionMode>()
            .unwrap_err()
            .to_string()
            .contains("strict"));
    }

    #[test]
    fn score_jsonl_reports_the_bad_line() {
        let input = "{\"completion\": \"5\", \"answer_number\": 5}\n{\"completion\": 3}\n";
        let err = score_jsonl(input.as_bytes(), Vec::new(), ExtractionMode::Paper).unwrap_err();
        assert!(err.to_string().starts_with("line 2:"), "{err}");
    }
}
