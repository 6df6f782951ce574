//! A merge candidate written into a loaded LLaVA's language model in place (`llm_mut().write_f32`) gives the
//! logits of loading that candidate from disk, and the frozen image side is untouched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use evomerge_vision::{load_image, AlphaMode, ImagePrompt, LlavaModel, LoadOptions};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vision")
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The llava fixture with every language-model tensor scaled and shifted; the tower and projector as
/// they are.
fn write_perturbed(src: &Path, out: &Path, model: &LlavaModel) -> HashMap<String, Tensor> {
    std::fs::create_dir_all(out).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n != "model.safetensors") {
            std::fs::copy(&path, out.join(path.file_name().unwrap())).unwrap();
        }
    }
    let layout = model.layout();
    let tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu)
            .unwrap()
            .into_iter()
            .map(|(k, v)| match layout.to_llm_name(&k) {
                Some(_) => (k, ((v * 0.9).unwrap() + 0.01).unwrap()),
                None => (k, v),
            })
            .collect();
    candle_core::safetensors::save(&tensors, out.join("model.safetensors")).unwrap();
    tensors
}

#[test]
fn llm_weights_written_in_place_give_the_perturbed_models_logits() {
    let src = fixtures().join("llava");
    let exp = candle_core::safetensors::load(fixtures().join("expected.safetensors"), &Device::Cpu)
        .unwrap();
    let mut model = LlavaModel::load(src.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("perturbed");
    let tensors = write_perturbed(&src, &out, &model);
    let perturbed = LlavaModel::load(out.to_str().unwrap(), &LoadOptions::default()).unwrap();

    let ids: Vec<u32> = values(&exp["prompt_ids"])
        .iter()
        .map(|&v| v as u32)
        .collect();
    let prompt = ImagePrompt::from_ids(&ids, model.image_token_id().unwrap()).unwrap();
    let image = load_image(&fixtures().join("images/test.png"), AlphaMode::default()).unwrap();
    let pixels = model.preprocess(&image);
    let before = values(&model.logits(&prompt, &pixels).unwrap());
    let want = values(&perturbed.logits(&prompt, &pixels).unwrap());
    assert!(before != want, "the perturbation must change the logits");

    let layout = model.layout();
    let names = model.llm().parameter_names();
    assert!(names.iter().any(|n| n == "lm_head.weight"));
    for name in &names {
        let stored = layout.from_llm_name(name).unwrap();
        let addr = model.llm().parameter_data_addr(name).unwrap();
        model
            .llm_mut()
            .write_f32(name, &values(&tensors[&stored]))
            .unwrap();
        assert_eq!(
            model.llm().parameter_data_addr(name).unwrap(),
            addr,
            "{name} moved"
        );
    }
    let after = values(&model.logits(&prompt, &pixels).unwrap());
    assert!(
        after == want,
        "logits after writing differ from the perturbed model's"
    );
    // The image side was not written: the features are those of both models.
    let features = values(&model.image_features(&pixels).unwrap());
    assert!(features == values(&perturbed.image_features(&pixels).unwrap()));
}
