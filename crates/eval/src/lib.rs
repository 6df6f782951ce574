//! Evaluators that score strings and datasets exactly as the paper's scorer does: MGSM-JA answer
//! extraction, Japanese ROUGE-L (MeCab/UniDic-lite segmentation), fastText language identification.
