//! Trial records out of the journal: JSON lines and CSV, one record per trial in trial order.

use std::io::Write;

use crate::budget::Plan;
use crate::journal::TrialRecord;

/// One JSON object per line (genome and per-item scores included).
pub fn write_jsonl(records: &[TrialRecord], out: &mut dyn Write) -> std::io::Result<()> {
    for r in records {
        serde_json::to_writer(&mut *out, r)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// A header row, then one row per trial; every gene is a column (`param:<name>`).
pub fn write_csv(records: &[TrialRecord], out: &mut dyn Write) -> std::io::Result<()> {
    let mut genes: Vec<&str> = Vec::new();
    for r in records {
        for k in r.params.keys() {
            if !genes.contains(&k.as_str()) {
                genes.push(k);
            }
        }
    }
    let mut header: Vec<String> =
        ["trial", "phase", "generation", "candidate", "status", "fitness", "seconds", "merge_seconds", "generated_tokens", "truncated", "items", "error", "path", "worker", "wait_seconds", "plan", "rescore_of"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    header.extend(genes.iter().map(|g| format!("param:{g}")));
    writeln!(out, "{}", header.iter().map(|h| csv_field(h)).collect::<Vec<_>>().join(","))?;
    let opt = |v: Option<String>| v.unwrap_or_default();
    for r in records {
        let status = r.status.as_str();
        let mut row = vec![
            r.trial.to_string(),
            r.phase.as_str().to_string(),
            r.generation.to_string(),
            r.candidate.to_string(),
            status.to_string(),
            opt(r.fitness.map(|v| v.to_string())),
            opt(r.seconds.map(|v| format!("{v:.3}"))),
            opt(r.merge_seconds.map(|v| format!("{v:.4}"))),
            opt(r.generated_tokens.map(|v| v.to_string())),
            opt(r.truncated.map(|v| v.to_string())),
            opt(r.items.map(|v| v.to_string())),
            opt(r.error.clone()),
            opt(r.path.clone()),
            opt(r.worker.clone()),
            opt(r.wait_seconds.map(|v| format!("{v:.3}"))),
            plan_name(&r.plan),
            opt(r.rescore_of.map(|v| v.to_string())),
        ];
        row.extend(genes.iter().map(|g| opt(r.params.get(*g).map(|v| v.to_string()))));
        writeln!(out, "{}", row.iter().map(|f| csv_field(f)).collect::<Vec<_>>().join(","))?;
    }
    Ok(())
}

/// The plan in a word: `full`, `subset`, `race:<incumbent>` or `irt`.
fn plan_name(plan: &Plan) -> String {
    match plan {
        Plan::Full => "full".into(),
        Plan::Items { .. } => "subset".into(),
        Plan::Race { against } => format!("race:{against}"),
        Plan::Irt => "irt".into(),
    }
}

/// RFC 4180 quoting where needed.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::TrialStatus;

    #[test]
    fn csv_quotes_errors_and_lists_every_gene() {
        let r = TrialRecord {
            trial: 0,
            phase: Default::default(),
            generation: 0,
            candidate: 0,
            params: [("a.weight".to_string(), 0.25)].into(),
            fitness: None,
            status: TrialStatus::Failed,
            seconds: Some(1.0),
            merge_seconds: None,
            generated_tokens: None,
            truncated: None,
            items: None,
            error: Some("bad, \"very\"".into()),
            genome: vec![0.25],
            item_scores: None,
            worker: Some("node1:42".into()),
            path: None,
            wait_seconds: Some(0.5),
            plan: Plan::Race { against: 3 },
            item_ids: Some(vec![4, 1]),
            rescore_of: None,
        };
        let mut out = Vec::new();
        write_csv(&[r], &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("trial,phase,generation,candidate,status,fitness,"), "{text}");
        assert!(text.contains("param:a.weight"));
        assert!(text.contains(",worker,wait_seconds,plan,rescore_of,") && text.contains(",node1:42,0.500,race:3,,"), "{text}");
        assert!(text.contains("\"bad, \"\"very\"\"\""), "{text}");
    }
}
