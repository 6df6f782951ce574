//! Weights written into a live model in place (`Mistral::write_f32`, `set_tensor`): the result equals
//! loading the written values, the storage stays the same, and writes never show outside the model
//! (clones, handed-out tensors, the map a model was loaded from, pools built from it).

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use common::*;
use evomerge_mistral::{Config, LoadOptions, Mistral};

fn opts(cpu_kernels: bool, dtype: Option<DType>) -> LoadOptions {
    LoadOptions {
        cpu_kernels,
        dtype,
        ..LoadOptions::default()
    }
}

fn load_with(name: &str, o: &LoadOptions) -> Mistral {
    Mistral::from_dir(&fixture(name), o).unwrap()
}

fn stored(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name).join("model.safetensors"), &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn ids() -> Tensor {
    Tensor::new(&[[3u32, 77, 12, 5, 101, 64, 9, 0, 33, 120]], &Device::Cpu).unwrap()
}

fn logits(model: &Mistral) -> Vec<f32> {
    values(&logits_for(model, &ids()))
}

fn addr(model: &Mistral, name: &str) -> usize {
    model
        .parameter_data_addr(name)
        .unwrap()
        .expect("CPU weights have a host address")
}

/// `x * 0.9 + 0.01`: a different model of the same shape.
fn perturbed(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x * 0.9 + 0.01).collect()
}

/// (a) + (c): every parameter of mistral_classic written with mistral_b's values gives mistral_b's logits bit
/// for bit, with the crate's CPU kernels (packed weights) and without, and no weight moves.
#[test]
fn writing_every_parameter_gives_the_other_models_logits_bit_for_bit() {
    let b_values = stored("mistral_b");
    for cpu_kernels in [true, false] {
        let o = opts(cpu_kernels, None);
        let mut model = load_with("mistral_classic", &o);
        let want = logits(&load_with("mistral_b", &o));
        assert_ne!(logits(&model), want, "the two fixtures must differ");
        for name in model.parameter_names() {
            let before = addr(&model, &name);
            model.write_f32(&name, &values(&b_values[&name])).unwrap();
            assert_eq!(
                addr(&model, &name),
                before,
                "{name} moved (kernels {cpu_kernels})"
            );
        }
        assert!(logits(&model) == want, "cpu_kernels={cpu_kernels}");

        // Back to the first model through `set_tensor`, also in place.
        let a_values = stored("mistral_classic");
        for name in model.parameter_names() {
            let before = addr(&model, &name);
            model.set_tensor(&name, &a_values[&name]).unwrap();
            assert_eq!(addr(&model, &name), before, "{name} moved in set_tensor");
        }
        assert!(logits(&model) == logits(&load_with("mistral_classic", &o)));
    }
}

#[test]
fn writes_with_a_wrong_shape_or_name_are_refused() {
    let mut model = load("mistral_classic");
    let hidden = model.config().hidden_size;
    assert_eq!(
        model.parameter_shape("model.norm.weight"),
        Some(vec![hidden])
    );
    assert_eq!(
        model.parameter_shape("model.layers.1.mlp.down_proj.weight"),
        Some(vec![hidden, model.config().intermediate_size])
    );
    assert_eq!(
        model.parameter_shape("model.layers.9.mlp.up_proj.weight"),
        None
    );
    assert!(matches!(
        model.write_f32("model.norm.weight", &vec![1.0; hidden + 1]),
        Err(evomerge_mistral::MistralError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        model.write_f32("model.layers.9.mlp.up_proj.weight", &[1.0]),
        Err(evomerge_mistral::MistralError::UnknownParameter(_))
    ));
    let wrong = Tensor::zeros((hidden, 2), DType::F32, &Device::Cpu).unwrap();
    assert!(model.set_tensor("model.norm.weight", &wrong).is_err());
}

/// (b): with tied embeddings `lm_head.weight` is the embedding matrix: writing it changes the embedding
/// lookup and the logits together, exactly as a checkpoint with that matrix.
#[test]
fn tied_embeddings_take_weights_in_place_through_either_name() {
    let original = stored("llama_tied");
    let embed = perturbed(&values(&original["model.embed_tokens.weight"]));
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = original.clone();
    let shape = original["model.embed_tokens.weight"].dims().to_vec();
    tensors.insert(
        "model.embed_tokens.weight".into(),
        Tensor::from_vec(embed.clone(), shape.as_slice(), &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
    std::fs::copy(
        fixture("llama_tied").join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();

    for cpu_kernels in [true, false] {
        let o = opts(cpu_kernels, None);
        let mut model = load_with("llama_tied", &o);
        assert!(!model
            .parameter_names()
            .contains(&"lm_head.weight".to_string()));
        assert_eq!(model.parameter_shape("lm_head.weight"), Some(shape.clone()));
        let before = addr(&model, "model.embed_tokens.weight");
        assert_eq!(addr(&model, "lm_head.weight"), before);

        model.write_f32("lm_head.weight", &embed).unwrap();
        assert_eq!(addr(&model, "model.embed_tokens.weight"), before);
        let lookup = values(&model.embed_tokens(&ids()).unwrap());
        let hidden = shape[1];
        let want_lookup: Vec<f32> = ids()
            .flatten_all()
            .unwrap()
            .to_vec1::<u32>()
            .unwrap()
            .iter()
            .flat_map(|&i| embed[i as usize * hidden..(i as usize + 1) * hidden].to_vec())
            .collect();
        assert!(
            lookup == want_lookup,
            "embedding lookup after writing lm_head.weight"
        );
        let direct = Mistral::from_dir(dir.path(), &o).unwrap();
        assert!(
            logits(&model) == logits(&direct),
            "cpu_kernels={cpu_kernels}"
        );

        // And back through the other name.
        let embed_name = "model.embed_tokens.weight";
        model
            .write_f32(embed_name, &values(&original[embed_name]))
            .unwrap();
        assert_eq!(addr(&model, "lm_head.weight"), before);
        assert!(logits(&model) == logits(&load_with("llama_tied", &o)));
    }
}

/// (c): writes never show outside the model. A clone, a tensor from `parameter`, the map a model was loaded
/// from and a model whose pool holds this one's layers keep their values; the writer gets its own copy of
/// that weight once, and later writes go in place.
#[test]
fn writes_copy_a_weight_that_someone_else_holds_once_then_go_in_place() {
    let norm = "model.norm.weight";
    let linear = "model.layers.0.mlp.up_proj.weight";
    let embed = "model.embed_tokens.weight";
    for cpu_kernels in [true, false] {
        let o = opts(cpu_kernels, None);
        let original = load_with("mistral_classic", &o);
        let want = logits(&original);

        // A clone of the model.
        let mut copy = original.clone();
        for name in [norm, linear, embed] {
            assert_eq!(
                addr(&copy, name),
                addr(&original, name),
                "clones share weights"
            );
            let new = perturbed(&values(&original.parameter(name).unwrap()));
            copy.write_f32(name, &new).unwrap();
            let moved = addr(&copy, name);
            assert_ne!(
                moved,
                addr(&original, name),
                "{name}: the clone must copy before writing"
            );
            copy.write_f32(name, &new).unwrap();
            assert_eq!(
                addr(&copy, name),
                moved,
                "{name}: the second write goes in place"
            );
        }
        assert!(
            logits(&original) == want,
            "writing a clone changed the original"
        );
        assert!(logits(&copy) != want);

        // A tensor handed out by `parameter`.
        let mut model = load_with("mistral_classic", &o);
        for name in [norm, linear, embed] {
            let held = model.parameter(name).unwrap();
            let kept = values(&held);
            model.write_f32(name, &perturbed(&kept)).unwrap();
            assert!(values(&held) == kept, "{name}: a handed-out tensor changed");
            assert!(values(&model.parameter(name).unwrap()) == perturbed(&kept));
        }

        // A pool built from another model shares its layers until written.
        let b = load_with("mistral_b", &o);
        let mut pooled = load_with("mistral_classic", &o).with_pool(&[&b]).unwrap();
        let n = original.config().num_hidden_layers;
        let pooled_name = format!("model.layers.{n}.mlp.up_proj.weight");
        let b_up = values(&b.parameter(linear).unwrap());
        pooled.write_f32(&pooled_name, &perturbed(&b_up)).unwrap();
        assert!(
            values(&b.parameter(linear).unwrap()) == b_up,
            "the pool's source model changed"
        );
    }

    // The map a model was loaded from (a source without storage of its own).
    let map = stored("mistral_classic");
    let config = Config::from_file(&fixture("mistral_classic").join("config.json")).unwrap();
    let mut model = Mistral::load(&config, &map, &LoadOptions::default()).unwrap();
    let kept = values(&map[norm]);
    model.write_f32(norm, &perturbed(&kept)).unwrap();
    assert!(values(&map[norm]) == kept, "the source map changed");
    let moved = addr(&model, norm);
    model.write_f32(norm, &kept).unwrap();
    assert_eq!(addr(&model, norm), moved);
}

/// (d): f16 and bf16 models take f32 values rounded to nearest even, as `half` and candle's conversion
/// round them, and then run exactly as a model loaded in that dtype.
#[test]
fn half_precision_models_round_written_values_to_nearest_even() {
    let b_values = stored("mistral_b");
    for dtype in [DType::BF16, DType::F16] {
        let o = opts(true, Some(dtype));
        let mut model = load_with("mistral_classic", &o);
        assert_eq!(model.dtype(), dtype);
        for name in model.parameter_names() {
            let before = addr(&model, &name);
            model.write_f32(&name, &values(&b_values[&name])).unwrap();
            assert_eq!(addr(&model, &name), before, "{name} moved ({dtype:?})");
        }
        let direct = load_with("mistral_b", &o);
        for name in model.parameter_names() {
            assert!(
                values(&model.parameter(&name).unwrap())
                    == values(&direct.parameter(&name).unwrap()),
                "{name} ({dtype:?})"
            );
        }
        assert!(logits(&model) == logits(&direct), "{dtype:?}");

        // Ties and the ordinary cases, element by element against `half`.
        let hidden = model.config().hidden_size;
        let mut probe: Vec<f32> = vec![
            1.0 + f32::powi(2.0, -8),        // bf16 tie: down to 1.0 (even)
            1.0 + 3.0 * f32::powi(2.0, -8),  // bf16 tie: up to 1 + 2^-6 (even)
            1.0 + f32::powi(2.0, -11),       // f16 tie: down to 1.0
            1.0 + 3.0 * f32::powi(2.0, -11), // f16 tie: up
            -2.5e-3,
            65504.0,
            1e-8,
            0.0,
        ];
        let norm = values(&b_values["model.norm.weight"]);
        probe.extend_from_slice(&norm[probe.len()..hidden]);
        model.write_f32("model.norm.weight", &probe).unwrap();
        let want: Vec<f32> = match dtype {
            DType::BF16 => probe
                .iter()
                .map(|&v| half::bf16::from_f32(v).to_f32())
                .collect(),
            _ => probe
                .iter()
                .map(|&v| half::f16::from_f32(v).to_f32())
                .collect(),
        };
        let got = values(&model.parameter("model.norm.weight").unwrap());
        assert_eq!(got, want, "{dtype:?}");
        if dtype == DType::BF16 {
            assert_eq!(got[0], 1.0);
            assert_eq!(got[1], 1.0 + f32::powi(2.0, -6));
        } else {
            assert_eq!(got[2], 1.0);
            assert_eq!(got[3], 1.0 + f32::powi(2.0, -9));
        }
        // The copy made after `parameter` handed the norm out converts the same way.
        model.write_f32("model.norm.weight", &probe).unwrap();
        assert_eq!(values(&model.parameter("model.norm.weight").unwrap()), want);
    }
}
