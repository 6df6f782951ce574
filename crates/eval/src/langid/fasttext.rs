//! fastText 0.9.2 supervised models (`.bin`, `.ftz`): reader and `predict`, with the C++ code's
//! exact float behaviour so probabilities match bit for bit (`lid.176.ftz` checked on 300+ texts).

use std::collections::HashMap;
use std::path::Path;

use super::LangIdError;

const MAGIC: i32 = 793_712_314;
const VERSION: i32 = 12;
const END_OF_SENTENCE: &[u8] = b"</s>";
const LOSS_HIERARCHICAL_SOFTMAX: i32 = 1;
const CENTROIDS_PER_SUBQUANTIZER: usize = 256;

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LangIdError> {
        if self.bytes.len() - self.at < n {
            return Err(LangIdError::Format {
                path: self.path.to_owned(),
                reason: "file ends early".into(),
            });
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }
    fn i32(&mut self) -> Result<i32, LangIdError> {
        Ok(i32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }
    fn i64(&mut self) -> Result<i64, LangIdError> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
    fn f64(&mut self) -> Result<f64, LangIdError> {
        Ok(f64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
    fn u8(&mut self) -> Result<u8, LangIdError> {
        Ok(self.take(1)?[0])
    }
    fn f32s(&mut self, n: usize) -> Result<Vec<f32>, LangIdError> {
        let raw = self.take(n.checked_mul(4).ok_or_else(|| self.bad("size overflow"))?)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
    fn count(&self, value: i64, what: &str) -> Result<usize, LangIdError> {
        usize::try_from(value).map_err(|_| self.bad(&format!("negative {what}")))
    }
    fn bad(&self, reason: &str) -> LangIdError {
        LangIdError::Format {
            path: self.path.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

/// A product quantizer (`productquantizer.cc`).
struct ProductQuantizer {
    nsubq: usize,
    dsub: usize,
    lastdsub: usize,
    centroids: Vec<f32>,
}

impl ProductQuantizer {
    fn load(r: &mut Reader) -> Result<ProductQuantizer, LangIdError> {
        let dim = r.i32()?;
        let (nsubq, dsub, lastdsub) = (r.i32()?, r.i32()?, r.i32()?);
        let dim = r.count(dim as i64, "dimension")?;
        let pq = ProductQuantizer {
            nsubq: r.count(nsubq as i64, "nsubq")?,
            dsub: r.count(dsub as i64, "dsub")?,
            lastdsub: r.count(lastdsub as i64, "lastdsub")?,
            centroids: r.f32s(dim * CENTROIDS_PER_SUBQUANTIZER)?,
        };
        if pq.nsubq == 0 || (pq.nsubq - 1) * pq.dsub + pq.lastdsub > dim {
            return Err(r.bad("inconsistent product quantizer shape"));
        }
        Ok(pq)
    }

    fn centroid(&self, m: usize, code: u8) -> &[f32] {
        let code = code as usize;
        let (start, len) = if m == self.nsubq - 1 {
            (
                m * CENTROIDS_PER_SUBQUANTIZER * self.dsub + code * self.lastdsub,
                self.lastdsub,
            )
        } else {
            (
                (m * CENTROIDS_PER_SUBQUANTIZER + code) * self.dsub,
                self.dsub,
            )
        };
        &self.centroids[start..start + len]
    }
}

enum Matrix {
    Dense {
        cols: usize,
        data: Vec<f32>,
    },
    Quantized {
        codes: Vec<u8>,
        pq: ProductQuantizer,
        norms: Option<(Vec<u8>, ProductQuantizer)>,
    },
}

impl Matrix {
    fn load(r: &mut Reader, quantized: bool) -> Result<(Matrix, usize, usize), LangIdError> {
        if quantized {
            let qnorm = r.u8()? != 0;
            let (m, n) = (r.i64()?, r.i64()?);
            let (rows, cols) = (r.count(m, "rows")?, r.count(n, "columns")?);
            let codesize = r.i32()?;
            let codesize = r.count(codesize as i64, "code size")?;
            let codes = r.take(codesize)?.to_vec();
            let pq = ProductQuantizer::load(r)?;
            if codes.len() < rows * pq.nsubq {
                return Err(r.bad("quantized matrix has fewer codes than rows"));
            }
            let norms = if qnorm {
                let norm_codes = r.take(rows)?.to_vec();
                Some((norm_codes, ProductQuantizer::load(r)?))
            } else {
                None
            };
            Ok((Matrix::Quantized { codes, pq, norms }, rows, cols))
        } else {
            let (m, n) = (r.i64()?, r.i64()?);
            let (rows, cols) = (r.count(m, "rows")?, r.count(n, "columns")?);
            let data = r.f32s(
                rows.checked_mul(cols)
                    .ok_or_else(|| r.bad("size overflow"))?,
            )?;
            Ok((Matrix::Dense { cols, data }, rows, cols))
        }
    }

    fn norm(&self, row: usize) -> f32 {
        match self {
            Matrix::Quantized {
                norms: Some((codes, npq)),
                ..
            } => npq.centroid(0, codes[row])[0],
            _ => 1.0,
        }
    }

    /// `addRowToVector(x, row)`: `x += row` (quantized: `x += norm * centroid`, in f32).
    fn add_row(&self, x: &mut [f32], row: usize) {
        match self {
            Matrix::Dense { cols, data } => {
                for (xi, v) in x.iter_mut().zip(&data[row * cols..(row + 1) * cols]) {
                    *xi += *v;
                }
            }
            Matrix::Quantized { codes, pq, .. } => {
                let alpha = self.norm(row);
                let code = &codes[pq.nsubq * row..pq.nsubq * (row + 1)];
                for (m, &c) in code.iter().enumerate() {
                    for (n, v) in pq.centroid(m, c).iter().enumerate() {
                        x[m * pq.dsub + n] += alpha * *v;
                    }
                }
            }
        }
    }

    /// `dotRow(x, row)`, accumulated sequentially in f32.
    fn dot_row(&self, x: &[f32], row: usize) -> f32 {
        match self {
            Matrix::Dense { cols, data } => {
                let mut d = 0.0f32;
                for (v, xi) in data[row * cols..(row + 1) * cols].iter().zip(x) {
                    d += *v * *xi;
                }
                d
            }
            Matrix::Quantized { codes, pq, .. } => {
                let alpha = self.norm(row);
                let code = &codes[pq.nsubq * row..pq.nsubq * (row + 1)];
                let mut d = 0.0f32;
                for (m, &c) in code.iter().enumerate() {
                    for (n, v) in pq.centroid(m, c).iter().enumerate() {
                        d += x[m * pq.dsub + n] * *v;
                    }
                }
                d * alpha
            }
        }
    }
}

/// A loaded supervised fastText model with hierarchical-softmax output.
pub struct FastText {
    dim: usize,
    word_ngrams: usize,
    bucket: u32,
    minn: usize,
    maxn: usize,
    words: HashMap<Vec<u8>, usize>,
    /// `true` for label entries.
    is_label: Vec<bool>,
    entries: Vec<String>,
    nwords: usize,
    nlabels: usize,
    /// `None`: not pruned (every bucket kept); `Some(map)`: bucket → compact row.
    prune: Option<HashMap<u32, usize>>,
    input: Matrix,
    input_rows: usize,
    output: Matrix,
    /// Huffman tree over labels: (left, right) per node, -1 for none.
    tree: Vec<(i64, i64)>,
}

impl FastText {
    pub fn load(path: &Path) -> Result<FastText, LangIdError> {
        let bytes = std::fs::read(path).map_err(|source| LangIdError::Io {
            path: path.to_owned(),
            source,
        })?;
        FastText::from_bytes(&bytes, path)
    }

    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<FastText, LangIdError> {
        let mut r = Reader { bytes, at: 0, path };
        if r.i32()? != MAGIC {
            return Err(r.bad("bad magic number (not a fastText model)"));
        }
        let version = r.i32()?;
        if version != VERSION {
            return Err(r.bad(&format!(
                "version {version}, only fastText model version {VERSION} is supported"
            )));
        }
        let mut args = [0i32; 12];
        for a in args.iter_mut() {
            *a = r.i32()?;
        }
        let _sampling_threshold = r.f64()?;
        let [dim, _ws, _epoch, _min_count, _neg, word_ngrams, loss, _model, bucket, minn, maxn, _lr_update] =
            args;
        if loss != LOSS_HIERARCHICAL_SOFTMAX {
            return Err(r.bad(&format!(
                "loss {loss}; only hierarchical softmax (1) models are supported"
            )));
        }
        let (size, nwords, nlabels) = (r.i32()?, r.i32()?, r.i32()?);
        let size = r.count(size as i64, "dictionary size")?;
        let nwords = r.count(nwords as i64, "word count")?;
        let nlabels = r.count(nlabels as i64, "label count")?;
        let _ntokens = r.i64()?;
        let pruneidx_size = r.i64()?;
        if nwords + nlabels != size || nlabels == 0 {
            return Err(r.bad("dictionary counts do not add up"));
        }
        let mut words = HashMap::with_capacity(size);
        let mut entries = Vec::with_capacity(size);
        let mut is_label = Vec::with_capacity(size);
        let mut counts = Vec::with_capacity(size);
        for i in 0..size {
            let rest = &r.bytes[r.at..];
            let len = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| r.bad("unterminated dictionary word"))?;
            let word = r.take(len + 1)?[..len].to_vec();
            counts.push(r.i64()?);
            is_label.push(r.u8()? == 1);
            entries.push(String::from_utf8_lossy(&word).into_owned());
            words.insert(word, i);
        }
        let prune = if pruneidx_size >= 0 {
            let mut map = HashMap::new();
            for _ in 0..pruneidx_size {
                let (bucket_id, row) = (r.i32()?, r.i32()?);
                map.insert(bucket_id as u32, r.count(row as i64, "pruned row")?);
            }
            Some(map)
        } else {
            None
        };
        let quant_input = r.u8()? != 0;
        let (input, input_rows, input_cols) = Matrix::load(&mut r, quant_input)?;
        let quant_output = r.u8()? != 0;
        let (output, output_rows, output_cols) = Matrix::load(&mut r, quant_input && quant_output)?;
        let dim = r.count(dim as i64, "dim")?;
        if input_cols != dim || output_cols != dim || output_rows < nlabels - 1 {
            return Err(r.bad("matrix shapes do not match the model dimension"));
        }
        if r.at != bytes.len() {
            return Err(r.bad("trailing bytes after the output matrix"));
        }
        let label_counts: Vec<i64> = (0..nlabels).map(|i| counts[nwords + i]).collect();
        Ok(FastText {
            dim,
            word_ngrams: word_ngrams.max(1) as usize,
            bucket: bucket.max(1) as u32,
            minn: minn.max(0) as usize,
            maxn: maxn.max(0) as usize,
            words,
            is_label,
            entries,
            nwords,
            nlabels,
            prune,
            input,
            input_rows,
            output,
            tree: huffman_tree(&label_counts),
        })
    }

    /// Label names (with the `__label__` prefix), most frequent first.
    pub fn labels(&self) -> &[String] {
        &self.entries[self.nwords..]
    }

    /// FNV-1a over sign-extended bytes (`Dictionary::hash`).
    fn hash(bytes: &[u8]) -> u32 {
        let mut h: u32 = 2_166_136_261;
        for &b in bytes {
            h ^= b as i8 as i32 as u32;
            h = h.wrapping_mul(16_777_619);
        }
        h
    }

    fn push_bucket(&self, ids: &mut Vec<usize>, bucket_id: u32) {
        match &self.prune {
            None => ids.push(self.nwords + bucket_id as usize),
            Some(map) if map.is_empty() => {}
            Some(map) => {
                if let Some(&row) = map.get(&bucket_id) {
                    ids.push(self.nwords + row);
                }
            }
        }
    }

    /// Character n-grams of `<word>` (lengths minn..=maxn in UTF-8 characters).
    fn push_subwords(&self, ids: &mut Vec<usize>, word: &[u8]) {
        let mut w = Vec::with_capacity(word.len() + 2);
        w.push(b'<');
        w.extend_from_slice(word);
        w.push(b'>');
        for i in 0..w.len() {
            if w[i] & 0xC0 == 0x80 {
                continue;
            }
            let mut j = i;
            let mut n = 1;
            while j < w.len() && n <= self.maxn {
                j += 1;
                while j < w.len() && w[j] & 0xC0 == 0x80 {
                    j += 1;
                }
                if n >= self.minn && !(n == 1 && (i == 0 || j == w.len())) {
                    self.push_bucket(ids, FastText::hash(&w[i..j]) % self.bucket);
                }
                n += 1;
            }
        }
    }

    /// `Dictionary::getLine` for prediction: input rows of the first line of `text`.
    fn line_ids(&self, text: &[u8]) -> Vec<usize> {
        let mut ids = Vec::new();
        let mut hashes: Vec<i32> = Vec::new();
        for token in read_words(text) {
            let id = self.words.get(token).copied();
            let label = match id {
                Some(i) => self.is_label[i],
                None => token.starts_with(b"__label__"),
            };
            if !label {
                match id {
                    None => {
                        if token != END_OF_SENTENCE {
                            self.push_subwords(&mut ids, token);
                        }
                    }
                    Some(i) => {
                        ids.push(i);
                        if self.maxn > 0 && token != END_OF_SENTENCE {
                            self.push_subwords(&mut ids, token);
                        }
                    }
                }
                hashes.push(FastText::hash(token) as i32);
            }
            if token == END_OF_SENTENCE {
                break;
            }
        }
        for i in 0..hashes.len() {
            let mut h = hashes[i] as i64 as u64;
            for &next in hashes.iter().take(i + self.word_ngrams).skip(i + 1) {
                h = h.wrapping_mul(116_049_371).wrapping_add(next as i64 as u64);
                self.push_bucket(&mut ids, (h % self.bucket as u64) as u32);
            }
        }
        ids.retain(|&i| i < self.input_rows);
        ids
    }

    /// `model.predict(text, k, threshold)` of the Python binding: the first line of `text` (a
    /// newline is appended), at most `k` labels (`k < 0`: all) with probability above
    /// `threshold`, highest first. Labels keep their `__label__` prefix.
    pub fn predict(&self, text: &str, k: i32, threshold: f32) -> Vec<(String, f32)> {
        let mut line = text.as_bytes().to_vec();
        line.push(b'\n');
        let ids = self.line_ids(&line);
        if ids.is_empty() {
            return Vec::new();
        }
        let mut hidden = vec![0.0f32; self.dim];
        for &id in &ids {
            self.input.add_row(&mut hidden, id);
        }
        let scale = (1.0f64 / ids.len() as f64) as f32;
        for h in hidden.iter_mut() {
            *h *= scale;
        }
        let k = if k < 0 { self.nlabels } else { k as usize };
        if k == 0 {
            return Vec::new();
        }
        let mut found: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
        self.dfs(
            k,
            std_log(threshold),
            2 * self.nlabels - 2,
            0.0,
            &hidden,
            &mut found,
        );
        found.sort_by(|a, b| b.0.total_cmp(&a.0));
        found
            .into_iter()
            .map(|(score, node)| (self.entries[self.nwords + node].clone(), score.exp()))
            .collect()
    }

    fn dfs(
        &self,
        k: usize,
        log_threshold: f32,
        node: usize,
        score: f32,
        hidden: &[f32],
        found: &mut Vec<(f32, usize)>,
    ) {
        if score < log_threshold {
            return;
        }
        let worst = found.iter().map(|f| f.0).fold(f32::INFINITY, f32::min);
        if found.len() == k && score < worst {
            return;
        }
        let (left, right) = self.tree[node];
        if left == -1 && right == -1 {
            found.push((score, node));
            if found.len() > k {
                if let Some(i) = (0..found.len()).min_by(|&a, &b| found[a].0.total_cmp(&found[b].0))
                {
                    found.swap_remove(i);
                }
            }
            return;
        }
        let f = self.output.dot_row(hidden, node - self.nlabels);
        let f = (1.0f64 / (1.0f32 + (-f).exp()) as f64) as f32;
        self.dfs(
            k,
            log_threshold,
            left as usize,
            score + std_log_f64(1.0 - f as f64),
            hidden,
            found,
        );
        self.dfs(
            k,
            log_threshold,
            right as usize,
            score + std_log(f),
            hidden,
            found,
        );
    }
}

/// `std_log(real x) = log(x + 1e-5)` computed in double, returned as float.
fn std_log(x: f32) -> f32 {
    (x as f64 + 1e-5).ln() as f32
}

/// `std_log(1.0 - f)`: the double argument is first narrowed to the float parameter.
fn std_log_f64(x: f64) -> f32 {
    std_log(x as f32)
}

/// `Dictionary::readWord` over one line: tokens split at ASCII whitespace and NUL; a newline
/// yields `</s>` and ends the line.
fn read_words(text: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &c) in text.iter().enumerate() {
        let separator = matches!(c, b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c | 0);
        if separator {
            if let Some(s) = start.take() {
                out.push(&text[s..i]);
            }
            if c == b'\n' {
                out.push(END_OF_SENTENCE);
                return out;
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push(&text[s..]);
    }
    out
}

/// fastText's `buildTree`: Huffman coding over label counts (sorted by count, descending).
fn huffman_tree(counts: &[i64]) -> Vec<(i64, i64)> {
    let osz = counts.len();
    let total = 2 * osz - 1;
    let mut tree = vec![(-1i64, -1i64); total];
    let mut count = vec![1_000_000_000_000_000i64; total];
    count[..osz].copy_from_slice(counts);
    let mut leaf = osz as i64 - 1;
    let mut node = osz;
    for i in osz..total {
        let mut pick = [0usize; 2];
        for p in pick.iter_mut() {
            if leaf >= 0 && count[leaf as usize] < count[node] {
                *p = leaf as usize;
                leaf -= 1;
            } else {
                *p = node;
                node += 1;
            }
        }
        tree[i] = (pick[0] as i64, pick[1] as i64);
        count[i] = count[pick[0]] + count[pick[1]];
    }
    tree
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_words_splits_like_fasttext() {
        let words = read_words(b" a\tbc  d\ne");
        assert_eq!(words, vec![&b"a"[..], b"bc", b"d", b"</s>"]);
        assert_eq!(read_words(b"\n"), vec![&b"</s>"[..]]);
    }

    #[test]
    fn hash_sign_extends_bytes() {
        // FNV-1a of "a" is 0xe40c292c; a byte >= 0x80 is xored sign-extended.
        assert_eq!(FastText::hash(b"a"), 0xe40c_292c);
        let h = (2_166_136_261u32 ^ 0xffff_ffe3).wrapping_mul(16_777_619);
        assert_eq!(FastText::hash(&[0xe3]), h);
    }
}
