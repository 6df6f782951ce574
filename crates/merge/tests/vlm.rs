//! VLM ⊕ LLM: a LLaVA checkpoint's language model merges with a plain Mistral checkpoint. The output
//! keeps the VLM's layout and names, its vision tower / projector / image_newline are copied bit for
//! bit, and its config and processor files are kept. Covers llava-hf (`language_model.*`), the
//! original LLaVA layout (`model.*` next to `model.vision_tower.*`) and the newer transformers
//! layout (`model.language_model.*`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use evomerge_checkpoint::Checkpoint;
use evomerge_merge::layout::Layout;
use evomerge_merge::{write_plan, InMemoryMerger, MemorySource, MergeConfig, MergeOptions, MergePlan, TensorSource};
use serde_json::json;

fn vision_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vision").join(name)
}

const RECIPE: &str = "
models:
  - model: vlm
    parameters: {weight: 0.25}
  - model: llm
    parameters: {weight: 0.75}
merge_method: linear
base_model: vlm
";

/// A plain Mistral whose tensors are the VLM's language model plus a deterministic perturbation.
fn plain_llm_from(vlm: &dyn TensorSource) -> MemorySource {
    let layout = Layout::detect(vlm.config(), &vlm.tensor_names());
    let mut llm = MemorySource::new("llm");
    llm.config = Some(json!({"model_type": "mistral", "architectures": ["MistralForCausalLM"]}));
    for name in vlm.tensor_names() {
        if let Some(canonical) = layout.canonical(&name) {
            let mut values = Vec::new();
            vlm.read_f32(&name, &mut values).unwrap();
            for (i, v) in values.iter_mut().enumerate() {
                *v += 0.01 * ((i % 7) as f32 - 3.0);
            }
            llm.insert(canonical, vlm.shape(&name).unwrap(), values).unwrap();
        }
    }
    llm
}

fn check_streaming_merge(fixture: &str, expected_layout: Layout) {
    let vlm = Checkpoint::open_dir(&vision_fixture(fixture)).unwrap();
    let layout = Layout::detect(Some(vlm.config()), &TensorSource::tensor_names(&vlm));
    assert_eq!(layout, expected_layout, "{fixture}: detected layout");
    let llm = plain_llm_from(&vlm);
    let config = MergeConfig::from_yaml(RECIPE).unwrap();
    let sources: Vec<&dyn TensorSource> = vec![&vlm, &llm];
    let plan = MergePlan::new(&config, &sources).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("merged");
    write_plan(&plan, &sources, &out, &MergeOptions { progress: false, ..Default::default() }).unwrap();

    let merged = Checkpoint::open_dir(&out).unwrap();
    assert_eq!(merged.tensor_names(), vlm.tensor_names(), "{fixture}: output keeps the VLM's names");
    assert_eq!(merged.config(), vlm.config(), "{fixture}: config comes from the base VLM");
    for file in ["tokenizer.json", "tokenizer_config.json", "processor_config.json"] {
        assert_eq!(vision_fixture(fixture).join(file).exists(), out.join(file).exists(), "{fixture}: {file}");
    }
    let mut copied = 0;
    for name in vlm.tensor_names() {
        let got = merged.tensor(name).unwrap();
        let base = vlm.tensor(name).unwrap();
        assert_eq!(got.shape, base.shape, "{name}");
        match layout.canonical(name) {
            None => {
                assert_eq!(got.dtype, base.dtype, "{name}");
                assert!(got.data == base.data, "{fixture}: {name} must be copied bit for bit");
                copied += 1;
            }
            Some(canonical) => {
                let (a, b) = (base.to_f32(), llm.tensors[&canonical].1.clone());
                let got = got.to_f32();
                for j in 0..a.len() {
                    let want = (a[j] * 0.25 + b[j] * 0.75) / 1.0;
                    assert!((got[j] - want).abs() <= 1e-6, "{fixture}: {name}[{j}] = {} vs {want}", got[j]);
                }
            }
        }
    }
    assert!(copied > 10, "{fixture}: the vision tower and projector are copied ({copied})");
}

#[test]
fn llava_hf_layout_merges_with_plain_mistral() {
    check_streaming_merge("llava", Layout::LlavaHf);
}

#[test]
fn llava_next_hf_layout_keeps_image_newline() {
    check_streaming_merge("llava_next", Layout::LlavaHf);
}

#[test]
fn original_llava_layout_merges_with_plain_mistral() {
    check_streaming_merge("llava_next_orig", Layout::Liuhaotian);
}

/// The newer transformers layout, built in memory from the llava-hf fixture by renaming.
#[test]
fn nested_transformers_layout_merges_in_memory() {
    let hf = Checkpoint::open_dir(&vision_fixture("llava_next")).unwrap();
    let mut nested = MemorySource::new("vlm");
    nested.config = Some(hf.config().clone());
    let mut renamed = BTreeMap::new();
    for name in TensorSource::tensor_names(&hf) {
        let new = if let Some(rest) = name.strip_prefix("language_model.model.") {
            format!("model.language_model.{rest}")
        } else if let Some(rest) = name.strip_prefix("language_model.") {
            rest.to_string()
        } else {
            format!("model.{name}")
        };
        nested.insert(new.clone(), hf.tensor(&name).unwrap().shape.to_vec(), hf.tensor(&name).unwrap().to_f32()).unwrap();
        renamed.insert(new, name);
    }
    assert_eq!(Layout::detect(nested.config(), &nested.tensor_names()), Layout::LlavaNested);
    let llm = plain_llm_from(&nested);
    let config = MergeConfig::from_yaml(RECIPE).unwrap();
    let merger = InMemoryMerger::new(&config, &[("vlm", &nested as &dyn TensorSource), ("llm", &llm)], 0).unwrap();
    let merged = merger.merge_all().unwrap();
    let names: Vec<&str> = merged.iter().map(|t| t.name.as_str()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    let want: Vec<String> = nested.tensor_names();
    assert_eq!(names, want.iter().map(String::as_str).collect::<Vec<_>>());
    for t in &merged {
        let base = &nested.tensors[&t.name].1;
        match Layout::LlavaNested.canonical(&t.name) {
            None => assert_eq!(&t.values, base, "{} copied", t.name),
            Some(c) => {
                let other = &llm.tensors[&c].1;
                for j in 0..base.len() {
                    let want = (base[j] * 0.25 + other[j] * 0.75) / 1.0;
                    assert!((t.values[j] - want).abs() <= 1e-6, "{}[{j}]", t.name);
                }
            }
        }
    }
    assert!(merged.iter().any(|t| t.name == "model.image_newline"));
    assert!(merged.iter().any(|t| t.name == "lm_head.weight"));
}
