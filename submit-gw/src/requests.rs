//! SUBMIT_REQUEST and SUBMIT_STATUS (SPEC §14.4): a person asks the
//! provider to bind a handle to their record, proving with their record's
//! master keys that they hold it; the provider's policy decides.
//!
//! The subject's record must be known to the provider's store (published
//! to it first, e.g. with SUBMIT_SIGNED kind 3 where the provider hosts
//! records, `crate::hosted`); the gateway verifies it from genesis and checks the
//! proof (`poz::verify::verify_submit_request`: every signature a master
//! key's, valid, and no key twice). The request is then recorded as a
//! pending submission whose ID names what is asked (domain, handle,
//! subject; `SubmitRequest::submission_id`), so the same ask with another
//! proof is the same submission. A subject has at most the store's
//! `pending_per_subject` pending requests, each expiring after
//! `pending_ttl`. With the
//! `issue` policy the gateway issues the binding at once through the
//! Provider API (which signs, verifies and commits it) and records it as
//! issued, or as refused with the reason (the handle is taken); with the
//! `queue` policy it stays pending until the provider decides it through
//! its Provider API (ListBindingRequests / DecideBindingRequest).
//!
//! Statuses: BAD_REQUEST (undecodable; a handle that breaks the handle
//! policy, the message beginning with the rule's name, SPEC §8.4.1; a
//! domain that is not this provider's), NOT_FOUND (no record for the
//! domain, the subject's record unknown, no such submission),
//! UNAUTHORIZED (a proof signature by a key that is not a master key, one
//! that does not verify, a key twice, a proof short of the subject's
//! threshold, or a subject record that does not verify), RATE_LIMITED (the
//! subject has too many pending requests), UNAVAILABLE with a retry hint.
//! A handle held by another subject, a look-alike of one, or a reserved
//! handle (`binding-unique`, `handle-confusable`, `handle-reserved`) is
//! not an error: the ticket says refused (3) and SUBMIT_STATUS gives the
//! rule.

use crate::signed::RETRY_MS;
use pb::provider_api_client::ProviderApiClient;
use pb::store_read_client::StoreReadClient;
use pb::store_write_client::StoreWriteClient;
use poz::codec::Codec;
use poz::handle::HandlePolicy;
use poz::wire::{
    Request, Response, Status, StatusAnswer, StatusQuery, SubmissionState, SubmitRequest,
    SubmitTicket,
};
use poz::zone::SignedEntry;
use poz::Hash32;
use poz::Record;
use poz_kit::Channel;
use poz_proto::v1 as pb;

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
    handle_policy: HandlePolicy,
    /// This provider's record: requests for another record's domain are
    /// refused. Configured, or asked of the Provider API once.
    provider: std::sync::Arc<tokio::sync::OnceCell<Hash32>>,
}

fn peer_error(id: u16, s: &tonic::Status) -> Response {
    match s.code() {
        tonic::Code::NotFound => Response::error(Status::NOT_FOUND, id, 0, s.message()),
        tonic::Code::InvalidArgument => Response::error(Status::BAD_REQUEST, id, 0, s.message()),
        tonic::Code::ResourceExhausted => Response::error(Status::RATE_LIMITED, id, 0, s.message()),
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
            handle_policy: HandlePolicy::default(),
            provider: Default::default(),
        }
    }

    /// Refuses handles that break `policy` (SPEC §8.4.1); the default is
    /// `ascii`.
    pub fn with_handle_policy(mut self, policy: HandlePolicy) -> Self {
        self.handle_policy = policy;
        self
    }

    /// Refuses requests for domains of other records than `provider`.
    pub fn with_provider_record(mut self, provider: Hash32) -> Self {
        self.provider = std::sync::Arc::new(tokio::sync::OnceCell::new_with(Some(provider)));
        self
    }

    /// This provider's record: as configured, else the Provider API's
    /// (asked once); None when neither is known (a `queue` gateway
    /// without `provider_record`: the provider's process checks).
    async fn provider_record(&self, id: u16) -> Result<Option<Hash32>, Response> {
        if let Some(p) = self.provider.get() {
            return Ok(Some(*p));
        }
        let Some(api) = &self.provider_api else {
            return Ok(None);
        };
        let info = api
            .clone()
            .get_provider(pb::GetProviderRequest {})
            .await
            .map_err(|s| peer_error(id, &s))?
            .into_inner();
        let p = info
            .record_id
            .and_then(|h| <[u8; 32]>::try_from(h.value.as_slice()).ok())
            .map(Hash32)
            .ok_or_else(|| {
                Response::error(
                    Status::UNAVAILABLE,
                    id,
                    RETRY_MS,
                    "the Provider API answered badly",
                )
            })?;
        Ok(Some(*self.provider.get_or_init(|| async { p }).await))
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
        poz::handle::check_handle(&ask.handle, self.handle_policy)
            .map_err(|e| Response::error(Status::BAD_REQUEST, id, 0, &e.to_string()))?;
        // The provider exists here, and the subject's record is known.
        let mut read = self.store_read.clone();
        let head = read
            .get_head(pb::GetHeadRequest {
                record: record_ref(pb::record_ref::By::Domain(ask.domain.to_ascii_lowercase())),
            })
            .await
            .map_err(|s| peer_error(id, &s))?
            .into_inner();
        if let Some(ours) = self.provider_record(id).await? {
            let theirs = head
                .record_id
                .and_then(|h| <[u8; 32]>::try_from(h.value.as_slice()).ok())
                .map(Hash32);
            if theirs != Some(ours) {
                return Err(Response::error(
                    Status::BAD_REQUEST,
                    id,
                    0,
                    &format!("{} is not a domain of this provider", ask.domain),
                ));
            }
        }
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

        let sid = ask.submission_id();
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
