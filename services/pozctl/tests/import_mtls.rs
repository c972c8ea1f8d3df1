//! Issue 13: `pozctl identity import` against a Provider API that
//! requires mutual TLS, over real sockets: the operator's certificate
//! (`--tls-cert/--tls-key/--tls-ca`, or `POZ_TLS_*`) reaches it and the
//! bindings are committed; a certificate whose SAN is not on the
//! allowlist is refused (exit 1, PERMISSION_DENIED), and so is one from
//! another CA (the TLS alert); an `https://` endpoint without the three
//! flags, or an `http://` one with them, is a usage error (exit 2).
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod fleet;

use poz_kit::allow::identity;
use poz_kit::tls::TlsFiles;
use poz_kit::{Allowlist, Channels, GrpcRoutes, GrpcServer, ServeSettings};
use poz_proto::v1 as pb;
use poz_testkit::tls::Authority;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Store (SQLite), verifier and signer in this process on plain loopback
/// (as bulk_issued.rs starts them), and a Provider API for the sample
/// provider served by the kit runner with mutual TLS and the allowlist
/// `poz-provider-api` has by default. Returns the store, the record ID
/// and the API's `https://` URL.
async fn fleet(
    dir: &Path,
    server_tls: TlsFiles,
) -> (poz_store::Store, poz::Hash32, String, impl Drop) {
    let (store, id, peers) = fleet::sample_fleet(dir).await;
    let plain = Channels::default();
    let api = poz_provider::ProviderApiService::new(
        id,
        poz_provider::Peers {
            store: plain.lazy(&peers.store).unwrap(),
            verifier: plain.lazy(&peers.verifier).unwrap(),
            signer: plain.lazy(&peers.signer).unwrap(),
        },
        64,
    );
    let settings = ServeSettings {
        tls: server_tls,
        ..ServeSettings::default()
    };
    let allow = Allowlist::of(&[(
        "poz.v1.ProviderApi",
        &[
            identity::ACCOUNT_SYSTEM,
            identity::OPERATOR,
            identity::SUBMIT_GW,
        ],
    )]);
    let server = GrpcServer::bind("poz-provider-api", "127.0.0.1:0", &settings, allow)
        .await
        .unwrap();
    let api_url = format!("https://{}", server.local_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve_until(
        GrpcRoutes::new().service(pb::provider_api_server::ProviderApiServer::new(api)),
        async {
            let _ = stop_rx.await;
        },
    ));
    // Stops the server when the test ends.
    struct Stop(Option<tokio::sync::oneshot::Sender<()>>);
    impl Drop for Stop {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
        }
    }
    (store, id, api_url, Stop(Some(stop_tx)))
}

fn tls_flags(f: &TlsFiles) -> Vec<String> {
    let s = |p: &Option<PathBuf>| p.as_ref().unwrap().display().to_string();
    vec![
        "--tls-cert".into(),
        s(&f.cert_file),
        "--tls-key".into(),
        s(&f.key_file),
        "--tls-ca".into(),
        s(&f.ca_file),
    ]
}

/// Runs `pozctl identity import --quiet --api API CSV EXTRA…` off the
/// runtime's threads, with `env` set and no POZ_TLS_* inherited.
async fn import(api: &str, csv: &Path, extra: Vec<String>, env: Vec<(&str, String)>) -> Output {
    let (api, csv) = (api.to_string(), csv.to_path_buf());
    let env: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k.into(), v)).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pozctl"));
        cmd.args(["identity", "import", "--quiet", "--api", &api])
            .arg(&csv)
            .args(&extra);
        for k in ["POZ_TLS_CERT", "POZ_TLS_KEY", "POZ_TLS_CA"] {
            cmd.env_remove(k);
        }
        cmd.envs(env).output().unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_reaches_a_provider_api_over_mutual_tls_with_the_operators_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new(dir.path(), "fleet-ca");
    let ca_file = ca.ca_file().to_path_buf();
    let server_tls = ca.issue(identity::PROVIDER_API, "api", &ca_file);
    let (store, id, api, _stop) = fleet(dir.path(), server_tls).await;
    let csv = dir.path().join("users.csv");
    let mut text = String::from("handle,user_record_hash\n");
    for i in 0..5u64 {
        let h = poz::hash::tagged_hash("mtls", &[&i.to_be_bytes()]);
        text.push_str(&format!("member{i},{}\n", h.to_hex()));
    }
    std::fs::write(&csv, &text).unwrap();

    // https:// without the client certificate: usage, naming the flags.
    let out = import(&api, &csv, vec![], vec![]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    for flag in ["--tls-cert", "--tls-key", "--tls-ca"] {
        assert!(stderr.contains(flag), "{flag} not in {stderr}");
    }
    // Only some of the three: clap refuses before anything is read.
    let operator = ca.issue(identity::OPERATOR, "operator", &ca_file);
    let partial = tls_flags(&operator)[..2].to_vec();
    let out = import(&api, &csv, partial, vec![]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(store.count_bindings(&id).await.unwrap(), 0);

    // The TLS flags with a plain http:// endpoint: usage, not a silent
    // downgrade to cleartext (review of issue 13).
    let plain = api.replacen("https://", "http://", 1);
    let out = import(&plain, &csv, tls_flags(&operator), vec![]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr.contains("are for https:// endpoints"), "{stderr}");

    // A certificate from another CA: the server rejects it in the
    // handshake; told as a refusal (exit 1), not a lost connection to
    // rerun (review of issue 13).
    let other_dir = tempfile::tempdir().unwrap();
    let other = Authority::new(other_dir.path(), "other-ca");
    let stranger = other.issue(identity::OPERATOR, "stranger", &ca_file);
    let out = import(&api, &csv, tls_flags(&stranger), vec![]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr
            .contains("rejected this client's certificate in the TLS handshake (alert UnknownCA)"),
        "{stderr}"
    );
    assert!(!stderr.contains("Rerun"), "{stderr}");
    assert_eq!(store.count_bindings(&id).await.unwrap(), 0);

    // A fleet certificate whose SAN the Provider API does not allow.
    let gateway = ca.issue(identity::QUERY_GW, "query-gw", &ca_file);
    let out = import(&api, &csv, tls_flags(&gateway), vec![]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("PERMISSION_DENIED"), "{stderr}");
    assert!(
        stderr.contains("poz-query-gw may not call poz.v1.ProviderApi/BulkIssue"),
        "{stderr}"
    );
    assert_eq!(store.count_bindings(&id).await.unwrap(), 0);

    // The operator's certificate, by flags: every line committed.
    let out = import(&api, &csv, tls_flags(&operator), vec![]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("committed 5 of 5 bindings"), "{stdout}");
    assert_eq!(store.count_bindings(&id).await.unwrap(), 5);

    // The same certificate from the environment: the rerun resumes
    // (nothing issued twice) over the same mutual TLS.
    let env = vec![
        ("POZ_TLS_CERT", tls_flags(&operator)[1].clone()),
        ("POZ_TLS_KEY", tls_flags(&operator)[3].clone()),
        ("POZ_TLS_CA", tls_flags(&operator)[5].clone()),
    ];
    let out = import(&api, &csv, vec![], env).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("committed 5 of 5 bindings"), "{stdout}");
    assert_eq!(store.count_bindings(&id).await.unwrap(), 5);
}
