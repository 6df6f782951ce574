//! Dictionary-free Japanese detector used when `lid.176.ftz` is absent.
//!
//! Score = share of *letters* (characters that are alphabetic in Unicode; digits, punctuation,
//! symbols, spaces and emoji are ignored) that are hiragana, katakana (full or half width, with
//! the prolonged sound mark) or CJK ideographs (with 々〆ヶ). Kanji alone also describe Chinese,
//! so a text with ideographs but no kana counts its ideographs only when it has at most four of
//! them (short Japanese answers such as 東京 or 日本語 often have no kana; Chinese sentences are
//! longer). Text with no letters scores 0. Compare with `p_ja` thresholds as for fastText.

fn is_kana(c: char) -> bool {
    matches!(c as u32, 0x3041..=0x309F | 0x30A0..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9F)
}

fn is_kanji(c: char) -> bool {
    matches!(c as u32, 0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F | 0x3005 | 0x3006 | 0x30F6)
}

/// Kana/kanji share of the letters of `text` (see the module documentation).
pub fn script_japanese_score(text: &str) -> f32 {
    let (mut letters, mut kana, mut kanji) = (0usize, 0usize, 0usize);
    for c in text.chars() {
        if is_kana(c) {
            kana += 1;
            letters += 1;
        } else if is_kanji(c) {
            kanji += 1;
            letters += 1;
        } else if c.is_alphabetic() {
            letters += 1;
        }
    }
    if letters == 0 {
        return 0.0;
    }
    let japanese = if kana == 0 && kanji > 4 { 0 } else { kana + kanji };
    japanese as f32 / letters as f32
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
        assert_eq!(script_japanese_score("AIです"), 0.5);
    }
}
