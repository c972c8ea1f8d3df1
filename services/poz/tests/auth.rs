//! The login vectors (`services/poz/vectors/auth.json` and its record
//! `auth-holder.poz`, SPEC §20): each case's challenge and proof bytes,
//! the time of the check, and what `poz::auth` answers. The login digest
//! and the byte layout of challenge and proof are also checked by a second
//! implementation written from the SPEC text here (plain SHA3-256 and
//! ed25519-dalek, no `poz::hash`).
//!
//! Regenerate after a deliberate change with
//! `POZ_REGEN_VECTORS=1 cargo test -p poz --test auth`.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::auth::{self, Challenge, Proof};
use poz::sample::{self, T0};
use poz::{Codec, Record};
use serde_json::{json, Value};
use sha3::{Digest, Sha3_256};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

/// SPEC §20 as written: SHA3-256(0x11 ‖ "POZ-v0 auth-login" ‖ record_id ‖
/// u8 group_id ‖ challenge bytes).
fn spec_digest(record_id: &[u8], group_id: u8, challenge: &[u8]) -> [u8; 32] {
    let tag = b"POZ-v0 auth-login";
    let mut s = Sha3_256::new();
    s.update([tag.len() as u8]);
    s.update(tag);
    s.update(record_id);
    s.update([group_id]);
    s.update(challenge);
    s.finalize().into()
}

/// SPEC §20's challenge layout, by hand.
fn spec_challenge(rp: &str, nonce: [u8; 32], not_before: u64, not_after: u64) -> Vec<u8> {
    let mut v = vec![1u8, rp.len() as u8];
    v.extend_from_slice(rp.as_bytes());
    v.extend_from_slice(&nonce);
    v.extend_from_slice(&not_before.to_be_bytes());
    v.extend_from_slice(&not_after.to_be_bytes());
    v
}

/// SPEC §20's proof layout, by hand: the signatures as (key_idx, 64 bytes).
fn spec_proof(record_id: &[u8], group_id: u8, sigs: &[(u8, [u8; 64])]) -> Vec<u8> {
    let mut v = vec![1u8];
    v.extend_from_slice(record_id);
    v.push(group_id);
    v.push(sigs.len() as u8);
    for (idx, s) in sigs {
        v.extend_from_slice(&[*idx, 0x01, 0x00, 0x40]);
        v.extend_from_slice(s);
    }
    v
}

/// Signs the SPEC digest with ed25519-dalek directly.
fn spec_sign(seed: u8, digest: &[u8; 32]) -> [u8; 64] {
    use ed25519_dalek::Signer;
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
        .sign(digest)
        .to_bytes()
}

const RP: &str = "https://shop.example";
const NB: u64 = T0 + 10_000;
const NA: u64 = NB + 5 * 60 * 1000;

struct Case {
    name: &'static str,
    description: &'static str,
    group_id: u8,
    /// (key seed, key index) of each signature, in proof order.
    signers: Vec<(u8, u8)>,
    challenge: Vec<u8>,
    /// The challenge the signatures were made over, when not `challenge`.
    signed_over: Option<Vec<u8>>,
    trailing: bool,
    now_ms: u64,
}

fn cases() -> Vec<Case> {
    let c = spec_challenge(RP, [0x5C; 32], NB, NA);
    let case = |name, description, group_id, signers: Vec<(u8, u8)>| Case {
        name,
        description,
        group_id,
        signers,
        challenge: c.clone(),
        signed_over: None,
        trailing: false,
        now_ms: NB + 1_000,
    };
    let mut v = vec![
        case(
            "good",
            "Keys 4 and 5 of group 2 \"devices\" (50 + 50 = 100) sign: accepted; the Auth Zone names the \"live\" REVOCATION service, which the relying party must still ask.",
            2,
            vec![(70, 4), (71, 5)],
        ),
        case(
            "good-one-key",
            "Key 7 alone, the only member of group 3 \"laptop\" (100): accepted.",
            3,
            vec![(73, 7)],
        ),
        case(
            "below-threshold",
            "Key 4 of group 2 alone: 50 of 100.",
            2,
            vec![(70, 4)],
        ),
        case(
            "key-revoked",
            "Keys 4, 5 and 6 of group 2: 4 and 5 reach 100, but key 6 is revoked in the Auth Zone (a REVOKE whose target is its key ID), so the login is refused.",
            2,
            vec![(70, 4), (71, 5), (72, 6)],
        ),
        case(
            "key-of-another-group",
            "Keys 4 and 5 of group 2 and key 7, a member of group 3 only, sign for group 2.",
            2,
            vec![(70, 4), (71, 5), (73, 7)],
        ),
        case(
            "duplicated-signature",
            "Key 4's signature twice and key 5's (the proof's list is not strictly ascending by key index): refused when decoding, so key 4 cannot count twice.",
            2,
            vec![(70, 4), (70, 4), (71, 5)],
        ),
        case(
            "no-such-group",
            "Key 4 and 5 sign for group 9, which the Auth Zone does not hold.",
            9,
            vec![(70, 4), (71, 5)],
        ),
    ];
    let mut expired = case(
        "challenge-expired",
        "The good proof checked at not_after: the window is not_before <= now < not_after.",
        2,
        vec![(70, 4), (71, 5)],
    );
    expired.now_ms = NA;
    v.push(expired);
    let mut early = case(
        "challenge-not-yet-valid",
        "The good proof checked 1 ms before not_before.",
        2,
        vec![(70, 4), (71, 5)],
    );
    early.now_ms = NB - 1;
    v.push(early);
    let mut other_rp = case(
        "other-relying-party",
        "Signatures made over a challenge of another relying party (\"https://evil.example\", same nonce and window), presented with this one: key 4's signature fails.",
        2,
        vec![(70, 4), (71, 5)],
    );
    other_rp.signed_over = Some(spec_challenge("https://evil.example", [0x5C; 32], NB, NA));
    v.push(other_rp);
    let mut trailing = case(
        "trailing-bytes",
        "The good proof with one byte (0x00) appended.",
        2,
        vec![(70, 4), (71, 5)],
    );
    trailing.trailing = true;
    v.push(trailing);
    v
}

fn build(rec: &Record) -> Value {
    let rid = rec.id();
    let list: Vec<Value> = cases()
        .iter()
        .map(|c| {
            let signed = c.signed_over.as_ref().unwrap_or(&c.challenge);
            let d = spec_digest(&rid.0, c.group_id, signed);
            let sigs: Vec<(u8, [u8; 64])> = c
                .signers
                .iter()
                .map(|(seed, idx)| (*idx, spec_sign(*seed, &d)))
                .collect();
            let mut proof = spec_proof(&rid.0, c.group_id, &sigs);
            if c.trailing {
                proof.push(0);
            }
            // The library agrees with the SPEC text on the digest, and on
            // the bytes of every proof it can sign.
            let ch = Challenge::from_bytes(&c.challenge).unwrap();
            assert_eq!(ch.to_bytes(), c.challenge, "{}", c.name);
            let digest = spec_digest(&rid.0, c.group_id, &c.challenge);
            assert_eq!(auth::login_digest(&rid, c.group_id, &ch).0, digest);
            let result = auth::verify_bytes(rec, &c.challenge, &proof, c.now_ms);
            let outcome = match &result {
                Ok(a) => json!({
                    "accepted": true,
                    "group_name": a.group_name,
                    "signers": a.signers.iter().map(|s| json!({"key_idx": s.key_idx, "key_id": s.key_id.to_hex(), "value": s.value})).collect::<Vec<_>>(),
                    "sum": a.sum,
                    "revocation_services": a.revocation_services.iter().map(|(h, _)| h.to_hex()).collect::<Vec<_>>(),
                }),
                Err(e) => json!({"accepted": false, "refused": e.code(), "message": e.to_string()}),
            };
            json!({
                "name": c.name,
                "description": c.description,
                "group_id": c.group_id,
                "now_ms": c.now_ms,
                "challenge": hex::encode(&c.challenge),
                "login_digest": hex::encode(digest),
                "proof": hex::encode(&proof),
                "result": outcome,
            })
        })
        .collect();
    json!({
        "description": "Login with the Auth Zone (SPEC §20): challenges, proofs and what a verifier answers, against the record auth-holder.poz (the provider record with trust groups 2 \"devices\" = keys 4:50, 5:50, 6:40 and 3 \"laptop\" = key 7:100, key 6 revoked; keys are sample seeds 70..73).",
        "tag": poz::hash::tag::AUTH_LOGIN,
        "record": "auth-holder.poz",
        "record_id": rid.to_hex(),
        "cases": list,
    })
}

#[test]
fn auth_vectors_are_committed() {
    let rec = sample::auth_holder().unwrap();
    let want = build(&rec);
    let (jpath, rpath) = (dir().join("auth.json"), dir().join("auth-holder.poz"));
    if std::env::var_os("POZ_REGEN_VECTORS").is_some() {
        std::fs::write(&rpath, rec.to_bytes()).unwrap();
        std::fs::write(&jpath, serde_json::to_string_pretty(&want).unwrap() + "\n").unwrap();
        return;
    }
    let committed_rec = std::fs::read(&rpath).unwrap();
    assert_eq!(
        committed_rec,
        rec.to_bytes(),
        "auth-holder.poz is stale (regenerate with POZ_REGEN_VECTORS=1)"
    );
    let committed: Value = serde_json::from_slice(&std::fs::read(&jpath).unwrap()).unwrap();
    assert_eq!(committed, want, "auth.json is stale");
}

/// Each case answers as the brief of SPEC §20 says it must.
#[test]
fn each_case_is_decided_for_its_reason() {
    let rec = Record::from_bytes(&std::fs::read(dir().join("auth-holder.poz")).unwrap()).unwrap();
    let v: Value =
        serde_json::from_slice(&std::fs::read(dir().join("auth.json")).unwrap()).unwrap();
    let want = [
        ("good", None),
        ("good-one-key", None),
        ("below-threshold", Some("below-threshold")),
        ("key-revoked", Some("key-revoked")),
        ("key-of-another-group", Some("not-member")),
        ("duplicated-signature", Some("decode")),
        ("no-such-group", Some("no-such-group")),
        ("challenge-expired", Some("challenge-expired")),
        ("challenge-not-yet-valid", Some("challenge-not-yet-valid")),
        ("other-relying-party", Some("bad-signature")),
        ("trailing-bytes", Some("decode")),
    ];
    let cases = v["cases"].as_array().unwrap();
    assert_eq!(cases.len(), want.len());
    for (c, (name, refused)) in cases.iter().zip(want) {
        assert_eq!(c["name"], name);
        let ch = hex::decode(c["challenge"].as_str().unwrap()).unwrap();
        let pr = hex::decode(c["proof"].as_str().unwrap()).unwrap();
        let r = auth::verify_bytes(&rec, &ch, &pr, c["now_ms"].as_u64().unwrap());
        match refused {
            None => {
                let a = r.unwrap();
                assert!(a.sum >= 100);
                assert!(a.needs_revocation_check(), "{name}");
                assert_eq!(c["result"]["accepted"], true);
            }
            Some(code) => {
                assert_eq!(r.unwrap_err().code(), code, "{name}");
                assert_eq!(c["result"]["refused"], code);
            }
        }
    }
    let trailing = &cases[10];
    assert!(trailing["result"]["message"]
        .as_str()
        .unwrap()
        .contains("trailing"));
}

/// The library's own signer makes the same proof as the SPEC text.
#[test]
fn prove_matches_the_spec_and_refuses_outsiders() {
    let rec = sample::auth_holder().unwrap();
    let ks = sample::auth_keys();
    let c = Challenge::new(RP, [0x5C; 32], NB, NA).unwrap();
    let p = auth::prove(&rec, &c, 2, &[&ks[1], &ks[0]]).unwrap();
    let d = spec_digest(&rec.id().0, 2, &c.to_bytes());
    let want = spec_proof(
        &rec.id().0,
        2,
        &[(4, spec_sign(70, &d)), (5, spec_sign(71, &d))],
    );
    assert_eq!(p.to_bytes(), want);
    assert!(auth::verify(&rec, &c, &p, NB).is_ok());
    let e = auth::prove(&rec, &c, 2, &[&ks[3]]).unwrap_err();
    assert_eq!(e.code(), "not-member");
}

/// No input makes verification panic: every truncation and every single
/// byte flip of a good proof and challenge is refused or accepted, never
/// a crash, and only the untouched bytes are accepted.
#[test]
fn truncations_and_flips_never_panic() {
    let rec = sample::auth_holder().unwrap();
    let ks = sample::auth_keys();
    let c = Challenge::new(RP, [0x5C; 32], NB, NA).unwrap();
    let p = auth::prove(&rec, &c, 2, &[&ks[0], &ks[1]]).unwrap();
    let (cb, pb) = (c.to_bytes(), p.to_bytes());
    let now = NB + 1;
    assert!(auth::verify_bytes(&rec, &cb, &pb, now).is_ok());
    for n in 0..pb.len() {
        assert!(auth::verify_bytes(&rec, &cb, &pb[..n], now).is_err());
    }
    for n in 0..cb.len() {
        assert!(auth::verify_bytes(&rec, &cb[..n], &pb, now).is_err());
    }
    for i in 0..pb.len() {
        let mut b = pb.clone();
        b[i] ^= 0x01;
        assert!(
            auth::verify_bytes(&rec, &cb, &b, now).is_err(),
            "proof byte {i}"
        );
    }
    for i in 0..cb.len() {
        let mut b = cb.clone();
        b[i] ^= 0x01;
        assert!(
            auth::verify_bytes(&rec, &b, &pb, now).is_err(),
            "challenge byte {i}"
        );
    }
    // Hostile counts: 255 signatures announced, none present.
    let mut short = pb[..34].to_vec();
    short.push(255);
    assert_eq!(
        Proof::from_bytes(&short)
            .map_err(|e| e.field())
            .unwrap_err(),
        "auth_proof.signatures"
    );
}
