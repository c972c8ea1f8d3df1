//! The provider's queue of binding requests (SPEC §14.5, SUBMIT_REQUEST
//! under the `queue` policy): ListBindingRequests shows what waits,
//! DecideBindingRequest approves (issues the binding through the same
//! group-committed path as IssueBinding) or refuses with a reason. The
//! store keeps the queue (submissions in state 1) and expires what waits
//! longer than its `pending_ttl`; this module holds no state of its own,
//! so any replica may decide any request.
//!
//! Idempotency: an approval issues under the idempotency key
//! `submit-<submission id hex>`, the key the submit gateway's `issue`
//! policy uses, so a retried approval (or an approval racing the gateway)
//! issues one binding. A decision on a request already decided the same
//! way returns it as it is; the other way is FAILED_PRECONDITION.

use crate::{pbhash, ProviderApiService};
use poz::wire::{SubmissionState, SubmitRequest};
use poz::{Codec, Hash32};
use poz_proto::v1 as pb;
use tonic::{Request, Status};

/// The longest refusal reason, in bytes: SUBMIT_STATUS carries it as a
/// `str8` (at most 255 bytes) and the store may prefix it.
pub const MAX_REASON: usize = 200;

/// A stored submission as the Provider API shows it.
fn shown(s: &pb::Submission, asked_at: u64) -> Result<pb::BindingRequest, Status> {
    let ask = SubmitRequest::from_bytes(&s.request)
        .map_err(|e| Status::internal(format!("stored binding request: {e}")))?;
    Ok(pb::BindingRequest {
        submission_id: s.submission_id.clone(),
        handle: ask.handle,
        subject: pbhash(&ask.subject),
        state: s.state,
        asked_at,
        entry: s.entry.clone(),
        message: s.message.clone(),
    })
}

fn submission_id_arg(v: &[u8]) -> Result<[u8; 16], Status> {
    <[u8; 16]>::try_from(v).map_err(|_| {
        Status::invalid_argument(format!(
            "submission_id: a submission ID is 16 bytes, got {}",
            v.len()
        ))
    })
}

impl ProviderApiService {
    pub(crate) async fn list_requests(
        &self,
        r: pb::ListBindingRequestsRequest,
    ) -> Result<pb::ListBindingRequestsResponse, Status> {
        if !r.after.is_empty() {
            submission_id_arg(&r.after)?;
        }
        let page = self
            .upstream
            .store_read
            .clone()
            .list_submissions(pb::ListSubmissionsRequest {
                after: r.after,
                limit: r.limit,
            })
            .await?
            .into_inner();
        let mut requests = Vec::with_capacity(page.submissions.len());
        // One store lookup per domain a page names, not per request.
        let mut ours: std::collections::HashMap<String, bool> = Default::default();
        for (i, s) in page.submissions.iter().enumerate() {
            let asked_at = page.created_ms.get(i).copied().unwrap_or(0);
            // Only this provider's queue: a store shared by several
            // providers' records keeps every provider's requests.
            let ask = SubmitRequest::from_bytes(&s.request)
                .map_err(|e| Status::internal(format!("stored binding request: {e}")))?;
            let domain = ask.domain.to_ascii_lowercase();
            let mine = match ours.get(&domain) {
                Some(m) => *m,
                None => {
                    let m = self.upstream.is_ours(&domain).await?;
                    ours.insert(domain, m);
                    m
                }
            };
            if mine {
                requests.push(shown(s, asked_at)?);
            }
        }
        let next_after = if page.submissions.len() as u32 == r.limit {
            page.submissions
                .last()
                .map(|s| s.submission_id.clone())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        Ok(pb::ListBindingRequestsResponse {
            requests,
            next_after,
        })
    }

    pub(crate) async fn decide(
        &self,
        r: pb::DecideBindingRequestRequest,
    ) -> Result<pb::BindingRequest, Status> {
        use pb::provider_api_server::ProviderApi;
        let sid = submission_id_arg(&r.submission_id)?;
        let reason = r.reason.trim();
        if !r.approve && reason.is_empty() {
            return Err(Status::invalid_argument(
                "reason: a refusal says why (the asker reads it)",
            ));
        }
        // An expiry that cannot be issued is the caller's mistake, not the
        // request's outcome: refused before anything is decided.
        if r.approve && r.expires_at != 0 {
            crate::expiry_arg(r.expires_at).map_err(Status::invalid_argument)?;
            let now = crate::now_ms();
            if r.expires_at <= now {
                return Err(Status::invalid_argument(format!(
                    "expires_at {} ms is not after now ({now} ms)",
                    r.expires_at
                )));
            }
        }
        if reason.chars().any(char::is_control) {
            // The asker reads it as one line of a SUBMIT_STATUS answer
            // (SPEC §14.5), a str8, which carries no control characters.
            return Err(Status::invalid_argument(
                "reason: one line of text, without control characters (newline, tab, …)",
            ));
        }
        if reason.len() > MAX_REASON {
            return Err(Status::invalid_argument(format!(
                "reason: at most {MAX_REASON} bytes, got {}",
                reason.len()
            )));
        }
        let mut read = self.upstream.store_read.clone();
        let stored = read
            .get_submission(pb::GetSubmissionRequest {
                submission_id: sid.to_vec(),
            })
            .await?
            .into_inner();
        let ask = SubmitRequest::from_bytes(&stored.request).map_err(|_| {
            Status::not_found(format!(
                "submission {} is not a binding request",
                hex::encode(sid)
            ))
        })?;
        if !self.upstream.is_ours(&ask.domain).await? {
            return Err(Status::not_found(format!(
                "submission {} asks another provider ({})",
                hex::encode(sid),
                ask.domain
            )));
        }
        let state = SubmissionState(stored.state as u8);
        let wanted = if r.approve {
            SubmissionState::ISSUED
        } else {
            SubmissionState::REFUSED
        };
        if state != SubmissionState::PENDING {
            if state == wanted {
                return shown(&stored, 0);
            }
            // An approval that ended refused because the handle could not
            // be issued is the outcome of that approval, not a conflict.
            return Err(Status::failed_precondition(format!(
                "binding request {} is already {}{}",
                hex::encode(sid),
                state,
                if stored.message.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", stored.message)
                }
            )));
        }
        let (state, entry, message) = if r.approve {
            let issued = self
                .issue_binding(Request::new(pb::IssueBindingRequest {
                    handle: ask.handle.clone(),
                    subject: pbhash(&ask.subject),
                    expires_at: r.expires_at,
                    idempotency_key: format!("submit-{}", hex::encode(sid)),
                }))
                .await;
            match issued {
                Ok(b) => (
                    SubmissionState::ISSUED,
                    Some(b.into_inner().entry),
                    String::new(),
                ),
                // The handle is taken, a look-alike, reserved, or breaks
                // the policy: the request ends refused with that rule.
                Err(s)
                    if matches!(
                        s.code(),
                        tonic::Code::AlreadyExists | tonic::Code::InvalidArgument
                    ) =>
                {
                    (SubmissionState::REFUSED, None, s.message().to_string())
                }
                Err(s) => return Err(s),
            }
        } else {
            (SubmissionState::REFUSED, None, format!("refused: {reason}"))
        };
        let after = self
            .upstream
            .store_write
            .clone()
            .put_submission(pb::Submission {
                submission_id: sid.to_vec(),
                state: state.0 as u32,
                request: stored.request.clone(),
                entry,
                message,
            })
            .await?
            .into_inner();
        shown(&after, 0)
    }
}

impl crate::Upstream {
    /// Whether `domain` (or record name) names this provider's record.
    async fn is_ours(&self, domain: &str) -> Result<bool, Status> {
        let head = self
            .store_read
            .clone()
            .get_head(pb::GetHeadRequest {
                record: Some(pb::RecordRef {
                    by: Some(pb::record_ref::By::Domain(domain.to_ascii_lowercase())),
                }),
            })
            .await;
        match head {
            Ok(h) => Ok(h
                .into_inner()
                .record_id
                .and_then(|h| <[u8; 32]>::try_from(h.value.as_slice()).ok())
                .map(Hash32)
                == Some(self.record_id)),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(s),
        }
    }
}
