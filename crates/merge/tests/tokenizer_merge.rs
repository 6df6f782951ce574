//! Tokenizer merging (`tokenizer_source: union`, `tokenizer: {source, tokens, pad_to_multiple_of}`):
//! the written tokenizer equals mergekit 0.1.5's (tests/fixtures/merge/expected/<recipe>.tokenizer,
//! made by tests/fixtures/merge/generate_tokenizer.py), streaming and in memory; the merged tensors
//! are compared in parity.rs. Bad `tokenizer:` sections fail by name.

use std::path::PathBuf;

use evomerge_merge::{merge_to_dir, open_models, InMemoryMerger, MemorySource, MergeConfig, MergeOptions, TensorSource};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/merge")
}

fn recipe_config(recipe: &str) -> MergeConfig {
    let mut config = MergeConfig::from_file(&fixtures().join(format!("recipes/{recipe}.yml"))).unwrap();
    config.recipe_dir = Some(fixtures());
    config
}

fn read_json(path: PathBuf) -> Value {
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// mergekit's written tokenizer.json, whose vocabulary and added tokens (ids, settings) we must equal.
fn expected_tokenizer(recipe: &str) -> Value {
    read_json(fixtures().join(format!("expected/{recipe}.tokenizer/tokenizer.json")))
}

/// Output vocabulary (model vocabulary plus added tokens) by id.
fn vocabulary(tokenizer: &Value) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> =
        tokenizer["model"]["vocab"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).collect();
    for entry in tokenizer["added_tokens"].as_array().unwrap() {
        let token = entry["content"].as_str().unwrap().to_string();
        if !all.iter().any(|(t, _)| *t == token) {
            all.push((token, entry["id"].as_u64().unwrap()));
        }
    }
    all.sort_by_key(|(_, id)| *id);
    all
}

fn check_tokenizer(recipe: &str, got: &Value) {
    let want = expected_tokenizer(recipe);
    assert_eq!(got["added_tokens"], want["added_tokens"], "{recipe}: added tokens");
    assert_eq!(got["model"], want["model"], "{recipe}: tokenizer model (vocabulary)");
    assert_eq!(vocabulary(got), vocabulary(&want), "{recipe}: vocabulary");
    // Everything else (pre-tokenizer, post-processor, ...) is the source tokenizer's, as mergekit's.
    assert_eq!(got, &want, "{recipe}: tokenizer.json");
}

fn check_streaming(recipe: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("merged");
    merge_to_dir(&recipe_config(recipe), &out, &MergeOptions { threads: Some(2), progress: false, ..Default::default() })
        .unwrap();
    check_tokenizer(recipe, &read_json(out.join("tokenizer.json")));
    // transformers 5 adds where it loaded the tokenizer from; the rest must be the same.
    let mut want_config = read_json(fixtures().join(format!("expected/{recipe}.tokenizer/tokenizer_config.json")));
    for key in ["is_local", "local_files_only"] {
        want_config.as_object_mut().unwrap().remove(key);
    }
    assert_eq!(read_json(out.join("tokenizer_config.json")), want_config, "{recipe}: tokenizer_config.json");
}

fn check_in_memory(recipe: &str) {
    let config = recipe_config(recipe);
    let models = open_models(&config).unwrap();
    let sources: Vec<&dyn TensorSource> = models.iter().map(|m| m as &dyn TensorSource).collect();
    let merger = InMemoryMerger::from_sources(&config, sources, 0).unwrap();
    let vocabulary = merger.plan().vocabulary.as_ref().expect("a merged vocabulary");
    check_tokenizer(recipe, &vocabulary.tokenizer_json);
    let want = expected_tokenizer(recipe);
    let want_tokens: Vec<String> = self::vocabulary(&want).into_iter().map(|(t, _)| t).collect();
    assert_eq!(vocabulary.tokens, want_tokens, "{recipe}: output tokens by id");
}

macro_rules! tokenizer_parity {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn streaming() {
                super::check_streaming(stringify!($name));
            }
            #[test]
            fn in_memory() {
                super::check_in_memory(stringify!($name));
            }
        }
    )*};
}

tokenizer_parity!(union_ties, union_tokens, union_mean, union_stripped, base_tokens_pad, model_source_perm);

/// The union appends the tokens new to the base in model order, then the added tokens; new
/// tokens of `tokens:` come last, in recipe order (not sorted); the rows are padded to the multiple.
#[test]
fn union_vocabulary_order_and_padding() {
    let config = recipe_config("union_tokens");
    let models = open_models(&config).unwrap();
    let sources: Vec<&dyn TensorSource> = models.iter().map(|m| m as &dyn TensorSource).collect();
    let merger = InMemoryMerger::from_sources(&config, sources, 0).unwrap();
    let vocabulary = merger.plan().vocabulary.as_ref().unwrap();
    let tail: Vec<&str> = vocabulary.tokens[48..].iter().map(String::as_str).collect();
    assert_eq!(tail, ["x0", "x1", "x2", "<|im_start|>", "y0", "y1", "<pad>", "<z_new>", "<new>"]);
    assert_eq!(vocabulary.rows, 64, "57 tokens padded to a multiple of 8");
    assert_eq!(merger.plan().config["vocab_size"], 64);
    // The recipe keeps its token order through a YAML round trip.
    let again = MergeConfig::from_yaml(&config.to_yaml().unwrap()).unwrap();
    assert_eq!(again.tokenizer, config.tokenizer);
    let order: Vec<&str> = again.tokenizer.as_ref().unwrap().tokens.as_ref().unwrap().iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(order, ["<|im_start|>", "t5", "x1", "<z_new>", "<new>"]);
}

const HEAD: &str = "models:\n  - model: a\n    parameters: {weight: 1}\nmerge_method: linear\n";

#[test]
fn bad_tokenizer_sections_are_refused_by_name() {
    for (section, wanted) in [
        ("tokenizer:\n  source: base\ntokenizer_source: base\n", "not both"),
        ("tokenizer:\n  pad_to_multiple_of: 0\n", "tokenizer.pad_to_multiple_of"),
        ("tokenizer:\n  tokens:\n    x: {source: {kind: one}}\n", "unknown kind `one`"),
        ("tokenizer:\n  tokens:\n    x: {source: {kind: zero, model: a}}\n", "kind: zero"),
        ("tokenizer:\n  tokens:\n    x: {source: {kind: model_token, token: y}}\n", "needs `model`"),
        ("tokenizer:\n  tokens:\n    x: {source: {kind: model_token, model: a, token: y, token_id: 3}}\n", "exactly one"),
        ("tokenizer:\n  tokens:\n    x: {forced: true}\n", "forced"),
        ("tokenizer:\n  tokens:\n    x: {force: true}\n    x: {force: false}\n", "`x` is given twice"),
    ] {
        let e = MergeConfig::from_yaml(&format!("{HEAD}{section}")).unwrap_err().to_string();
        assert!(e.contains(wanted), "{section}: {e}");
    }
    // What mergekit accepts parses: a section without `source` is a union.
    let config = MergeConfig::from_yaml(&format!("{HEAD}tokenizer:\n  pad_to_multiple_of: 8\n")).unwrap();
    assert_eq!(config.tokenizer_source(), Some("union"));
}

fn tiny(label: &str) -> MemorySource {
    let mut m = MemorySource::new(label);
    m.insert("model.embed_tokens.weight", vec![4, 2], vec![0.5; 8]).unwrap();
    m.insert("model.norm.weight", vec![2], vec![1.0; 2]).unwrap();
    m.insert("lm_head.weight", vec![4, 2], vec![0.5; 8]).unwrap();
    m
}

#[test]
fn a_union_needs_tokenizer_files() {
    let config = MergeConfig::from_yaml(&format!("{HEAD}tokenizer_source: union\n")).unwrap();
    let a = tiny("a");
    let e = InMemoryMerger::new(&config, &[("a", &a as &dyn TensorSource)], 0).err().expect("refused").to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
}

/// mergekit 0.1.5 fails on a new token with `source: base`; evomerge says so before merging, and
/// a token source must be a model of the recipe.
#[test]
fn token_sources_are_checked_against_the_models() {
    let dir = fixtures();
    let recipe = |tokens: &str| {
        let text = format!(
            "models:\n  - model: models/ft1\n    parameters: {{weight: 1}}\nmerge_method: linear\nbase_model: models/ft1\ntokenizer:\n  source: base\n  tokens:\n{tokens}"
        );
        let mut config = MergeConfig::from_yaml(&text).unwrap();
        config.recipe_dir = Some(dir.clone());
        config
    };
    let plan_error = |config: &MergeConfig| {
        let models = open_models(config).unwrap();
        let sources: Vec<&dyn TensorSource> = models.iter().map(|m| m as &dyn TensorSource).collect();
        InMemoryMerger::from_sources(config, sources, 0).err().expect("refused").to_string()
    };
    let e = plan_error(&recipe("    brand_new: {source: {kind: zero}}\n"));
    assert!(e.contains("tokenizer.tokens.brand_new") && e.contains("source: union"), "{e}");
    let e = plan_error(&recipe("    t3: {source: models/ft2, force: true}\n"));
    assert!(e.contains("models/ft2") && e.contains("not a model of the recipe"), "{e}");
}

/// A token whose row source cannot be served (a row past the model's, a token the model lacks, a
/// `tokens` entry without a source that is needed) fails at planning, before anything is written.
#[test]
fn unservable_token_sources_fail_before_writing() {
    let text = |tokens: &str| {
        format!(
            "models:\n  - model: models/tok_extra\n    parameters: {{weight: 0.5}}\n  - model: models/tok_perm\n    parameters: {{weight: 0.5}}\nmerge_method: linear\ntokenizer:\n  tokens:\n{tokens}"
        )
    };
    for (tokens, wanted) in [
        ("    x0: {source: {kind: model_token, model: models/tok_perm, token_id: 400}}\n", "row 400"),
        ("    x0: {source: {kind: model_token, model: models/tok_perm, token: x2}}\n", "`x2` is not in"),
        ("    x0: {source: models/tok_perm}\n", "`x0` is not in"),
        ("    x0: {force: true}\n", "no `source`"),
    ] {
        let mut config = MergeConfig::from_yaml(&text(tokens)).unwrap();
        config.recipe_dir = Some(fixtures());
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("merged");
        let e = merge_to_dir(&config, &out, &MergeOptions { progress: false, ..Default::default() }).unwrap_err().to_string();
        assert!(e.contains(wanted), "{tokens}: {e}");
        assert!(e.contains("embed_tokens") || e.contains("lm_head"), "{e}");
        assert!(!out.exists());
    }
}

/// A tokenizer that the merge leaves as it is (a model's, nothing added) is copied byte for byte;
/// one it changes is written.
#[test]
fn an_unchanged_tokenizer_is_copied_as_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let options = MergeOptions { threads: Some(2), progress: false, ..Default::default() };
    let out = tmp.path().join("big");
    merge_to_dir(&recipe_config("tokenizer_section_big"), &out, &options).unwrap();
    let source = std::fs::read(fixtures().join("models/ft_big/tokenizer.json")).unwrap();
    assert_eq!(std::fs::read(out.join("tokenizer.json")).unwrap(), source);
    let out = tmp.path().join("union");
    merge_to_dir(&recipe_config("union_ties"), &out, &options).unwrap();
    let base = std::fs::read(fixtures().join("models/base/tokenizer.json")).unwrap();
    assert_ne!(std::fs::read(out.join("tokenizer.json")).unwrap(), base);
}

/// A transformers 4 `tokenizer_config.json` lists the added tokens (`added_tokens_decoder`); a
/// merged tokenizer's new added tokens are listed there too.
#[test]
fn added_tokens_decoder_follows_the_merged_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    for model in ["base", "tok_extra", "tok_perm"] {
        let from = fixtures().join("models").join(model);
        let to = tmp.path().join("models").join(model);
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    let config_path = tmp.path().join("models/base/tokenizer_config.json");
    let mut config = read_json(config_path.clone());
    config["added_tokens_decoder"] = serde_json::json!({"0": {"content": "t0", "special": true}});
    std::fs::write(&config_path, config.to_string()).unwrap();
    let text = std::fs::read_to_string(fixtures().join("recipes/union_ties.yml")).unwrap();
    let mut recipe = MergeConfig::from_yaml(&text).unwrap();
    recipe.recipe_dir = Some(tmp.path().to_path_buf());
    let out = tmp.path().join("merged");
    merge_to_dir(&recipe, &out, &MergeOptions { threads: Some(2), progress: false, ..Default::default() }).unwrap();
    let written = read_json(out.join("tokenizer_config.json"));
    let decoder = written["added_tokens_decoder"].as_object().unwrap();
    let listed: Vec<(&str, &str)> = decoder.iter().map(|(id, e)| (id.as_str(), e["content"].as_str().unwrap())).collect();
    let want = expected_tokenizer("union_ties");
    let want: Vec<(String, String)> = want["added_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].to_string(), e["content"].as_str().unwrap().to_string()))
        .collect();
    let mut listed: Vec<(String, String)> = listed.into_iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    listed.sort_by_key(|(id, _)| id.parse::<u64>().unwrap());
    assert_eq!(listed, want);
    assert_eq!(written["unk_token"], "t0", "the rest of the base's tokenizer_config.json is kept");
}

/// The in-memory merger re-planned for the next candidate (other weights, same tokenizer
/// settings) keeps the merged vocabulary, and merges as a fresh merger would.
#[test]
fn replanning_keeps_the_merged_vocabulary() {
    let config = recipe_config("union_ties");
    let models = open_models(&config).unwrap();
    let sources: Vec<&dyn TensorSource> = models.iter().map(|m| m as &dyn TensorSource).collect();
    let mut merger = InMemoryMerger::from_sources(&config, sources.clone(), 0).unwrap();
    let first = merger.plan().vocabulary.clone().unwrap();
    let mut next = config.clone();
    next.models.as_mut().unwrap()[0].parameters.as_mut().unwrap().insert("weight".into(), serde_norway::from_str("0.2").unwrap());
    merger.set_config(&next).unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, merger.plan().vocabulary.as_ref().unwrap()), "vocabulary rebuilt");
    let fresh = InMemoryMerger::from_sources(&next, sources, 0).unwrap();
    let a = merger.merge_all().unwrap();
    let b = fresh.merge_all().unwrap();
    assert!(a.iter().zip(&b).all(|(x, y)| x.name == y.name && x.values == y.values));
    // Other tokenizer settings: built again.
    let mut padded = next.clone();
    padded.tokenizer_source = None;
    padded.tokenizer = Some(serde_norway::from_str("pad_to_multiple_of: 64").unwrap());
    merger.set_config(&padded).unwrap();
    assert_eq!(merger.plan().vocabulary.as_ref().unwrap().rows, 64);
}
