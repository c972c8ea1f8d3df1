//! The well-known fallback against a local HTTPS server whose certificate
//! a test CA issued: used when DNS has no SRV, cross-checked with the TXT
//! pin, and ignored when its certificate is not trusted.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod support;

use hickory_proto::rr::rdata::{A, TXT};
use hickory_proto::rr::{Name, RData, Record as DnsRecord};
use poz::sample;
use poz::serve::{Catalog, ServedRecord};
use poz_client::discovery::{Discovery, HttpsWellKnown};
use poz_client::{Client, ClientError};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

struct TestCa {
    ca_pem: String,
    leaf_der: Vec<u8>,
    leaf_key_der: Vec<u8>,
}

fn test_ca(host: &str) -> TestCa {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![host.to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    TestCa {
        ca_pem: ca.pem(),
        leaf_der: leaf.der().to_vec(),
        leaf_key_der: leaf_key.serialize_der(),
    }
}

/// An HTTPS server answering every request with `body` as JSON.
async fn https(ca: &TestCa, body: String) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![rustls::pki_types::CertificateDer::from(ca.leaf_der.clone())],
            rustls::pki_types::PrivateKeyDer::Pkcs8(ca.leaf_key_der.clone().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(n) if n > 0 => req.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let ok = req.starts_with(b"GET /.well-known/poz ");
                let resp = if ok {
                    format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
                } else {
                    "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        .to_string()
                };
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn well_known_over_https_finds_and_pins_the_record() {
    let provider = sample::provider().unwrap();
    let id = provider.id();
    let mut c = Catalog::default();
    c.insert("social.example", ServedRecord::new(provider, vec![]));
    let s = support::start(c, 0).await;
    let ca = test_ca("social.example");
    let body = format!(
        r#"{{"record_id":"{}","query":[{{"host":"127.0.0.1","port":{}}}],"submit":[{{"host":"127.0.0.1","port":{}}}]}}"#,
        id.to_hex(),
        s.plain.port(),
        s.submit.port()
    );
    let (web, web_task) = https(&ca, body).await;
    // DNS knows the domain but publishes no SRV and no TXT.
    let (ns, dns_task) = support::dns(
        "social.example.",
        vec![DnsRecord::from_rdata(
            Name::from_str("social.example.").unwrap(),
            60,
            RData::A(A::new(127, 0, 0, 1)),
        )],
    )
    .await;

    let fetch =
        HttpsWellKnown::with_root(ca.ca_pem.as_bytes(), Some(("social.example", web))).unwrap();
    let d = Discovery::with_nameserver(ns)
        .with_well_known(Box::new(fetch))
        .discover("social.example")
        .await
        .unwrap();
    assert_eq!(d.via, "well-known");
    assert_eq!(d.well_known_pin, Some(id));
    assert_eq!(d.query[0].addr, s.plain);
    assert_eq!(d.submit, vec![s.submit]);
    let m = Client::default()
        .master(&d.query, "social.example", d.pin("social.example").unwrap())
        .await
        .unwrap();
    assert_eq!(m.id, id);

    // A certificate from a CA the client does not trust: the file is not
    // used, and discovery falls back to the direct address.
    let other = test_ca("social.example");
    let untrusting =
        HttpsWellKnown::with_root(other.ca_pem.as_bytes(), Some(("social.example", web))).unwrap();
    let d = Discovery::with_nameserver(ns)
        .with_well_known(Box::new(untrusting))
        .discover("social.example")
        .await
        .unwrap();
    assert_eq!(d.via, "direct");
    assert_eq!(d.well_known_pin, None);
    web_task.abort();
    dns_task.abort();
}

#[tokio::test]
async fn dns_and_well_known_pins_must_agree() {
    let ca = test_ca("social.example");
    let a = sample::provider().unwrap().id();
    let b = sample::tour_record().unwrap().id();
    let (web, web_task) = https(&ca, format!(r#"{{"record_id":"{}"}}"#, a.to_hex())).await;
    let (ns, dns_task) = support::dns(
        "social.example.",
        vec![DnsRecord::from_rdata(
            Name::from_str("_poz.social.example.").unwrap(),
            60,
            RData::TXT(TXT::new(vec![format!("v=poz0 id={}", b.to_hex())])),
        )],
    )
    .await;
    let fetch =
        HttpsWellKnown::with_root(ca.ca_pem.as_bytes(), Some(("social.example", web))).unwrap();
    let e = Discovery::with_nameserver(ns)
        .with_well_known(Box::new(fetch))
        .discover("social.example")
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ClientError::Discovery { detail, .. } if detail.contains("pins")),
        "{e}"
    );
    web_task.abort();
    dns_task.abort();
}
