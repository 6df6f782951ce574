//! Math word problems: the MGSM TSV release format and JSONL.

use std::path::Path;

use crate::{DatasetError, Loaded, MathItem, OnBadRow, RowSink};

/// Parses MGSM's TSV: `question<TAB>answer_number` per line, no quoting (a `"` is an ordinary character,
/// as with Python's `csv.QUOTE_NONE` used by the hub loader). A header line `question<TAB>answer_number`
/// is accepted and skipped. Empty lines at the end of the file are ignored; others are bad rows.
pub fn parse_math_tsv(
    text: &str,
    path: &Path,
    on_bad_row: OnBadRow,
) -> Result<Loaded<MathItem>, DatasetError> {
    let mut sink = RowSink::new(on_bad_row, path);
    let mut lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let mut index = 0;
    for (line_no, line) in lines.iter().enumerate() {
        if line_no == 0 && is_header(line) {
            continue;
        }
        sink.push(
            index,
            parse_tsv_row(line).map(|item| MathItem { index, ..item }),
        )?;
        index += 1;
    }
    Ok(Loaded {
        items: sink.items,
        skipped: sink.skipped,
        files: vec![path.to_path_buf()],
    })
}

fn is_header(line: &str) -> bool {
    let mut fields = line.split('\t');
    fields.next() == Some("question") && fields.next().is_some_and(|f| f.starts_with("answer"))
}

fn parse_tsv_row(line: &str) -> Result<MathItem, String> {
    let fields: Vec<&str> = line.split('\t').collect();
    if fields.len() < 2 {
        return Err(format!(
            "expected 2 tab-separated fields (question, answer_number), found {}",
            fields.len()
        ));
    }
    let question = fields[0];
    if question.trim().is_empty() {
        return Err("empty question".into());
    }
    let answer_number = parse_answer_number(fields[fields.len() - 1])?;
    Ok(MathItem {
        index: 0,
        question: question.to_string(),
        answer_number,
    })
}

/// An answer as the hub loader reads it: thousands separators removed, then a number.
fn parse_answer_number(field: &str) -> Result<f64, String> {
    let cleaned = field.trim().replace(',', "");
    if cleaned.is_empty() {
        return Err("missing answer_number".into());
    }
    cleaned
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("answer_number {field:?} is not a number"))
}

/// Parses JSONL rows with `question` (string) and `answer_number` (number, or a string holding one).
/// Other fields are ignored. Blank lines are ignored.
pub fn parse_math_jsonl(
    text: &str,
    path: &Path,
    on_bad_row: OnBadRow,
) -> Result<Loaded<MathItem>, DatasetError> {
    let mut sink = RowSink::new(on_bad_row, path);
    let mut index = 0;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        sink.push(
            index,
            parse_json_row(line).map(|item| MathItem { index, ..item }),
        )?;
        index += 1;
    }
    Ok(Loaded {
        items: sink.items,
        skipped: sink.skipped,
        files: vec![path.to_path_buf()],
    })
}

fn parse_json_row(line: &str) -> Result<MathItem, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
    let object = value.as_object().ok_or("not a JSON object")?;
    let question = match object.get("question") {
        Some(serde_json::Value::String(q)) if !q.trim().is_empty() => q.clone(),
        Some(serde_json::Value::String(_)) => return Err("empty question".into()),
        Some(_) => return Err("question is not a string".into()),
        None => return Err("missing field question".into()),
    };
    let answer_number = match object.get("answer_number") {
        Some(serde_json::Value::Number(n)) => n
            .as_f64()
            .ok_or_else(|| format!("answer_number {n} is not a float"))?,
        Some(serde_json::Value::String(s)) => parse_answer_number(s)?,
        Some(serde_json::Value::Null) | None => return Err("missing field answer_number".into()),
        Some(other) => return Err(format!("answer_number must be a number, got {other}")),
    };
    Ok(MathItem {
        index: 0,
        question,
        answer_number,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("x.tsv")
    }

    #[test]
    fn tsv_rows_get_their_index_and_answers_lose_commas() {
        let loaded = parse_math_tsv("q1\t5\nq2\t1,000\n", p(), OnBadRow::Fail).unwrap();
        assert_eq!(loaded.items.len(), 2);
        assert_eq!(loaded.items[1].index, 1);
        assert_eq!(loaded.items[1].answer_number, 1000.0);
    }

    #[test]
    fn tsv_bad_rows_are_skipped_or_fail_by_policy() {
        let text = "q1\t5\nno tab here\nq3\tabc\n\t4\nq5\t7\n";
        let loaded = parse_math_tsv(text, p(), OnBadRow::Skip).unwrap();
        assert_eq!(
            loaded.items.iter().map(|i| i.index).collect::<Vec<_>>(),
            vec![0, 4]
        );
        assert_eq!(
            loaded.skipped.iter().map(|b| b.index).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        let err = parse_math_tsv(text, p(), OnBadRow::Fail)
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 1"), "{err}");
    }

    #[test]
    fn jsonl_accepts_numbers_and_numeric_strings() {
        let text = "{\"question\":\"a\",\"answer_number\":3}\n\n{\"question\":\"b\",\"answer_number\":\"4\"}\n";
        let loaded = parse_math_jsonl(text, p(), OnBadRow::Fail).unwrap();
        assert_eq!(loaded.items[1].answer_number, 4.0);
        let err = parse_math_jsonl("{\"question\":\"a\"}", p(), OnBadRow::Fail).unwrap_err();
        assert!(err.to_string().contains("answer_number"));
    }
}
