//! The fingerprint vectors (`services/poz/vectors/fingerprint.json`, SPEC
//! §19): each code is computed twice, by `poz::fingerprint` and by a
//! second implementation written from the SPEC text here (plain SHA3-256,
//! no `poz::hash`), and both must equal the committed file.
//!
//! Regenerate after a deliberate change with
//! `POZ_REGEN_VECTORS=1 cargo test -p poz --test fingerprint`.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::fingerprint::{self, Fingerprint, PairFingerprint, ITERATIONS};
use poz::Hash32;
use serde_json::{json, Value};
use sha3::{Digest, Sha3_256};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

/// SPEC §19 as written: H(tag, id), then H(tag, prev ‖ id) until 16,384
/// digests in all; bytes 0..30 as six big-endian u40, each mod 100,000.
fn spec_code(id: &[u8; 32]) -> String {
    let tag = b"POZ-v0 fingerprint";
    let h = |parts: &[&[u8]]| -> [u8; 32] {
        let mut s = Sha3_256::new();
        s.update([tag.len() as u8]);
        s.update(tag);
        for p in parts {
            s.update(p);
        }
        s.finalize().into()
    };
    let mut d = h(&[id]);
    for _ in 1..16_384 {
        d = h(&[&d, id]);
    }
    let groups: Vec<String> = d[..30]
        .chunks(5)
        .map(|c| {
            let n = c.iter().fold(0u64, |n, b| n * 256 + u64::from(*b));
            format!("{:05}", n % 100_000)
        })
        .collect();
    groups.join(" ")
}

fn id(hex: &str) -> Hash32 {
    Hash32::from_hex(hex).unwrap()
}

/// The inputs: the record IDs of the committed record vectors, and two
/// edge IDs.
fn inputs() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "the tour record (valid-genesis-34-33-33-recovery, valid-chain-1-2)",
            "856d92006e81e766181e710dbe8a47a8a20407ca51a7ebda5506aa3ac60ab47d",
        ),
        (
            "the provider record (valid-provider-all-zones)",
            "0493fa891072c64be133e0017554790dd3cf8915e455ae75d6146b88c6ccd8f9",
        ),
        (
            "all zero bytes",
            "0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            "all 0xff bytes",
            "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        ),
    ]
}

fn build() -> Value {
    let ins = inputs();
    let single: Vec<Value> = ins
        .iter()
        .map(|(what, hex)| {
            let rid = id(hex);
            let first = poz::hash::tagged_hash(poz::hash::tag::FINGERPRINT, &[&rid.0]);
            let code = Fingerprint::of(&rid);
            assert_eq!(code.to_string(), spec_code(&rid.0), "{what}");
            json!({
                "input": what,
                "record_id": hex,
                "first_digest": first.to_hex(),
                "final_digest": fingerprint::digest(&rid).to_hex(),
                "digits": code.digits(),
                "code": code.to_string(),
            })
        })
        .collect();
    let pairs = [(0, 1), (1, 0), (2, 3), (0, 0)];
    let pair: Vec<Value> = pairs
        .iter()
        .map(|&(i, j)| {
            let (a, b) = (id(ins[i].1), id(ins[j].1));
            let p = PairFingerprint::of(&a, &b);
            let mut halves = [spec_code(&a.0), spec_code(&b.0)];
            halves.sort();
            assert_eq!(p.to_string(), halves.join(" "));
            json!({
                "a": ins[i].1,
                "b": ins[j].1,
                "digits": p.digits(),
                "code": p.to_string(),
            })
        })
        .collect();
    json!({
        "description": "Fingerprints of record IDs (SPEC §19): one record's 30-digit code, and a pair's 60-digit code (the two codes, smaller first: the same whichever order the records are given in).",
        "tag": poz::hash::tag::FINGERPRINT,
        "iterations": ITERATIONS,
        "single": single,
        "pair": pair,
    })
}

#[test]
fn fingerprint_vectors_are_committed() {
    let want = build();
    let path = dir().join("fingerprint.json");
    if std::env::var_os("POZ_REGEN_VECTORS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&want).unwrap() + "\n").unwrap();
        return;
    }
    let committed: Value = serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (regenerate with POZ_REGEN_VECTORS=1)",
            path.display()
        )
    }))
    .unwrap();
    assert_eq!(committed, want, "fingerprint.json is stale");
}

/// The IDs the vectors name are the committed record vectors' IDs.
#[test]
fn vector_inputs_are_the_record_vectors_ids() {
    let index: Vec<Value> =
        serde_json::from_slice(&std::fs::read(dir().join("index.json")).unwrap()).unwrap();
    for name in [
        "valid-genesis-34-33-33-recovery",
        "valid-provider-all-zones",
    ] {
        let rid = index
            .iter()
            .find(|v| v["name"] == name)
            .and_then(|v| v["record_id"].as_str())
            .unwrap();
        assert!(
            inputs()
                .iter()
                .any(|(what, hex)| *hex == rid && what.contains(name)),
            "{name}"
        );
    }
}
