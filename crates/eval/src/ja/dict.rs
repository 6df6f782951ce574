//! Readers for MeCab's compiled dictionary files (`sys.dic`/`unk.dic`, `char.bin`, `matrix.bin`),
//! format version 102 as written by `mecab-dict-index`. All integers are little-endian; nothing is
//! copied out of the memory map except the small character table.

use std::fs::File;
use std::ops::Deref;
use std::path::Path;

use super::JaError;

const DICTIONARY_MAGIC: u32 = 0xef71_8f77;
const DICTIONARY_VERSION: u32 = 102;
const HEADER_BYTES: usize = 72;
const TOKEN_BYTES: usize = 16;
/// `CharProperty` covers the code points 0..0xFFFE (UCS-2 minus U+FFFF).
const CHAR_TABLE_LEN: usize = 0xffff;

/// File contents: a read-only memory map, or bytes built in memory (tests, synthetic dictionaries).
pub(crate) enum Bytes {
    Mapped(memmap2::Mmap),
    #[cfg_attr(not(test), allow(dead_code))]
    Owned(Vec<u8>),
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

impl Bytes {
    pub(crate) fn map(path: &Path) -> Result<Bytes, JaError> {
        let file = File::open(path).map_err(|source| JaError::Io {
            path: path.to_owned(),
            source,
        })?;
        // SAFETY: the dictionary files are opened read-only and never modified while mapped; a
        // concurrent writer would be a misuse of the cache directory, as with any mmap reader.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| JaError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(Bytes::Mapped(map))
    }
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn format_error(path: &Path, reason: impl Into<String>) -> JaError {
    JaError::Format {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// The connection costs a word needs for the Viterbi search (features are not needed for wakati).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub left_id: u16,
    pub right_id: u16,
    pub word_cost: i16,
}

/// A system or unknown-word dictionary: a double-array trie over surfaces plus a token table.
pub(crate) struct Dictionary {
    bytes: Bytes,
    units: usize,
    token_offset: usize,
    tokens: usize,
    pub left_size: u32,
    pub right_size: u32,
}

impl Dictionary {
    pub(crate) fn open(path: &Path) -> Result<Dictionary, JaError> {
        Dictionary::from_bytes(Bytes::map(path)?, path)
    }

    pub(crate) fn from_bytes(bytes: Bytes, path: &Path) -> Result<Dictionary, JaError> {
        if bytes.len() < HEADER_BYTES {
            return Err(format_error(path, "shorter than the 72-byte header"));
        }
        let magic = u32_at(&bytes, 0);
        if (magic ^ DICTIONARY_MAGIC) as usize != bytes.len() {
            return Err(format_error(
                path,
                "bad magic number (truncated or not a MeCab dictionary)",
            ));
        }
        let version = u32_at(&bytes, 4);
        if version != DICTIONARY_VERSION {
            return Err(format_error(
                path,
                format!("version {version}, expected {DICTIONARY_VERSION}"),
            ));
        }
        let charset_raw = &bytes[40..72];
        let charset_len = charset_raw.iter().position(|&b| b == 0).unwrap_or(32);
        let charset = String::from_utf8_lossy(&charset_raw[..charset_len]).to_ascii_lowercase();
        if charset != "utf8" && charset != "utf-8" {
            return Err(format_error(
                path,
                format!("charset {charset:?}; only UTF-8 dictionaries are supported"),
            ));
        }
        let dsize = u32_at(&bytes, 24) as usize;
        let tsize = u32_at(&bytes, 28) as usize;
        let fsize = u32_at(&bytes, 32) as usize;
        if HEADER_BYTES + dsize + tsize + fsize != bytes.len()
            || dsize % 8 != 0
            || tsize % TOKEN_BYTES != 0
        {
            return Err(format_error(
                path,
                "section sizes in the header do not add up to the file size",
            ));
        }
        Ok(Dictionary {
            units: dsize / 8,
            token_offset: HEADER_BYTES + dsize,
            tokens: tsize / TOKEN_BYTES,
            left_size: u32_at(&bytes, 16),
            right_size: u32_at(&bytes, 20),
            bytes,
        })
    }

    fn unit(&self, index: i64) -> Option<(i32, u32)> {
        if index < 0 || index as usize >= self.units {
            return None;
        }
        let off = HEADER_BYTES + 8 * index as usize;
        Some((
            u32_at(&self.bytes, off) as i32,
            u32_at(&self.bytes, off + 4),
        ))
    }

    /// A value stored at the node `b` (a key ends there) if any.
    fn value_at(&self, b: i64) -> Option<u32> {
        match self.unit(b) {
            Some((base, check)) if check == b as u32 && base < 0 => {
                Some((-(base as i64) - 1) as u32)
            }
            _ => None,
        }
    }

    /// Darts `commonPrefixSearch`: every key that is a prefix of `key`, shortest first, as
    /// `(value, length in bytes)`.
    pub(crate) fn common_prefix_search(&self, key: &[u8], out: &mut Vec<(u32, usize)>) {
        out.clear();
        let Some((mut b, _)) = self.unit(0).map(|(base, c)| (base as i64, c)) else {
            return;
        };
        for (i, &byte) in key.iter().enumerate() {
            if let Some(v) = self.value_at(b) {
                out.push((v, i));
            }
            let p = b + byte as i64 + 1;
            match self.unit(p) {
                Some((base, check)) if check == b as u32 => b = base as i64,
                _ => return,
            }
        }
        if let Some(v) = self.value_at(b) {
            out.push((v, key.len()));
        }
    }

    /// Darts `exactMatchSearch`.
    pub(crate) fn exact_match(&self, key: &[u8]) -> Option<u32> {
        let mut b = self.unit(0)?.0 as i64;
        for &byte in key {
            let p = b + byte as i64 + 1;
            match self.unit(p) {
                Some((base, check)) if check == b as u32 => b = base as i64,
                _ => return None,
            }
        }
        self.value_at(b)
    }

    /// The tokens a trie value points at (`value >> 8` first token, `value & 0xff` count).
    pub(crate) fn tokens(&self, value: u32) -> impl Iterator<Item = Token> + '_ {
        let first = (value >> 8) as usize;
        let count = (value & 0xff) as usize;
        (first..first + count)
            .filter(|&i| i < self.tokens)
            .map(move |i| {
                let off = self.token_offset + TOKEN_BYTES * i;
                Token {
                    left_id: u16_at(&self.bytes, off),
                    right_id: u16_at(&self.bytes, off + 2),
                    word_cost: u16_at(&self.bytes, off + 6) as i16,
                }
            })
    }
}

/// One `CharInfo` bit field from `char.bin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CharInfo(pub u32);

impl CharInfo {
    /// Bit mask of every category the character belongs to.
    pub fn types(self) -> u32 {
        self.0 & 0x3ffff
    }
    /// The first category listed for the character (selects the unknown-word entries).
    pub fn default_type(self) -> usize {
        ((self.0 >> 18) & 0xff) as usize
    }
    pub fn length(self) -> u32 {
        (self.0 >> 26) & 0xf
    }
    pub fn group(self) -> bool {
        (self.0 >> 30) & 1 == 1
    }
    pub fn invoke(self) -> bool {
        self.0 >> 31 == 1
    }
    pub fn shares_type(self, other: CharInfo) -> bool {
        self.types() & other.types() != 0
    }
}

/// `char.bin`: category names (in `char.def` order) and one `CharInfo` per UCS-2 code point.
pub(crate) struct CharProperty {
    pub names: Vec<String>,
    table: Vec<CharInfo>,
}

impl CharProperty {
    pub(crate) fn open(path: &Path) -> Result<CharProperty, JaError> {
        let bytes = std::fs::read(path).map_err(|source| JaError::Io {
            path: path.to_owned(),
            source,
        })?;
        CharProperty::from_bytes(&bytes, path)
    }

    pub(crate) fn from_bytes(bytes: &[u8], path: &Path) -> Result<CharProperty, JaError> {
        if bytes.len() < 4 {
            return Err(format_error(path, "too short"));
        }
        let count = u32_at(bytes, 0) as usize;
        if bytes.len() != 4 + 32 * count + 4 * CHAR_TABLE_LEN {
            return Err(format_error(
                path,
                format!("size {} does not match {count} categories", bytes.len()),
            ));
        }
        let names = (0..count)
            .map(|i| {
                let raw = &bytes[4 + 32 * i..4 + 32 * (i + 1)];
                let len = raw.iter().position(|&b| b == 0).unwrap_or(32);
                String::from_utf8_lossy(&raw[..len]).into_owned()
            })
            .collect();
        let start = 4 + 32 * count;
        let table = (0..CHAR_TABLE_LEN)
            .map(|i| CharInfo(u32_at(bytes, start + 4 * i)))
            .collect();
        Ok(CharProperty { names, table })
    }

    /// MeCab's `getCharInfo` over `utf8_to_ucs2`: returns the info and the byte length of the
    /// character at `text[at..end]`. Four- to six-byte sequences (outside the BMP) and malformed
    /// bytes read as code point 0, so emoji and CJK extension B take U+0000's category.
    pub(crate) fn info(&self, text: &[u8], at: usize, end: usize) -> (CharInfo, usize) {
        let c = text[at];
        let left = end - at;
        let cont = |k: usize| (text[at + k] & 0x3f) as usize;
        let (len, code) = if c < 0x80 {
            (1, c as usize)
        } else if left >= 2 && c & 0xe0 == 0xc0 {
            (2, ((c & 0x1f) as usize) << 6 | cont(1))
        } else if left >= 3 && c & 0xf0 == 0xe0 {
            (3, ((c & 0x0f) as usize) << 12 | cont(1) << 6 | cont(2))
        } else if left >= 4 && c & 0xf8 == 0xf0 {
            (4, 0)
        } else if left >= 5 && c & 0xfc == 0xf8 {
            (5, 0)
        } else if left >= 6 && c & 0xfe == 0xfc {
            (6, 0)
        } else {
            (1, 0)
        };
        // U+FFFF would read past the table in C++; take U+0000's entry instead.
        let info = self.table.get(code).copied().unwrap_or(self.table[0]);
        (info, len)
    }

    pub(crate) fn info_of(&self, code: usize) -> CharInfo {
        self.table.get(code).copied().unwrap_or(self.table[0])
    }
}

/// `matrix.bin`: connection costs, `cost[right_id_of_left + lsize * left_id_of_right]`.
pub(crate) struct Matrix {
    bytes: Bytes,
    left_size: usize,
    right_size: usize,
}

impl Matrix {
    pub(crate) fn open(path: &Path) -> Result<Matrix, JaError> {
        Matrix::from_bytes(Bytes::map(path)?, path)
    }

    pub(crate) fn from_bytes(bytes: Bytes, path: &Path) -> Result<Matrix, JaError> {
        if bytes.len() < 4 {
            return Err(format_error(path, "too short"));
        }
        let left_size = u16_at(&bytes, 0) as usize;
        let right_size = u16_at(&bytes, 2) as usize;
        if bytes.len() != 4 + 2 * left_size * right_size {
            return Err(format_error(
                path,
                format!(
                    "size {} does not match {left_size}x{right_size}",
                    bytes.len()
                ),
            ));
        }
        Ok(Matrix {
            bytes,
            left_size,
            right_size,
        })
    }

    pub(crate) fn check_ids(&self, dictionary: &Dictionary, path: &Path) -> Result<(), JaError> {
        if dictionary.left_size as usize != self.left_size
            || dictionary.right_size as usize != self.right_size
        {
            return Err(format_error(
                path,
                format!(
                    "context sizes {}x{} differ from matrix.bin's {}x{}",
                    dictionary.left_size, dictionary.right_size, self.left_size, self.right_size
                ),
            ));
        }
        Ok(())
    }

    /// Cost of connecting a node whose right context id is `right_id` to one whose left context
    /// id is `left_id`. Ids beyond the matrix (a corrupt dictionary) cost 0.
    #[inline]
    pub(crate) fn cost(&self, right_id: u16, left_id: u16) -> i64 {
        let index = right_id as usize + self.left_size * left_id as usize;
        let off = 4 + 2 * index;
        if off + 1 < self.bytes.len() {
            u16_at(&self.bytes, off) as i16 as i64
        } else {
            0
        }
    }
}
