//! POZ-as-CA against a local rustls TLS server on 127.0.0.1 (SPEC §21): a
//! certificate signed by the record key that the sample provider's
//! Service Zone names for `revoke.social.example` (`ca_key_idx` 0, sample
//! key 10) is accepted; one signed by another key, an expired one, one
//! for another host, and a host with no CA key are refused.

use poz::sample;
use poz_client::ca::{check_cert, issue_host_cert, CaError, HostCert, PozCaVerifier};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::{
    self,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName},
    CertificateError,
};

const HOST: &str = "revoke.social.example";
const DAY: Duration = Duration::from_secs(86_400);

fn record() -> poz::VerifiedRecord {
    poz::verify::verify_and_accept(sample::provider().expect("sample")).expect("valid")
}

fn issue(key: u8, host: &str, from: SystemTime, to: SystemTime) -> HostCert {
    issue_host_cert(&sample::key(key), host, from, to).expect("issue")
}

fn fresh(key: u8, host: &str) -> HostCert {
    let now = SystemTime::now();
    issue(key, host, now - DAY, now + 30 * DAY)
}

/// Serves one TLS connection with `cert`, says "hello", and dials it as
/// `dial` with the POZ-as-CA verifier of the sample provider.
async fn handshake(
    cert: &HostCert,
    dial: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<Vec<u8>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der.clone())),
        )
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let serve = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        if let Ok(mut s) = acceptor.accept(tcp).await {
            let _ = s.write_all(b"hello").await;
            let _ = s.shutdown().await;
        }
    });
    let client = PozCaVerifier::new(&record())
        .client_config()
        .expect("client config");
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(dial.to_owned()).expect("name");
    let out = match connector.connect(name, tcp).await {
        Ok(mut s) => {
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.expect("read");
            Ok(buf)
        }
        Err(e) => Err(e
            .get_ref()
            .and_then(|i| i.downcast_ref::<rustls::Error>())
            .cloned()
            .unwrap_or_else(|| rustls::Error::General(e.to_string()))),
    };
    let _ = serve.await;
    out
}

fn refused(r: Result<Vec<u8>, rustls::Error>) -> CertificateError {
    match r {
        Err(rustls::Error::InvalidCertificate(c)) => c,
        other => panic!("expected a certificate refusal, got {other:?}"),
    }
}

const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

#[tokio::test]
async fn the_named_record_key_is_accepted() {
    assert_eq!(record().record.keys.get(0), Some(&sample::key(10).public()));
    let got = handshake(&fresh(10, HOST), HOST, BOTH).await;
    assert_eq!(got.expect("accepted"), b"hello");
}

#[tokio::test]
async fn tls12_handshake_signatures_are_verified_too() {
    let got = handshake(&fresh(10, HOST), HOST, &[&rustls::version::TLS12]).await;
    assert_eq!(got.expect("accepted over TLS 1.2"), b"hello");
}

#[tokio::test]
async fn a_swapped_key_is_refused() {
    // Key 13 is in the record (the zones key) but is not the host's CA key.
    let got = handshake(&fresh(13, HOST), HOST, BOTH).await;
    assert_eq!(refused(got), CertificateError::BadSignature);
}

#[tokio::test]
async fn an_expired_certificate_is_refused() {
    let now = SystemTime::now();
    let got = handshake(&issue(10, HOST, now - 10 * DAY, now - DAY), HOST, BOTH).await;
    assert_eq!(refused(got), CertificateError::Expired);
}

#[tokio::test]
async fn a_certificate_not_valid_yet_is_refused() {
    let now = SystemTime::now();
    let got = handshake(&issue(10, HOST, now + DAY, now + 10 * DAY), HOST, BOTH).await;
    assert_eq!(refused(got), CertificateError::NotValidYet);
}

#[tokio::test]
async fn another_host_name_is_refused() {
    // mx.social.example names the same CA key: the right signer, the
    // wrong host.
    let got = handshake(&fresh(10, "mx.social.example"), HOST, BOTH).await;
    assert_eq!(refused(got), CertificateError::NotValidForName);
}

#[tokio::test]
async fn a_host_without_a_ca_key_is_refused() {
    let got = handshake(&fresh(10, "q1.social.example"), "q1.social.example", BOTH).await;
    assert_eq!(refused(got), CertificateError::UnknownIssuer);
}

#[test]
fn garbage_is_a_typed_refusal() {
    let v = PozCaVerifier::new(&record());
    let keys = v.keys_for(HOST);
    assert_eq!(keys.len(), 1);
    for bytes in [&b""[..], b"\x30", b"\x30\x03\x02\x01\x00", &[0xff; 64]] {
        assert_eq!(check_cert(bytes, HOST, keys, 0), Err(CaError::Malformed));
    }
    let mut der = fresh(10, HOST).cert_der;
    let n = der.len();
    der[n - 1] ^= 1; // the signature
    assert_eq!(
        check_cert(&der, HOST, keys, 1_900_000_000),
        Err(CaError::BadSignature)
    );
    assert!(matches!(
        issue_host_cert(
            &sample::key(10),
            "",
            SystemTime::now(),
            SystemTime::now() + DAY
        ),
        Err(poz_client::ca::IssueError::HostName(_))
    ));
}
