//! Every loader on the committed samples in `datasets/` (made by `datasets/generate_samples.py`), bad
//! rows under both policies, and hub-cache resolution without network.

use std::path::PathBuf;

use evomerge_datasets::{hub, load_math, load_vqa, Benchmark, DataSource, DatasetError, OnBadRow};

fn sample(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../datasets")
        .join(name)
}

fn local(name: &str) -> DataSource {
    DataSource::Local(sample(name))
}

#[test]
fn mgsm_tsv_sample_loads_with_numeric_answers() {
    let loaded = load_math(
        Benchmark::MgsmJa,
        &local("mgsm_ja_sample.tsv"),
        OnBadRow::Fail,
    )
    .unwrap();
    assert_eq!(loaded.items.len(), 6);
    assert!(loaded.skipped.is_empty());
    assert!(loaded.items[0].question.starts_with("りんごが3個"));
    assert_eq!(loaded.items[0].answer_number, 8.0);
    assert_eq!(loaded.items[4].answer_number, 250.0);
    assert_eq!(
        loaded.items.iter().map(|i| i.index).collect::<Vec<_>>(),
        (0..6).collect::<Vec<_>>()
    );
}

#[test]
fn gsm8k_jsonl_sample_loads() {
    let loaded = load_math(
        Benchmark::Gsm8kJaSearch,
        &local("gsm8k_ja_sample.jsonl"),
        OnBadRow::Fail,
    )
    .unwrap();
    assert_eq!(loaded.items.len(), 4);
    assert_eq!(loaded.items[2].answer_number, 180.0);
}

#[test]
fn vg_vqa_parquet_uses_the_first_qa_pair_of_each_row() {
    let loaded = load_vqa(
        Benchmark::JaVgVqa500,
        &local("ja_vg_vqa_sample.parquet"),
        OnBadRow::Fail,
    )
    .unwrap();
    assert_eq!(loaded.items.len(), 3);
    assert_eq!(loaded.items[0].question, "何色の丸ですか？");
    assert_eq!(loaded.items[0].answer, "赤色です。");
    assert_eq!(loaded.items[2].question, "図形の色は？");
    // Image bytes are passed on undecoded: PNG and JPEG signatures survive.
    assert!(loaded.items[0].image.starts_with(b"\x89PNG"));
    assert!(loaded.items[1].image.starts_with(&[0xFF, 0xD8]));
}

#[test]
fn vlm_wild_parquet_loads_flat_rows() {
    let loaded = load_vqa(
        Benchmark::JaVlmWild,
        &local("ja_vlm_wild_sample.parquet"),
        OnBadRow::Fail,
    )
    .unwrap();
    assert_eq!(loaded.items.len(), 3);
    assert_eq!(loaded.items[1].answer, "紫色です。");
    // Two questions share one image, as in the real benchmark.
    assert_eq!(loaded.items[0].image, loaded.items[2].image);
}

#[test]
fn a_directory_source_finds_the_test_split_file_of_the_right_format() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let test_file = dir.path().join("data/test-00000-of-00001.parquet");
    std::fs::copy(sample("ja_vlm_wild_sample.parquet"), &test_file).unwrap();
    std::fs::copy(
        sample("ja_vlm_wild_sample.parquet"),
        dir.path().join("data/train-00000-of-00001.parquet"),
    )
    .unwrap();
    std::fs::write(dir.path().join("README.md"), "card").unwrap();
    let src = DataSource::Local(dir.path().to_path_buf());
    let loaded = load_vqa(Benchmark::JaVlmWild, &src, OnBadRow::Fail).unwrap();
    assert_eq!(loaded.items.len(), 3);
    assert_eq!(loaded.files, vec![test_file]);
    let err = load_math(Benchmark::MgsmJa, &src, OnBadRow::Fail)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no .tsv file"), "{err}");
}

#[test]
fn bad_tsv_rows_are_reported_by_index() {
    let src = local("bad/mgsm_ja_bad.tsv");
    let loaded = load_math(Benchmark::MgsmJa, &src, OnBadRow::Skip).unwrap();
    assert_eq!(
        loaded.items.iter().map(|i| i.index).collect::<Vec<_>>(),
        vec![0, 4]
    );
    let skipped: Vec<usize> = loaded.skipped.iter().map(|b| b.index).collect();
    assert_eq!(skipped, vec![1, 2, 3]);
    assert!(
        loaded.skipped[0].reason.contains("tab-separated"),
        "{:?}",
        loaded.skipped[0]
    );
    match load_math(Benchmark::MgsmJa, &src, OnBadRow::Fail) {
        Err(DatasetError::BadRow { index: 1, .. }) => {}
        other => panic!("expected a bad-row error at row 1, got {other:?}"),
    }
}

#[test]
fn bad_jsonl_rows_are_reported_by_index() {
    let src = local("bad/gsm8k_ja_bad.jsonl");
    let loaded = load_math(Benchmark::Gsm8kJaSearch, &src, OnBadRow::Skip).unwrap();
    assert_eq!(
        loaded.items.iter().map(|i| i.index).collect::<Vec<_>>(),
        vec![0, 2]
    );
    assert_eq!(loaded.items[1].answer_number, 7.0);
    assert_eq!(
        loaded.skipped.iter().map(|b| b.index).collect::<Vec<_>>(),
        vec![1, 3]
    );
    let err = load_math(Benchmark::Gsm8kJaSearch, &src, OnBadRow::Fail)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("row 1") && err.contains("answer_number"),
        "{err}"
    );
}

#[test]
fn bad_vqa_rows_corrupt_truncated_or_missing_images_and_fields() {
    let src = local("bad/ja_vg_vqa_bad.parquet");
    let loaded = load_vqa(Benchmark::JaVgVqa500, &src, OnBadRow::Skip).unwrap();
    assert_eq!(
        loaded.items.iter().map(|i| i.index).collect::<Vec<_>>(),
        vec![0, 6]
    );
    let reasons: Vec<(usize, &str)> = loaded
        .skipped
        .iter()
        .map(|b| (b.index, b.reason.as_str()))
        .collect();
    assert_eq!(
        reasons.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert!(reasons[0].1.contains("does not decode"), "{reasons:?}");
    assert!(
        reasons[1].1.contains("no question-answer pair"),
        "{reasons:?}"
    );
    assert!(reasons[2].1.contains("does not decode"), "{reasons:?}");
    assert!(reasons[3].1.contains("answer"), "{reasons:?}");
    assert!(reasons[4].1.contains("missing image"), "{reasons:?}");
    let err = load_vqa(Benchmark::JaVgVqa500, &src, OnBadRow::Fail)
        .unwrap_err()
        .to_string();
    assert!(err.contains("row 1"), "{err}");

    let wild = load_vqa(
        Benchmark::JaVlmWild,
        &local("bad/ja_vlm_wild_bad.parquet"),
        OnBadRow::Skip,
    )
    .unwrap();
    assert_eq!(
        wild.items.iter().map(|i| i.index).collect::<Vec<_>>(),
        vec![0, 2]
    );
    assert_eq!(
        wild.skipped.iter().map(|b| b.index).collect::<Vec<_>>(),
        vec![1, 3]
    );
}

#[test]
fn wrong_format_and_missing_columns_are_clear_errors() {
    let err = load_vqa(
        Benchmark::JaVgVqa500,
        &local("ja_vlm_wild_sample.parquet"),
        OnBadRow::Skip,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no column \"qas\""), "{err}");
    let err = load_math(
        Benchmark::MgsmJa,
        &local("ja_vlm_wild_sample.parquet"),
        OnBadRow::Skip,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains(".tsv or .jsonl"), "{err}");
    let err = load_math(
        Benchmark::MgsmJa,
        &local("does-not-exist.tsv"),
        OnBadRow::Skip,
    )
    .unwrap_err();
    assert!(matches!(err, DatasetError::Io { .. }));
}

/// Lays out a hub cache like hf-hub/huggingface_hub do: refs/main → commit, snapshots/<commit>/files.
fn fake_cache(repo_folder: &str, files: &[(&str, PathBuf)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join(repo_folder);
    std::fs::create_dir_all(base.join("refs")).unwrap();
    std::fs::write(base.join("refs/main"), "abc123").unwrap();
    for (name, src) in files {
        let dst = base.join("snapshots/abc123").join(name);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(src, dst).unwrap();
    }
    dir
}

#[test]
fn hub_lookup_uses_the_cache_offline() {
    let cache_dir = fake_cache(
        "datasets--juletxara--mgsm",
        &[
            ("mgsm_ja.tsv", sample("mgsm_ja_sample.tsv")),
            ("mgsm_en.tsv", sample("mgsm_ja_sample.tsv")),
        ],
    );
    let cache = hf_hub::Cache::new(cache_dir.path().to_path_buf());
    let files = hub::hub_files(Benchmark::MgsmJa, "main", &cache, true).unwrap();
    assert_eq!(files.len(), 1);
    assert!(files[0].ends_with("mgsm_ja.tsv"));

    let vg = fake_cache(
        "datasets--SakanaAI--JA-VG-VQA-500",
        &[
            (
                "data/test-00000-of-00001.parquet",
                sample("ja_vg_vqa_sample.parquet"),
            ),
            ("README.md", sample("mgsm_ja_sample.tsv")),
        ],
    );
    let cache = hf_hub::Cache::new(vg.path().to_path_buf());
    let files = hub::hub_files(Benchmark::JaVgVqa500, "main", &cache, true).unwrap();
    assert_eq!(files.len(), 1);
    assert!(files[0].ends_with("data/test-00000-of-00001.parquet"));
}

#[test]
fn hub_lookup_offline_without_cache_says_what_to_do() {
    let empty = tempfile::tempdir().unwrap();
    let cache = hf_hub::Cache::new(empty.path().to_path_buf());
    for b in [Benchmark::MgsmJa, Benchmark::JaVlmWild] {
        let err = hub::hub_files(b, "main", &cache, true)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("HF_HUB_OFFLINE") && err.contains("--data"),
            "{err}"
        );
    }
}
