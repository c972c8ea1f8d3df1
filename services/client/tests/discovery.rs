//! Discovery against a real DNS server on loopback (hickory-server, in
//! process, UDP and TCP on one ephemeral port): SRV finds the query
//! servers, the TXT record pins the record ID, and a pin that disagrees
//! with what the server returns is refused.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod support;

use hickory_proto::rr::rdata::{A, SRV, TXT};
use hickory_proto::rr::{Name, RData};
use poz::sample;
use poz::serve::{Catalog, ServedRecord};
use poz_client::discovery::Discovery;
use poz_client::{Client, ClientError};
use std::str::FromStr;

#[tokio::test]
async fn srv_and_txt_lead_to_a_verified_record() {
    let provider = sample::provider().unwrap();
    let id = provider.id();
    let mut c = Catalog::default();
    c.insert("social.example", ServedRecord::new(provider, vec![]));
    let s = support::start(c, 0).await;

    let (ns, task) = support::dns(
        "social.example.",
        vec![
            support::rec(
                "_poz._tcp.social.example.",
                RData::SRV(SRV::new(
                    10,
                    60,
                    s.plain.port(),
                    Name::from_str("q1.social.example.").unwrap(),
                )),
            ),
            support::rec(
                "_poz-submit._tcp.social.example.",
                RData::SRV(SRV::new(
                    10,
                    100,
                    s.submit.port(),
                    Name::from_str("q1.social.example.").unwrap(),
                )),
            ),
            support::rec("q1.social.example.", RData::A(A::new(127, 0, 0, 1))),
            support::rec(
                "_poz.social.example.",
                RData::TXT(TXT::new(vec![format!("v=poz0 id={}", id.to_hex())])),
            ),
        ],
    )
    .await;
    let d = Discovery::with_nameserver(ns)
        .discover("social.example")
        .await
        .unwrap();
    assert_eq!(d.via, "srv");
    assert_eq!(d.query.len(), 1);
    assert_eq!(d.query[0].addr, s.plain);
    assert_eq!(d.submit, vec![s.submit]);
    assert_eq!(d.dns_pin, Some(id));
    let pin = d.pin("social.example").unwrap();
    let client = Client::default();
    let m = client
        .master(&d.query, "social.example", pin)
        .await
        .unwrap();
    assert_eq!(m.id, id);
    task.abort();
}

#[tokio::test]
async fn a_dns_pin_for_another_record_is_refused() {
    let mut c = Catalog::default();
    c.insert(
        "social.example",
        ServedRecord::new(sample::provider().unwrap(), vec![]),
    );
    let s = support::start(c, 0).await;
    let other = sample::tour_record().unwrap().id();
    // The domain's TXT record pins another record than the server holds.
    let (ns, task) = support::social_dns(&s, other).await;
    let d = Discovery::with_nameserver(ns)
        .discover("social.example")
        .await
        .unwrap();
    let e = Client::default()
        .master(&d.query, "social.example", d.pin("social.example").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::PinMismatch { .. }), "{e}");
    task.abort();
}

#[tokio::test]
async fn without_srv_the_direct_address_is_used() {
    let (ns, task) = support::dns(
        "social.example.",
        vec![support::rec(
            "social.example.",
            RData::A(A::new(127, 0, 0, 1)),
        )],
    )
    .await;
    let mut disc = Discovery::with_nameserver(ns);
    disc.direct_port = 7074;
    let d = disc.discover("social.example").await.unwrap();
    assert_eq!(d.via, "direct");
    assert_eq!(d.query[0].addr, "127.0.0.1:7074".parse().unwrap());
    assert_eq!(d.dns_pin, None);
    task.abort();
}

/// Discovery over DNS, the record verified over plaintext, then a private
/// lookup over Noise NK to the host and key the record's own Service Zone
/// publishes.
#[tokio::test]
async fn private_lookup_through_the_records_service_zone() {
    let s = support::start(Catalog::default(), 0).await;
    let id = support::serve_provider_with_private_host(&s);
    let (ns, task) = support::social_dns(&s, id).await;
    let disc = Discovery::with_nameserver(ns);
    let d = disc.discover("social.example").await.unwrap();
    let client = Client::default();
    let m = client
        .master(&d.query, "social.example", d.pin("social.example").unwrap())
        .await
        .unwrap();
    let private = disc.noise_endpoints(&m).await;
    // Two POZ_QUERY Noise hosts resolve: ours (priority 1) first, then the
    // sample's own q1 (priority 10, its published key); plaintext hosts
    // are not in this list.
    assert_eq!(private.len(), 2, "{private:?}");
    assert_eq!(private[0].addr, s.noise);
    assert_eq!(
        private[0].security,
        poz_client::Security::Noise(s.key.public)
    );
    assert_eq!(private[1].addr.port(), 7075);
    assert_eq!(private[1].security, poz_client::Security::Noise([0x42; 32]));
    let (_, b) = client
        .chain(&private, "social.example", "alice", Some(id))
        .await
        .unwrap();
    assert_eq!(b.binding.handle, "alice");
    task.abort();
}
