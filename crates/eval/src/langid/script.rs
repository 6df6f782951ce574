//! Dictionary-free Japanese detector used when `lid.176.ftz` is absent.
//!
//! Score = Japanese units / all letter units, where
//! * each hiragana, full-width katakana (with ー and the small-kana extension) and CJK ideograph
//!   (with 々〆ヶ) is one Japanese unit;
//! * each run of other alphabetic characters (a Latin, Greek or Cyrillic *word*) is one unit, so
//!   an English brand name in a Japanese sentence weighs like one word, not like its letters;
//! * half-width katakana count as non-Japanese letters, because lid.176 does not recognise them
//!   (it gives ｺｰﾋｰｶｯﾌﾟ p_ja ≈ 0) and the detector stands in for it;
//! * ideographs without any kana count as Japanese only up to four of them (short answers such
//!   as 東京 are Japanese; longer kana-free text is usually Chinese);
//! * digits, punctuation, symbols, spaces and emoji are ignored; no letters at all scores 0.
//!
//! Compare with the same thresholds as fastText's `p_ja`. Agreement with fastText at 0.5 on the
//! committed corpora is measured by the `ja_lid` tests (see crates/eval/README.md).

fn is_kana(c: char) -> bool {
    matches!(c as u32, 0x3041..=0x309F | 0x30A0..=0x30FF | 0x31F0..=0x31FF)
}

fn is_kanji(c: char) -> bool {
    matches!(c as u32, 0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F | 0x3005 | 0x3006 | 0x30F6)
}

fn is_halfwidth_katakana(c: char) -> bool {
    matches!(c as u32, 0xFF66..=0xFF9F)
}

/// Japanese share of the letter units of `text` (see the module documentation).
pub fn script_japanese_score(text: &str) -> f32 {
    let (mut units, mut kana, mut kanji) = (0usize, 0usize, 0usize);
    let mut in_word = false;
    for c in text.chars() {
        if is_kana(c) {
            kana += 1;
            units += 1;
            in_word = false;
        } else if is_kanji(c) {
            kanji += 1;
            units += 1;
            in_word = false;
        } else if c.is_alphabetic() || is_halfwidth_katakana(c) {
            if !in_word {
                units += 1;
            }
            in_word = true;
        } else {
            in_word = false;
        }
    }
    if units == 0 {
        return 0.0;
    }
    let japanese = if kana == 0 && kanji > 4 {
        0
    } else {
        kana + kanji
    };
    japanese as f32 / units as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares() {
        assert_eq!(script_japanese_score("これは日本語です。"), 1.0);
        assert_eq!(script_japanese_score("This is English."), 0.0);
        assert_eq!(script_japanese_score("東京"), 1.0);
        assert_eq!(script_japanese_score("这是一个中文句子"), 0.0);
        assert_eq!(script_japanese_score("123 !?"), 0.0);
        // Two Japanese units and one Latin word.
        assert_eq!(script_japanese_score("Googleです"), 2.0 / 3.0);
        assert_eq!(script_japanese_score("ｺｰﾋｰ"), 0.0);
    }
}
