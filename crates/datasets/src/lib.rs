//! Evaluation datasets (MGSM-JA, the GSM8K-JA search set, JA-VG-VQA-500, JA-VLM-Bench-In-the-Wild):
//! loading from the hub cache or local files, with per-row validation.
//!
//! * [`Benchmark`] names a dataset and knows where it lives on the Hugging Face hub.
//! * [`DataSource`] is either the hub (cache first, so it works offline once cached; `HF_HUB_OFFLINE=1`
//!   forbids any download) or a local file / directory (TSV, JSONL or Parquet, by extension).
//! * [`load_math`] gives [`MathItem`]s (question + numeric answer); [`load_vqa`] gives [`VqaItem`]s
//!   (question + reference answer + undecoded image bytes, whose decodability is checked).
//! * A row with a missing field or an undecodable image is never scored: it is reported with its index
//!   and either skipped or fails the load, as [`OnBadRow`] says.

pub mod hub;
mod math;
mod vqa;

use std::path::{Path, PathBuf};

pub use math::{parse_math_jsonl, parse_math_tsv};
pub use vqa::{parse_vqa_parquet, VqaLayout};

/// The datasets the evaluators know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Benchmark {
    /// `juletxara/mgsm`, config `ja`, split `test` (250 items, TSV `mgsm_ja.tsv`).
    MgsmJa,
    /// `SakanaAI/gsm8k-ja-test_250-1319` (1069 items, JSONL): the search set of the LLM recipe.
    Gsm8kJaSearch,
    /// `SakanaAI/JA-VG-VQA-500`, split `test` (500 rows, Parquet; the first QA pair of each row is used).
    JaVgVqa500,
    /// `SakanaAI/JA-VLM-Bench-In-the-Wild`, split `test` (50 questions on 42 images, Parquet).
    JaVlmWild,
}

impl Benchmark {
    pub fn hub_repo(self) -> &'static str {
        match self {
            Benchmark::MgsmJa => "juletxara/mgsm",
            Benchmark::Gsm8kJaSearch => "SakanaAI/gsm8k-ja-test_250-1319",
            Benchmark::JaVgVqa500 => "SakanaAI/JA-VG-VQA-500",
            Benchmark::JaVlmWild => "SakanaAI/JA-VLM-Bench-In-the-Wild",
        }
    }

    /// The file format the hub stores it in.
    pub fn format(self) -> FileFormat {
        match self {
            Benchmark::MgsmJa => FileFormat::Tsv,
            Benchmark::Gsm8kJaSearch => FileFormat::Jsonl,
            Benchmark::JaVgVqa500 | Benchmark::JaVlmWild => FileFormat::Parquet,
        }
    }

    /// The exact hub file when it is known; otherwise the test-split files are discovered by listing.
    pub fn known_hub_files(self) -> &'static [&'static str] {
        match self {
            Benchmark::MgsmJa => &["mgsm_ja.tsv"],
            _ => &[],
        }
    }

    /// How VQA rows are laid out.
    pub fn vqa_layout(self) -> Option<VqaLayout> {
        match self {
            Benchmark::JaVgVqa500 => Some(VqaLayout::FirstQaPair),
            Benchmark::JaVlmWild => Some(VqaLayout::Flat),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Benchmark::MgsmJa => "mgsm-ja",
            Benchmark::Gsm8kJaSearch => "gsm8k-ja-search",
            Benchmark::JaVgVqa500 => "ja-vg-vqa-500",
            Benchmark::JaVlmWild => "ja-vlm-wild",
        }
    }
}

/// File formats the loaders read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// `question<TAB>answer_number`, no header, no quoting (the MGSM release format).
    Tsv,
    /// One JSON object per line with `question` and `answer_number`.
    Jsonl,
    /// Apache Parquet as written by `datasets` (images as `{bytes, path}` structs).
    Parquet,
}

impl FileFormat {
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Tsv => "tsv",
            FileFormat::Jsonl => "jsonl",
            FileFormat::Parquet => "parquet",
        }
    }

    /// The format a file name implies (`.tsv`, `.jsonl` / `.json`, `.parquet`).
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "tsv" => Some(FileFormat::Tsv),
            "jsonl" | "json" => Some(FileFormat::Jsonl),
            "parquet" => Some(FileFormat::Parquet),
            _ => None,
        }
    }
}

/// Where to read a dataset from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// The benchmark's hub repository (cache first).
    Hub { revision: String },
    /// A local file, or a directory holding the data files.
    Local(PathBuf),
}

impl DataSource {
    pub fn hub() -> Self {
        DataSource::Hub {
            revision: "main".to_string(),
        }
    }
}

/// What to do with a row that cannot be evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBadRow {
    /// Report it (index and reason) and leave it out of the evaluation.
    Skip,
    /// Stop with an error naming the row.
    #[default]
    Fail,
}

impl std::str::FromStr for OnBadRow {
    type Err = DatasetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "skip" => Ok(OnBadRow::Skip),
            "fail" => Ok(OnBadRow::Fail),
            other => Err(DatasetError::Usage(format!(
                "unknown bad-row policy {other:?}: use \"skip\" or \"fail\""
            ))),
        }
    }
}

/// A row left out of the evaluation, with its 0-based index in the dataset and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BadRow {
    pub index: usize,
    pub reason: String,
}

/// A loaded dataset: the good rows, the skipped ones, and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub items: Vec<T>,
    pub skipped: Vec<BadRow>,
    /// The files read, for the evaluation record.
    pub files: Vec<PathBuf>,
}

/// A math word problem with a numeric answer.
#[derive(Debug, Clone, PartialEq)]
pub struct MathItem {
    /// 0-based row index in the source.
    pub index: usize,
    pub question: String,
    pub answer_number: f64,
}

/// A VQA question about one image.
#[derive(Debug, Clone, PartialEq)]
pub struct VqaItem {
    /// 0-based row index in the source.
    pub index: usize,
    pub question: String,
    pub answer: String,
    /// The encoded image exactly as stored (PNG/JPEG/...), checked to decode.
    pub image: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: row {index}: {reason} (pass --on-bad-row skip to leave such rows out)")]
    BadRow {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("hub dataset {repo}: {message}")]
    Hub { repo: String, message: String },
}

/// Collects rows under an [`OnBadRow`] policy.
pub(crate) struct RowSink<'a, T> {
    policy: OnBadRow,
    path: &'a Path,
    pub items: Vec<T>,
    pub skipped: Vec<BadRow>,
}

impl<'a, T> RowSink<'a, T> {
    pub fn new(policy: OnBadRow, path: &'a Path) -> Self {
        Self {
            policy,
            path,
            items: Vec::new(),
            skipped: Vec::new(),
        }
    }

    pub fn push(&mut self, index: usize, row: Result<T, String>) -> Result<(), DatasetError> {
        match row {
            Ok(item) => self.items.push(item),
            Err(reason) => match self.policy {
                OnBadRow::Fail => {
                    return Err(DatasetError::BadRow {
                        path: self.path.to_path_buf(),
                        index,
                        reason,
                    })
                }
                OnBadRow::Skip => {
                    tracing::warn!("{}: skipping row {index}: {reason}", self.path.display());
                    self.skipped.push(BadRow { index, reason });
                }
            },
        }
        Ok(())
    }
}

/// Loads a math benchmark (MGSM-JA or the GSM8K-JA search set) from the hub or a local file/directory.
/// Local files are read by extension: `.tsv` (MGSM format) or `.jsonl`.
pub fn load_math(
    benchmark: Benchmark,
    source: &DataSource,
    on_bad_row: OnBadRow,
) -> Result<Loaded<MathItem>, DatasetError> {
    load_math_split(benchmark, source, "test", on_bad_row)
}

/// As [`load_math`], for split `split` of the data.
pub fn load_math_split(
    benchmark: Benchmark,
    source: &DataSource,
    split: &str,
    on_bad_row: OnBadRow,
) -> Result<Loaded<MathItem>, DatasetError> {
    let files = hub::resolve_split_files(benchmark, source, split)?;
    let mut all = Loaded {
        items: Vec::new(),
        skipped: Vec::new(),
        files: files.clone(),
    };
    let mut offset = 0;
    for file in &files {
        let mut part = match FileFormat::from_path(file) {
            Some(FileFormat::Tsv) => parse_math_tsv(&read_file(file)?, file, on_bad_row)?,
            Some(FileFormat::Jsonl) => parse_math_jsonl(&read_file(file)?, file, on_bad_row)?,
            _ => {
                return Err(DatasetError::Format {
                    path: file.clone(),
                    message: format!(
                        "{} needs a .tsv or .jsonl file (question + answer_number)",
                        benchmark.name()
                    ),
                })
            }
        };
        shift_indices(&mut part, offset, |item: &mut MathItem, o| item.index += o);
        offset += part.items.len() + part.skipped.len();
        all.items.append(&mut part.items);
        all.skipped.append(&mut part.skipped);
    }
    Ok(all)
}

/// Loads a VQA benchmark (JA-VG-VQA-500 or JA-VLM-Bench-In-the-Wild) from the hub or a local Parquet
/// file/directory. Every image is decoded once to check it; undecodable ones are bad rows.
pub fn load_vqa(
    benchmark: Benchmark,
    source: &DataSource,
    on_bad_row: OnBadRow,
) -> Result<Loaded<VqaItem>, DatasetError> {
    load_vqa_split(benchmark, source, "test", on_bad_row)
}

/// As [`load_vqa`], for split `split` of the data (`SakanaAI/JA-VG-VQA-500` has a `train` split,
/// the natural EvoVLM-JP search set).
pub fn load_vqa_split(
    benchmark: Benchmark,
    source: &DataSource,
    split: &str,
    on_bad_row: OnBadRow,
) -> Result<Loaded<VqaItem>, DatasetError> {
    let layout = benchmark.vqa_layout().ok_or_else(|| {
        DatasetError::Usage(format!("{} is not a VQA benchmark", benchmark.name()))
    })?;
    let files = hub::resolve_split_files(benchmark, source, split)?;
    let mut all = Loaded {
        items: Vec::new(),
        skipped: Vec::new(),
        files: files.clone(),
    };
    let mut offset = 0;
    for file in &files {
        if FileFormat::from_path(file) != Some(FileFormat::Parquet) {
            return Err(DatasetError::Format {
                path: file.clone(),
                message: format!("{} needs a .parquet file", benchmark.name()),
            });
        }
        let mut part = parse_vqa_parquet(file, layout, on_bad_row)?;
        shift_indices(&mut part, offset, |item: &mut VqaItem, o| item.index += o);
        offset += part.items.len() + part.skipped.len();
        all.items.append(&mut part.items);
        all.skipped.append(&mut part.skipped);
    }
    Ok(all)
}

fn shift_indices<T>(part: &mut Loaded<T>, offset: usize, shift: impl Fn(&mut T, usize)) {
    if offset == 0 {
        return;
    }
    for item in &mut part.items {
        shift(item, offset);
    }
    for bad in &mut part.skipped {
        bad.index += offset;
    }
}

pub(crate) fn read_file(path: &Path) -> Result<String, DatasetError> {
    let bytes = std::fs::read(path).map_err(|source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| DatasetError::Format {
        path: path.to_path_buf(),
        message: format!("not valid UTF-8 (byte {})", e.utf8_error().valid_up_to()),
    })
}
