//! The verifier service: stateless, only `poz` inside. Undecodable input
//! is INVALID_ARGUMENT naming the field and offset; a decodable input that
//! breaks rules is OK with `valid = false` and every check listed.
#![forbid(unsafe_code)]

use poz::codec::Codec;
use poz::verify::{verify_bindings, Outcome, RecordRefused, Report, VerifiedRecordCache};
use poz::zone::{EntryKind, SignedEntry, ZoneType};
use poz::Record;
use poz_proto::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

fn hash(h: &poz::Hash32) -> pb::Hash {
    pb::Hash {
        value: h.0.to_vec(),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn decode_record(field: &str, b: &[u8]) -> Result<Record, Status> {
    Record::from_bytes(b).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

fn report(r: &Report, rec: &Record) -> pb::VerifyRecordResponse {
    pb::VerifyRecordResponse {
        valid: r.is_valid(),
        complete: r.is_complete(),
        checks: r
            .checks
            .iter()
            .map(|c| {
                let (outcome, detail) = match &c.outcome {
                    Outcome::Pass => (pb::Outcome::Pass, String::new()),
                    Outcome::Fail(d) => (pb::Outcome::Fail, d.clone()),
                    Outcome::NotChecked(d) => (pb::Outcome::NotChecked, d.clone()),
                };
                pb::RuleCheck {
                    rule: c.rule.code().into(),
                    outcome: outcome as i32,
                    detail,
                }
            })
            .collect(),
        record_id: Some(hash(&rec.id())),
        serial: rec.master.serial,
    }
}

/// The Verifier service. Stateless but for a cache of issuer records
/// already verified (by exact bytes; a record's verdict never changes).
#[derive(Clone)]
pub struct VerifierService {
    issuers: Arc<VerifiedRecordCache>,
}

impl Default for VerifierService {
    fn default() -> Self {
        VerifierService {
            issuers: Arc::new(VerifiedRecordCache::new(64)),
        }
    }
}

#[tonic::async_trait]
impl pb::verifier_server::Verifier for VerifierService {
    async fn verify_record(
        &self,
        req: Request<pb::VerifyRecordRequest>,
    ) -> Result<Response<pb::VerifyRecordResponse>, Status> {
        let rec = decode_record("record", &req.get_ref().record)?;
        // Verification is CPU work: off the async workers.
        let out = tokio::task::spawn_blocking(move || {
            let r = poz::verify_record(&rec);
            report(&r, &rec)
        })
        .await
        .map_err(|e| Status::internal(format!("verification task: {e}")))?;
        Ok(Response::new(out))
    }

    async fn verify_update(
        &self,
        req: Request<pb::VerifyUpdateRequest>,
    ) -> Result<Response<pb::VerifyRecordResponse>, Status> {
        let head = decode_record("head", &req.get_ref().head)?;
        let update = decode_record("update", &req.get_ref().update)?;
        if head.id() != update.id() {
            return Err(Status::invalid_argument(
                "update: a different record than the head",
            ));
        }
        if update.master.serial != head.master.serial.wrapping_add(1) {
            return Err(Status::failed_precondition(format!(
                "update: serial {} does not follow the head's {}",
                update.master.serial, head.master.serial
            )));
        }
        let out = tokio::task::spawn_blocking(move || {
            // The update is judged with the head's chain as its history.
            let mut candidate = update.clone();
            candidate.history = head
                .history
                .iter()
                .cloned()
                .chain(std::iter::once(head.master.clone()))
                .collect();
            let r = poz::verify_record(&candidate);
            report(&r, &candidate)
        })
        .await
        .map_err(|e| Status::internal(format!("verification task: {e}")))?;
        Ok(Response::new(out))
    }

    async fn verify_entries(
        &self,
        req: Request<pb::VerifyEntriesRequest>,
    ) -> Result<Response<pb::VerifyEntriesResponse>, Status> {
        let r = req.into_inner();
        let zone = u8::try_from(r.zone_type)
            .ok()
            .map(ZoneType)
            .filter(|z| z.is_known())
            .ok_or_else(|| {
                Status::invalid_argument(format!("zone_type {} is not 1..=5", r.zone_type))
            })?;
        let entries = r
            .entries
            .iter()
            .enumerate()
            .map(|(i, b)| {
                SignedEntry::from_bytes(b)
                    .map_err(|e| Status::invalid_argument(format!("entries[{i}]: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let now = if r.now_ms == 0 { now_ms() } else { r.now_ms };
        let issuers = self.issuers.clone();
        let out = tokio::task::spawn_blocking(move || -> Result<Vec<pb::EntryResult>, Status> {
            let vr = issuers.accept(&r.issuer_record).map_err(|e| match e {
                RecordRefused::Decode(e) => Status::invalid_argument(format!("issuer_record: {e}")),
                RecordRefused::Invalid(rep) => {
                    let f: Vec<String> = rep.failures().map(|(r, d)| format!("{r}: {d}")).collect();
                    Status::failed_precondition(format!(
                        "issuer_record does not verify: {}",
                        f.join("; ")
                    ))
                }
            })?;
            // Identity bindings are checked in one Ed25519 batch; other
            // entries one by one against their zone's threshold.
            let is_binding =
                |e: &SignedEntry| zone == ZoneType::IDENTITY && e.kind == EntryKind::GRANT;
            let bindings: Vec<SignedEntry> =
                entries.iter().filter(|e| is_binding(e)).cloned().collect();
            let mut binding_verdicts = verify_bindings(&vr, &bindings, now).into_iter();
            Ok(entries
                .iter()
                .map(|e| {
                    // An entry that does not decode, or names a key the
                    // record lacks, gets the bytes-only digest here; the
                    // threshold check below refuses it by rule.
                    let digest = e
                        .digest_in(&vr.id, zone, &vr.record.keys)
                        .unwrap_or_else(|_| e.digest(&vr.id, zone, &poz::zone::KeyBinding::NONE));
                    let result = if is_binding(e) {
                        match binding_verdicts.next() {
                            Some(Ok(_)) => Ok(()),
                            Some(Err(err)) => Err((err.rule.code().to_string(), err.detail)),
                            None => Err(("internal".into(), "verdict missing".into())),
                        }
                    } else {
                        poz::workflow::require_entry_threshold(&vr.record, zone, e)
                            .map(|_| ())
                            .map_err(|err| ("entry-grant".to_string(), err.to_string()))
                    };
                    let (valid, rule, detail) = match result {
                        Ok(()) => (true, String::new(), String::new()),
                        Err((rule, detail)) => (false, rule, detail),
                    };
                    pb::EntryResult {
                        valid,
                        digest: Some(hash(&digest)),
                        rule,
                        detail,
                    }
                })
                .collect())
        })
        .await
        .map_err(|e| Status::internal(format!("verification task: {e}")))??;
        Ok(Response::new(pb::VerifyEntriesResponse { results: out }))
    }
}
