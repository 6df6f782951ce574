//! Runners driven by a scripted generator: known completions in, known scores and files out.

use std::collections::BTreeMap;

use evomerge_eval::generator::{
    Completion, GenerationSettings, Generator, GeneratorError, ImageInput, Prompt,
};
use evomerge_eval::mgsm::{ExtractionMode, MGSM_JA_PROMPT};
use evomerge_eval::runner::{
    run_mgsm, run_vqa, JapaneseProbability, MathQuestion, MgsmRunConfig, RunnerError, SkippedRow,
    VqaItemScores, VqaMetric, VqaQuestion, VqaRunConfig, VqaScores,
};

/// Answers each prompt with the completion scripted for the question it contains.
struct Scripted {
    answers: Vec<(&'static str, &'static str, bool)>,
    calls: Vec<usize>,
    seen_images: usize,
    settings_seen: Option<GenerationSettings>,
}

impl Generator for Scripted {
    fn generate(
        &mut self,
        prompts: &[Prompt],
        settings: &GenerationSettings,
    ) -> Result<Vec<Completion>, GeneratorError> {
        self.calls.push(prompts.len());
        self.settings_seen = Some(settings.clone());
        prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if let Some(ImageInput::Encoded(bytes)) = &p.image {
                    assert!(!bytes.is_empty());
                    self.seen_images += 1;
                }
                let (_, text, hit) = self
                    .answers
                    .iter()
                    .find(|(q, _, _)| p.text.contains(q))
                    .ok_or(GeneratorError::BadPrompt {
                        index: i,
                        message: "unscripted".into(),
                    })?;
                Ok(Completion {
                    text: text.to_string(),
                    new_tokens: text.chars().count(),
                    hit_max_new_tokens: *hit,
                })
            })
            .collect()
    }

    fn describe(&self) -> String {
        "scripted".into()
    }
}

/// Japanese iff the text has any kana.
struct KanaDetector;

impl JapaneseProbability for KanaDetector {
    fn ja_probability(&self, text: &str) -> f64 {
        assert!(
            !text.contains('\n'),
            "newlines must be deleted before detection"
        );
        if text.chars().any(|c| ('\u{3040}'..='\u{30ff}').contains(&c)) {
            0.9
        } else {
            0.1
        }
    }
    fn name(&self) -> String {
        "kana-test-detector".into()
    }
}

fn q(index: usize, question: &str, answer: f64) -> MathQuestion {
    MathQuestion {
        index,
        question: question.into(),
        answer_number: answer,
    }
}

#[test]
fn mgsm_run_scores_writes_files_and_counts_the_budget() {
    let mut gen = Scripted {
        answers: vec![
            ("問題A", "計算すると 3 + 5 = 8 です。\n答えは8です。", false),
            ("問題B", "The answer is 480.", false),
            ("問題C", "合計は1,000円です", true),
            ("問題D", "わかりません", false),
            ("問題E", "答えは -5 度です", false),
        ],
        calls: vec![],
        seen_images: 0,
        settings_seen: None,
    };
    let questions = vec![
        q(0, "問題A", 8.0),
        q(1, "問題B", 480.0),
        q(3, "問題C", 1000.0),
        q(4, "問題D", 1.0),
        q(5, "問題E", -5.0),
    ];
    let skipped = vec![SkippedRow {
        index: 2,
        reason: "missing answer_number".into(),
    }];
    let dir = tempfile::tempdir().unwrap();
    let mut config = MgsmRunConfig::paper("mgsm-ja");
    config.batch_size = 2;
    let mut progress = Vec::new();
    let output = run_mgsm(
        &mut gen,
        &questions,
        &skipped,
        Some(&KanaDetector),
        &config,
        &mut |done, total| progress.push((done, total)),
    )
    .unwrap();
    // The run itself writes nothing: files are the caller's choice.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let summary = &output.summary;

    // The records come back in question order, as scored.
    let records = &output.records;
    assert_eq!(
        records.iter().map(|r| r.index).collect::<Vec<_>>(),
        vec![0, 1, 3, 4, 5]
    );
    assert_eq!(
        records.iter().map(|r| r.correct).collect::<Vec<_>>(),
        vec![true, true, false, false, false]
    );
    assert_eq!(
        records.iter().map(|r| r.correct_ja).collect::<Vec<_>>(),
        vec![
            Some(true),
            Some(false),
            Some(false),
            Some(false),
            Some(false)
        ]
    );
    assert_eq!(records[0].pred, Some(8.0));
    assert_eq!(records[2].pred, Some(0.0));
    assert_eq!(records[3].pred, None);
    assert_eq!(records[4].pred, Some(5.0));
    assert_eq!(records[1].completion, "The answer is 480.");
    assert_eq!(records[1].ja_probability, Some(0.1));
    assert!(records[2].hit_max_new_tokens);

    output.write(dir.path()).unwrap();

    // Paper mode: A correct (ja), B correct (English → not ja), C wrong ("1,000" → 0), D no number,
    // E wrong (minus dropped).
    assert_eq!(summary.correct, 2);
    assert_eq!(summary.correct_ja, Some(1));
    assert_eq!(summary.metrics["acc"], 0.4);
    assert_eq!(summary.metrics["acc_ja"], 0.2);
    assert_eq!(summary.no_number, 1);
    assert_eq!(summary.hit_max_new_tokens, 1);
    assert_eq!(summary.generation.max_new_tokens, 1024);
    assert_eq!(gen.calls, vec![2, 2, 1]);
    assert_eq!(progress.last(), Some(&(5, 5)));
    let seen = gen.settings_seen.take().unwrap();
    assert_eq!(seen.num_beams, 1);
    assert_eq!(
        seen.stop,
        vec!["Instruction:", "Instruction", "Response:", "Response"]
    );

    let predictions = std::fs::read_to_string(dir.path().join("predictions.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = predictions
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[2]["index"], 3);
    assert_eq!(lines[2]["pred"], 0.0);
    assert_eq!(lines[2]["hit_max_new_tokens"], true);
    assert!(lines[3]["pred"].is_null());
    let summary_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary_json["metrics"]["acc"], 0.4);
    assert_eq!(summary_json["extraction_mode"], "paper");
    assert_eq!(summary_json["skipped_rows"][0]["index"], 2);
    assert_eq!(summary_json["generation"]["max_new_tokens"], 1024);
    assert_eq!(summary_json["hit_max_new_tokens"], 1);
    assert_eq!(summary_json["language_detector"], "kana-test-detector");
    assert_eq!(summary_json["prompt_template"], MGSM_JA_PROMPT);

    // Strict mode reads "1,000" and "-5" as written.
    let mut strict = MgsmRunConfig::paper("mgsm-ja");
    strict.mode = ExtractionMode::Strict;
    let summary = run_mgsm(&mut gen, &questions, &[], None, &strict, &mut |_, _| {})
        .unwrap()
        .summary;
    assert_eq!(summary.correct, 4);
    assert_eq!(summary.correct_ja, None);
    assert!(!summary.metrics.contains_key("acc_ja"));
}

#[test]
fn mgsm_prompts_are_the_reference_template() {
    struct Capture(Vec<String>);
    impl Generator for Capture {
        fn generate(
            &mut self,
            p: &[Prompt],
            _: &GenerationSettings,
        ) -> Result<Vec<Completion>, GeneratorError> {
            self.0.extend(p.iter().map(|p| p.text.clone()));
            Ok(p.iter()
                .map(|_| Completion {
                    text: "1".into(),
                    new_tokens: 1,
                    hit_max_new_tokens: false,
                })
                .collect())
        }
    }
    let mut cap = Capture(vec![]);
    run_mgsm(
        &mut cap,
        &[q(0, "りんごは何個？", 1.0)],
        &[],
        None,
        &MgsmRunConfig::paper("mgsm-ja"),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(
        cap.0[0],
        "以下に、あるタスクを説明する指示があります。リクエストを適切に完了するための回答を日本語で記述してください。一歩一歩考えましょう。\n\n### 指示:\nりんごは何個？\n\n### 応答:"
    );
}

#[test]
fn a_generator_that_drops_answers_is_an_error_not_a_zero() {
    struct Short;
    impl Generator for Short {
        fn generate(
            &mut self,
            _: &[Prompt],
            _: &GenerationSettings,
        ) -> Result<Vec<Completion>, GeneratorError> {
            Ok(vec![])
        }
    }
    let err = run_mgsm(
        &mut Short,
        &[q(0, "x", 1.0)],
        &[],
        None,
        &MgsmRunConfig::paper("mgsm-ja"),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("returned 0 completions for 1 prompts"),
        "{err}"
    );
}

/// Exact match ×100 per item; aggregates are plain means (enough to check the plumbing).
struct ExactMatch;

impl VqaMetric for ExactMatch {
    fn compute(
        &self,
        references: &[String],
        predictions: &[String],
        predictions_ja: Option<&[String]>,
    ) -> Result<VqaScores, RunnerError> {
        let score = |r: &String, p: &String| if r == p { 100.0 } else { 0.0 };
        let items: Vec<VqaItemScores> = references
            .iter()
            .enumerate()
            .map(|(i, r)| VqaItemScores {
                rouge_l: score(r, &predictions[i]),
                rouge_l_ja: predictions_ja.map(|pj| score(r, &pj[i])),
            })
            .collect();
        let n = items.len() as f64;
        let mut metrics = BTreeMap::new();
        metrics.insert(
            "rougeL".into(),
            items.iter().map(|s| s.rouge_l).sum::<f64>() / n,
        );
        if predictions_ja.is_some() {
            metrics.insert(
                "rougeL_ja".into(),
                items.iter().map(|s| s.rouge_l_ja.unwrap()).sum::<f64>() / n,
            );
        }
        Ok(VqaScores { items, metrics })
    }
    fn tokenizer_name(&self) -> String {
        "exact-match-test".into()
    }
}

#[test]
fn vqa_run_passes_images_strips_predictions_and_applies_the_ja_rule() {
    let mut gen = Scripted {
        answers: vec![
            ("何色", "  赤色です。\n", false),
            ("何ですか", "a blue square", true),
            ("English?", "yes", false),
        ],
        calls: vec![],
        seen_images: 0,
        settings_seen: None,
    };
    let img = vec![0x89, b'P', b'N', b'G'];
    let questions = vec![
        VqaQuestion {
            index: 0,
            question: "何色ですか？".into(),
            answer: "赤色です。".into(),
            image: img.clone(),
        },
        VqaQuestion {
            index: 1,
            question: "これは何ですか？".into(),
            answer: "a blue square".into(),
            image: img.clone(),
        },
        VqaQuestion {
            index: 2,
            question: "English?".into(),
            answer: "yes".into(),
            image: img,
        },
    ];
    // Item 1: reference is English (by the test detector) → not emptied, stays correct.
    let dir = tempfile::tempdir().unwrap();
    let config = VqaRunConfig::paper("ja-vg-vqa-500");
    let output = run_vqa(
        &mut gen,
        &questions,
        &[],
        &ExactMatch,
        Some(&KanaDetector),
        &config,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let predictions: Vec<&str> = output
        .records
        .iter()
        .map(|r| r.prediction.as_str())
        .collect();
    assert_eq!(predictions, vec!["赤色です。", "a blue square", "yes"]);
    assert_eq!(
        output
            .records
            .iter()
            .map(|r| r.counted_empty_for_ja)
            .collect::<Vec<_>>(),
        vec![Some(false); 3]
    );
    assert_eq!(output.records[1].scores.rouge_l, 100.0);
    assert!(output.records[1].hit_max_new_tokens);
    output.write(dir.path()).unwrap();
    let summary = &output.summary;
    assert_eq!(gen.seen_images, 3);
    assert_eq!(summary.metrics["rougeL"], 100.0);
    assert_eq!(summary.metrics["rougeL_ja"], 100.0);
    assert_eq!(summary.hit_max_new_tokens, 1);
    assert_eq!(summary.generation.num_beams, 5);
    assert_eq!(summary.generation.max_new_tokens, 512);
    assert_eq!(summary.generation.repetition_penalty, 1.5);
    assert_eq!(summary.tokenizer, "exact-match-test");

    // A Japanese reference answered in English counts as empty for rougeL_ja only.
    let mut gen2 = Scripted {
        answers: vec![("何色", "red", false)],
        calls: vec![],
        seen_images: 0,
        settings_seen: None,
    };
    let q2 = vec![VqaQuestion {
        index: 7,
        question: "何色ですか？".into(),
        answer: "red".into(),
        image: vec![1],
    }];
    let mut q2_ref_ja = q2.clone();
    q2_ref_ja[0].answer = "red です".into();
    gen2.answers = vec![("何色", "red です", false)];
    let s = run_vqa(
        &mut gen2,
        &q2_ref_ja,
        &[],
        &ExactMatch,
        Some(&KanaDetector),
        &VqaRunConfig::paper("x"),
        &mut |_, _| {},
    )
    .unwrap()
    .summary;
    assert_eq!(s.metrics["rougeL_ja"], 100.0);
    gen2.answers = vec![("何色", "red", false)];
    q2_ref_ja[0].answer = "あか".into();
    let s = run_vqa(
        &mut gen2,
        &q2_ref_ja,
        &[],
        &ExactMatch,
        Some(&KanaDetector),
        &VqaRunConfig::paper("x"),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(s.summary.metrics["rougeL_ja"], 0.0);
    assert_eq!(s.records[0].scores.rouge_l_ja, Some(0.0));
    let dir2 = tempfile::tempdir().unwrap();
    s.write(dir2.path()).unwrap();
    let line: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(dir2.path().join("predictions.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(line["index"], 7);
    assert_eq!(line["counted_empty_for_ja"], true);
    assert_eq!(line["prediction"], "red");

    let predictions = std::fs::read_to_string(dir.path().join("predictions.jsonl")).unwrap();
    let first: serde_json::Value =
        serde_json::from_str(predictions.lines().next().unwrap()).unwrap();
    assert_eq!(first["prediction"], "赤色です。");
    assert_eq!(first["rougeL"], 100.0);
    let _ = q2;
}
