//! `chat_template`: the output gets the template as `chat_template.jinja`, as mergekit 0.1.5 with
//! transformers 5 writes it (tests/fixtures/merge/expected/chat_template_chatml.jinja is its output
//! for `chat_template: chatml`), and no other copy of a template.

use std::path::{Path, PathBuf};

use evomerge_merge::{merge_to_dir, MergeConfig, MergeOptions};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/merge")
}

fn merge(models: &[&Path], template: &str, out: &Path) -> Result<(), String> {
    let list: Vec<String> = models.iter().map(|m| format!("  - model: {}\n    parameters: {{weight: 1.0}}\n", m.display())).collect();
    let yaml = format!("models:\n{}merge_method: linear\ndtype: float32\nchat_template: {template}\n", list.concat());
    let config = MergeConfig::from_yaml(&yaml).map_err(|e| e.to_string())?;
    merge_to_dir(&config, out, &MergeOptions { progress: false, ..Default::default() }).map(|_| ()).map_err(|e| e.to_string())
}

fn copy_model(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn chatml_is_written_as_mergekit_writes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    merge(&[&fixtures().join("models/ft1")], "chatml", &out).unwrap();
    let want = std::fs::read_to_string(fixtures().join("expected/chat_template_chatml.jinja")).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("chat_template.jinja")).unwrap(), want);
}

#[test]
fn a_literal_template_replaces_every_copied_one() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    copy_model(&fixtures().join("models/ft1"), &model);
    // The model ships a template in both places transformers reads.
    std::fs::write(model.join("chat_template.json"), r#"{"chat_template": "{{ old }}"}"#).unwrap();
    let config_path = model.join("tokenizer_config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["chat_template"] = "{{ old template }}".into();
    std::fs::write(&config_path, config.to_string()).unwrap();

    let out = tmp.path().join("out");
    let template = "{% for m in messages %}{{ m['content'] }}{% endfor %}";
    merge(&[&model], &format!("\"{template}\""), &out).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("chat_template.jinja")).unwrap(), template);
    assert!(!out.join("chat_template.json").exists());
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap()).unwrap();
    assert!(written.get("chat_template").is_none(), "{written}");
    assert_eq!(written["unk_token"], "t0", "the rest of the tokenizer config is kept");
}

#[test]
fn auto_takes_the_template_most_models_have() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    for (dir, from) in [(&a, "ft1"), (&b, "ft2"), (&c, "base")] {
        copy_model(&fixtures().join("models").join(from), dir);
    }
    std::fs::write(a.join("chat_template.jinja"), "{{ one }}\n").unwrap();
    std::fs::write(b.join("chat_template.jinja"), "{{ two }}").unwrap();
    std::fs::write(c.join("chat_template.jinja"), "{{ two }}\n").unwrap();
    let out = tmp.path().join("out");
    merge(&[&a, &b, &c], "auto", &out).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("chat_template.jinja")).unwrap(), "{{ two }}");
}

#[test]
fn bad_templates_are_refused_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    let ft1 = fixtures().join("models/ft1");
    let e = merge(&[&ft1], "llama3", &tmp.path().join("o1")).unwrap_err();
    assert!(e.contains("chat_template") && e.contains("does not bundle"), "{e}");
    let e = merge(&[&ft1], "chatmI", &tmp.path().join("o2")).unwrap_err();
    assert!(e.contains("chat_template") && e.contains("neither"), "{e}");
    let e = merge(&[&ft1], "\"{{ x }}\"", &tmp.path().join("o3")).unwrap_err();
    assert!(e.contains("not a chat template"), "{e}");
}
