//! The `.well-known/poz` fetch with POZ-as-CA (SPEC §21) against a local
//! HTTPS server on 127.0.0.1: `HttpsWellKnown::with_poz_ca` accepts the
//! file from a host whose certificate the record key its Service Zone
//! names signed, and refuses a swapped key, an expired certificate and
//! another host name. Also requiring the public PKI, a certificate signed
//! by the record key alone is refused, and one whose chain carries the
//! record key's CA certificate issued by a public root is accepted.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::sample;
use poz_client::ca::{issue_host_cert, issuer_name, HostCert};
use poz_client::discovery::{HttpsWellKnown, WellKnownFetcher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::{
    self,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
};

/// The sample provider's Service Zone names key 0 (sample key 10) as the
/// CA key of this host.
const HOST: &str = "revoke.social.example";
const DAY: Duration = Duration::from_secs(86_400);
const BODY: &str = r#"{"record_id":"00"}"#;

fn record() -> poz::VerifiedRecord {
    poz::verify::verify_and_accept(sample::provider().unwrap()).unwrap()
}

fn issue(key: u8, host: &str, from: SystemTime, to: SystemTime) -> HostCert {
    issue_host_cert(&sample::key(key), host, from, to).unwrap()
}

fn fresh(key: u8, host: &str) -> HostCert {
    let now = SystemTime::now();
    issue(key, host, now - DAY, now + 30 * DAY)
}

/// An HTTPS server presenting `chain` (end entity first) that answers
/// every request with [`BODY`].
async fn serve(chain: Vec<Vec<u8>>, key_der: Vec<u8>) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            chain.into_iter().map(CertificateDer::from).collect(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der)),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
                    BODY.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

/// Fetches `https://HOST/.well-known/poz` from `addr`, trusting the
/// sample provider's CA keys (and `roots`, when given).
async fn fetch(addr: SocketAddr, roots: Option<&str>) -> Result<Vec<u8>, String> {
    let f = HttpsWellKnown::with_poz_ca(&record(), roots.map(str::as_bytes), Some((HOST, addr)))
        .unwrap();
    f.fetch(HOST).await
}

#[tokio::test]
async fn the_record_key_named_for_the_host_is_accepted() {
    let c = fresh(10, HOST);
    let addr = serve(vec![c.cert_der], c.key_der).await;
    assert_eq!(fetch(addr, None).await.unwrap(), BODY.as_bytes());
}

#[tokio::test]
async fn a_swapped_key_an_expired_certificate_and_another_host_are_refused() {
    let now = SystemTime::now();
    for (why, c) in [
        ("swapped key", fresh(13, HOST)),
        ("expired", issue(10, HOST, now - 10 * DAY, now - DAY)),
        ("another host", fresh(10, "mx.social.example")),
    ] {
        let addr = serve(vec![c.cert_der], c.key_der).await;
        assert!(fetch(addr, None).await.is_err(), "{why}: accepted");
    }
}

/// The record key as an rcgen key pair (PKCS#8 v2, RFC 8410).
fn record_key_pair(seed: u8) -> rcgen::KeyPair {
    let k = sample::key(seed);
    let mut der = vec![
        0x30, 0x53, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&k.seed()[..]);
    der.extend_from_slice(&[0xa1, 0x23, 0x03, 0x21, 0x00]);
    der.extend_from_slice(&k.verifying_key().to_bytes());
    rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(der.as_slice()),
        &rcgen::PKCS_ED25519,
    )
    .unwrap()
}

/// A self-signed root standing for a public CA.
fn public_root() -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    (p.self_signed(&key).unwrap(), key)
}

#[tokio::test]
async fn requiring_the_public_pki_too_needs_a_chain_to_a_public_root() {
    // A "public" root, and an intermediate for the record key that it
    // issued: the same name and key as the record key's own issuer.
    let (root, root_key) = public_root();
    let mut ip = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ip.distinguished_name = rcgen::DistinguishedName::new();
    ip.distinguished_name.push(
        rcgen::DnType::CommonName,
        issuer_name(&sample::key(10).public()),
    );
    ip.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ip.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let intermediate = ip
        .signed_by(&record_key_pair(10), &root, &root_key)
        .unwrap();

    // Signed by the record key alone: POZ accepts it, the public PKI not.
    let c = fresh(10, HOST);
    let alone = serve(vec![c.cert_der.clone()], c.key_der.clone()).await;
    assert!(fetch(alone, Some(&root.pem())).await.is_err());
    // With the intermediate the public root issued: both accept it.
    let chained = serve(vec![c.cert_der, intermediate.der().to_vec()], c.key_der).await;
    assert_eq!(
        fetch(chained, Some(&root.pem())).await.unwrap(),
        BODY.as_bytes()
    );
    // A root the chain does not lead to: refused.
    let (other, _) = public_root();
    let c = fresh(10, HOST);
    let chained = serve(vec![c.cert_der, intermediate.der().to_vec()], c.key_der).await;
    assert!(fetch(chained, Some(&other.pem())).await.is_err());
}
