//! SUBMIT_REQUEST and SUBMIT_STATUS (SPEC §14.4): a person asks the
//! provider to bind a handle to their record, proving with their record's
//! master keys that they hold it; the provider's policy decides.
//!
//! The subject's record must be known to the provider's store (published
//! to it first); the gateway verifies it from genesis and checks the
//! proof (`poz::verify::verify_submit_request`). The request is then
//! recorded as a pending submission (idempotent by its bytes). With the
//! `issue` policy the gateway issues the binding at once through the
//! Provider API (which signs, verifies and commits it) and records it as
//! issued, or as refused with the reason (the handle is taken); with the
//! `queue` policy it stays pending for the provider's own process.
//!
//! Statuses: BAD_REQUEST (undecodable, a bad handle), NOT_FOUND (no record
//! for the domain, the subject's record unknown, no such submission),
//! UNAUTHORIZED (the proof does not meet the subject's threshold, or the
//! subject's record does not verify), UNAVAILABLE with a retry hint.

use crate::signed::{submission_id, RETRY_MS};
use pb::provider_api_client::ProviderApiClient;
use pb::store_read_client::StoreReadClient;
use pb::store_write_client::StoreWriteClient;
use poz::codec::Codec;
use poz::wire::{
    Request, Response, Status, StatusAnswer, StatusQuery, SubmissionState, SubmitRequest,
    SubmitTicket,
};
use poz::zone::SignedEntry;
use poz::Record;
use poz_proto::v1 as pb;
use tonic::transport::Channel;

/// What the provider does with a binding request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Issue it at once when the proof holds and the handle is free.
    Issue,
    /// Record it as pending for the provider to decide.
    Queue,
}

#[derive(Clone)]
pub struct BindingRequests {
    store_read: StoreReadClient<Channel>,
    store_write: StoreWriteClient<Channel>,
    provider_api: Option<ProviderApiClient<Channel>>,
    policy: Policy,
}

fn peer_error(id: u16, s: &tonic::Status) -> Response {
    match s.code() {
        tonic::Code::NotFound => Response::error(Status::NOT_FOUND, id, 0, s.message()),
        tonic::Code::InvalidArgument => Response::error(Status::BAD_REQUEST, id, 0, s.message()),
        _ => {
            tracing::warn!(code = ?s.code(), message = s.message(), "peer failed");
            Response::error(
                Status::UNAVAILABLE,
                id,
                RETRY_MS,
                "a fleet service is unavailable",
            )
        }
    }
}

fn record_ref(by: pb::record_ref::By) -> Option<pb::RecordRef> {
    Some(pb::RecordRef { by: Some(by) })
}

impl BindingRequests {
    /// `provider_api` is needed for the `Issue` policy.
    pub fn new(store: Channel, provider_api: Option<Channel>, policy: Policy) -> Self {
        let m = poz_kit::MAX_GRPC_MESSAGE;
        BindingRequests {
            store_read: StoreReadClient::new(store.clone()).max_decoding_message_size(m),
            store_write: StoreWriteClient::new(store),
            provider_api: provider_api.map(ProviderApiClient::new),
            policy,
        }
    }

    /// SUBMIT_REQUEST.
    pub async fn request(&self, req: &Request) -> Response {
        let id = req.request_id;
        let ask = match SubmitRequest::from_bytes(&req.payload) {
            Ok(a) => a,
            Err(e) => return Response::error(Status::BAD_REQUEST, id, 0, &format!("payload: {e}")),
        };
        match self.request_inner(id, &ask, &req.payload).await {
            Ok(ticket) => Response::ok(id, ticket.to_bytes()),
            Err(r) => r,
        }
    }

    async fn request_inner(
        &self,
        id: u16,
        ask: &SubmitRequest,
        payload: &[u8],
    ) -> Result<SubmitTicket, Response> {
        // The provider exists here, and the subject's record is known.
        let mut read = self.store_read.clone();
        read.get_head(pb::GetHeadRequest {
            record: record_ref(pb::record_ref::By::Domain(ask.domain.to_ascii_lowercase())),
        })
        .await
        .map_err(|s| peer_error(id, &s))?;
        let subject = read
            .get_master(pb::GetMasterRequest {
                record: record_ref(pb::record_ref::By::RecordId(pb::Hash {
                    value: ask.subject.0.to_vec(),
                })),
            })
            .await
            .map_err(|s| match s.code() {
                tonic::Code::NotFound => Response::error(
                    Status::NOT_FOUND,
                    id,
                    0,
                    "the subject's record is not known here: publish it to this provider first",
                ),
                _ => peer_error(id, &s),
            })?
            .into_inner()
            .record;
        let ask_owned = ask.clone();
        let proof = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let rec = Record::from_bytes(&subject).map_err(|e| format!("subject record: {e}"))?;
            let vr = poz::verify::verify_and_accept(rec).map_err(|rep| {
                let f: Vec<String> = rep.failures().map(|(r, d)| format!("{r}: {d}")).collect();
                format!("the subject's record does not verify: {}", f.join("; "))
            })?;
            poz::verify::verify_submit_request(&vr, &ask_owned).map_err(|e| e.to_string())
        })
        .await
        .map_err(|_| {
            Response::error(
                Status::UNAVAILABLE,
                id,
                RETRY_MS,
                "verification task failed",
            )
        })?;
        proof.map_err(|m| Response::error(Status::UNAUTHORIZED, id, 0, &m))?;

        let sid = submission_id(payload);
        let mut write = self.store_write.clone();
        let stored = write
            .put_submission(pb::Submission {
                submission_id: sid.to_vec(),
                state: SubmissionState::PENDING.0 as u32,
                request: payload.to_vec(),
                entry: None,
                message: String::new(),
            })
            .await
            .map_err(|s| peer_error(id, &s))?
            .into_inner();
        let mut state = SubmissionState(stored.state as u8);
        if state == SubmissionState::PENDING && self.policy == Policy::Issue {
            state = self.issue(id, ask, sid, payload).await?;
        }
        Ok(SubmitTicket {
            submission_id: sid,
            state,
        })
    }

    /// The `Issue` policy: the Provider API issues the binding (signed,
    /// verified, committed); the outcome is recorded on the submission.
    async fn issue(
        &self,
        id: u16,
        ask: &SubmitRequest,
        sid: [u8; 16],
        payload: &[u8],
    ) -> Result<SubmissionState, Response> {
        let Some(api) = &self.provider_api else {
            return Ok(SubmissionState::PENDING);
        };
        let issued = api
            .clone()
            .issue_binding(pb::IssueBindingRequest {
                handle: ask.handle.clone(),
                subject: Some(pb::Hash {
                    value: ask.subject.0.to_vec(),
                }),
                expires_at: 0,
                idempotency_key: format!("submit-{}", hex::encode(sid)),
            })
            .await;
        let (state, entry, message) = match issued {
            Ok(b) => (
                SubmissionState::ISSUED,
                Some(b.into_inner().entry),
                String::new(),
            ),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::AlreadyExists | tonic::Code::InvalidArgument
                ) =>
            {
                (SubmissionState::REFUSED, None, s.message().to_string())
            }
            Err(s) => return Err(peer_error(id, &s)),
        };
        let stored = self
            .store_write
            .clone()
            .put_submission(pb::Submission {
                submission_id: sid.to_vec(),
                state: state.0 as u32,
                request: payload.to_vec(),
                entry,
                message,
            })
            .await
            .map_err(|s| peer_error(id, &s))?
            .into_inner();
        Ok(SubmissionState(stored.state as u8))
    }

    /// SUBMIT_STATUS.
    pub async fn status(&self, req: &Request) -> Response {
        let id = req.request_id;
        let q = match StatusQuery::from_bytes(&req.payload) {
            Ok(q) => q,
            Err(e) => return Response::error(Status::BAD_REQUEST, id, 0, &format!("payload: {e}")),
        };
        let s = match self
            .store_read
            .clone()
            .get_submission(pb::GetSubmissionRequest {
                submission_id: q.submission_id.to_vec(),
            })
            .await
        {
            Ok(s) => s.into_inner(),
            Err(s) => return peer_error(id, &s),
        };
        let entry = match s.entry.as_deref().map(SignedEntry::from_bytes) {
            None => None,
            Some(Ok(e)) => Some(e),
            Some(Err(_)) => {
                return Response::error(
                    Status::UNAVAILABLE,
                    id,
                    RETRY_MS,
                    "the store answered badly",
                )
            }
        };
        let state = SubmissionState(s.state as u8);
        if !state.is_known() {
            return Response::error(
                Status::UNAVAILABLE,
                id,
                RETRY_MS,
                "the store answered badly",
            );
        }
        Response::ok(
            id,
            StatusAnswer {
                ticket: SubmitTicket {
                    submission_id: q.submission_id,
                    state,
                },
                entry,
                message: s.message,
            }
            .to_bytes(),
        )
    }
}
