//! `pozctl query` and `pozctl submit` against a real server on loopback.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

#[path = "../../client/tests/support/mod.rs"]
mod support;

use poz::sample;
use poz::serve::{Catalog, ServedRecord};
use std::process::Command;

fn pozctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pozctl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_plain_and_noise_and_submit() {
    let p = sample::provider().unwrap();
    let id = p.id().to_hex();
    let mut c = Catalog::default();
    c.insert("social.example", ServedRecord::new(p.clone(), vec![]));
    let s = support::start(c, 6).await;
    let plain = s.plain.to_string();
    let noise = s.noise.to_string();
    let key = hex::encode(s.key.public);

    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            pozctl(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };

    let (code, out, err) = run(vec![
        "query".into(),
        "social.example".into(),
        "--server".into(),
        plain.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("VERIFIED record for social.example"), "{out}");
    assert!(out.contains(&id), "{out}");

    let (code, out, err) = run(vec![
        "query".into(),
        "social.example".into(),
        "--handle".into(),
        "alice".into(),
        "--server".into(),
        noise.clone(),
        "--noise-key".into(),
        key.clone(),
        "--json".into(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let j: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(j["verified"], true);
    assert_eq!(j["binding"]["binding"]["handle"], "alice");
    assert_eq!(j["provider"], id);

    let (code, out, err) = run(vec![
        "query".into(),
        "social.example".into(),
        "--handle".into(),
        "nobody".into(),
        "--server".into(),
        plain.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("NOT_FOUND"), "{err}");

    // PoW harder than the caller allows: refused, exit 1, clear message.
    let (code, _, err) = run(vec![
        "query".into(),
        "social.example".into(),
        "--server".into(),
        plain.clone(),
        "--max-pow".into(),
        "2".into(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("proof of work of difficulty 6"), "{err}");

    // Submissions go only over Noise, to 7076; this test server does not
    // accept them yet (the submit gateway comes later) and says so.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.poz");
    std::fs::write(&f, poz::codec::Codec::to_bytes(&p)).unwrap();
    let (code, _, err) = run(vec![
        "submit".into(),
        f.display().to_string(),
        "--domain".into(),
        "social.example".into(),
        "--server".into(),
        s.submit.to_string(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--noise-key"), "{err}");
    let (code, _, err) = run(vec![
        "submit".into(),
        f.display().to_string(),
        "--domain".into(),
        "social.example".into(),
        "--server".into(),
        s.submit.to_string(),
        "--noise-key".into(),
        key.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("UNAVAILABLE"), "{err}");
}

/// By domain: DNS discovery, the record verified over plaintext, then the
/// lookup over Noise NK to the host its own Service Zone publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_private_by_domain_with_discovery() {
    let s = support::start(Catalog::default(), 0).await;
    let id = support::serve_provider_with_private_host(&s);
    let (ns, task) = support::social_dns(&s, id).await;
    let args: Vec<String> = [
        "query",
        "social.example",
        "--handle",
        "alice",
        "--private",
        "--nameserver",
        &ns.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        pozctl(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("VERIFIED binding \"alice@social.example\""),
        "{out}"
    );
    assert!(
        out.contains("Noise NK host from the record's Service Zone"),
        "{out}"
    );
    task.abort();
}
