//! Checkpoints written by our writer read back exactly: single file, sharded, parallel writes,
//! f32 conversion on write, config and tokenizer files.

mod common;

use common::*;
use evomerge_checkpoint::{Checkpoint, CheckpointWriter, Dtype, TensorPlan, WriteOptions};

#[test]
fn single_file_roundtrip() {
    let tmp = tempfile::tempdir().unwrap();
    let out = write_tiny(&tmp.path().join("model"), u64::MAX);
    assert_eq!(entries(&out), ["config.json", "model.safetensors"]);
    assert_eq!(entries(tmp.path()), ["model"], "no temporary directory left behind");

    let ckpt = Checkpoint::open_dir(&out).unwrap();
    let layout = tiny_layout();
    let mut names: Vec<&str> = layout.iter().map(|(n, _, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(ckpt.tensor_names(), names);
    for (i, (name, dtype, shape)) in layout.iter().enumerate() {
        let t = ckpt.tensor(name).unwrap();
        assert_eq!(t.name, name);
        assert_eq!(t.dtype, *dtype);
        assert_eq!(t.shape, shape.as_slice());
        assert_eq!(t.to_f32(), pattern(t.numel(), i), "{name}");
        let mut buf = vec![0f32; t.numel()];
        t.to_f32_into(&mut buf);
        assert_eq!(buf, pattern(t.numel(), i));
        // Releasing pages keeps outstanding views valid: the bytes fault back in from the file.
        ckpt.release(name);
        assert_eq!(t.to_f32(), pattern(t.numel(), i), "{name} after release");
    }
    assert_eq!(ckpt.config(), &tiny_config());
    assert_eq!(ckpt.architecture(), Some("MistralForCausalLM"));
    assert_eq!(ckpt.model_type(), Some("mistral"));
    assert_eq!(ckpt.num_layers(), Some(2));
    assert_eq!(ckpt.hidden_size(), Some(8));
    let params: usize = layout.iter().map(|(_, _, s)| s.iter().product::<usize>()).sum();
    assert_eq!(ckpt.parameter_count(), params as u64);
    assert_eq!(ckpt.safetensors_files(), vec![out.join("model.safetensors")]);
    assert_eq!(ckpt.total_bytes(), std::fs::metadata(out.join("model.safetensors")).unwrap().len());
    assert!(ckpt.contains("lm_head.weight"));
    assert!(!ckpt.contains("lm_head.bias"));
}

#[test]
fn sharded_roundtrip_and_index() {
    let tmp = tempfile::tempdir().unwrap();
    // 300 bytes per shard: the 256-byte bf16 embedding fills one shard on its own.
    let out = write_tiny(&tmp.path().join("sharded"), 300);
    let files = entries(&out);
    assert!(files.contains(&"model.safetensors.index.json".to_string()), "{files:?}");
    let shard_files: Vec<&String> = files.iter().filter(|f| f.ends_with(".safetensors")).collect();
    assert!(shard_files.len() >= 3, "{files:?}");
    let count = shard_files.len();
    for (i, f) in shard_files.iter().enumerate() {
        assert_eq!(**f, format!("model-{:05}-of-{:05}.safetensors", i + 1, count));
        let size_of_data = std::fs::metadata(out.join(f)).unwrap().len();
        assert!(size_of_data > 0);
    }

    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("model.safetensors.index.json")).unwrap()).unwrap();
    let total: u64 = tiny_tensors().iter().map(|t| t.3.len() as u64).sum();
    assert_eq!(index["metadata"]["total_size"], total);
    assert_eq!(index["weight_map"].as_object().unwrap().len(), tiny_layout().len());
    assert_eq!(index["weight_map"]["model.embed_tokens.weight"], format!("model-00001-of-{count:05}.safetensors"));

    let ckpt = Checkpoint::open_dir(&out).unwrap();
    assert_eq!(ckpt.safetensors_files().len(), count);
    assert_eq!(ckpt.tensor_bytes(), total);
    for (i, (name, _, _)) in tiny_layout().iter().enumerate() {
        let t = ckpt.tensor(name).unwrap();
        assert_eq!(t.to_f32(), pattern(t.numel(), i), "{name}");
        let info = ckpt.tensor_info(name).unwrap();
        assert_eq!(index["weight_map"][name.as_str()], info.file.as_str());
    }
}

#[test]
fn shards_fill_up_to_the_limit_in_plan_order() {
    let tmp = tempfile::tempdir().unwrap();
    let plan: Vec<TensorPlan> = (0..5).map(|i| TensorPlan::new(format!("t{i}"), Dtype::F32, vec![10])).collect();
    // 40 bytes each, limit 100: shards hold t0 t1 | t2 t3 | t4.
    let opts = WriteOptions { max_shard_bytes: 100, force: false };
    let writer = CheckpointWriter::create(&tmp.path().join("m"), plan, opts).unwrap();
    assert_eq!(writer.shard_count(), 3);
    for i in 0..5 {
        writer.write_tensor_f32(&format!("t{i}"), &[i as f32; 10]).unwrap();
    }
    let out = writer.finish(&tiny_config(), None).unwrap();
    let ckpt = Checkpoint::open_dir(&out).unwrap();
    let files: Vec<String> = (0..5).map(|i| ckpt.tensor_info(&format!("t{i}")).unwrap().file).collect();
    assert_eq!(
        files,
        [
            "model-00001-of-00003.safetensors",
            "model-00001-of-00003.safetensors",
            "model-00002-of-00003.safetensors",
            "model-00002-of-00003.safetensors",
            "model-00003-of-00003.safetensors"
        ]
    );
    assert_eq!(ckpt.tensor("t3").unwrap().to_f32(), vec![3.0; 10]);
}

#[test]
fn parallel_writes_in_any_order() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 64;
    let plan: Vec<TensorPlan> = (0..n)
        .map(|i| TensorPlan::new(format!("layer.{i}.w"), [Dtype::F32, Dtype::F16, Dtype::BF16][i % 3], vec![3, 5 + i % 4]))
        .collect();
    let opts = WriteOptions { max_shard_bytes: 256, force: false };
    let writer = CheckpointWriter::create(&tmp.path().join("par"), plan.clone(), opts).unwrap();
    std::thread::scope(|scope| {
        for worker in 0..4 {
            let writer = &writer;
            let plan = &plan;
            scope.spawn(move || {
                // Each worker takes every 4th tensor, newest first.
                for p in plan.iter().rev().skip(worker).step_by(4) {
                    let i: usize = p.name.split('.').nth(1).unwrap().parse().unwrap();
                    writer.write_tensor_f32(&p.name, &pattern(p.numel(), i)).unwrap();
                }
            });
        }
    });
    let out = writer.finish(&tiny_config(), None).unwrap();
    let ckpt = Checkpoint::open_dir(&out).unwrap();
    for (i, p) in plan.iter().enumerate() {
        let t = ckpt.tensor(&p.name).unwrap();
        assert_eq!(t.dtype, p.dtype);
        assert_eq!(t.to_f32(), pattern(p.numel(), i), "{}", p.name);
    }
}

#[test]
fn f32_input_is_rounded_to_nearest_even() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = vec![TensorPlan::new("b", Dtype::BF16, vec![3]), TensorPlan::new("h", Dtype::F16, vec![2])];
    let writer = CheckpointWriter::create(&tmp.path().join("r"), plan, WriteOptions::default()).unwrap();
    // 1 + 2^-8 is a tie between bf16 1.0 and 1.0078125: even mantissa wins (1.0).
    let tie = f32::from_bits(0x3F80_8000);
    let above = f32::from_bits(0x3F80_8001);
    writer.write_tensor_f32("b", &[tie, above, f32::NAN]).unwrap();
    // 1 + 2^-11 is a tie for f16 (1.0 vs 1 + 2^-10).
    writer.write_tensor_f32("h", &[1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11)]).unwrap();
    let out = writer.finish(&tiny_config(), None).unwrap();
    let ckpt = Checkpoint::open_dir(&out).unwrap();
    assert_eq!(ckpt.tensor("b").unwrap().data, &[0x80, 0x3F, 0x81, 0x3F, 0xC0, 0x7F]);
    let h = ckpt.tensor("h").unwrap().to_f32();
    assert_eq!(h, vec![1.0, 1.0 + 2.0 * 2f32.powi(-10)]);
}

#[test]
fn config_and_tokenizer_files_are_written() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("source");
    std::fs::create_dir(&source).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "generation_config.json"] {
        std::fs::write(source.join(f), format!("{{\"file\": \"{f}\"}}")).unwrap();
    }
    // Neither weights nor the source's config are copied.
    std::fs::write(source.join("config.json"), "{\"from\": \"source\"}").unwrap();
    std::fs::write(source.join("model.safetensors"), "not copied").unwrap();
    std::fs::write(source.join("README.md"), "not copied").unwrap();

    let plan = vec![TensorPlan::new("w", Dtype::F32, vec![2])];
    let writer = CheckpointWriter::create(&tmp.path().join("out"), plan, WriteOptions::default()).unwrap();
    writer.write_tensor("w", &[0u8; 8]).unwrap();
    let out = writer.finish(&tiny_config(), Some(&source)).unwrap();
    assert_eq!(
        entries(&out),
        [
            "chat_template.jinja",
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config, tiny_config());
    assert_eq!(std::fs::read_to_string(out.join("tokenizer.json")).unwrap(), "{\"file\": \"tokenizer.json\"}");
}

#[test]
fn processor_files_can_come_from_another_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (llm, vlm) = (tmp.path().join("llm"), tmp.path().join("vlm"));
    for (dir, files) in [
        (&llm, &["tokenizer.json", "generation_config.json", "chat_template.jinja"][..]),
        (&vlm, &["tokenizer.json", "processor_config.json", "preprocessor_config.json", "chat_template.json"][..]),
    ] {
        std::fs::create_dir(dir).unwrap();
        for f in files {
            std::fs::write(dir.join(f), dir.file_name().unwrap().to_str().unwrap()).unwrap();
        }
    }
    let plan = vec![TensorPlan::new("w", Dtype::F32, vec![2])];
    let writer = CheckpointWriter::create(&tmp.path().join("out"), plan, WriteOptions::default()).unwrap();
    writer.write_tensor("w", &[0u8; 8]).unwrap();
    let out = writer.finish_with_processor(&tiny_config(), Some(&llm), Some(&vlm)).unwrap();
    // The LLM's chat template is left out: a VLM's template is the processor's.
    let from = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
    assert_eq!(
        entries(&out),
        [
            "chat_template.json",
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "preprocessor_config.json",
            "processor_config.json",
            "tokenizer.json"
        ]
    );
    assert_eq!(from("tokenizer.json"), "llm");
    assert_eq!(from("generation_config.json"), "llm");
    assert_eq!(from("processor_config.json"), "vlm");
    assert_eq!(from("chat_template.json"), "vlm");
}

#[test]
fn checkpoint_is_send_and_sync_and_writer_is_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Checkpoint>();
    assert_send_sync::<CheckpointWriter>();
}

#[test]
fn open_accepts_a_local_path() {
    let tmp = tempfile::tempdir().unwrap();
    let out = write_tiny(&tmp.path().join("local"), u64::MAX);
    let ckpt = Checkpoint::open(out.to_str().unwrap()).unwrap();
    assert_eq!(ckpt.dir(), out.as_path());
}
