//! The configuration llava-hf publishes for LLaVA-1.6-Mistral-7B (tests/fixtures/vision/llava_v1_6_mistral_7b, no
//! weights) parses to the CLIP ViT-L/14-336 tower, the 2-layer projector and Mistral-7B's text shapes, and an encoder
//! with random weights of its tile grid packs a 4:3 photo the way LLaVA-NeXT does (what `gpu_check vlm-bench` times).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use evomerge_vision::{preprocess, Flavor, ImageEncoder, ImageMode, LlavaConfig, VisionConfig};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vision/llava_v1_6_mistral_7b")
}

fn published() -> LlavaConfig {
    let dir = fixture();
    let text = std::fs::read_to_string(dir.join("config.json")).expect("fixture config");
    LlavaConfig::from_json(&serde_json::from_str(&text).expect("fixture JSON"), &dir)
        .expect("parses")
}

#[test]
fn llava_1_6_mistral_config_has_the_vit_l_336_tower_and_mistral_7b_text_shapes() {
    let config = published();
    assert_eq!(config.flavor, Flavor::LlavaNext);
    assert_eq!(config.encoder.vision, VisionConfig::clip_vit_large_336());
    assert_eq!(config.encoder.feature_layers, vec![-2]);
    assert_eq!(config.encoder.projector.layers, 2);
    assert!(config.encoder.has_newline);
    assert!(
        matches!(&config.native_mode, ImageMode::AnyRes { grid_pinpoints } if grid_pinpoints.len() == 5)
    );
    // Left out of the published text_config; transformers' MistralConfig defaults fill them.
    assert_eq!(config.text_hidden_size().expect("hidden size"), 4096);
    let text = evomerge_mistral::Config::from_json(&config.text_config).expect("text config");
    assert_eq!(
        (
            text.num_hidden_layers,
            text.num_attention_heads,
            text.num_key_value_heads
        ),
        (32, 32, 8)
    );
    // Given fields stay as published.
    assert_eq!(
        (
            text.intermediate_size,
            text.vocab_size,
            text.max_position_embeddings
        ),
        (14336, 32064, 32768)
    );
}

#[test]
fn a_4_by_3_photo_is_five_crops_and_2340_features_in_anyres() {
    let config = published();
    let photo = image::RgbImage::new(640, 480);
    let pixels = preprocess(&photo, &config.processor, &config.native_mode);
    assert_eq!((pixels.tiles, pixels.height, pixels.width), (5, 336, 336));
    // Narrow widths, the published tile grid (24 x 24 patches): the feature count depends on the grid only.
    let mut spec = config.encoder.clone();
    spec.vision.hidden_size = 16;
    spec.vision.intermediate_size = 32;
    spec.vision.num_attention_heads = 2;
    spec.vision.num_hidden_layers = 2;
    let encoder =
        ImageEncoder::random(&spec, 8, &Device::Cpu, DType::F32, 0.02).expect("random encoder");
    assert_eq!(
        encoder.tower().layers_loaded(),
        1,
        "feature layer -2 of 2 needs one layer"
    );
    let features = encoder
        .encode(&pixels, &config.native_mode)
        .expect("encodes");
    // The global tile's 576, then the 2 x 2 tiles' 48 x 48 grid unpadded to 36 rows, each closed by a newline.
    assert_eq!(features.dims(), &[576 + 36 * 49, 8]);
    let values = features
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("values");
    assert!(values.iter().all(|v| v.is_finite()));
}
