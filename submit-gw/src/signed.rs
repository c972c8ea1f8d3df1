//! SUBMIT_SIGNED (SPEC §14.4): a fully signed update pushed to the
//! record's authority. Acknowledged with a committed ticket only after the
//! store has committed it; every refusal names why.
//!
//! - kind 1, a record whose master zone is the next revision: the domain
//!   must name this record; the verifier checks the record on its own
//!   (cheap refusal of anything broken before the store is touched); the
//!   store then advances the head by compare-and-swap on serial − 1,
//!   checking that the revision links to the stored chain and verifies
//!   from genesis. A revision already stored is an idempotent success.
//! - kind 2, one signed zone entry: an identity binding's handle must meet
//!   the handle policy (SPEC §8.4.1); the verifier checks the entry
//!   against the record as the store serves it; the store appends it
//!   (idempotent), refusing a binding for a handle that another subject
//!   holds, a look-alike of one, or a reserved handle (SPEC §8.4.2–§8.4.3).
//! - kind 3, a record to host (no domain): handed to [`crate::Hosting`]
//!   (UNAUTHORIZED when this provider hosts none).
//!
//! The domain of kinds 1 and 2 may be a record name (the record ID in 64
//! hex digits, SPEC §14.4): the store resolves it to the held record.
//!
//! Statuses: BAD_REQUEST (undecodable, or the record is not the
//! domain's; a handle that breaks the handle policy or a time the store
//! cannot hold, the message naming the rule), NOT_FOUND (no record for the
//! domain), UNAUTHORIZED (does not verify: signatures, thresholds),
//! CONFLICT (the head moved on, or a different revision with this serial
//! exists: a fork; a binding refused by `binding-unique`,
//! `handle-confusable` or `handle-reserved`, the message beginning with
//! the rule's name), UNAVAILABLE with a retry hint (a peer is down).

use pb::store_read_client::StoreReadClient;
use pb::store_write_client::StoreWriteClient;
use pb::verifier_client::VerifierClient;
use poz::codec::Codec;
use poz::wire::{Request, Response, Status, SubmissionState, SubmitSigned, SubmitTicket};
use poz::{Hash32, Record};
use poz_kit::Channel;
use poz_proto::v1 as pb;

/// When to retry after a peer failed.
pub const RETRY_MS: u32 = 1_000;

/// The peers a submission passes through.
#[derive(Clone)]
pub struct SignedSubmissions {
    store_read: StoreReadClient<Channel>,
    store_write: StoreWriteClient<Channel>,
    verifier: VerifierClient<Channel>,
    handle_policy: poz::handle::HandlePolicy,
}

/// The ticket of a submission: its ID is the first 16 bytes of a hash of
/// the submission, so a retry of the same submission gets the same
/// ticket.
pub fn submission_id(payload: &[u8]) -> [u8; 16] {
    let h = poz::hash::tagged_hash("POZ-v0 submission-id", &[payload]);
    let mut id = [0u8; 16];
    id.copy_from_slice(&h.0[..16]);
    id
}

pub(crate) fn peer_error(id: u16, s: &tonic::Status) -> Response {
    use tonic::Code;
    let (status, retry) = match s.code() {
        Code::NotFound => (Status::NOT_FOUND, 0),
        Code::InvalidArgument | Code::OutOfRange => (Status::BAD_REQUEST, 0),
        Code::FailedPrecondition => (Status::UNAUTHORIZED, 0),
        Code::Aborted | Code::AlreadyExists => (Status::CONFLICT, 0),
        _ => {
            tracing::warn!(code = ?s.code(), message = s.message(), "peer failed");
            return Response::error(
                Status::UNAVAILABLE,
                id,
                RETRY_MS,
                "a fleet service is unavailable",
            );
        }
    };
    Response::error(status, id, retry, s.message())
}

fn by_domain(domain: &str) -> Option<pb::RecordRef> {
    Some(pb::RecordRef {
        by: Some(pb::record_ref::By::Domain(domain.to_ascii_lowercase())),
    })
}

impl SignedSubmissions {
    pub fn new(store: Channel, verifier: Channel) -> Self {
        let m = poz_kit::MAX_GRPC_MESSAGE;
        SignedSubmissions {
            store_read: StoreReadClient::new(store.clone()).max_decoding_message_size(m),
            store_write: StoreWriteClient::new(store).max_encoding_message_size(m),
            verifier: VerifierClient::new(verifier).max_encoding_message_size(m),
            handle_policy: poz::handle::HandlePolicy::default(),
        }
    }

    /// Refuses identity bindings whose handle breaks `policy` (SPEC
    /// §8.4.1); the default is `ascii`.
    pub fn with_handle_policy(mut self, policy: poz::handle::HandlePolicy) -> Self {
        self.handle_policy = policy;
        self
    }

    /// Answers one admitted SUBMIT_SIGNED request from `from`; kind 3
    /// goes to `hosting` (None: this provider hosts no records).
    pub async fn answer(
        &self,
        req: &Request,
        from: std::net::IpAddr,
        hosting: Option<&crate::Hosting>,
    ) -> Response {
        let id = req.request_id;
        let submission = match SubmitSigned::from_bytes(&req.payload) {
            Ok(s) => s,
            Err(e) => return Response::error(Status::BAD_REQUEST, id, 0, &format!("payload: {e}")),
        };
        let committed = match submission {
            SubmitSigned::Record { domain, record } => self.record(id, &domain, &record).await,
            SubmitSigned::Entry {
                domain,
                zone_type,
                entry,
            } => self.entry(id, &domain, zone_type, &entry).await,
            SubmitSigned::NewRecord { record } => match hosting {
                Some(h) => h.publish(id, &record, from, self).await,
                None => Err(Response::error(
                    Status::UNAUTHORIZED,
                    id,
                    0,
                    "this provider hosts no records",
                )),
            },
        };
        match committed {
            Ok(()) => Response::ok(
                id,
                SubmitTicket {
                    submission_id: submission_id(&req.payload),
                    state: SubmissionState::COMMITTED,
                }
                .to_bytes(),
            ),
            Err(r) => r,
        }
    }

    /// Kind 1: `bytes` as the next revision of the record `domain` names
    /// (a domain or a record name).
    pub(crate) async fn record(&self, id: u16, domain: &str, bytes: &[u8]) -> Result<(), Response> {
        let rec = Record::from_bytes(bytes)
            .map_err(|e| Response::error(Status::BAD_REQUEST, id, 0, &format!("record: {e}")))?;
        let head = self
            .store_read
            .clone()
            .get_head(pb::GetHeadRequest {
                record: by_domain(domain),
            })
            .await
            .map_err(|s| peer_error(id, &s))?
            .into_inner();
        let head_id = head
            .record_id
            .and_then(|h| <[u8; 32]>::try_from(h.value.as_slice()).ok())
            .map(Hash32);
        if head_id != Some(rec.id()) {
            return Err(Response::error(
                Status::BAD_REQUEST,
                id,
                0,
                &format!("the record {} is not the record of {domain}", rec.id()),
            ));
        }
        let report = self
            .verifier
            .clone()
            .verify_record(pb::VerifyRecordRequest {
                record: bytes.to_vec(),
                now_ms: 0,
            })
            .await
            .map_err(|s| peer_error(id, &s))?
            .into_inner();
        if !report.valid {
            let failed: Vec<String> = report
                .checks
                .iter()
                .filter(|c| c.outcome == pb::Outcome::Fail as i32)
                .map(|c| format!("{}: {}", c.rule, c.detail))
                .collect();
            return Err(Response::error(
                Status::UNAUTHORIZED,
                id,
                0,
                &format!("the record does not verify: {}", failed.join("; ")),
            ));
        }
        self.store_write
            .clone()
            .advance_head(pb::AdvanceHeadRequest {
                record: bytes.to_vec(),
                expected_serial: rec.master.serial.saturating_sub(1),
                idempotency_key: String::new(),
            })
            .await
            .map_err(|s| peer_error(id, &s))?;
        Ok(())
    }

    async fn entry(
        &self,
        id: u16,
        domain: &str,
        zone: poz::zone::ZoneType,
        entry: &poz::zone::SignedEntry,
    ) -> Result<(), Response> {
        if zone == poz::zone::ZoneType::IDENTITY && entry.kind == poz::zone::EntryKind::GRANT {
            match poz::entries::EntryBody::decode(zone, entry.kind, &entry.body) {
                Ok(poz::entries::EntryBody::Binding(b)) => {
                    poz::handle::check_handle(&b.handle, self.handle_policy)
                        .map_err(|e| Response::error(Status::BAD_REQUEST, id, 0, &e.to_string()))?;
                }
                // A handle the format refuses (SPEC §8.4.1): the reason
                // starts with the rule's name, as a policy refusal does.
                Err(poz::codec::DecodeError::Layout {
                    field: "binding.handle",
                    reason,
                    ..
                }) => return Err(Response::error(Status::BAD_REQUEST, id, 0, reason)),
                Err(e) => {
                    return Err(Response::error(
                        Status::BAD_REQUEST,
                        id,
                        0,
                        &format!("entry body: {e}"),
                    ))
                }
                Ok(_) => {}
            }
        }
        let master = self
            .store_read
            .clone()
            .get_master(pb::GetMasterRequest {
                record: by_domain(domain),
            })
            .await
            .map_err(|s| peer_error(id, &s))?
            .into_inner()
            .record;
        let record_id = Record::from_bytes(&master).map(|r| r.id()).map_err(|_| {
            Response::error(
                Status::UNAVAILABLE,
                id,
                RETRY_MS,
                "the store answered badly",
            )
        })?;
        let verdict = self
            .verifier
            .clone()
            .verify_entries(pb::VerifyEntriesRequest {
                issuer_record: master,
                zone_type: zone.0 as u32,
                entries: vec![entry.to_bytes()],
                now_ms: 0,
            })
            .await
            .map_err(|s| peer_error(id, &s))?
            .into_inner();
        match verdict.results.first() {
            Some(r) if r.valid => {}
            Some(r) => {
                return Err(Response::error(
                    Status::UNAUTHORIZED,
                    id,
                    0,
                    &format!("the entry does not verify: {}: {}", r.rule, r.detail),
                ))
            }
            None => {
                return Err(Response::error(
                    Status::UNAVAILABLE,
                    id,
                    RETRY_MS,
                    "no verdict",
                ))
            }
        }
        self.store_write
            .clone()
            .put_entries(pb::PutEntriesRequest {
                record_id: Some(pb::Hash {
                    value: record_id.0.to_vec(),
                }),
                zone_type: zone.0 as u32,
                entries: vec![entry.to_bytes()],
                idempotency_key: String::new(),
            })
            .await
            .map_err(|s| peer_error(id, &s))?;
        Ok(())
    }
}
