//! Bindings issued in bulk through the Provider API (batch signatures)
//! verify with `pozctl identity verify` against the provider's record, as
//! the store serves it; one with an altered audit path is refused.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod fleet;

use poz::Codec;
use poz_proto::v1 as pb;
use std::process::Command;

/// Store (SQLite), verifier, signer (software identity key) and Provider
/// API in this process, for the sample provider.
async fn fleet(dir: &std::path::Path) -> (poz_store::Store, poz::Hash32, String) {
    let (store, id, fleet) = fleet::sample_fleet(dir).await;
    (store, id, fleet.provider_api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_issued_bindings_verify_with_pozctl() {
    let dir = tempfile::tempdir().unwrap();
    let (store, id, api_addr) = fleet(dir.path()).await;
    let mut api = pb::provider_api_client::ProviderApiClient::connect(api_addr)
        .await
        .unwrap();
    let reqs: Vec<_> = (0..200u64)
        .map(|i| pb::IssueBindingRequest {
            handle: format!("user{i}"),
            subject: Some(pb::Hash {
                value: poz::hash::tagged_hash("s", &[&i.to_be_bytes()]).0.to_vec(),
            }),
            expires_at: 0,
            idempotency_key: format!("k{i}"),
        })
        .collect();
    let mut progress = api
        .bulk_issue(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let mut committed = 0;
    while let Some(p) = progress.message().await.unwrap() {
        committed = p.committed;
    }
    assert_eq!(committed, 200);

    // The provider's record as MASTER serves it, and three bindings.
    let rec_path = dir.path().join("provider.poz");
    std::fs::write(&rec_path, store.master_answer(&id).await.unwrap()).unwrap();
    let pozctl = env!("CARGO_BIN_EXE_pozctl");
    for handle in ["user0", "user77", "user199"] {
        let (b, _) = store.binding(&id, handle).await.unwrap();
        assert_eq!(b.signatures[0].sig_type, poz::keys::SigType::ED25519_BATCH);
        let path = dir.path().join(format!("{handle}.bin"));
        std::fs::write(&path, b.to_bytes()).unwrap();
        let out = Command::new(pozctl)
            .args(["identity", "verify"])
            .arg(&path)
            .arg("--provider")
            .arg(&rec_path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{handle}: {out:?}");
        assert!(
            stdout.contains(&format!("VALID binding \"{handle}@social.example\"")),
            "{stdout}"
        );

        // The same binding with one audit-path byte altered: refused (1).
        let mut bad = b.clone();
        bad.signatures[0].data[80] ^= 1;
        std::fs::write(&path, bad.to_bytes()).unwrap();
        let out = Command::new(pozctl)
            .args(["identity", "verify"])
            .arg(&path)
            .arg("--provider")
            .arg(&rec_path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{handle}: {out:?}");
    }
}

/// `pozctl identity import`: a CSV with a header streamed through the
/// Provider API; a rerun issues nothing twice; a malformed line is refused
/// with its line number before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_import_is_idempotent_and_strict() {
    let dir = tempfile::tempdir().unwrap();
    let (store, id, api) = fleet(dir.path()).await;
    let csv = dir.path().join("users.csv");
    let mut text = String::from("handle,user_record_hash\n");
    for i in 0..300u64 {
        let h = poz::hash::tagged_hash("csv", &[&i.to_be_bytes()]);
        text.push_str(&format!("member{i},{}\n", h.to_hex()));
    }
    std::fs::write(&csv, &text).unwrap();
    let pozctl = env!("CARGO_BIN_EXE_pozctl");
    let run = |file: &std::path::Path| {
        let (file, api) = (file.to_path_buf(), api.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                Command::new(pozctl)
                    .args(["identity", "import", "--quiet", "--api", &api])
                    .arg(&file)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    for _ in 0..2 {
        let out = run(&csv).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(stdout.contains("committed 300 of 300 bindings"), "{stdout}");
        assert_eq!(store.count_bindings(&id).await.unwrap(), 300);
    }
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "extra1,00\n").unwrap();
    let out = run(&bad).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("bad.csv:1: the user record hash is not 64 hex digits"));
    assert_eq!(store.count_bindings(&id).await.unwrap(), 300);
}
