//! Issue 13: the signer trusts no caller it cannot name. Over real
//! sockets, against the `poz-signer` binary with software keys and mutual
//! TLS from files: a caller without a client certificate, and one whose
//! certificate is not on the signer's allowlist, get PERMISSION_DENIED
//! and a log line naming them, and no key is touched (no audit row); the
//! Provider API's certificate gets a signature; and a certificate file
//! replaced on disk is the one the next connection sees.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::sample::{self, T0};
use poz::{workflow, Codec, Record};
use poz_kit::allow::identity;
use poz_kit::Channels;
use poz_proto::v1 as pb;
use poz_testkit::tls::{toml_table, Authority};
use poz_testkit::ServiceProcess;
use std::process::Command;

/// A sole-owner record's next draft (serial 3), signed by `sample::key(10)`.
fn draft() -> Record {
    let owner = sample::key(10);
    let rec = sample::sole_owner_genesis(&owner).unwrap();
    let mut rec = workflow::draft(&rec, T0 + 1).unwrap();
    workflow::sign_draft(&mut rec, &owner).unwrap();
    workflow::apply(&mut rec).unwrap();
    workflow::draft(&rec, T0 + 2).unwrap()
}

async fn sign(channels: &Channels, url: &str) -> Result<pb::SignatureResponse, tonic::Status> {
    let key_id = sample::key(10).public().id();
    pb::signer_client::SignerClient::new(channels.lazy(url).unwrap())
        .sign_master_draft(pb::SignMasterDraftRequest {
            draft: draft().to_bytes(),
            key_id: Some(pb::Hash {
                value: key_id.0.to_vec(),
            }),
        })
        .await
        .map(|r| r.into_inner())
}

async fn audit_rows(url: &str) -> i64 {
    use sqlx::Row;
    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    let n = sqlx::query("SELECT COUNT(*) FROM signature_audit")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get::<i64, _>(0);
    pool.close().await;
    n
}

/// The names on the certificate the server at `addr` presents to a new
/// connection.
async fn presented(addr: &str, ca: &Authority) -> Vec<String> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(ca.der().to_vec().into()).unwrap();
    let mut c = tokio_rustls::rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    c.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let s = tokio_rustls::TlsConnector::from(std::sync::Arc::new(c))
        .connect(name, tcp)
        .await
        .unwrap();
    poz_kit::tls::identities(&s.get_ref().1.peer_certificates().unwrap()[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signer_signs_for_the_provider_api_only_and_follows_its_certificate_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("audit.db").display()
    );
    // The store migrates the audit table; the signer only inserts.
    poz_store::Store::open(&db, poz_store::StoreOptions::default())
        .await
        .unwrap()
        .close()
        .await;
    let pass = dir.path().join("passphrase");
    std::fs::write(&pass, "correct horse\n").unwrap();
    let key_file = dir.path().join("master.key");
    let file = poz::private::KeyFile::create(
        &sample::key(10),
        b"correct horse",
        poz::private::KdfParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        },
    )
    .unwrap();
    std::fs::write(&key_file, file.to_bytes()).unwrap();

    let ca = Authority::new(dir.path(), "fleet-ca");
    let signer_tls = ca.issue("poz-signer", "signer", ca.ca_file());
    let conf = dir.path().join("signer.toml");
    std::fs::write(
        &conf,
        format!(
            "listen = \"127.0.0.1:0\"\nbackend = \"software\"\nkey_files = [\"{}\"]\npassphrase_file = \"{}\"\naudit_database_url = \"{db}\"\n{}",
            key_file.display(),
            pass.display(),
            toml_table(&signer_tls)
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_poz-signer"));
    cmd.arg("--config").arg(&conf);
    let signer = ServiceProcess::spawn(cmd);
    let url = format!("https://{}", signer.addr());

    // The Provider API's certificate: signed, and audited.
    let api = Channels::new(&ca.issue(identity::PROVIDER_API, "api", ca.ca_file())).unwrap();
    let signed = sign(&api, &url).await.unwrap();
    assert!(
        !signed.signature.is_empty() && signed.audit_id > 0,
        "{signed:?}"
    );
    assert_eq!(audit_rows(&db).await, 1);

    // A fleet certificate not on the signer's allowlist.
    let query = Channels::new(&ca.issue(identity::QUERY_GW, "query", ca.ca_file())).unwrap();
    let e = sign(&query, &url).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert_eq!(
        e.message(),
        "poz-query-gw may not call poz.v1.Signer/SignMasterDraft"
    );

    // No client certificate: a plain TLS client with the CA only.
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(ca.der().to_vec().into()).unwrap();
    let mut anon = tokio_rustls::rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    anon.alpn_protocols = vec![b"h2".to_vec()];
    let anon = std::sync::Arc::new(anon);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", signer.addr()))
        .unwrap()
        .connect_with_connector_lazy(tower::service_fn(move |uri: http::Uri| {
            let anon = anon.clone();
            async move {
                let tcp =
                    tokio::net::TcpStream::connect((uri.host().unwrap(), uri.port_u16().unwrap()))
                        .await?;
                let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
                let s = tokio_rustls::TlsConnector::from(anon)
                    .connect(name, tcp)
                    .await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }));
    let e = pb::signer_client::SignerClient::new(channel)
        .list_keys(pb::ListKeysRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert_eq!(e.message(), "a client certificate is required");

    // Neither refused call touched a key: still one audit row. Each was
    // logged with the caller's names.
    assert_eq!(audit_rows(&db).await, 1);
    let log = signer.stderr();
    assert!(
        log.contains("refused caller") && log.contains("poz-query-gw"),
        "{log}"
    );
    assert!(log.contains("no client certificate"), "{log}");

    // The signer's certificate replaced on disk (as a Secret volume
    // update does): the next connection sees the new one, no restart.
    assert_eq!(presented(signer.addr(), &ca).await, ["poz-signer"]);
    let renewed = ca.issue("poz-signer-renewed", "renewed", ca.ca_file());
    std::fs::rename(
        renewed.key_file.unwrap(),
        signer_tls.key_file.as_ref().unwrap(),
    )
    .unwrap();
    std::fs::rename(
        renewed.cert_file.unwrap(),
        signer_tls.cert_file.as_ref().unwrap(),
    )
    .unwrap();
    assert_eq!(presented(signer.addr(), &ca).await, ["poz-signer-renewed"]);
    // And it still signs for the Provider API over the new certificate.
    let again = Channels::new(&ca.issue(identity::PROVIDER_API, "api2", ca.ca_file())).unwrap();
    sign(&again, &url).await.unwrap();
    assert_eq!(audit_rows(&db).await, 2);
}
