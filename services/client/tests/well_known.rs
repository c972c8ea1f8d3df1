//! The well-known fallback against a local HTTPS server whose certificate
//! a test CA issued: used when DNS has no SRV, cross-checked with the TXT
//! pin, and ignored when its certificate is not trusted.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod support;

use support::{https, test_ca};

use hickory_proto::rr::rdata::{A, TXT};
use hickory_proto::rr::{Name, RData, Record as DnsRecord};
use poz::sample;
use poz::serve::{Catalog, ServedRecord};
use poz_client::discovery::{Discovery, HttpsWellKnown};
use poz_client::{Client, ClientError};
use std::str::FromStr;

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
