//! The audit vectors (`services/poz/vectors/audit.json`, SPEC §14.8): a
//! provider's batch of four bindings signed by both identity devices, the
//! BATCHES, BATCH and HANDLE_HISTORY request frames and their answers, and
//! the answers an auditor must refuse, each named by the check it fails.
//! Every frame decodes by its type's payload rule and re-encodes to the
//! same bytes; every answer is checked with `poz::audit`.
//!
//! Regenerate after a deliberate change with
//! `POZ_REGEN_VECTORS=1 cargo test -p poz --test audit`.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::audit::{
    AuditError, BatchAudit, BatchInfo, BatchLog, BatchQuery, BatchesAnswer, BatchesQuery,
    HistoryAnswer, HistoryQuery,
};
use poz::wire::{IdentityAnswer, MessageType, Request, RequestPayload, ZoneAnswer};
use poz::zone::ZoneType;
use poz::{sample, Codec, Hash32, Record, SignedEntry};
use serde_json::{json, Value};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

const PROVIDER_FILE: &str = "audit-provider.poz";

fn frame(t: MessageType, id: u16, payload: Vec<u8>) -> String {
    hex::encode(Request::new(t, id, payload).to_bytes())
}

/// The sample provider and a batch of four bindings (leaf order), signed
/// by both identity devices (grant 50 each), and the root digest.
fn batch() -> (Record, Vec<SignedEntry>, Hash32) {
    let p = sample::provider().unwrap();
    let k = sample::provider_keys();
    let mut entries: Vec<SignedEntry> = ["dora", "eve", "finn", "gus"]
        .iter()
        .enumerate()
        .map(|(i, h)| {
            poz::workflow::new_binding(
                &p,
                poz::hash::tagged_hash("audit subject", &[&(i as u32).to_be_bytes()]),
                h,
                sample::T0 + 5_000,
                0,
            )
            .unwrap()
        })
        .collect();
    let mut root = Hash32::ZERO;
    for key in [&k.device_a, &k.device_b] {
        let (idx, tree, digest) = poz::workflow::batch_signing_target(
            &p,
            ZoneType::IDENTITY,
            &entries,
            &key.public().id(),
        )
        .unwrap();
        let sig = key.sign(idx, &digest);
        poz::workflow::attach_batch_signature(
            &mut entries,
            idx,
            &tree,
            sig.data.as_slice().try_into().unwrap(),
        );
        root = digest;
    }
    (p, entries, root)
}

/// The entries as BATCH pages them: ascending by digest.
fn by_digest(p: &Record, entries: &[SignedEntry]) -> Vec<SignedEntry> {
    let mut v = entries.to_vec();
    v.sort_by_key(|e| e.identity_digest(&p.id()));
    v
}

fn build() -> Value {
    let (p, entries, root) = batch();
    let id = p.id();
    let domain = "social.example";
    let batches_q = BatchesQuery {
        domain: domain.into(),
        zone_type: ZoneType::IDENTITY,
        after: 0,
        limit: 100,
    };
    let batch_q = BatchQuery {
        domain: domain.into(),
        zone_type: ZoneType::IDENTITY,
        root_digest: root,
        after: Hash32::ZERO,
        limit: 1000,
    };
    let history_q = HistoryQuery {
        domain: domain.into(),
        handle: "eve".into(),
        after: Hash32::ZERO,
        limit: 10,
    };
    let info = |seq, root_digest| BatchInfo {
        seq,
        root_digest,
        stored_at: sample::T0 + 6_000,
    };
    let log = BatchesAnswer {
        batches: vec![info(1, root)],
        next: 0,
    };
    let gap = BatchesAnswer {
        batches: vec![info(1, root), info(3, Hash32([0x33; 32]))],
        next: 0,
    };
    let sorted = by_digest(&p, &entries);
    let whole = ZoneAnswer {
        entries: sorted.clone(),
        next: Hash32::ZERO,
    };
    let missing = ZoneAnswer {
        entries: sorted
            .iter()
            .filter(|e| poz::zone::leaf_index_of(e) != 2)
            .cloned()
            .collect(),
        next: Hash32::ZERO,
    };
    let mut one_key = sorted.clone();
    for e in &mut one_key {
        e.signatures.truncate(1);
    }
    let one_key = ZoneAnswer {
        entries: one_key,
        next: Hash32::ZERO,
    };
    let history = HistoryAnswer {
        bindings: vec![IdentityAnswer {
            binding: entries[1].clone(),
            revocation: None,
        }],
        next: Hash32::ZERO,
    };
    json!({
        "description": "Public audit (SPEC §14.8): the provider record (file), one batch of four bindings (dora, eve, finn, gus; leaves 0..3) signed by both identity devices (grant 50 each), its root digest, the BATCHES / BATCH / HANDLE_HISTORY request frames (no proof of work) and their answers. `refuse` lists answers an auditor must refuse, each with the check that fails.",
        "provider_file": PROVIDER_FILE,
        "provider_id": id.to_hex(),
        "batch_root_digest": root.to_hex(),
        "entries_in_leaf_order": entries.iter().map(|e| hex::encode(e.to_bytes())).collect::<Vec<_>>(),
        "frames": {
            "batches": frame(MessageType::BATCHES, 0x0201, batches_q.to_bytes()),
            "batch": frame(MessageType::BATCH, 0x0202, batch_q.to_bytes()),
            "handle_history": frame(MessageType::HANDLE_HISTORY, 0x0203, history_q.to_bytes()),
        },
        "answers": {
            "batches": hex::encode(log.to_bytes()),
            "batch": hex::encode(whole.to_bytes()),
            "handle_history": hex::encode(history.to_bytes()),
        },
        "refuse": {
            "batches_with_a_gap": {"answer": hex::encode(gap.to_bytes()), "fails": "log-gap"},
            "batch_missing_leaf_2": {"answer": hex::encode(missing.to_bytes()), "fails": "missing-leaves"},
            "batch_root_signed_by_one_device": {"answer": hex::encode(one_key.to_bytes()), "fails": "threshold"},
        },
    })
}

#[test]
fn audit_vectors_are_committed() {
    let want = build();
    let path = dir().join("audit.json");
    let provider = dir().join(PROVIDER_FILE);
    if std::env::var_os("POZ_REGEN_VECTORS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&want).unwrap() + "\n").unwrap();
        std::fs::write(&provider, sample::provider().unwrap().to_bytes()).unwrap();
        return;
    }
    let committed: Value = serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (regenerate with POZ_REGEN_VECTORS=1)",
            path.display()
        )
    }))
    .unwrap();
    assert_eq!(committed, want, "audit.json is stale");
    assert_eq!(
        std::fs::read(&provider).unwrap(),
        sample::provider().unwrap().to_bytes(),
        "{PROVIDER_FILE} is stale"
    );
}

/// What an auditor concludes from a committed BATCH answer.
fn audit(p: &Record, root: Hash32, answer: &str) -> Result<u32, AuditError> {
    let page = ZoneAnswer::from_bytes(&hex::decode(answer).unwrap()).unwrap();
    let mut a = BatchAudit::new(p.id(), ZoneType::IDENTITY, root);
    for e in &page.entries {
        a.add(&p.keys, e)?;
    }
    a.finish(&p.master, &p.keys).map(|v| v.size)
}

#[test]
fn audit_frames_decode_and_answers_check_out() {
    let v: Value =
        serde_json::from_slice(&std::fs::read(dir().join("audit.json")).unwrap()).unwrap();
    let p = Record::from_bytes(&std::fs::read(dir().join(PROVIDER_FILE)).unwrap()).unwrap();
    assert_eq!(p.id().to_hex(), v["provider_id"].as_str().unwrap());
    let root = Hash32::from_hex(v["batch_root_digest"].as_str().unwrap()).unwrap();
    for (what, hexed) in v["frames"].as_object().unwrap() {
        let bytes = hex::decode(hexed.as_str().unwrap()).unwrap();
        let req = Request::decode(&bytes).unwrap();
        assert!(req.message_type.is_query(), "{what}");
        RequestPayload::decode(req.message_type, &req.payload)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(req.to_bytes(), bytes, "{what}");
    }
    let answers = &v["answers"];
    let log =
        BatchesAnswer::from_bytes(&hex::decode(answers["batches"].as_str().unwrap()).unwrap())
            .unwrap();
    let mut l = BatchLog::after(0);
    for b in &log.batches {
        l.observe(b).unwrap();
    }
    assert_eq!(log.batches[0].root_digest, root);
    assert_eq!(audit(&p, root, answers["batch"].as_str().unwrap()), Ok(4));
    let h = HistoryAnswer::from_bytes(
        &hex::decode(answers["handle_history"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(h.bindings.len(), 1);

    let refuse = &v["refuse"];
    let gap = BatchesAnswer::from_bytes(
        &hex::decode(refuse["batches_with_a_gap"]["answer"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let mut l = BatchLog::after(0);
    l.observe(&gap.batches[0]).unwrap();
    assert!(matches!(
        l.observe(&gap.batches[1]),
        Err(AuditError::LogGap { after: 1, got: 3 })
    ));
    for (name, case) in refuse.as_object().unwrap() {
        let fails = case["fails"].as_str().unwrap();
        let got = if name.starts_with("batches_") {
            let a =
                BatchesAnswer::from_bytes(&hex::decode(case["answer"].as_str().unwrap()).unwrap())
                    .unwrap();
            let mut l = BatchLog::after(0);
            a.batches.iter().try_for_each(|b| l.observe(b)).unwrap_err()
        } else {
            audit(&p, root, case["answer"].as_str().unwrap()).unwrap_err()
        };
        assert_eq!(got.code(), fails, "{name}");
    }
    assert!(matches!(
        audit(
            &p,
            root,
            refuse["batch_missing_leaf_2"]["answer"].as_str().unwrap()
        ),
        Err(AuditError::MissingLeaves {
            size: 4,
            served: 3,
            first_missing: 2
        })
    ));
    assert!(matches!(
        audit(
            &p,
            root,
            refuse["batch_root_signed_by_one_device"]["answer"]
                .as_str()
                .unwrap()
        ),
        Err(AuditError::Threshold { .. })
    ));
}

/// Strict parsing: a BATCHES limit of 0, a BATCH cut short and a
/// HANDLE_HISTORY with a byte after it are BAD_REQUEST material, each
/// naming its field.
#[test]
fn audit_payloads_are_strict() {
    let q = BatchesQuery {
        domain: "social.example".into(),
        zone_type: ZoneType::IDENTITY,
        after: 0,
        limit: 1,
    };
    let mut zero = q.to_bytes();
    let n = zero.len();
    zero[n - 1] = 0;
    let e = RequestPayload::decode(MessageType::BATCHES, &zero).unwrap_err();
    assert_eq!(e.field(), "batches_query.limit");
    let b = BatchQuery {
        domain: "social.example".into(),
        zone_type: ZoneType::IDENTITY,
        root_digest: Hash32([1; 32]),
        after: Hash32::ZERO,
        limit: 1,
    }
    .to_bytes();
    assert!(RequestPayload::decode(MessageType::BATCH, &b[..b.len() - 1]).is_err());
    let mut h = HistoryQuery {
        domain: "social.example".into(),
        handle: "eve".into(),
        after: Hash32::ZERO,
        limit: 1,
    }
    .to_bytes();
    h.push(0);
    let e = RequestPayload::decode(MessageType::HANDLE_HISTORY, &h).unwrap_err();
    assert_eq!(e.field(), "handle_history.payload");
}
