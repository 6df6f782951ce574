//! Image decoding and colour conversion against Pillow/transformers 5.23, Pillow-exact resampling, and
//! the errors bad inputs get.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use evomerge_vision::resample::resize_bicubic;
use evomerge_vision::{decode_image, load_image, AlphaMode, ImagePrompt, VisionError};
use image::RgbImage;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vision")
}

fn as_image(t: &Tensor) -> RgbImage {
    let (h, w, c) = t.dims3().unwrap();
    assert_eq!(c, 3);
    RgbImage::from_raw(
        w as u32,
        h as u32,
        t.flatten_all().unwrap().to_vec1::<u8>().unwrap(),
    )
    .unwrap()
}

/// (values that differ, largest difference)
fn compare(a: &RgbImage, b: &RgbImage) -> (usize, u8) {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .fold((0, 0), |(n, m), (x, y)| {
            let d = x.abs_diff(*y);
            (n + usize::from(d > 0), m.max(d))
        })
}

#[test]
fn bicubic_resize_is_bit_identical_to_pillow() {
    let cases =
        candle_core::safetensors::load(fixtures().join("resize_cases.safetensors"), &Device::Cpu)
            .unwrap();
    let mut checked = 0;
    for i in 0.. {
        let Some(input) = cases.get(&format!("in.{i}")) else {
            break;
        };
        let want = as_image(&cases[&format!("out.{i}")]);
        let got = resize_bicubic(&as_image(input), want.width(), want.height());
        let (n, max) = compare(&got, &want);
        assert_eq!(
            n,
            0,
            "case {i}: {:?} -> {:?}: {n} values differ (max {max})",
            input.dims(),
            want.dimensions()
        );
        checked += 1;
    }
    assert_eq!(checked, 48);
}

/// PNG modes convert exactly as transformers 5.23's `convert_to_rgb` (alpha composited on white) and as
/// Pillow's `convert("RGB")` (alpha dropped) does.
#[test]
fn png_modes_convert_like_transformers() {
    let exp = candle_core::safetensors::load(
        fixtures().join("expected_images.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    for name in ["gray.png", "rgba.png", "la.png", "palette_trns.png"] {
        let path = fixtures().join("images").join(name);
        let white = load_image(&path, AlphaMode::CompositeOnWhite).unwrap();
        let (n, max) = compare(&white, &as_image(&exp[&format!("rgb.{name}")]));
        assert_eq!(
            n, 0,
            "{name} composited on white: {n} values differ (max {max})"
        );
        let dropped = load_image(&path, AlphaMode::Drop).unwrap();
        let (n, max) = compare(&dropped, &as_image(&exp[&format!("rgb_drop_alpha.{name}")]));
        assert_eq!(
            n, 0,
            "{name} with alpha dropped: {n} values differ (max {max})"
        );
    }
}

/// JPEG decoders are not bit-identical (IDCT, chroma upsampling, CMYK conversion); the documented
/// tolerance against Pillow (libjpeg-turbo) is checked here.
#[test]
fn jpegs_including_cmyk_decode_close_to_pillow() {
    let exp = candle_core::safetensors::load(
        fixtures().join("expected_images.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    for (name, max_allowed, mean_allowed) in [("rgb.jpg", 4u8, 0.6f64), ("cmyk.jpg", 8u8, 2.0f64)] {
        let got = load_image(&fixtures().join("images").join(name), AlphaMode::default()).unwrap();
        let want = as_image(&exp[&format!("rgb.{name}")]);
        let (_, max) = compare(&got, &want);
        let mean = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .map(|(a, b)| f64::from(a.abs_diff(*b)))
            .sum::<f64>()
            / got.as_raw().len() as f64;
        eprintln!("{name}: max |diff| {max}, mean |diff| {mean:.3}");
        assert!(
            max <= max_allowed && mean <= mean_allowed,
            "{name}: max {max}, mean {mean:.3}"
        );
    }
}

#[test]
fn broken_files_get_clear_errors() {
    for (name, needle) in [
        ("truncated.png", "cannot decode image"),
        ("not_an_image.png", "unrecognised file format"),
        ("empty.png", "empty"),
        ("zero_width.png", ""),
    ] {
        let err = load_image(&fixtures().join("images").join(name), AlphaMode::default())
            .err()
            .unwrap_or_else(|| panic!("{name} must be refused"));
        let msg = err.to_string();
        assert!(
            msg.contains(name),
            "{name}: the error should name the file: {msg}"
        );
        assert!(msg.contains(needle), "{name}: {msg}");
        assert!(
            matches!(
                err,
                VisionError::ImageDecode { .. } | VisionError::EmptyImage { .. }
            ),
            "{name}: {err:?}"
        );
    }
    let missing = load_image(
        &fixtures().join("images/no_such_file.png"),
        AlphaMode::default(),
    )
    .unwrap_err();
    assert!(matches!(missing, VisionError::Io { .. }), "{missing}");
}

#[test]
fn zero_size_images_are_refused() {
    let empty = image::DynamicImage::ImageRgb8(RgbImage::new(0, 7));
    let err =
        evomerge_vision::image_io::to_rgb(empty, "in-memory", AlphaMode::default()).unwrap_err();
    assert!(
        matches!(
            err,
            VisionError::EmptyImage {
                width: 0,
                height: 7,
                ..
            }
        ),
        "{err}"
    );
    let err = decode_image(
        &std::fs::read(fixtures().join("images/zero_width.png")).unwrap(),
        "zw",
        AlphaMode::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("zw"), "{err}");
}

#[test]
fn prompts_need_exactly_one_image_marker() {
    let tok =
        tokenizers::Tokenizer::from_file(fixtures().join("tokenizer/tokenizer.json")).unwrap();
    let none =
        ImagePrompt::from_text(&tok, "USER: What is in the picture? ASSISTANT:").unwrap_err();
    assert!(matches!(none, VisionError::NoImageToken { .. }), "{none}");
    assert!(none.to_string().contains("<image>"));
    let two = ImagePrompt::from_text(&tok, "USER: <image> and <image>? ASSISTANT:").unwrap_err();
    assert!(
        matches!(two, VisionError::TooManyImageTokens { count: 2, .. }),
        "{two}"
    );
    let one = ImagePrompt::from_text(&tok, "USER: <image>\nWhat? ASSISTANT:").unwrap();
    assert_eq!(one.before.first(), Some(&1), "BOS first");
    assert!(!one.after.is_empty());
}
