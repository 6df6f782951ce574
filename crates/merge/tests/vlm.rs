//! VLM ⊕ LLM: a LLaVA checkpoint's language model merges with a plain Mistral checkpoint. The output
//! keeps the VLM's layout and names, its vision tower / projector / image_newline are copied bit for
//! bit, and its config and processor files are kept. Covers llava-hf (`language_model.*`), the
//! original LLaVA layout (`model.*` next to `model.vision_tower.*`) and the newer transformers
//! layout (`model.language_model.*`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use evomerge_checkpoint::{f32_to_bytes, write_checkpoint, Checkpoint, Dtype, WriteOptions};
use evomerge_merge::layout::Layout;
use evomerge_merge::{
    merge_to_dir, write_plan, InMemoryMerger, MemorySource, MergeConfig, MergeOptions, MergePlan, TensorSource,
};
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

// ---- A plain LLM as the base, the VLM among the `models` (EvoVLM-JP's recipe shape) ----

/// Writes a plain Mistral directory whose tensors are `vlm`'s language model, each value shifted
/// by a deterministic pattern keyed on `variant` (0: unchanged), and a `tokenizer.json` saying
/// which model it is.
fn write_plain_llm(vlm: &Checkpoint, out: &Path, variant: usize) -> PathBuf {
    let layout = Layout::detect(Some(vlm.config()), &TensorSource::tensor_names(vlm));
    let mut tensors = Vec::new();
    for name in vlm.tensor_names() {
        let Some(canonical) = layout.canonical(name) else { continue };
        let view = vlm.tensor(name).unwrap();
        let mut values = view.to_f32();
        if variant > 0 {
            for (i, v) in values.iter_mut().enumerate() {
                *v += 0.02 * (((i * 7 + variant * 3) % 11) as f32 - 5.0);
            }
        }
        tensors.push((canonical, Dtype::F32, view.shape.to_vec(), f32_to_bytes(Dtype::F32, &values)));
    }
    let mut config = vlm.config()["text_config"].clone();
    config["architectures"] = json!(["MistralForCausalLM"]);
    write_checkpoint(out, &tensors, &config, None, WriteOptions::default()).unwrap();
    std::fs::write(out.join("tokenizer.json"), format!("{{\"plain\": {variant}}}")).unwrap();
    out.to_path_buf()
}

fn merge_dir(recipe: &str, out: &Path) -> evomerge_merge::MergeReport {
    let config = MergeConfig::from_yaml(recipe).unwrap();
    let options = MergeOptions { progress: false, seed: 3, threads: Some(2), ..Default::default() };
    merge_to_dir(&config, out, &options).unwrap()
}

fn plain_base_recipe(method: &str, base: &Path, vlm: &Path, ft: &Path) -> String {
    format!(
        "merge_method: {method}\nbase_model: {}\nmodels:\n  - model: {}\n    parameters: {{weight: 0.6, density: 0.5}}\n  - model: {}\n    parameters: {{weight: 0.4, density: 0.7}}\ndtype: float32\n",
        base.display(),
        vlm.display(),
        ft.display()
    )
}

/// A recipe with a plain base and a llava-hf model in `models` writes a llava-hf model: its
/// config, vision tower and projector (bit for bit) and processor files, and merged LLM tensors
/// bit-identical to those of the same recipe with the VLM's language model as a plain checkpoint.
fn check_plain_base_writes_the_vlm(method: &str) {
    let vlm_dir = vision_fixture("llava");
    let vlm = Checkpoint::open_dir(&vlm_dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let base = write_plain_llm(&vlm, &tmp.path().join("base"), 1);
    let ft = write_plain_llm(&vlm, &tmp.path().join("ft"), 2);
    let vlm_as_plain = write_plain_llm(&vlm, &tmp.path().join("vlm-llm"), 0);

    let out = tmp.path().join("merged-vlm");
    let report = merge_dir(&plain_base_recipe(method, &base, &vlm_dir, &ft), &out);
    assert_eq!(report.output_vlm.as_deref(), Some(vlm_dir.to_str().unwrap()), "{method}: the report names the VLM");
    let plain_out = tmp.path().join("merged-plain");
    let plain_report = merge_dir(&plain_base_recipe(method, &base, &vlm_as_plain, &ft), &plain_out);
    assert_eq!(plain_report.output_vlm, None);

    let merged = Checkpoint::open_dir(&out).unwrap();
    let plain = Checkpoint::open_dir(&plain_out).unwrap();
    assert_eq!(merged.config(), vlm.config(), "{method}: the VLM's config (same layers, vocabulary, dtype)");
    assert_eq!(merged.config()["model_type"], "llava");
    assert_eq!(merged.tensor_names(), vlm.tensor_names(), "{method}: llava-hf names");
    for file in ["tokenizer.json", "tokenizer_config.json", "processor_config.json", "generation_config.json"] {
        let want = std::fs::read(vlm_dir.join(file)).unwrap();
        assert_eq!(std::fs::read(out.join(file)).unwrap(), want, "{method}: {file} comes from the VLM");
    }
    let (mut copied, mut merged_llm) = (0, 0);
    for name in vlm.tensor_names() {
        let got = merged.tensor(name).unwrap();
        match Layout::LlavaHf.canonical(name) {
            None => {
                let src = vlm.tensor(name).unwrap();
                assert_eq!((got.dtype, got.shape), (src.dtype, src.shape), "{name}");
                assert!(got.data == src.data, "{method}: {name} must be the VLM's, bit for bit");
                copied += 1;
            }
            Some(canonical) => {
                let want = plain.tensor(&canonical).unwrap();
                assert_eq!((got.dtype, got.shape), (want.dtype, want.shape), "{name}");
                assert!(got.data == want.data, "{method}: {name} differs from the plain-layout merge's {canonical}");
                assert!(got.data != vlm.tensor(name).unwrap().data, "{method}: {name} was not merged");
                merged_llm += 1;
            }
        }
    }
    assert!(copied > 40, "{method}: vision tower and projector copied ({copied})");
    assert_eq!(merged_llm, plain.tensor_names().len());
}

#[test]
fn ties_with_a_plain_base_writes_the_llava_model() {
    check_plain_base_writes_the_vlm("ties");
}

#[test]
fn dare_ties_with_a_plain_base_writes_the_llava_model() {
    check_plain_base_writes_the_vlm("dare_ties");
}

/// `tokenizer_source` picks the tokenizer; the processor files stay the VLM's.
#[test]
fn tokenizer_source_replaces_the_tokenizer_but_not_the_processor() {
    let vlm_dir = vision_fixture("llava");
    let vlm = Checkpoint::open_dir(&vlm_dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let base = write_plain_llm(&vlm, &tmp.path().join("base"), 1);
    let ft = write_plain_llm(&vlm, &tmp.path().join("ft"), 2);
    let recipe = format!("{}tokenizer_source: {}\n", plain_base_recipe("ties", &base, &vlm_dir, &ft), ft.display());
    let out = tmp.path().join("merged");
    merge_dir(&recipe, &out);
    assert_eq!(std::fs::read_to_string(out.join("tokenizer.json")).unwrap(), "{\"plain\": 2}");
    assert!(!out.join("tokenizer_config.json").exists(), "no tokenizer file from the VLM");
    assert_eq!(
        std::fs::read(out.join("processor_config.json")).unwrap(),
        std::fs::read(vlm_dir.join("processor_config.json")).unwrap()
    );
    assert_eq!(Checkpoint::open_dir(&out).unwrap().config()["model_type"], "llava");
}

/// Which model the output is: the base if it is a VLM, else the first VLM in recipe order
/// (`models`, or slice sources), never the tokenizer source alone; and every LLaVA layout works as
/// a `models` entry next to a plain base.
#[test]
fn output_model_rule() {
    let llava = Checkpoint::open_dir(&vision_fixture("llava")).unwrap();
    let next = Checkpoint::open_dir(&vision_fixture("llava_next")).unwrap();
    let orig = Checkpoint::open_dir(&vision_fixture("llava_next_orig")).unwrap();
    let llm = plain_llm_from(&llava);
    let ft = plain_llm_from(&next);
    let plan = |recipe: &str, sources: &[&dyn TensorSource]| {
        let config = MergeConfig::from_yaml(recipe).unwrap();
        assert_eq!(evomerge_merge::model_refs(&config).len(), sources.len(), "{recipe}");
        MergePlan::new(&config, sources).unwrap()
    };
    let names = |p: &MergePlan| p.tensors.iter().map(|t| t.name.clone()).collect::<std::collections::BTreeSet<_>>();
    let names_of = |s: &dyn TensorSource| s.tensor_names().into_iter().collect::<std::collections::BTreeSet<_>>();

    // Plain base, two VLMs in `models`: the first VLM listed.
    let p = plan(
        "merge_method: ties\nbase_model: llm\nmodels:\n  - model: ft\n  - model: next\n  - model: llava\nparameters: {weight: 0.5, density: 0.5}\n",
        &[&ft, &next, &llava, &llm],
    );
    assert_eq!((p.output_model, p.output_layout), (1, Layout::LlavaHf));
    assert_eq!((p.files_from, p.processor_files_from), (1, 1));
    assert_eq!(names(&p), names_of(&next), "llava_next's names, image_newline included");
    assert_eq!(p.config, *next.config());

    // A VLM base wins over a VLM listed before it.
    let p = plan(
        "merge_method: task_arithmetic\nbase_model: next\nmodels:\n  - model: llava\n  - model: llm\nparameters: {weight: 0.5}\n",
        &[&llava, &llm, &next],
    );
    assert_eq!(p.output_model, 2);
    assert_eq!(names(&p), names_of(&next));

    // Slices: the first VLM among the slices' sources.
    let p = plan(
        "merge_method: passthrough\nslices:\n  - sources: [{model: llm, layer_range: [0, 1]}]\n  - sources: [{model: orig, layer_range: [1, 2]}]\n  - sources: [{model: llava, layer_range: [1, 2]}]\n",
        &[&llm, &orig, &llava],
    );
    assert_eq!((p.output_model, p.output_layout), (1, Layout::Liuhaotian));
    assert_eq!(p.config["num_hidden_layers"], 3, "original LLaVA configs are flat");

    // A VLM that only lends its tokenizer does not make the output a VLM.
    let p = plan(
        "merge_method: linear\nmodels:\n  - model: llm\n  - model: ft\nparameters: {weight: 0.5}\ntokenizer_source: llava\n",
        &[&llm, &ft, &llava],
    );
    assert_eq!((p.output_model, p.output_layout, p.files_from, p.processor_files_from), (0, Layout::Plain, 2, 2));
    assert!(p.tensors.iter().all(|t| !t.name.contains("vision")));

    // Every layout as a `models` entry next to a plain base.
    for (vlm, layout) in [(&llava as &dyn TensorSource, Layout::LlavaHf), (&next, Layout::LlavaHf), (&orig, Layout::Liuhaotian)] {
        let p = plan("merge_method: ties\nbase_model: llm\nmodels:\n  - model: vlm\nparameters: {weight: 1.0, density: 0.5}\n", &[vlm, &llm as &dyn TensorSource]);
        assert_eq!((p.output_model, p.output_layout), (0, layout));
        assert_eq!(names(&p), names_of(vlm), "{layout:?}");
        assert_eq!(&p.config, vlm.config().unwrap(), "{layout:?}");
    }
}

/// Merging to a llava-hf output whose config has no `text_config` (all defaults) writes the layer
/// count into a new `text_config`, not at the top where transformers would ignore it.
#[test]
fn llava_config_without_text_config_gets_one() {
    let llava = Checkpoint::open_dir(&vision_fixture("llava")).unwrap();
    let mut vlm = MemorySource::load(&llava).unwrap();
    vlm.config.as_mut().unwrap().as_object_mut().unwrap().remove("text_config");
    let llm = plain_llm_from(&llava);
    let config = MergeConfig::from_yaml(
        "merge_method: passthrough\nslices:\n  - sources: [{model: vlm, layer_range: [0, 2]}]\n  - sources: [{model: llm, layer_range: [1, 2]}]\n",
    )
    .unwrap();
    let p = MergePlan::new(&config, &[&vlm, &llm]).unwrap();
    assert_eq!(p.config["text_config"]["num_hidden_layers"], 3);
    assert!(p.config.get("num_hidden_layers").is_none());
}
