//! Tiny MeCab dictionaries written in the compiled binary format, so the reader, the lookup and
//! the Viterbi search can be tested without the 260 MB UniDic-lite files.

use std::collections::BTreeMap;

use super::mecab::Mecab;

/// One lexicon entry: surface, left id, right id, word cost.
pub(crate) type Entry<'a> = (&'a str, u16, u16, i16);

/// Builds a darts-style double array over `keys` (sorted, unique) mapping key i to `values[i]`.
fn double_array(entries: &[(Vec<u8>, u32)]) -> Vec<(i32, u32)> {
    // A plain trie first: node -> (terminal value, children by byte).
    #[derive(Default)]
    struct TrieNode {
        value: Option<u32>,
        children: BTreeMap<u8, usize>,
    }
    let mut trie = vec![TrieNode::default()];
    for (key, value) in entries {
        let mut at = 0;
        for &b in key {
            let next = trie.len();
            at = match trie[at].children.get(&b) {
                Some(&n) => n,
                None => {
                    trie[at].children.insert(b, next);
                    trie.push(TrieNode::default());
                    next
                }
            };
        }
        trie[at].value = Some(*value);
    }
    const FREE: u32 = u32::MAX;
    let mut units: Vec<(i32, u32)> = vec![(0, FREE); 1];
    let mut used_bases = std::collections::HashSet::new();
    let mut base_of = vec![0i64; trie.len()];
    // Breadth-first: give every node a unique base whose slots (terminal at base, byte c at
    // base + c + 1) are all free, then write the slots.
    let mut queue = std::collections::VecDeque::from([0usize]);
    while let Some(n) = queue.pop_front() {
        let mut slots: Vec<usize> = trie[n].children.keys().map(|&c| c as usize + 1).collect();
        if trie[n].value.is_some() {
            slots.push(0);
        }
        let mut base = 1usize;
        loop {
            if !used_bases.contains(&base)
                && slots
                    .iter()
                    .all(|&s| units.get(base + s).is_none_or(|u| u.1 == FREE))
            {
                break;
            }
            base += 1;
        }
        used_bases.insert(base);
        base_of[n] = base as i64;
        let max = base + slots.iter().max().copied().unwrap_or(0);
        if units.len() <= max {
            units.resize(max + 1, (0, FREE));
        }
        if let Some(v) = trie[n].value {
            units[base] = (-(v as i32) - 1, base as u32);
        }
        for (&c, &child) in &trie[n].children {
            units[base + c as usize + 1] = (0, base as u32);
            queue.push_back(child);
        }
        if n == 0 {
            units[0].0 = base as i32;
        }
    }
    // Children's bases are known only now: fill them into the slots their parents reserved.
    let mut stack = vec![0usize];
    while let Some(n) = stack.pop() {
        for (&c, &child) in &trie[n].children {
            let slot = base_of[n] as usize + c as usize + 1;
            units[slot].0 = base_of[child] as i32;
            stack.push(child);
        }
    }
    units
}

/// A `sys.dic`/`unk.dic` image with the given entries (homographs keep their listed order).
pub(crate) fn dictionary_image(entries: &[Entry], kind: u32, lsize: u32, rsize: u32) -> Vec<u8> {
    let mut sorted: Vec<(usize, &Entry)> = entries.iter().enumerate().collect();
    sorted.sort_by(|a, b| a.1 .0.as_bytes().cmp(b.1 .0.as_bytes()).then(a.0.cmp(&b.0)));
    let mut keys: Vec<(Vec<u8>, u32)> = Vec::new();
    let mut tokens = Vec::new();
    for (i, (_, e)) in sorted.iter().enumerate() {
        match keys.last_mut() {
            Some((k, v)) if k.as_slice() == e.0.as_bytes() => *v += 1,
            _ => keys.push((e.0.as_bytes().to_vec(), ((i as u32) << 8) | 1)),
        }
        tokens.push(**e);
    }
    let units = double_array(&keys);
    let features = b"*\0".to_vec();
    let dsize = units.len() * 8;
    let tsize = tokens.len() * 16;
    let total = 72 + dsize + tsize + features.len();
    let mut out = Vec::with_capacity(total);
    for v in [
        (total as u32) ^ 0xef71_8f77,
        102,
        kind,
        tokens.len() as u32,
        lsize,
        rsize,
        dsize as u32,
        tsize as u32,
        features.len() as u32,
        0,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let mut charset = [0u8; 32];
    charset[..4].copy_from_slice(b"utf8");
    out.extend_from_slice(&charset);
    for (base, check) in units {
        out.extend_from_slice(&base.to_le_bytes());
        out.extend_from_slice(&check.to_le_bytes());
    }
    for (_, l, r, w) in tokens {
        out.extend_from_slice(&l.to_le_bytes());
        out.extend_from_slice(&r.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&w.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
    }
    out.extend_from_slice(&features);
    out
}

/// Character categories: (name, invoke, group, length, code point ranges).
pub(crate) type Category<'a> = (&'a str, bool, bool, u32, &'a [(u32, u32)]);

pub(crate) fn char_image(categories: &[Category]) -> Vec<u8> {
    let mut table = vec![0u32; 0xffff];
    let encode = |types: u32, default: usize, c: &Category| {
        types | (default as u32) << 18 | c.3 << 26 | (c.2 as u32) << 30 | (c.1 as u32) << 31
    };
    // Category 0 is DEFAULT for everything not listed.
    for v in table.iter_mut() {
        *v = encode(1, 0, &categories[0]);
    }
    let mut first_listed = vec![usize::MAX; 0xffff];
    for (id, cat) in categories.iter().enumerate().skip(1) {
        for &(lo, hi) in cat.4 {
            for cp in lo..=hi {
                let cp = cp as usize;
                if first_listed[cp] == usize::MAX {
                    first_listed[cp] = id;
                    table[cp] = encode(1 << id, id, cat);
                } else {
                    table[cp] |= 1 << id;
                }
            }
        }
    }
    let mut out = (categories.len() as u32).to_le_bytes().to_vec();
    for c in categories {
        let mut name = [0u8; 32];
        name[..c.0.len()].copy_from_slice(c.0.as_bytes());
        out.extend_from_slice(&name);
    }
    for v in table {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

pub(crate) fn matrix_image(lsize: u16, rsize: u16, cost: impl Fn(u16, u16) -> i16) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&lsize.to_le_bytes());
    out.extend_from_slice(&rsize.to_le_bytes());
    for left_id in 0..rsize {
        for right_id in 0..lsize {
            out.extend_from_slice(&cost(right_id, left_id).to_le_bytes());
        }
    }
    out
}

pub(crate) const CATEGORIES: &[Category] = &[
    ("DEFAULT", false, true, 0, &[]),
    ("SPACE", false, true, 0, &[(0x20, 0x20), (0x09, 0x09)]),
    ("KANJI", false, false, 2, &[(0x4E00, 0x9FFF)]),
    ("ALPHA", true, true, 0, &[(0x41, 0x5A), (0x61, 0x7A)]),
    ("HIRAGANA", false, true, 2, &[(0x3041, 0x309F)]),
    ("KATAKANA", true, true, 2, &[(0x30A1, 0x30FF)]),
];

/// A tagger over `words` (ids 1..=3 for words, 0 for BOS/EOS) with a flat matrix of `link` cost
/// and one unknown-word entry of cost `unknown_cost` per category.
pub(crate) fn tagger(words: &[Entry], link: i16, unknown_cost: i16) -> Mecab {
    let unk: Vec<Entry> = CATEGORIES
        .iter()
        .map(|c| (c.0, 3, 3, unknown_cost))
        .collect();
    Mecab::from_images(
        dictionary_image(words, 0, 4, 4),
        dictionary_image(&unk, 2, 4, 4),
        &char_image(CATEGORIES),
        matrix_image(4, 4, |_, _| link),
    )
    .expect("synthetic dictionary is well formed")
}

#[cfg(test)]
mod tests {
    use super::super::dict::{Bytes, Dictionary};
    use super::*;

    #[test]
    fn double_array_prefix_search_finds_every_prefix_in_length_order() {
        let words: Vec<Entry> = vec![
            ("東", 1, 1, 10),
            ("東京", 1, 1, 10),
            ("東京都", 1, 1, 10),
            ("京都", 1, 1, 10),
            ("東京", 2, 2, 5),
        ];
        let dic = Dictionary::from_bytes(
            Bytes::Owned(dictionary_image(&words, 0, 4, 4)),
            std::path::Path::new("x"),
        )
        .unwrap();
        let mut out = Vec::new();
        dic.common_prefix_search("東京都庁".as_bytes(), &mut out);
        let lens: Vec<usize> = out.iter().map(|&(_, l)| l).collect();
        assert_eq!(lens, vec![3, 6, 9]);
        // 東京 has two homographs, in listing order.
        let tokens: Vec<_> = dic.tokens(out[1].0).map(|t| t.left_id).collect();
        assert_eq!(tokens, vec![1, 2]);
        assert!(dic.exact_match("京".as_bytes()).is_none());
        assert!(dic.exact_match("京都".as_bytes()).is_some());
    }

    #[test]
    fn cheapest_path_wins_and_spaces_are_skipped() {
        let words: Vec<Entry> = vec![
            ("東京", 1, 1, 100),
            ("東", 1, 1, 100),
            ("京都", 1, 1, 100),
            ("東京都", 1, 1, 1000),
        ];
        let t = tagger(&words, 0, 5000);
        assert_eq!(t.wakati("東京都"), vec!["東", "京都"]);
        assert_eq!(t.wakati("東京  東京"), vec!["東京", "東京"]);
    }

    #[test]
    fn unknown_words_group_by_category() {
        let t = tagger(&[("東", 1, 1, 100)], 0, 10);
        // ALPHA groups; KATAKANA groups (invoke); DEFAULT groups emoji (non-BMP reads as U+0000).
        assert_eq!(t.wakati("abcアイウ"), vec!["abc", "アイウ"]);
        assert_eq!(t.wakati("x😀😀"), vec!["x", "😀😀"]);
    }

    #[test]
    fn grouping_stops_after_twenty_five_characters() {
        // Unknown words cost more than their length, so the longest group is preferred; a run of
        // 30 letters cannot be one group (at most 24 chars after the first).
        let t = tagger(&[], 0, 10);
        let long = "a".repeat(30);
        let tokens = t.wakati(&long);
        assert!(tokens.iter().all(|s| s.len() <= 25), "{tokens:?}");
        assert_eq!(tokens.concat(), long);
        assert_eq!(t.wakati(&"a".repeat(25)), vec!["a".repeat(25)]);
    }

    #[test]
    fn equal_costs_keep_the_most_recently_connected_predecessor() {
        // あい (100) and あ+い (50+50) tie. Both end at byte 6; い was connected last, MeCab scans
        // newest first and only a strictly lower cost replaces the best, so あ/い wins. A `<=`
        // comparison would pick あい.
        let words: Vec<Entry> = vec![("あ", 1, 1, 50), ("い", 1, 1, 50), ("あい", 1, 1, 100)];
        let t = tagger(&words, 0, 9000);
        assert_eq!(t.wakati("あい"), vec!["あ", "い"]);
    }
}

#[cfg(test)]
mod error_tests {
    use super::super::dict::{Bytes, Dictionary, Matrix};
    use super::super::{JaError, JaTokenizer};
    use super::*;

    #[test]
    fn missing_dictionary_names_the_file_and_the_fix() {
        let dir = std::env::temp_dir().join(format!("evomerge-no-dic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = JaTokenizer::load(&dir)
            .err()
            .expect("an empty directory is not a dictionary");
        assert!(
            matches!(
                err,
                JaError::DictionaryMissing {
                    file: "sys.dic",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("scripts/fetch-assets.sh"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn truncated_or_foreign_files_are_rejected() {
        let p = std::path::Path::new("sys.dic");
        let mut image = dictionary_image(&[("犬", 1, 1, 10)], 0, 4, 4);
        image.pop();
        let err = Dictionary::from_bytes(Bytes::Owned(image), p)
            .err()
            .expect("truncated");
        assert!(err.to_string().contains("magic"), "{err}");
        let err = Dictionary::from_bytes(Bytes::Owned(vec![0; 10]), p)
            .err()
            .expect("tiny");
        assert!(err.to_string().contains("header"), "{err}");
        let mut matrix = matrix_image(4, 4, |_, _| 0);
        matrix.truncate(20);
        let err = Matrix::from_bytes(Bytes::Owned(matrix), std::path::Path::new("matrix.bin"))
            .err()
            .expect("short matrix");
        assert!(err.to_string().contains("does not match"), "{err}");
    }
}
