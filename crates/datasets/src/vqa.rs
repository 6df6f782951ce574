//! VQA datasets stored as Parquet by Hugging Face `datasets`: an `image` column (a `{bytes, path}` struct,
//! or plain binary) and either `question` / `answer` columns or a `qas` list of `{question, answer}`.

use std::fs::File;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch, StructArray};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::{DatasetError, Loaded, OnBadRow, RowSink, VqaItem};

/// Where a row keeps its question and answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VqaLayout {
    /// `question` and `answer` string columns (JA-VLM-Bench-In-the-Wild).
    Flat,
    /// A `qas` list column; only its first `{question, answer}` is used, as the paper does
    /// (JA-VG-VQA-500).
    FirstQaPair,
}

/// Reads every row of a Parquet file. Bad rows (missing question/answer, missing or undecodable image)
/// are skipped or fail the load by `on_bad_row`; a file without the needed columns is an error.
pub fn parse_vqa_parquet(
    path: &Path,
    layout: VqaLayout,
    on_bad_row: OnBadRow,
) -> Result<Loaded<VqaItem>, DatasetError> {
    let format_err = |message: String| DatasetError::Format {
        path: path.to_path_buf(),
        message,
    };
    let file = File::open(path).map_err(|source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| format_err(format!("not a readable Parquet file: {e}")))?
        .with_batch_size(64)
        .build()
        .map_err(|e| format_err(format!("cannot read Parquet rows: {e}")))?;
    let mut sink = RowSink::new(on_bad_row, path);
    let mut index = 0;
    for batch in reader {
        let batch = batch.map_err(|e| format_err(format!("cannot read Parquet rows: {e}")))?;
        let columns = Columns::find(&batch, layout).map_err(format_err)?;
        for row in 0..batch.num_rows() {
            sink.push(
                index,
                columns.row(row).map(|mut item| {
                    item.index = index;
                    item
                }),
            )?;
            index += 1;
        }
    }
    Ok(Loaded {
        items: sink.items,
        skipped: sink.skipped,
        files: vec![path.to_path_buf()],
    })
}

struct Columns {
    image: ArrayRef,
    text: TextColumns,
}

enum TextColumns {
    Flat {
        question: ArrayRef,
        answer: ArrayRef,
    },
    Qas(ArrayRef),
}

impl Columns {
    fn find(batch: &RecordBatch, layout: VqaLayout) -> Result<Self, String> {
        let column = |name: &str| {
            batch.column_by_name(name).cloned().ok_or_else(|| {
                let names: Vec<String> = batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                format!("no column {name:?} (columns: {})", names.join(", "))
            })
        };
        let text = match layout {
            VqaLayout::Flat => TextColumns::Flat {
                question: column("question")?,
                answer: column("answer")?,
            },
            VqaLayout::FirstQaPair => TextColumns::Qas(column("qas")?),
        };
        Ok(Self {
            image: column("image")?,
            text,
        })
    }

    fn row(&self, row: usize) -> Result<VqaItem, String> {
        let (question, answer) = match &self.text {
            TextColumns::Flat { question, answer } => (
                string_at(question, row).map_err(|e| format!("question: {e}"))?,
                string_at(answer, row).map_err(|e| format!("answer: {e}"))?,
            ),
            TextColumns::Qas(qas) => first_qa(qas, row)?,
        };
        if question.trim().is_empty() {
            return Err("empty question".into());
        }
        let image = image_bytes(&self.image, row)?;
        check_image(&image)?;
        Ok(VqaItem {
            index: row,
            question,
            answer,
            image,
        })
    }
}

fn string_at(array: &ArrayRef, row: usize) -> Result<String, String> {
    if array.is_null(row) {
        return Err("missing (null)".into());
    }
    match array.data_type() {
        DataType::Utf8 => Ok(array.as_string::<i32>().value(row).to_string()),
        DataType::LargeUtf8 => Ok(array.as_string::<i64>().value(row).to_string()),
        DataType::Utf8View => Ok(array.as_string_view().value(row).to_string()),
        other => Err(format!("expected a string column, found {other}")),
    }
}

fn binary_at(array: &ArrayRef, row: usize) -> Result<Option<Vec<u8>>, String> {
    if array.is_null(row) {
        return Ok(None);
    }
    match array.data_type() {
        DataType::Binary => Ok(Some(array.as_binary::<i32>().value(row).to_vec())),
        DataType::LargeBinary => Ok(Some(array.as_binary::<i64>().value(row).to_vec())),
        DataType::BinaryView => Ok(Some(array.as_binary_view().value(row).to_vec())),
        other => Err(format!("expected a binary column, found {other}")),
    }
}

fn first_qa(qas: &ArrayRef, row: usize) -> Result<(String, String), String> {
    if qas.is_null(row) {
        return Err("qas: missing (null)".into());
    }
    let list = match qas.data_type() {
        DataType::List(_) => qas.as_list::<i32>().value(row),
        DataType::LargeList(_) => qas.as_list::<i64>().value(row),
        other => return Err(format!("qas: expected a list column, found {other}")),
    };
    if list.is_empty() {
        return Err("qas: no question-answer pair".into());
    }
    let pairs: &StructArray = list
        .as_struct_opt()
        .ok_or("qas: expected a list of {question, answer} structs")?;
    if pairs.is_null(0) {
        return Err("qas: first pair is null".into());
    }
    let field = |name: &str| {
        pairs
            .column_by_name(name)
            .ok_or_else(|| format!("qas: pairs have no field {name:?}"))
    };
    let question = string_at(field("question")?, 0).map_err(|e| format!("qas[0].question: {e}"))?;
    let answer = string_at(field("answer")?, 0).map_err(|e| format!("qas[0].answer: {e}"))?;
    Ok((question, answer))
}

fn image_bytes(image: &ArrayRef, row: usize) -> Result<Vec<u8>, String> {
    let bytes = match image.data_type() {
        DataType::Struct(_) => {
            if image.is_null(row) {
                None
            } else {
                let s = image.as_struct();
                let column = s
                    .column_by_name("bytes")
                    .ok_or("image: struct has no \"bytes\" field (images stored by path only are not supported)")?;
                binary_at(column, row).map_err(|e| format!("image.bytes: {e}"))?
            }
        }
        _ => binary_at(image, row).map_err(|e| format!("image: {e}"))?,
    };
    match bytes {
        Some(b) if !b.is_empty() => Ok(b),
        _ => Err("missing image bytes".into()),
    }
}

/// Decodes the image fully once so that a truncated or corrupt file is found at load time, not after
/// hours of generation.
fn check_image(bytes: &[u8]) -> Result<(), String> {
    let img = image::load_from_memory(bytes).map_err(|e| format!("image does not decode: {e}"))?;
    if img.width() == 0 || img.height() == 0 {
        return Err("image has zero size".into());
    }
    Ok(())
}
