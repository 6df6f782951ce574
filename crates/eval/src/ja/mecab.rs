//! MeCab 0.996's 1-best analysis (`-Owakati`) over a compiled dictionary, reproducing the order in
//! which `tokenizer.cpp` builds candidate nodes and `viterbi.cpp` breaks cost ties (strict `<`,
//! most recently connected predecessor first): ties are common, and any other order changes the
//! segmentation of about 1.5 % of strings.

use std::path::{Path, PathBuf};

#[cfg(test)]
use super::dict::Bytes;
use super::dict::{CharInfo, CharProperty, Dictionary, Matrix, Token};
use super::JaError;

/// MeCab's default `max-grouping-size` (unidic-lite's dicrc leaves it commented out).
const MAX_GROUPING_SIZE: usize = 24;
/// `lookup` never looks further than this many bytes ahead.
const LOOKUP_WINDOW: usize = 65535;
/// Darts result buffer size in `tokenizer.h`.
const MAX_PREFIX_RESULTS: usize = 512;

/// A loaded MeCab dictionary directory ready to segment text.
pub struct Mecab {
    system: Dictionary,
    chars: CharProperty,
    matrix: Matrix,
    /// Unknown-word tokens per character category id, in `unk.dic` order.
    unknown: Vec<Vec<Token>>,
    space: CharInfo,
}

#[derive(Clone, Copy)]
struct Node {
    /// Byte offset of the surface (after skipped spaces).
    surface: u32,
    length: u32,
    /// Bytes from the lookup position to the end of the node, spaces included.
    rlength: u32,
    left_id: u16,
    right_id: u16,
    word_cost: i16,
    cost: i64,
    prev: u32,
    /// Next older node ending at the same byte (MeCab's `enext` list, newest first).
    enext: u32,
}

const NO_NODE: u32 = u32::MAX;

impl Mecab {
    /// Opens `sys.dic`, `unk.dic`, `char.bin` and `matrix.bin` in `dir`.
    pub fn open(dir: &Path) -> Result<Mecab, JaError> {
        let file = |name: &'static str| -> Result<PathBuf, JaError> {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(JaError::DictionaryMissing {
                    dir: dir.to_owned(),
                    file: name,
                })
            }
        };
        let (sys, unk, chr, mtx) = (
            file("sys.dic")?,
            file("unk.dic")?,
            file("char.bin")?,
            file("matrix.bin")?,
        );
        let system = Dictionary::open(&sys)?;
        let unknown = Dictionary::open(&unk)?;
        let chars = CharProperty::open(&chr)?;
        let matrix = Matrix::open(&mtx)?;
        matrix.check_ids(&system, &sys)?;
        Mecab::assemble(system, unknown, chars, matrix, &unk)
    }

    /// Builds a tagger from in-memory file images (used for synthetic dictionaries in tests).
    #[cfg(test)]
    pub(crate) fn from_images(
        sys: Vec<u8>,
        unk: Vec<u8>,
        chars: &[u8],
        matrix: Vec<u8>,
    ) -> Result<Mecab, JaError> {
        let p = Path::new("<memory>");
        let system = Dictionary::from_bytes(Bytes::Owned(sys), p)?;
        let unknown = Dictionary::from_bytes(Bytes::Owned(unk), p)?;
        let chars = CharProperty::from_bytes(chars, p)?;
        let matrix = Matrix::from_bytes(Bytes::Owned(matrix), p)?;
        Mecab::assemble(system, unknown, chars, matrix, p)
    }

    fn assemble(
        system: Dictionary,
        unknown_dic: Dictionary,
        chars: CharProperty,
        matrix: Matrix,
        unk_path: &Path,
    ) -> Result<Mecab, JaError> {
        let mut unknown = Vec::with_capacity(chars.names.len());
        for name in &chars.names {
            let value =
                unknown_dic
                    .exact_match(name.as_bytes())
                    .ok_or_else(|| JaError::Format {
                        path: unk_path.to_owned(),
                        reason: format!("no unknown-word entry for character category {name}"),
                    })?;
            unknown.push(unknown_dic.tokens(value).collect());
        }
        let space = chars.info_of(0x20);
        Ok(Mecab {
            system,
            chars,
            matrix,
            unknown,
            space,
        })
    }

    /// `CharProperty::seekToOtherType`: advances while each next character shares a category
    /// with the previous accepted one. Returns (stop, last char info, its byte length, count).
    fn seek_to_other_type(
        &self,
        text: &[u8],
        mut at: usize,
        end: usize,
        mut current: CharInfo,
    ) -> (usize, usize, usize) {
        let mut char_len = 0;
        let mut count = 0;
        while at != end {
            let (info, len) = self.chars.info(text, at, end);
            char_len = len;
            if !current.shares_type(info) {
                break;
            }
            at += len;
            count += 1;
            current = info;
        }
        (at, char_len, count)
    }

    /// `Tokenizer::lookup` at byte `begin`: appends the candidate nodes starting there to `nodes`
    /// in MeCab's `bnext` order (the reverse of creation order).
    fn lookup(
        &self,
        text: &[u8],
        begin: usize,
        nodes: &mut Vec<Node>,
        prefix: &mut Vec<(u32, usize)>,
    ) {
        let first = nodes.len();
        let end = text.len().min(begin + LOOKUP_WINDOW);
        let (begin2, _, _) = self.seek_to_other_type(text, begin, end, self.space);
        let (cinfo, mut char_len) = if begin2 < end {
            self.chars.info(text, begin2, end)
        } else {
            // Only trailing spaces: MeCab keeps the info and length of the last space examined.
            let last = last_char_start(text, begin, begin2);
            self.chars.info(text, last, end)
        };
        let push = |nodes: &mut Vec<Node>, token: &Token, end_at: usize| {
            nodes.push(Node {
                surface: begin2 as u32,
                length: (end_at - begin2) as u32,
                rlength: (end_at - begin) as u32,
                left_id: token.left_id,
                right_id: token.right_id,
                word_cost: token.word_cost,
                cost: 0,
                prev: NO_NODE,
                enext: NO_NODE,
            })
        };
        self.system.common_prefix_search(&text[begin2..end], prefix);
        for &(value, len) in prefix.iter().take(MAX_PREFIX_RESULTS) {
            for token in self.system.tokens(value) {
                push(nodes, &token, begin2 + len);
            }
        }
        // Dictionary words suppress unknown words unless the category says to always invoke them.
        let have_words = nodes.len() > first;
        if !have_words || cinfo.invoke() {
            let unknown = self
                .unknown
                .get(cinfo.default_type())
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let add_unknown = |nodes: &mut Vec<Node>, end_at: usize| {
                for token in unknown {
                    push(nodes, token, end_at);
                }
            };
            let mut begin3 = begin2 + char_len;
            let mut done = false;
            if begin3 > end {
                add_unknown(nodes, begin3);
                done = nodes.len() > first;
            }
            if !done {
                let mut group_end = None;
                if cinfo.group() {
                    let (stop, _, count) = self.seek_to_other_type(text, begin3, end, cinfo);
                    if count <= MAX_GROUPING_SIZE {
                        add_unknown(nodes, stop);
                    }
                    group_end = Some(stop);
                }
                for _ in 1..=cinfo.length() {
                    if begin3 > end {
                        break;
                    }
                    if Some(begin3) == group_end {
                        continue;
                    }
                    add_unknown(nodes, begin3);
                    // C++ reads the terminating NUL here (DEFAULT), which never shares a category
                    // with a length-limited one.
                    if begin3 >= end {
                        break;
                    }
                    let (info, len) = self.chars.info(text, begin3, end);
                    if !cinfo.shares_type(info) {
                        break;
                    }
                    char_len = len;
                    begin3 += char_len;
                }
                if nodes.len() == first {
                    add_unknown(nodes, begin3);
                }
            }
        }
        nodes[first..].reverse();
    }

    /// Segments `text` as one sentence and returns the surfaces of the best path (`-Owakati`).
    pub fn wakati(&self, text: &str) -> Vec<String> {
        self.best_path(text.as_bytes())
            .into_iter()
            .map(|(start, len)| {
                String::from_utf8_lossy(&text.as_bytes()[start..start + len]).into_owned()
            })
            .collect()
    }

    /// Byte ranges `(start, length)` of the best path's nodes.
    pub fn best_path(&self, text: &[u8]) -> Vec<(usize, usize)> {
        let len = text.len();
        let mut nodes: Vec<Node> = vec![Node {
            surface: 0,
            length: 0,
            rlength: 0,
            left_id: 0,
            right_id: 0,
            word_cost: 0,
            cost: 0,
            prev: NO_NODE,
            enext: NO_NODE,
        }];
        // Newest node ending at each byte; older ones follow through `enext`, as in MeCab.
        let mut ending: Vec<u32> = vec![NO_NODE; len + 8];
        ending[0] = 0;
        let mut candidates = Vec::new();
        let mut prefix = Vec::new();
        let best_predecessor = |nodes: &[Node], head: u32, left_id: u16| -> Option<(i64, u32)> {
            let mut best: Option<(i64, u32)> = None;
            let mut at = head;
            while at != NO_NODE {
                let left = &nodes[at as usize];
                let cost = left.cost + self.matrix.cost(left.right_id, left_id);
                if best.is_none_or(|(b, _)| cost < b) {
                    best = Some((cost, at));
                }
                at = left.enext;
            }
            best
        };
        for pos in 0..len {
            if ending[pos] == NO_NODE {
                continue;
            }
            candidates.clear();
            self.lookup(text, pos, &mut candidates, &mut prefix);
            for mut right in candidates.drain(..) {
                // The word cost is the same for every predecessor, so adding it after the
                // comparison keeps both the minimum and the tie-breaking.
                if let Some((cost, prev)) = best_predecessor(&nodes, ending[pos], right.left_id) {
                    right.cost = cost + right.word_cost as i64;
                    right.prev = prev;
                }
                let end_at = pos + right.rlength as usize;
                if end_at >= ending.len() {
                    ending.resize(end_at + 1, NO_NODE);
                }
                right.enext = ending[end_at];
                ending[end_at] = nodes.len() as u32;
                nodes.push(right);
            }
        }
        // EOS connects from the last position that some node ends at.
        let Some(last) = (0..=len).rev().find(|&p| ending[p] != NO_NODE) else {
            return Vec::new();
        };
        let best = best_predecessor(&nodes, ending[last], 0);
        let mut path = Vec::new();
        let mut at = best.map_or(NO_NODE, |(_, i)| i);
        while at != NO_NODE && at != 0 {
            let node = &nodes[at as usize];
            path.push((node.surface as usize, node.length as usize));
            at = node.prev;
        }
        path.reverse();
        path
    }
}

fn last_char_start(text: &[u8], begin: usize, stop: usize) -> usize {
    let mut at = stop.max(begin + 1) - 1;
    while at > begin && text[at] & 0xc0 == 0x80 {
        at -= 1;
    }
    at
}
