//! Encoding throughput (images/s) and end-to-end VQA throughput (answers/s) on CPU for the tiny
//! fixture models; `crates/vision/bench/bench_transformers.py` measures transformers on the same work.
//!
//! Run: `cargo bench -p evomerge-vision --bench vision` (add `-- --quick` for fewer repetitions).
//! Work per measurement, identical on both sides:
//! * encode: read `images/test.png` (73x45), preprocess, run tower + projector (+ anyres packing);
//! * vqa: for each of 8 (image, question) pairs, encode, prefill and greedily generate 16 tokens (no EOS),
//!   in batches of 4.

use std::path::{Path, PathBuf};
use std::time::Instant;

use evomerge_mistral::generation::GenerationConfig;
use evomerge_vision::{ImagePrompt, LlavaModel, LoadOptions};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vision")
}

/// Median seconds of `reps` runs of `f` after one warm-up.
fn time<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    f();
    let mut runs: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let reps = if quick { 3 } else { 7 };
    let image_path = fixtures().join("images/test.png");
    let tokenizer = tokenizers::Tokenizer::from_file(fixtures().join("tokenizer/tokenizer.json"))?;
    let question = "USER: <image>\nWhat is in the picture? ASSISTANT:";
    println!(
        "cores: {}, RAYON_NUM_THREADS={}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into())
    );
    for dir in ["llava", "llava_next"] {
        let model = LlavaModel::load(
            fixtures().join(dir).to_str().ok_or("path")?,
            &LoadOptions::default(),
        )?;
        let prompt = ImagePrompt::from_text(&tokenizer, question)?;

        let n_encode = 32;
        let secs = time(reps, || {
            for _ in 0..n_encode {
                let image = model.read_image(&image_path).expect("image");
                let pixels = model.preprocess(&image);
                let f = model.image_features(&pixels).expect("features");
                std::hint::black_box(f);
            }
        });
        println!(
            "{dir}: encode {:.1} images/s ({:.3} ms/image)",
            n_encode as f64 / secs,
            secs * 1e3 / n_encode as f64
        );

        let config = GenerationConfig {
            max_new_tokens: 16,
            ..GenerationConfig::default()
        };
        let n_vqa = 8;
        let secs = time(reps, || {
            let items: Vec<_> = (0..n_vqa)
                .map(|_| {
                    (
                        prompt.clone(),
                        model.read_image(&image_path).expect("image"),
                    )
                })
                .collect();
            let out = model.generate(&items, &config, None, 4).expect("generate");
            assert!(out.iter().all(|c| c.tokens.len() == 16));
        });
        println!(
            "{dir}: vqa {:.1} answers/s ({:.1} ms/answer, 16 new tokens, batch 4)",
            n_vqa as f64 / secs,
            secs * 1e3 / n_vqa as f64
        );
    }
    Ok(())
}
