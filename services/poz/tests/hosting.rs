//! The hosting vectors (`services/poz/vectors/hosting.json`, SPEC §14.4
//! "Records without a domain" and §14.5 "SUBMIT_SIGNED kind 3"): the
//! record name of a person's record, the frames that publish it and look
//! it up by that name, the SERIAL answer for it, and SUBMIT_STATUS
//! answers for a refused and an expired binding request. Each frame
//! decodes by its type's payload rule and re-encodes to the same bytes.
//!
//! Regenerate after a deliberate change with
//! `POZ_REGEN_VECTORS=1 cargo test -p poz --test hosting`.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::wire::{
    record_name, record_name_id, DomainQuery, MessageType, Request, RequestPayload, SerialAnswer,
    StatusAnswer, SubmissionState, SubmitSigned, SubmitTicket, ZoneQuery,
};
use poz::zone::ZoneType;
use poz::{Codec, Hash32, Record};
use serde_json::{json, Value};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

/// The person's record: the README tour's genesis (no domain), as the
/// record vector `valid-genesis-34-33-33-recovery` commits it.
const RECORD_FILE: &str = "valid-genesis-34-33-33-recovery.poz";

fn frame(t: MessageType, id: u16, payload: Vec<u8>) -> String {
    hex::encode(Request::new(t, id, payload).to_bytes())
}

fn build() -> Value {
    let bytes = std::fs::read(dir().join(RECORD_FILE)).unwrap();
    let rec = Record::from_bytes(&bytes).unwrap();
    let id = rec.id();
    let name = record_name(&id);
    let publish = SubmitSigned::NewRecord {
        record: bytes.clone(),
    };
    let republish = SubmitSigned::Record {
        domain: name.clone(),
        record: bytes.clone(),
    };
    let by_name = DomainQuery {
        domain: name.clone(),
    };
    let zone = ZoneQuery {
        domain: name.clone(),
        zone_type: ZoneType::IDENTITY,
        after: Hash32::ZERO,
        limit: 100,
    };
    let serial = SerialAnswer {
        record_id: id,
        serial: rec.master.serial,
        current_master_hash: rec.master.current_master_hash,
        timestamp: rec.master.timestamp,
    };
    let sid = [0x5a; 16];
    let refused = StatusAnswer {
        ticket: SubmitTicket {
            submission_id: sid,
            state: SubmissionState::REFUSED,
        },
        entry: None,
        message: "refused: handle reserved for staff".into(),
    };
    let expired = StatusAnswer {
        ticket: SubmitTicket {
            submission_id: sid,
            state: SubmissionState::REFUSED,
        },
        entry: None,
        message: "expired: the provider did not decide in time; ask again".into(),
    };
    json!({
        "description": "Hosting a person's record (SPEC §14.4, §14.5): its record name (the record ID in 64 lowercase hex digits) stands wherever a query or a submission names a domain; SUBMIT_SIGNED kind 3 publishes it (payload = 03 ‖ the record, no domain); request frames without proof of work (a hosting server asks one for kind 3 at its publish difficulty).",
        "record_file": RECORD_FILE,
        "record_id": id.to_hex(),
        "record_name": name,
        "frames": {
            "publish_kind3": frame(MessageType::SUBMIT_SIGNED, 0x0101, publish.to_bytes()),
            "republish_kind1": frame(MessageType::SUBMIT_SIGNED, 0x0102, republish.to_bytes()),
            "master_by_name": frame(MessageType::MASTER, 0x0103, by_name.to_bytes()),
            "serial_by_name": frame(MessageType::SERIAL, 0x0104, by_name.to_bytes()),
            "identity_zone_by_name": frame(MessageType::ZONE, 0x0105, zone.to_bytes()),
        },
        "answers": {
            "serial_by_name": hex::encode(serial.to_bytes()),
            "status_refused_by_provider": hex::encode(refused.to_bytes()),
            "status_expired": hex::encode(expired.to_bytes()),
        },
        "not_record_names": [
            // Upper case: not a valid domain either (BAD_REQUEST).
            name.to_ascii_uppercase(),
            // 63 digits: an ordinary domain, which no record name shadows.
            name[..63].to_string(),
        ],
    })
}

#[test]
fn hosting_vectors_are_committed() {
    let want = build();
    let path = dir().join("hosting.json");
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
    assert_eq!(committed, want, "hosting.json is stale");
}

/// Each committed frame decodes strictly by its type's payload rule and
/// encodes back to the same bytes; the record name names the record.
#[test]
fn hosting_frames_decode_and_round_trip() {
    let v: Value =
        serde_json::from_slice(&std::fs::read(dir().join("hosting.json")).unwrap()).unwrap();
    let name = v["record_name"].as_str().unwrap();
    let id = Hash32::from_hex(v["record_id"].as_str().unwrap()).unwrap();
    assert_eq!(record_name_id(name), Some(id));
    for n in v["not_record_names"].as_array().unwrap() {
        assert_eq!(record_name_id(n.as_str().unwrap()), None, "{n}");
    }
    for (what, hexed) in v["frames"].as_object().unwrap() {
        let bytes = hex::decode(hexed.as_str().unwrap()).unwrap();
        let req = Request::decode(&bytes).unwrap();
        let p = RequestPayload::decode(req.message_type, &req.payload)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(req.to_bytes(), bytes, "{what}");
        if let RequestPayload::SubmitSigned(SubmitSigned::NewRecord { record }) = &p {
            assert_eq!(Record::from_bytes(record).unwrap().id(), id);
            assert_eq!(req.payload[0], 0x03, "kind 3 has no domain");
        }
    }
    let serial = SerialAnswer::from_bytes(
        &hex::decode(v["answers"]["serial_by_name"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(serial.record_id, id);
    for a in ["status_refused_by_provider", "status_expired"] {
        let s = StatusAnswer::from_bytes(&hex::decode(v["answers"][a].as_str().unwrap()).unwrap())
            .unwrap();
        assert_eq!(s.ticket.state, SubmissionState::REFUSED);
    }
    // Kind 3 with nothing after the kind byte is cut short.
    let e = RequestPayload::decode(MessageType::SUBMIT_SIGNED, &[0x03]).unwrap_err();
    assert_eq!(e.field(), "submit.record");
}
