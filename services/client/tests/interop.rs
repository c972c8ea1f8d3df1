//! Interop: an independent implementation (Python, `noiseprotocol` from
//! PyPI, hashlib's SHA3) talks to our server over real sockets.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod support;

use poz::sample;
use poz::serve::{Catalog, ServedRecord};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_noise_nk_client_queries_our_server() {
    let provider = sample::provider().unwrap();
    let id = provider.id();
    let mut c = Catalog::default();
    c.insert("social.example", ServedRecord::new(provider, vec![]));
    let s = support::start(c, 8).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/poz_interop.py");
    let args = [
        script.to_string(),
        "127.0.0.1".into(),
        s.noise.port().to_string(),
        s.plain.port().to_string(),
        hex::encode(s.key.public),
        "social.example".into(),
        "alice".into(),
        id.to_hex(),
    ];
    let out = tokio::task::spawn_blocking(move || Command::new("python3").args(&args).output())
        .await
        .unwrap()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python interop failed\nstdout:\n{stdout}\nstderr:\n{stderr}\n(needs `pip install noiseprotocol`; deploy/test.sh installs it)");
    assert!(stdout.contains("interop ok"), "{stdout}");
}
