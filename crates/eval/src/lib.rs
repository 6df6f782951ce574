//! Evaluators that score strings and datasets exactly as the paper's scorer does: MGSM-JA answer
//! extraction, Japanese ROUGE-L (MeCab/UniDic-lite segmentation), fastText language identification.
//! Models reach the evaluators only through the [`generator::Generator`] trait, so nothing here knows
//! about candle.

pub mod generator;
pub mod ja;
pub mod langid;
pub mod mgsm;
pub mod rouge;
pub mod runner;
