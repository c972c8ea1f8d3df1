//! `pozctl mirrors`: an operator sets the servers the MIRRORS answer names
//! for a domain, over the store's gRPC API; a bad host spec or an unknown
//! domain is refused with the reason and changes nothing.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::entries::PoolHost;
use poz::{Codec, Record};
use poz_proto::v1 as pb;
use std::process::Command;

fn pozctl(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pozctl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sets_and_clears_a_domains_mirrors() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
    let store = poz_store::Store::open(&url, poz_store::StoreOptions::default())
        .await
        .unwrap();
    let provider = poz::sample::provider().unwrap();
    let genesis = Record::new(provider.keys.clone(), provider.history[0].clone());
    let id = store
        .create_record(&genesis.to_bytes(), &["social.example".into()], "")
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::store_read_server::StoreReadServer::new(
                poz_store::grpc::StoreReader {
                    store: store.clone(),
                },
            ))
            .add_service(pb::store_write_server::StoreWriteServer::new(
                poz_store::grpc::StoreWriter {
                    store: store.clone(),
                },
            ))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let store_url = format!("http://{addr}");
    let key = "cd".repeat(32);
    let q1 = format!("q1.mirror.example:7075:noise_nk:{key}@5/60");
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            pozctl(&args)
        })
    };
    let args = |extra: &[&str]| {
        let mut a = vec![
            "mirrors".to_string(),
            "social.example".to_string(),
            "--store".to_string(),
            store_url.clone(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };

    let (ok, out) = run(args(&["--host", &q1, "--host", "q2.mirror.example:7074"]))
        .await
        .unwrap();
    assert!(ok, "{out}");
    let want = vec![
        PoolHost::from_spec(&q1).unwrap().to_bytes(),
        PoolHost::from_spec("q2.mirror.example:7074")
            .unwrap()
            .to_bytes(),
    ];
    assert_eq!(store.mirrors(&id).await.unwrap(), want);

    // Refused, nothing changed: a bad spec (before anything is sent), a
    // domain the store does not know.
    let (ok, out) = run(args(&["--host", "q3.mirror.example:7075:rot13"]))
        .await
        .unwrap();
    assert!(
        !ok && out.contains("encryption is none, tls or noise_nk"),
        "{out}"
    );
    let mut unknown = args(&["--host", "q3.mirror.example:7074"]);
    unknown[1] = "nowhere.example".into();
    let (ok, out) = run(unknown).await.unwrap();
    assert!(!ok && out.contains("nowhere.example"), "{out}");
    assert_eq!(store.mirrors(&id).await.unwrap(), want);

    // No --host: cleared.
    let (ok, out) = run(args(&[])).await.unwrap();
    assert!(ok, "{out}");
    assert!(store.mirrors(&id).await.unwrap().is_empty());
}
