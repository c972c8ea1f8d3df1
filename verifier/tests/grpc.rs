//! The verifier over real gRPC (in process, port 0), against the committed
//! test vectors: valid ones are complete, each invalid one fails its rule,
//! undecodable bytes are INVALID_ARGUMENT naming the field.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use pb::verifier_client::VerifierClient;
use pb::verifier_server::VerifierServer;
use poz::codec::Codec;
use poz::sample::{self, provider_keys, T0};
use poz::workflow;
use poz::zone::ZoneType;
use poz_proto::v1 as pb;
use poz_verifier::VerifierService;
use tonic::Code;

async fn client() -> VerifierClient<tonic::transport::Channel> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(VerifierServer::new(VerifierService::default()))
            .serve_with_incoming(poz_kit::incoming(l)),
    );
    VerifierClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn vectors() -> Vec<serde_json::Value> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../services/poz/vectors/");
    serde_json::from_slice(&std::fs::read(format!("{dir}index.json")).unwrap()).unwrap()
}

#[tokio::test]
async fn vectors_through_the_verifier() {
    let mut c = client().await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../services/poz/vectors/");
    let mut seen = 0;
    for v in vectors().iter().filter(|v| v["kind"] == "record") {
        let bytes = std::fs::read(format!("{dir}{}", v["file"].as_str().unwrap())).unwrap();
        let r = c
            .verify_record(pb::VerifyRecordRequest {
                record: bytes,
                now_ms: 0,
            })
            .await;
        match v["breaks"].as_str() {
            Some("decode") => {
                let e = r.unwrap_err();
                assert_eq!(e.code(), Code::InvalidArgument, "{}", v["name"]);
                assert!(
                    e.message().contains(v["decode_field"].as_str().unwrap()),
                    "{}: {}",
                    v["name"],
                    e.message()
                );
            }
            Some(rule) => {
                let r = r.unwrap().into_inner();
                assert!(!r.valid, "{}", v["name"]);
                let failed: std::collections::BTreeSet<&str> = r
                    .checks
                    .iter()
                    .filter(|c| c.outcome == pb::Outcome::Fail as i32)
                    .map(|c| c.rule.as_str())
                    .collect();
                // The rule the vector breaks, and the ones its description
                // lists as failing only because of it (SPEC §13).
                let want: std::collections::BTreeSet<&str> = std::iter::once(rule)
                    .chain(
                        v["also_fails"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|r| r.as_str()),
                    )
                    .collect();
                assert_eq!(failed, want, "{}", v["name"]);
            }
            None => {
                let r = r.unwrap().into_inner();
                assert!(r.valid, "{}", v["name"]);
                assert_eq!(
                    r.record_id.unwrap().value,
                    hex::decode(v["record_id"].as_str().unwrap()).unwrap()
                );
            }
        }
        seen += 1;
    }
    assert!(seen >= 30);
}

#[tokio::test]
async fn updates_and_entries() {
    let mut c = client().await;
    let p = sample::provider().unwrap();
    let k = provider_keys();
    // An update one serial ahead, signed by the head's master key.
    let mut d = workflow::draft(&p, T0 + 9_000).unwrap();
    workflow::sign_draft(&mut d, &k.master).unwrap();
    workflow::apply(&mut d).unwrap();
    let mut without_history = d.clone();
    without_history.history.clear();
    let r = c
        .verify_update(pb::VerifyUpdateRequest {
            head: p.to_bytes(),
            update: without_history.to_bytes(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.valid && r.complete, "{:?}", r.checks);
    // Two serials ahead: refused.
    let mut d2 = workflow::draft(&d, T0 + 10_000).unwrap();
    workflow::sign_draft(&mut d2, &k.master).unwrap();
    workflow::apply(&mut d2).unwrap();
    let e = c
        .verify_update(pb::VerifyUpdateRequest {
            head: p.to_bytes(),
            update: d2.to_bytes(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);

    // Bindings: one valid, one signed by one device only.
    let good = sample::issue(
        &p,
        sample::user_id(5),
        "erin",
        T0,
        0,
        &[&k.device_a, &k.device_b],
    )
    .unwrap();
    let short = sample::issue(&p, sample::user_id(6), "frank", T0, 0, &[&k.device_a]).unwrap();
    let r = c
        .verify_entries(pb::VerifyEntriesRequest {
            issuer_record: p.to_bytes(),
            zone_type: ZoneType::IDENTITY.0 as u32,
            entries: vec![good.to_bytes(), short.to_bytes()],
            now_ms: T0 + 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.results[0].valid);
    assert!(!r.results[1].valid);
    assert_eq!(r.results[1].rule, "entry-grant");
    let e = c
        .verify_entries(pb::VerifyEntriesRequest {
            issuer_record: p.to_bytes(),
            zone_type: 9,
            entries: vec![],
            now_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .verify_entries(pb::VerifyEntriesRequest {
            issuer_record: p.to_bytes(),
            zone_type: 1,
            entries: vec![vec![7; 3]],
            now_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("entries[0]"), "{}", e.message());
}
