//! `pozctl fingerprint RECORD [OTHER]` (SPEC §19) on the committed record
//! vectors: it prints what `poz::fingerprint` computes, and what
//! `fingerprint.json` commits; a pair prints the same whichever order the
//! records come in; a record that does not verify, or does not decode, is
//! refused (1) and a file that cannot be read or a bad flag is a usage
//! error (2), as every pozctl verb documents.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::fingerprint::{Fingerprint, PairFingerprint};
use poz::Hash32;
use std::path::PathBuf;
use std::process::{Command, Output};

fn vector(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../poz/vectors")
        .join(name)
        .to_str()
        .unwrap()
        .to_owned()
}

fn pozctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pozctl"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

const TOUR_ID: &str = "856d92006e81e766181e710dbe8a47a8a20407ca51a7ebda5506aa3ac60ab47d";
const PROVIDER_ID: &str = "0493fa891072c64be133e0017554790dd3cf8915e455ae75d6146b88c6ccd8f9";

fn committed_code(kind: &str, pick: impl Fn(&serde_json::Value) -> bool) -> String {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vector("fingerprint.json")).unwrap()).unwrap();
    v[kind]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| pick(e))
        .unwrap()["code"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn one_record_prints_the_library_code() {
    let out = stdout(&pozctl(&["fingerprint", &vector("valid-chain-1-2.poz")]));
    let lib = Fingerprint::of(&Hash32::from_hex(TOUR_ID).unwrap());
    assert_eq!(out, format!("{lib}\n"));
    assert_eq!(
        out.trim_end(),
        committed_code("single", |e| e["record_id"] == TOUR_ID)
    );
    // Every revision of a record has the same code: the ID is permanent.
    let genesis = stdout(&pozctl(&[
        "fingerprint",
        &vector("valid-genesis-34-33-33-recovery.poz"),
    ]));
    assert_eq!(genesis, out);
}

#[test]
fn a_pair_prints_the_same_in_either_order() {
    let (tour, provider) = (
        vector("valid-chain-1-2.poz"),
        vector("valid-provider-all-zones.poz"),
    );
    let ab = stdout(&pozctl(&["fingerprint", &tour, &provider]));
    let ba = stdout(&pozctl(&["fingerprint", &provider, &tour]));
    assert_eq!(ab, ba);
    let p = PairFingerprint::of(
        &Hash32::from_hex(TOUR_ID).unwrap(),
        &Hash32::from_hex(PROVIDER_ID).unwrap(),
    );
    assert_eq!(ab, format!("{}\n{}\n", p.first, p.second));
    assert_eq!(
        ab.replace('\n', " ").trim_end(),
        committed_code("pair", |e| e["a"] == TOUR_ID && e["b"] == PROVIDER_ID)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&pozctl(&[
        "fingerprint",
        &provider,
        &tour,
        "--json",
    ])))
    .unwrap();
    assert_eq!(json["digits"], p.digits());
    assert_eq!(
        json["record_ids"],
        serde_json::json!([PROVIDER_ID, TOUR_ID])
    );
}

#[test]
fn bad_records_are_refused_and_bad_invocations_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.poz");
    std::fs::write(&garbage, b"not a record").unwrap();
    let garbage = garbage.to_str().unwrap();
    let missing = dir.path().join("missing.poz");
    let missing = missing.to_str().unwrap();
    let good = vector("valid-chain-1-2.poz");
    let cases: [(&[&str], i32, &str); 7] = [
        // Does not decode: refused, as in every verb.
        (&["fingerprint", garbage], 1, "not a valid POZ record"),
        (
            &["fingerprint", &good, garbage],
            1,
            "not a valid POZ record",
        ),
        // Keeps the real record ID but another key in its Public Key Map:
        // its code would be the real record's, so it must not be printed.
        (
            &["fingerprint", &vector("invalid-ca-key-swapped.poz")],
            1,
            "does not verify",
        ),
        // No Zone History: the ID is unproven unless the caller accepts it.
        (
            &["fingerprint", &vector("valid-partial-history.poz")],
            1,
            "--allow-partial",
        ),
        // Unreadable file, bad flag, too many records: usage (2).
        (&["fingerprint", missing], 2, "reading"),
        (
            &["fingerprint", &good, "--no-such-flag"],
            2,
            "--no-such-flag",
        ),
        (
            &["fingerprint", &good, &good, &good],
            2,
            "unexpected argument",
        ),
    ];
    for (args, code, says) in cases {
        let o = pozctl(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?} printed a code");
    }
    let partial = stdout(&pozctl(&[
        "fingerprint",
        &vector("valid-partial-history.poz"),
        "--allow-partial",
    ]));
    assert_eq!(partial, stdout(&pozctl(&["fingerprint", &good])));
}
