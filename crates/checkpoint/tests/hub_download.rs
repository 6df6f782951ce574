//! Downloading a hub model that is not cached, from a local stand-in for the hub (HF_ENDPOINT
//! pointed at a tiny HTTP server in this test; no network). Afterwards the model opens offline
//! from the cache without a single request. Environment variables are process-wide, so the
//! scenario runs as one test.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use evomerge_checkpoint::{Checkpoint, CheckpointError};

const COMMIT: &str = "1111111111222222222233333333334444444444";

/// Serves `GET /evo/remote/resolve/main/<file>` with the headers hf-hub reads
/// (x-repo-commit, etag, content-range) and honours `Range: bytes=a-b` / `bytes=a-`.
fn serve(files: HashMap<String, Vec<u8>>, requests: Arc<AtomicUsize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            requests.fetch_add(1, Ordering::SeqCst);
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut range = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.trim_end().split_once(':') {
                    if k.eq_ignore_ascii_case("range") {
                        range = v.trim().strip_prefix("bytes=").map(str::to_string);
                    }
                }
            }
            let path = request_line.split_whitespace().nth(1).unwrap_or("");
            let file = path.strip_prefix("/evo/remote/resolve/main/").map(str::to_string);
            match file.and_then(|f| files.get(&f).map(|b| (f, b))) {
                Some((name, body)) => {
                    let (start, end) = match range.as_deref().and_then(|r| r.split_once('-')) {
                        Some((a, "")) => (a.parse().unwrap(), body.len().saturating_sub(1)),
                        Some((a, b)) => (a.parse().unwrap(), b.parse::<usize>().unwrap().min(body.len() - 1)),
                        None => (0, body.len() - 1),
                    };
                    let part = &body[start..=end];
                    let head = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{end}/{}\r\n\
                         x-repo-commit: {COMMIT}\r\netag: \"etag-{}\"\r\nConnection: close\r\n\r\n",
                        part.len(),
                        body.len(),
                        name.replace('.', "-")
                    );
                    let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(part));
                }
                None => {
                    let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                }
            }
        }
    });
    format!("http://{addr}")
}

fn dir_files(dir: &Path) -> HashMap<String, Vec<u8>> {
    entries(dir).into_iter().map(|n| (n.clone(), std::fs::read(dir.join(&n)).unwrap())).collect()
}

#[test]
fn missing_hub_models_are_downloaded_then_open_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let model = write_tiny(&tmp.path().join("remote"), 300);
    std::fs::write(model.join("tokenizer.json"), "{\"version\": \"1.0\"}").unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let endpoint = serve(dir_files(&model), requests.clone());

    std::env::set_var("HF_HOME", tmp.path().join("hf_home"));
    std::env::remove_var("HF_HUB_CACHE");
    std::env::remove_var("HF_HUB_OFFLINE");
    std::env::set_var("HF_ENDPOINT", &endpoint);

    let ckpt = Checkpoint::open("evo/remote").unwrap();
    assert!(requests.load(Ordering::SeqCst) > 0);
    assert!(ckpt.dir().ends_with(format!("models--evo--remote/snapshots/{COMMIT}")), "{}", ckpt.dir().display());
    assert!(ckpt.safetensors_files().len() > 1, "all shards fetched");
    for (i, (name, _, _)) in tiny_layout().iter().enumerate() {
        let t = ckpt.tensor(name).unwrap();
        assert_eq!(t.to_f32(), pattern(t.numel(), i), "{name}");
    }
    assert!(ckpt.dir().join("tokenizer.json").is_file(), "tokenizer files fetched too");

    // Everything is cached now: offline, and not one more request.
    std::env::set_var("HF_HUB_OFFLINE", "1");
    let before = requests.load(Ordering::SeqCst);
    let again = Checkpoint::open("evo/remote").unwrap();
    assert_eq!(again.dir(), ckpt.dir());
    assert_eq!(requests.load(Ordering::SeqCst), before);
    std::env::remove_var("HF_HUB_OFFLINE");

    // A model the hub does not have: a clear error naming it and the failed file.
    let err = Checkpoint::open("evo/missing").unwrap_err();
    assert!(matches!(err, CheckpointError::Hub { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("evo/missing") && msg.contains("config.json") && msg.contains("local model directory"), "{msg}");
}
