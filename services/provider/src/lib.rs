//! The Provider API (`poz.v1.ProviderApi`): what a provider's account
//! systems call to issue, revoke, look up and bulk-issue identity bindings.
//!
//! It runs as its own stateless service beside the signer: it holds no
//! keys (the signer does, behind its policy) and no state (the store
//! does), so it scales out freely and a bug here can neither leak a key
//! nor sign outside policy. Every binding it acknowledges has been
//! signed by the signer, checked by the verifier and committed by the
//! store, in that order.
//!
//! Single issues carry plain signatures; a bulk issue signs each chunk of
//! up to `batch_size` bindings with one batch signature per key (SPEC
//! §8.9), so the HSM signs once per chunk instead of once per binding.
//!
//! Idempotency: a handle already bound to the same subject counts as
//! issued (its existing binding is returned), so any retry, including a
//! bulk stream resumed after a break, issues nothing twice. A handle
//! bound to another subject is ALREADY_EXISTS.
#![forbid(unsafe_code)]

pub mod inprocess;

use pb::signer_client::SignerClient;
use pb::store_read_client::StoreReadClient;
use pb::store_write_client::StoreWriteClient;
use pb::verifier_client::VerifierClient;
use poz::entries::RevocationReason;
use poz::keys::{KeyId, Signature};
use poz::threshold::{delegation_members, Authority};
use poz::zone::{SignedEntry, ZoneType};
use poz::{workflow, Codec, Hash32, Record};
use poz_proto::v1 as pb;
use std::collections::HashMap;
use std::time::Duration;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

/// The Provider API for one provider record.
#[derive(Clone)]
pub struct ProviderApiService {
    record_id: Hash32,
    store_read: StoreReadClient<Channel>,
    store_write: StoreWriteClient<Channel>,
    verifier: VerifierClient<Channel>,
    signer: SignerClient<Channel>,
    batch_size: usize,
}

/// Where the service's peers are.
pub struct Peers {
    pub store: Channel,
    pub verifier: Channel,
    pub signer: Channel,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn pbhash(h: &Hash32) -> Option<pb::Hash> {
    Some(pb::Hash {
        value: h.0.to_vec(),
    })
}

fn subject_arg(h: &Option<pb::Hash>) -> Result<Hash32, String> {
    let v = h.as_ref().map(|h| h.value.as_slice()).unwrap_or_default();
    <[u8; 32]>::try_from(v)
        .map(Hash32)
        .map_err(|_| format!("subject: a record ID is 32 bytes, got {}", v.len()))
}

/// A binding request that passed the argument checks.
struct Wanted {
    handle: String,
    subject: Hash32,
    expires_at: u64,
    key: String,
}

impl ProviderApiService {
    pub fn new(record_id: Hash32, peers: Peers, batch_size: usize) -> Self {
        ProviderApiService {
            record_id,
            store_read: StoreReadClient::new(peers.store.clone())
                .max_decoding_message_size(poz_kit::MAX_GRPC_MESSAGE),
            store_write: StoreWriteClient::new(peers.store)
                .max_encoding_message_size(poz_kit::MAX_GRPC_MESSAGE),
            verifier: VerifierClient::new(peers.verifier)
                .max_encoding_message_size(poz_kit::MAX_GRPC_MESSAGE),
            signer: SignerClient::new(peers.signer)
                .max_encoding_message_size(poz_kit::MAX_GRPC_MESSAGE),
            batch_size: batch_size.max(1),
        }
    }

    fn record_ref(&self) -> Option<pb::RecordRef> {
        Some(pb::RecordRef {
            by: Some(pb::record_ref::By::RecordId(pb::Hash {
                value: self.record_id.0.to_vec(),
            })),
        })
    }

    /// The provider's record at its head, as the store serves it.
    async fn provider(&self) -> Result<(Vec<u8>, Record), Status> {
        let bytes = self
            .store_read
            .clone()
            .get_master(pb::GetMasterRequest {
                record: self.record_ref(),
            })
            .await?
            .into_inner()
            .record;
        let rec = Record::from_bytes(&bytes)
            .map_err(|e| Status::internal(format!("stored provider record: {e}")))?;
        Ok((bytes, rec))
    }

    /// The held keys that sign for `authority` in the identity zone: every
    /// identity delegation key with that weight which the signer holds.
    async fn signing_keys(&self, rec: &Record, authority: Authority) -> Result<Vec<KeyId>, Status> {
        let held: Vec<Hash32> = self
            .signer
            .clone()
            .list_keys(pb::ListKeysRequest {})
            .await?
            .into_inner()
            .keys
            .iter()
            .filter_map(|k| {
                k.key_id
                    .as_ref()
                    .and_then(|h| <[u8; 32]>::try_from(h.value.as_slice()).ok())
                    .map(Hash32)
            })
            .collect();
        let deleg = rec.master.delegation(ZoneType::IDENTITY).ok_or_else(|| {
            Status::failed_precondition("the provider's record delegates no identity zone")
        })?;
        let keys: Vec<KeyId> = delegation_members(&deleg.keys, authority)
            .iter()
            .filter_map(|m| rec.keys.get(m.key_idx).map(|k| k.id()))
            .filter(|id| held.contains(id))
            .collect();
        if keys.is_empty() {
            return Err(Status::failed_precondition(
                "the signer holds none of the provider's identity delegation keys",
            ));
        }
        Ok(keys)
    }

    /// The newest bindings of `handles`, by handle.
    async fn existing(
        &self,
        handles: &[String],
    ) -> Result<HashMap<String, (SignedEntry, bool)>, Status> {
        let mut out = HashMap::new();
        for chunk in handles.chunks(10_000) {
            let r = self
                .store_read
                .clone()
                .get_bindings(pb::GetBindingsRequest {
                    record: self.record_ref(),
                    handles: chunk.to_vec(),
                })
                .await?
                .into_inner();
            for b in r.bindings {
                let e = SignedEntry::from_bytes(&b.binding)
                    .map_err(|e| Status::internal(format!("stored binding: {e}")))?;
                out.insert(b.handle, (e, b.revoked));
            }
        }
        Ok(out)
    }

    /// Has the verifier check `entries` against the provider's record;
    /// any failure is an internal error (we just signed them).
    async fn verify(&self, record: &[u8], entries: &[SignedEntry]) -> Result<(), Status> {
        let r = self
            .verifier
            .clone()
            .verify_entries(pb::VerifyEntriesRequest {
                issuer_record: record.to_vec(),
                zone_type: ZoneType::IDENTITY.0 as u32,
                entries: entries.iter().map(|e| e.to_bytes()).collect(),
                now_ms: 0,
            })
            .await?
            .into_inner();
        if let Some(bad) = r.results.iter().find(|x| !x.valid) {
            return Err(Status::internal(format!(
                "the verifier refused a binding we signed: {}: {}",
                bad.rule, bad.detail
            )));
        }
        Ok(())
    }

    async fn commit(&self, entries: &[SignedEntry], key: &str) -> Result<(), Status> {
        self.store_write
            .clone()
            .put_entries(pb::PutEntriesRequest {
                record_id: pbhash(&self.record_id),
                zone_type: ZoneType::IDENTITY.0 as u32,
                entries: entries.iter().map(|e| e.to_bytes()).collect(),
                idempotency_key: key.to_string(),
            })
            .await?;
        Ok(())
    }

    /// Decides each request of a chunk: already issued (same subject),
    /// refused (another subject, a repeated handle, bad arguments), or to
    /// issue. Returns (already issued keys, errors, to issue).
    /// `inflight` holds the handles of the previous chunk, signed but
    /// perhaps not yet committed (the store cannot see them yet).
    async fn triage(
        &self,
        chunk: Vec<pb::IssueBindingRequest>,
        inflight: &HashMap<String, Hash32>,
    ) -> Result<(Vec<String>, Vec<pb::BulkIssueError>, Vec<Wanted>), Status> {
        let mut done = Vec::new();
        let mut errors = Vec::new();
        let mut wanted: Vec<Wanted> = Vec::new();
        let mut seen: HashMap<String, Hash32> = inflight.clone();
        for r in chunk {
            let subject = match subject_arg(&r.subject) {
                Ok(s) => s,
                Err(message) => {
                    errors.push(pb::BulkIssueError {
                        idempotency_key: r.idempotency_key,
                        message,
                    });
                    continue;
                }
            };
            match seen.get(&r.handle) {
                Some(s) if *s == subject => {
                    done.push(r.idempotency_key);
                    continue;
                }
                Some(_) => {
                    errors.push(pb::BulkIssueError {
                        idempotency_key: r.idempotency_key,
                        message: format!(
                            "handle {:?} appears twice with different subjects",
                            r.handle
                        ),
                    });
                    continue;
                }
                None => {}
            }
            seen.insert(r.handle.clone(), subject);
            wanted.push(Wanted {
                handle: r.handle,
                subject,
                expires_at: r.expires_at,
                key: r.idempotency_key,
            });
        }
        let handles: Vec<String> = wanted.iter().map(|w| w.handle.clone()).collect();
        let existing = self.existing(&handles).await?;
        let mut to_issue = Vec::new();
        for w in wanted {
            match existing.get(&w.handle) {
                Some((e, false)) => {
                    let same = poz::entries::IdentityBinding::from_bytes(&e.body)
                        .map(|b| b.subject == w.subject)
                        .unwrap_or(false);
                    if same {
                        done.push(w.key);
                    } else {
                        errors.push(pb::BulkIssueError {
                            idempotency_key: w.key,
                            message: format!("handle {:?} is bound to another subject", w.handle),
                        });
                    }
                }
                // Unbound, or its binding was revoked: issue anew.
                _ => to_issue.push(w),
            }
        }
        Ok((done, errors, to_issue))
    }

    /// First half of a bulk chunk: triage, then new bindings signed with
    /// one batch signature per key.
    async fn prepare_chunk(
        &self,
        chunk: Vec<pb::IssueBindingRequest>,
        inflight: &HashMap<String, Hash32>,
    ) -> Result<PreparedChunk, Status> {
        let (already, mut errors, to_issue) = self.triage(chunk, inflight).await?;
        let mut p = PreparedChunk {
            already,
            errors: Vec::new(),
            entries: Vec::new(),
            issued: Vec::new(),
            record: Vec::new(),
        };
        if to_issue.is_empty() {
            p.errors = errors;
            return Ok(p);
        }
        let (record_bytes, rec) = self.provider().await?;
        let keys = self.signing_keys(&rec, Authority::Grant).await?;
        let now = now_ms();
        for w in to_issue {
            match workflow::new_binding(&rec, w.subject, &w.handle, now, w.expires_at) {
                Ok(e) => {
                    p.entries.push(e);
                    p.issued.push((w.key, w.handle, w.subject));
                }
                Err(e) => errors.push(pb::BulkIssueError {
                    idempotency_key: w.key,
                    message: e.to_string(),
                }),
            }
        }
        p.errors = errors;
        if p.entries.is_empty() {
            return Ok(p);
        }
        let encoded: Vec<Vec<u8>> = p.entries.iter().map(|e| e.to_bytes()).collect();
        for key in &keys {
            let r = self
                .signer
                .clone()
                .sign_batch_root(pb::SignBatchRootRequest {
                    issuer_record: record_bytes.clone(),
                    zone_type: ZoneType::IDENTITY.0 as u32,
                    entries: encoded.clone(),
                    key_id: pbhash(key),
                })
                .await?
                .into_inner();
            let sig = Signature::from_bytes(&r.signature)
                .map_err(|e| Status::internal(format!("signer's signature: {e}")))?;
            let (idx, tree, _) =
                workflow::batch_signing_target(&rec, ZoneType::IDENTITY, &p.entries, key)
                    .map_err(|e| Status::internal(e.to_string()))?;
            let root_sig: [u8; 64] = sig
                .data
                .as_slice()
                .try_into()
                .map_err(|_| Status::internal("signer's signature is not 64 bytes"))?;
            workflow::attach_batch_signature(&mut p.entries, idx, &tree, root_sig);
        }
        p.record = record_bytes;
        Ok(p)
    }

    /// Second half: the verifier checks the signed bindings, the store
    /// commits them; only then are their keys acknowledged.
    async fn finish_chunk(&self, p: PreparedChunk) -> Result<pb::BulkIssueProgress, Status> {
        let mut committed_keys = p.already;
        if !p.entries.is_empty() {
            self.verify(&p.record, &p.entries).await?;
            self.commit(&p.entries, "").await?;
            committed_keys.extend(p.issued.into_iter().map(|(k, _, _)| k));
        }
        Ok(pb::BulkIssueProgress {
            received: 0,
            committed: committed_keys.len() as u64,
            committed_keys,
            errors: p.errors,
        })
    }
}

/// A bulk chunk signed and waiting for verification and commit.
struct PreparedChunk {
    /// Keys whose bindings already existed.
    already: Vec<String>,
    errors: Vec<pb::BulkIssueError>,
    entries: Vec<SignedEntry>,
    /// (key, handle, subject) per entry.
    issued: Vec<(String, String, Hash32)>,
    /// The provider record the entries were signed against.
    record: Vec<u8>,
}

#[tonic::async_trait]
impl pb::provider_api_server::ProviderApi for ProviderApiService {
    async fn issue_binding(
        &self,
        req: Request<pb::IssueBindingRequest>,
    ) -> Result<Response<pb::IssuedBinding>, Status> {
        let r = req.into_inner();
        let subject = subject_arg(&r.subject).map_err(Status::invalid_argument)?;
        let key = r.idempotency_key.clone();
        if let Some((e, false)) = self
            .existing(std::slice::from_ref(&r.handle))
            .await?
            .remove(&r.handle)
        {
            let b = poz::entries::IdentityBinding::from_bytes(&e.body)
                .map_err(|e| Status::internal(format!("stored binding: {e}")))?;
            if b.subject != subject {
                return Err(Status::already_exists(format!(
                    "handle {:?} is bound to another subject",
                    r.handle
                )));
            }
            return Ok(Response::new(issued(&e, &self.record_id, key)));
        }
        let (record_bytes, rec) = self.provider().await?;
        let mut e = workflow::new_binding(&rec, subject, &r.handle, now_ms(), r.expires_at)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        for k in self.signing_keys(&rec, Authority::Grant).await? {
            let s = self
                .signer
                .clone()
                .sign_entry(pb::SignEntryRequest {
                    issuer_record: record_bytes.clone(),
                    zone_type: ZoneType::IDENTITY.0 as u32,
                    entry: e.to_bytes(),
                    key_id: pbhash(&k),
                })
                .await?
                .into_inner();
            e.add_signature(
                Signature::from_bytes(&s.signature)
                    .map_err(|e| Status::internal(format!("signer's signature: {e}")))?,
            );
        }
        self.verify(&record_bytes, std::slice::from_ref(&e)).await?;
        self.commit(std::slice::from_ref(&e), "").await?;
        Ok(Response::new(issued(&e, &self.record_id, key)))
    }

    async fn revoke_binding(
        &self,
        req: Request<pb::RevokeBindingRequest>,
    ) -> Result<Response<pb::RevokeBindingResponse>, Status> {
        let r = req.into_inner();
        let reason = u8::try_from(r.reason)
            .ok()
            .map(RevocationReason)
            .filter(|x| x.is_known())
            .ok_or_else(|| Status::invalid_argument(format!("reason {} is not 0..=4", r.reason)))?;
        let (binding, revoked) = self
            .existing(std::slice::from_ref(&r.handle))
            .await?
            .remove(&r.handle)
            .ok_or_else(|| Status::not_found(format!("no binding for handle {:?}", r.handle)))?;
        if revoked {
            return Err(Status::failed_precondition(format!(
                "the binding of {:?} is already revoked",
                r.handle
            )));
        }
        let (record_bytes, rec) = self.provider().await?;
        let mut rev = workflow::new_revocation(
            binding.digest(&self.record_id, ZoneType::IDENTITY),
            now_ms(),
            reason,
        );
        for k in self.signing_keys(&rec, Authority::Deny).await? {
            let s = self
                .signer
                .clone()
                .sign_entry(pb::SignEntryRequest {
                    issuer_record: record_bytes.clone(),
                    zone_type: ZoneType::IDENTITY.0 as u32,
                    entry: rev.to_bytes(),
                    key_id: pbhash(&k),
                })
                .await?
                .into_inner();
            rev.add_signature(
                Signature::from_bytes(&s.signature)
                    .map_err(|e| Status::internal(format!("signer's signature: {e}")))?,
            );
        }
        self.verify(&record_bytes, std::slice::from_ref(&rev))
            .await?;
        self.commit(std::slice::from_ref(&rev), "").await?;
        Ok(Response::new(pb::RevokeBindingResponse {
            revocation: rev.to_bytes(),
        }))
    }

    async fn get_binding(
        &self,
        req: Request<pb::GetProviderBindingRequest>,
    ) -> Result<Response<pb::IssuedBinding>, Status> {
        let h = req.into_inner().handle;
        let (e, _) = self
            .existing(std::slice::from_ref(&h))
            .await?
            .remove(&h)
            .ok_or_else(|| Status::not_found(format!("no binding for handle {h:?}")))?;
        Ok(Response::new(issued(&e, &self.record_id, String::new())))
    }

    async fn list_bindings(
        &self,
        req: Request<pb::ListBindingsRequest>,
    ) -> Result<Response<pb::ListBindingsResponse>, Status> {
        let r = req.into_inner();
        let page = self
            .store_read
            .clone()
            .list_bindings(pb::ListStoreBindingsRequest {
                record: self.record_ref(),
                after_handle: r.after_handle,
                limit: r.limit,
            })
            .await?
            .into_inner()
            .bindings;
        let full = page.len() as u32 == r.limit;
        let next_after = if full {
            page.last().map(|b| b.handle.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        let bindings = page
            .iter()
            .map(|b| {
                SignedEntry::from_bytes(&b.binding)
                    .map(|e| issued(&e, &self.record_id, String::new()))
                    .map_err(|e| Status::internal(format!("stored binding: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::ListBindingsResponse {
            bindings,
            next_after,
        }))
    }

    type BulkIssueStream = ReceiverStream<Result<pb::BulkIssueProgress, Status>>;

    async fn bulk_issue(
        &self,
        req: Request<Streaming<pb::IssueBindingRequest>>,
    ) -> Result<Response<Self::BulkIssueStream>, Status> {
        let mut inbound = req.into_inner();
        // A small queue: progress the client does not read holds the next
        // chunk back, and an unread request stream holds the client back
        // (HTTP/2 flow control), so memory stays bounded end to end.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let svc = self.clone();
        tokio::spawn(async move {
            let (mut received, mut committed) = (0u64, 0u64);
            let mut ended = false;
            // Two chunks in flight: while one is verified and committed,
            // the next is read, checked and signed.
            let mut finishing: Option<
                tokio::task::JoinHandle<Result<pb::BulkIssueProgress, Status>>,
            > = None;
            let mut inflight: HashMap<String, Hash32> = HashMap::new();
            let send = |update: Result<pb::BulkIssueProgress, Status>,
                        received: u64,
                        committed: &mut u64| {
                update.map(|mut p| {
                    *committed += p.committed;
                    p.received = received;
                    p.committed = *committed;
                    p
                })
            };
            while !ended {
                let mut chunk = Vec::new();
                // Fill a chunk; flush early when the client pauses.
                while chunk.len() < svc.batch_size {
                    let next = if chunk.is_empty() {
                        inbound.message().await
                    } else {
                        match tokio::time::timeout(Duration::from_millis(50), inbound.message())
                            .await
                        {
                            Ok(m) => m,
                            Err(_) => break,
                        }
                    };
                    match next {
                        Ok(Some(r)) => chunk.push(r),
                        Ok(None) => {
                            ended = true;
                            break;
                        }
                        Err(e) => {
                            // The client went away: finish what is signed.
                            tracing::info!(error = %e, received, committed, "bulk stream broken");
                            ended = true;
                            break;
                        }
                    }
                }
                if chunk.is_empty() {
                    break;
                }
                let n = chunk.len() as u64;
                let prepared = svc.prepare_chunk(chunk, &inflight).await;
                if let Some(h) = finishing.take() {
                    let update = h
                        .await
                        .unwrap_or_else(|e| Err(Status::internal(format!("bulk task: {e}"))));
                    let update = send(update, received, &mut committed);
                    let failed = update.is_err();
                    if tx.send(update).await.is_err() || failed {
                        return;
                    }
                }
                received += n;
                match prepared {
                    Ok(p) => {
                        inflight = p.issued.iter().map(|(_, h, s)| (h.clone(), *s)).collect();
                        let svc = svc.clone();
                        finishing = Some(tokio::spawn(async move { svc.finish_chunk(p).await }));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            if let Some(h) = finishing.take() {
                let update = h
                    .await
                    .unwrap_or_else(|e| Err(Status::internal(format!("bulk task: {e}"))));
                let _ = tx.send(send(update, received, &mut committed)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn issued(e: &SignedEntry, issuer: &Hash32, key: String) -> pb::IssuedBinding {
    pb::IssuedBinding {
        entry: e.to_bytes(),
        digest: pbhash(&e.digest(issuer, ZoneType::IDENTITY)),
        idempotency_key: key,
    }
}
