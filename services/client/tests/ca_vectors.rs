//! POZ-as-CA vectors (SPEC §21): `services/poz/vectors/ca.json`, fixed
//! certificates (Ed25519 host key from a sample seed, fixed serial and
//! times) checked against the sample provider (`valid-provider-all-zones.poz`)
//! at a fixed time, each with its answer. Regenerate with
//! `POZ_REGEN_VECTORS=1 cargo test -p poz-client --test ca_vectors`.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::sample;
use poz::Codec;
use poz_client::ca::{check_cert, issue_host_cert_with, PozCaVerifier};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../poz/vectors")
}

const DAY: u64 = 86_400;
const HOST: &str = "revoke.social.example";

/// Seconds since the epoch: the sample genesis time T0 plus `days`.
fn t(days: i64) -> u64 {
    (sample::T0 / 1000).wrapping_add_signed(days * DAY as i64)
}

fn at(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(s)
}

fn cert(key: u8, host: &str, from: i64, to: i64, serial: u8) -> poz_client::ca::HostCert {
    issue_host_cert_with(
        &sample::key(key),
        host,
        at(t(from)),
        at(t(to)),
        &sample::key(40),
        [serial; 16],
    )
    .unwrap()
}

fn build() -> Value {
    let now = t(2);
    let good = cert(10, HOST, 0, 30, 1);
    let mut flipped = good.cert_der.clone();
    let n = flipped.len();
    flipped[n - 1] ^= 0x01;
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("good", HOST, good.cert_der.clone(), "accepted"),
        (
            "good-other-case",
            "Revoke.Social.Example.",
            good.cert_der.clone(),
            "accepted",
        ),
        (
            "swapped-key",
            HOST,
            cert(13, HOST, 0, 30, 2).cert_der,
            "bad-signature",
        ),
        ("signature-flipped", HOST, flipped, "bad-signature"),
        (
            "expired",
            HOST,
            cert(10, HOST, -30, 1, 3).cert_der,
            "expired",
        ),
        (
            "not-valid-yet",
            HOST,
            cert(10, HOST, 10, 40, 4).cert_der,
            "not-valid-yet",
        ),
        (
            "other-host",
            HOST,
            cert(10, "mx.social.example", 0, 30, 5).cert_der,
            "wrong-host",
        ),
        (
            "no-ca-key",
            "q1.social.example",
            cert(10, "q1.social.example", 0, 30, 6).cert_der,
            "no-ca-key",
        ),
        (
            "record-key-self-issued",
            HOST,
            good.issuer_der.clone(),
            "is-ca",
        ),
        ("not-der", HOST, b"POZ".to_vec(), "malformed"),
    ];
    let vr = poz::verify::verify_and_accept(sample::provider().unwrap()).unwrap();
    let v = PozCaVerifier::new(&vr);
    let list: Vec<Value> = cases
        .into_iter()
        .map(|(name, host, der, want)| {
            let got = match check_cert(&der, host, v.keys_for(host), now as i64) {
                Ok(()) => "accepted",
                Err(e) => e.code(),
            };
            assert_eq!(got, want, "case {name}");
            json!({
                "name": name,
                "host": host,
                "now_s": now,
                "cert_der": hex::encode(&der),
                "answer": want,
            })
        })
        .collect();
    json!({
        "description": "POZ-as-CA (SPEC §21): certificates checked for the host dialled against the CA keys the record names for it, at now_s. The record's revoke.social.example and mx.social.example name key index 0 (sample key 10); q1.social.example names none. Host key: sample key 40 (Ed25519); serials fixed.",
        "record": "valid-provider-all-zones.poz",
        "record_id": vr.id.to_hex(),
        "ca_key_id": hex::encode(sample::key(10).public().id().0),
        "cases": list,
    })
}

#[test]
fn ca_vectors_are_committed_and_answer_as_specified() {
    let rec = std::fs::read(dir().join("valid-provider-all-zones.poz")).unwrap();
    assert_eq!(rec, sample::provider().unwrap().to_bytes());
    let want = build();
    let path = dir().join("ca.json");
    if std::env::var_os("POZ_REGEN_VECTORS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&want).unwrap() + "\n").unwrap();
        return;
    }
    let committed: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        committed, want,
        "ca.json is stale (regenerate with POZ_REGEN_VECTORS=1)"
    );
}
