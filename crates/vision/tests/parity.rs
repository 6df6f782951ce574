//! Parity with transformers 5.23 on the tiny fixtures of `tests/fixtures/vision` (made by its
//! `generate.py`): processor pixels, image features and logits of `llava`, `llava_next` (anyres) and
//! the original liuhaotian layout, plus end to end from the PNG.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use evomerge_vision::preprocess::tiles_u8;
use evomerge_vision::{
    load_image, preprocess, AlphaMode, Flavor, ImageMode, ImagePrompt, LlavaModel, LoadOptions,
    ModeChoice, PixelValues, ProcessorConfig, WeightLayout,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vision")
}

fn expected(file: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join(file), &Device::Cpu).expect("fixture tensors")
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = b
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let d = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    eprintln!("max |diff| over {} values: {d:e}", a.len());
    d
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|v| v as u32)
        .collect()
}

fn pixels_from(t: &Tensor, original: (usize, usize)) -> PixelValues {
    let t = if t.rank() == 3 {
        t.unsqueeze(0).unwrap()
    } else {
        t.clone()
    };
    let (tiles, _, height, width) = t.dims4().unwrap();
    PixelValues {
        data: t.flatten_all().unwrap().to_vec1().unwrap(),
        tiles,
        height,
        width,
        original_size: original,
    }
}

fn load(dir: &str, mode: ModeChoice) -> LlavaModel {
    let opts = LoadOptions {
        mode,
        ..LoadOptions::default()
    };
    LlavaModel::load(fixtures().join(dir).to_str().unwrap(), &opts).expect("fixture model loads")
}

fn prompt(exp: &HashMap<String, Tensor>, model: &LlavaModel) -> ImagePrompt {
    ImagePrompt::from_ids(&ids(&exp["prompt_ids"]), model.image_token_id().unwrap()).unwrap()
}

const PIXEL_TOL: f32 = 1.0 / 255.0;
const LOGIT_TOL: f32 = 1e-3;

#[test]
fn llava_pixels_match_transformers() {
    let exp = expected("expected.safetensors");
    let model = load("llava", ModeChoice::Native);
    let image = load_image(&fixtures().join("images/test.png"), AlphaMode::default()).unwrap();
    let pixels = model.preprocess(&image);
    let diff = max_abs_diff(
        &pixels.to_tensor(&Device::Cpu).unwrap(),
        &exp["llava.pixel_values"],
    );
    assert!(diff <= PIXEL_TOL, "llava pixels differ by {diff}");
    // The u8 pipeline is bit-exact, so the floats are too.
    assert_eq!(diff, 0.0, "pixels are expected to be bit-identical");
}

#[test]
fn llava_next_pixels_match_transformers() {
    let exp = expected("expected.safetensors");
    let model = load("llava_next", ModeChoice::Native);
    let image = load_image(&fixtures().join("images/test.png"), AlphaMode::default()).unwrap();
    let pixels = model.preprocess(&image);
    assert_eq!(pixels.original_size, (45, 73));
    let diff = max_abs_diff(
        &pixels.to_tensor(&Device::Cpu).unwrap(),
        &exp["llava_next.pixel_values"],
    );
    assert_eq!(diff, 0.0, "llava_next pixels differ by {diff}");
}

/// Every image size × processor (plain, pad-to-square, anyres): the 8-bit tiles equal transformers'.
#[test]
fn processor_tiles_are_bit_identical_for_many_sizes() {
    let exp = expected("expected_images.safetensors");
    let base = ProcessorConfig::from_dir(&fixtures().join("llava"))
        .unwrap()
        .unwrap();
    let padded = ProcessorConfig {
        pad_to_square: true,
        ..base.clone()
    };
    let next = ProcessorConfig::from_dir(&fixtures().join("llava_next"))
        .unwrap()
        .unwrap();
    let anyres = ImageMode::AnyRes {
        grid_pinpoints: next.image_grid_pinpoints.clone().unwrap(),
    };
    let mut checked = 0;
    for (w, h) in [
        (73, 45),
        (30, 97),
        (13, 9),
        (170, 120),
        (56, 56),
        (200, 57),
        (1, 40),
    ] {
        let image = load_image(
            &fixtures().join(format!("images/size_{w}x{h}.png")),
            AlphaMode::default(),
        )
        .unwrap();
        for (tag, cfg, mode) in [
            ("llava", &base, &ImageMode::Single),
            ("llava_pad", &padded, &ImageMode::Single),
            ("llava_next", &next, &anyres),
        ] {
            let want = &exp[&format!("u8.{tag}.{w}x{h}")];
            let tiles = tiles_u8(&image, cfg, mode);
            let mut got = Vec::new();
            for t in &tiles {
                // channel-first like the processor's output
                for c in 0..3 {
                    got.extend(t.pixels().map(|p| p.0[c]));
                }
            }
            let want_flat = want.flatten_all().unwrap().to_vec1::<u8>().unwrap();
            assert_eq!(
                got.len(),
                want_flat.len(),
                "{tag} {w}x{h}: tile count/size differs ({} tiles)",
                tiles.len()
            );
            let bad = got.iter().zip(&want_flat).filter(|(a, b)| a != b).count();
            assert_eq!(
                bad,
                0,
                "{tag} {w}x{h}: {bad} of {} values differ",
                got.len()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 21);
}

#[test]
fn llava_logits_match_transformers() {
    let exp = expected("expected.safetensors");
    let model = load("llava", ModeChoice::Native);
    assert_eq!(model.config().flavor, Flavor::Llava);
    assert_eq!(model.layout(), WeightLayout::HfLegacy);
    let pixels = pixels_from(&exp["llava.pixel_values"], (45, 73));
    let features = model.image_features(&pixels).unwrap();
    let fdiff = max_abs_diff(&features, &exp["llava.image_features"]);
    assert!(fdiff < 1e-4, "image features differ by {fdiff}");
    let p = prompt(&exp, &model);
    let logits = model.logits(&p, &pixels).unwrap();
    let diff = max_abs_diff(&logits, &exp["llava.logits"]);
    assert!(diff < LOGIT_TOL, "llava logits differ by {diff}");
    // The context ids equal transformers' expanded input_ids.
    let (_, context) = model.prompt_embeds(&p, &features).unwrap();
    assert_eq!(context, ids(&exp["llava.input_ids"]));
}

#[test]
fn llava_next_logits_match_transformers() {
    let exp = expected("expected.safetensors");
    let model = load("llava_next", ModeChoice::Native);
    assert_eq!(model.config().flavor, Flavor::LlavaNext);
    let pixels = pixels_from(&exp["llava_next.pixel_values"], (45, 73));
    let features = model.image_features(&pixels).unwrap();
    let fdiff = max_abs_diff(&features, &exp["llava_next.image_features"]);
    assert!(fdiff < 1e-4, "packed anyres features differ by {fdiff}");
    let p = prompt(&exp, &model);
    let diff = max_abs_diff(
        &model.logits(&p, &pixels).unwrap(),
        &exp["llava_next.logits"],
    );
    assert!(diff < LOGIT_TOL, "llava_next logits differ by {diff}");
    let (_, context) = model.prompt_embeds(&p, &features).unwrap();
    assert_eq!(context, ids(&exp["llava_next.input_ids"]));
}

/// A tall image (unpadding drops feature columns instead of rows), end to end from its PNG.
#[test]
fn llava_next_tall_image_end_to_end() {
    let exp = expected("expected.safetensors");
    let model = load("llava_next", ModeChoice::Native);
    let image = load_image(&fixtures().join("images/tall.png"), AlphaMode::default()).unwrap();
    let pixels = model.preprocess(&image);
    let features = model.image_features(&pixels).unwrap();
    let fdiff = max_abs_diff(&features, &exp["llava_next.tall.image_features"]);
    assert!(fdiff < 1e-4, "features differ by {fdiff}");
    let diff = max_abs_diff(
        &model.logits(&prompt(&exp, &model), &pixels).unwrap(),
        &exp["llava_next.tall.logits"],
    );
    assert!(diff < LOGIT_TOL, "logits differ by {diff}");
}

#[test]
fn end_to_end_from_png_matches_transformers() {
    let exp = expected("expected.safetensors");
    for (dir, key) in [
        ("llava", "llava.logits"),
        ("llava_next", "llava_next.logits"),
    ] {
        let model = load(dir, ModeChoice::Native);
        let image = model
            .read_image(&fixtures().join("images/test.png"))
            .unwrap();
        let logits = model
            .logits(&prompt(&exp, &model), &model.preprocess(&image))
            .unwrap();
        let diff = max_abs_diff(&logits, &exp[key]);
        assert!(
            diff < LOGIT_TOL,
            "{dir}: end-to-end logits differ by {diff}"
        );
    }
}

/// The paper's evaluation mode: a LLaVA-NeXT checkpoint run as plain llava (one tile, CLIP processor).
#[test]
fn llava_next_in_single_tile_mode_matches_transformers_llava() {
    let exp = expected("expected.safetensors");
    let model = load("llava_next", ModeChoice::Single);
    assert_eq!(model.mode(), &ImageMode::Single);
    let image = model
        .read_image(&fixtures().join("images/test.png"))
        .unwrap();
    let pixels = model.preprocess(&image);
    assert_eq!(pixels.tiles, 1);
    let diff = max_abs_diff(
        &pixels.to_tensor(&Device::Cpu).unwrap(),
        &exp["llava.pixel_values"],
    );
    assert_eq!(diff, 0.0);
    let diff = max_abs_diff(
        &model.logits(&prompt(&exp, &model), &pixels).unwrap(),
        &exp["llava_next_as_llava.logits"],
    );
    assert!(diff < LOGIT_TOL, "single-tile logits differ by {diff}");
}

/// The same weights in the original liuhaotian/LLaVA layout and config give transformers' logits; the
/// prompt goes through the text path (the tokenizer is split at `<image>`).
#[test]
fn original_layout_matches_transformers_llava_next() {
    let exp = expected("expected.safetensors");
    let model = load("llava_next_orig", ModeChoice::Native);
    assert_eq!(model.config().flavor, Flavor::Original);
    assert_eq!(model.layout(), WeightLayout::Original);
    assert!(matches!(model.mode(), ImageMode::AnyRes { .. }));
    let tokenizer =
        tokenizers::Tokenizer::from_file(fixtures().join("llava_next_orig/tokenizer.json"))
            .unwrap();
    let text = "USER: <image>\nWhat is in the picture? ASSISTANT:";
    let p = ImagePrompt::from_text(&tokenizer, text).unwrap();
    let reference = ImagePrompt::from_ids(&ids(&exp["prompt_ids"]), 120).unwrap();
    assert_eq!(
        p, reference,
        "text-path tokenization differs from transformers' processor"
    );
    let image = model
        .read_image(&fixtures().join("images/test.png"))
        .unwrap();
    let diff = max_abs_diff(
        &model.logits(&p, &model.preprocess(&image)).unwrap(),
        &exp["llava_next.logits"],
    );
    assert!(diff < LOGIT_TOL, "original-layout logits differ by {diff}");
}

/// The transformers ≥ 4.52 naming (`model.vision_tower.*`, `model.language_model.*`, `lm_head.weight`)
/// loads to the same model.
#[test]
fn modern_hf_layout_loads_the_same_model() {
    let exp = expected("expected.safetensors");
    let src = fixtures().join("llava_next");
    let tmp = tempfile::tempdir().unwrap();
    let tensors =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let renamed: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| {
            let k = if let Some(rest) = k.strip_prefix("language_model.model.") {
                format!("model.language_model.{rest}")
            } else if k == "language_model.lm_head.weight" {
                "lm_head.weight".to_string()
            } else {
                format!("model.{k}")
            };
            (k, v)
        })
        .collect();
    candle_core::safetensors::save(&renamed, tmp.path().join("model.safetensors")).unwrap();
    for f in ["config.json", "processor_config.json"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    let model = LlavaModel::load(tmp.path().to_str().unwrap(), &LoadOptions::default()).unwrap();
    assert_eq!(model.layout(), WeightLayout::HfModern);
    let image = model
        .read_image(&fixtures().join("images/test.png"))
        .unwrap();
    let diff = max_abs_diff(
        &model
            .logits(&prompt(&exp, &model), &model.preprocess(&image))
            .unwrap(),
        &exp["llava_next.logits"],
    );
    assert!(diff < LOGIT_TOL, "modern-layout logits differ by {diff}");
}

#[test]
fn anyres_on_a_single_tile_model_is_refused() {
    let opts = LoadOptions {
        mode: ModeChoice::AnyRes,
        ..LoadOptions::default()
    };
    let err = LlavaModel::load(fixtures().join("llava").to_str().unwrap(), &opts)
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("anyres"), "{err}");
}

#[test]
fn preprocess_function_equals_model_preprocess() {
    let model = load("llava_next", ModeChoice::Native);
    let image = model
        .read_image(&fixtures().join("images/size_170x120.png"))
        .unwrap();
    let a = model.preprocess(&image);
    let b = preprocess(&image, model.processor(), model.mode());
    assert_eq!(a.data, b.data);
    assert_eq!(a.tiles, 5);
}
