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
//! bulk stream resumed after a break, issues nothing twice.
//!
//! Handle rules (SPEC §8.4), on IssueBinding and on each BulkIssue item:
//! a handle that breaks the configured namespace policy (`ascii` or
//! `unicode`, [`poz::handle::HandlePolicy`]) is INVALID_ARGUMENT; a handle
//! with a live binding to another subject (`binding-unique`), a look-alike
//! of another subject's handle (`handle-confusable`) or a revoked,
//! reserved handle (`handle-reserved`) is ALREADY_EXISTS. Every message
//! begins with the rule's name. The store judges the same way again when
//! it commits.
#![forbid(unsafe_code)]

pub mod inprocess;
pub mod requests;

use pb::signer_client::SignerClient;
use pb::store_read_client::StoreReadClient;
use pb::store_write_client::StoreWriteClient;
use pb::verifier_client::VerifierClient;
use poz::entries::RevocationReason;
use poz::handle::HandlePolicy;
use poz::keys::{KeyId, Signature};
use poz::threshold::{delegation_members, Authority};
use poz::zone::{SignedEntry, ZoneType};
use poz::{workflow, Codec, Hash32, Record};
use poz_kit::Channel;
use poz_proto::v1 as pb;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// The Provider API for one provider record.
///
/// Concurrent IssueBinding calls are gathered into groups (group commit):
/// one worker takes every call waiting, has the signer sign each binding
/// on its own (one plain signature per binding, the group's audit rows in
/// one commit), and the verifier and the store check and commit the group
/// at once. Two groups are in flight, one signed while the previous one
/// is checked and committed, so the HSM never waits for a commit. A call
/// still returns only when its binding is committed.
#[derive(Clone)]
pub struct ProviderApiService {
    upstream: Upstream,
    /// One queue per issuing worker; a handle always goes to the same
    /// worker, so two calls for one handle never race each other.
    issues: Vec<tokio::sync::mpsc::Sender<PendingIssue>>,
}

/// The peers the Provider API calls, and what it does with them.
#[derive(Clone)]
struct Upstream {
    record_id: Hash32,
    store_read: StoreReadClient<Channel>,
    store_write: StoreWriteClient<Channel>,
    verifier: VerifierClient<Channel>,
    signer: SignerClient<Channel>,
    batch_size: usize,
    /// The handle namespace policy (SPEC §8.4.1).
    policy: HandlePolicy,
}

/// One IssueBinding call waiting for its group.
type PendingIssue = (
    pb::IssueBindingRequest,
    tokio::sync::oneshot::Sender<Result<pb::IssuedBinding, Status>>,
);

/// Where the service's peers are.
pub struct Peers {
    pub store: Channel,
    pub verifier: Channel,
    pub signer: Channel,
}

/// Bulk issuance progress, for Prometheus (docs/OPERATIONS.md).
struct BulkMetrics {
    received: prometheus_client::metrics::counter::Counter,
    committed: prometheus_client::metrics::counter::Counter,
    refused: prometheus_client::metrics::counter::Counter,
    streams: prometheus_client::metrics::gauge::Gauge,
}

static BULK: std::sync::LazyLock<BulkMetrics> = std::sync::LazyLock::new(|| {
    let m = BulkMetrics {
        received: Default::default(),
        committed: Default::default(),
        refused: Default::default(),
        streams: Default::default(),
    };
    use poz_kit::metrics::register;
    register(
        "poz_bulk_received_requests",
        "BulkIssue requests read from clients",
        None,
        m.received.clone(),
    );
    register(
        "poz_bulk_committed_bindings",
        "BulkIssue requests committed (issued, or already issued)",
        None,
        m.committed.clone(),
    );
    register(
        "poz_bulk_refused_requests",
        "BulkIssue requests refused, each with its reason in the stream",
        None,
        m.refused.clone(),
    );
    register(
        "poz_bulk_streams",
        "BulkIssue streams in progress",
        None,
        m.streams.clone(),
    );
    m
});

/// Counts a bulk stream in `poz_bulk_streams` while it lives, however
/// it ends.
struct OpenStream;
impl OpenStream {
    fn start() -> OpenStream {
        BULK.streams.inc();
        OpenStream
    }
}
impl Drop for OpenStream {
    fn drop(&mut self) {
        BULK.streams.dec();
    }
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

/// An expiry in ms since the epoch: 0 (none) or at most `i64::MAX`, the
/// largest time the store's databases hold (whether it is after the issue
/// time is the binding's own rule, checked when it is made).
pub(crate) fn expiry_arg(expires_at: u64) -> Result<u64, String> {
    if expires_at > i64::MAX as u64 {
        return Err(format!(
            "expires_at {expires_at} ms is beyond the largest time a binding can carry ({} ms)",
            i64::MAX
        ));
    }
    Ok(expires_at)
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
}

/// What becomes of one request of a chunk or group.
enum Decision {
    /// The handle is already bound to this subject: the stored binding.
    Existing(SignedEntry),
    /// The same handle and subject as a request of the previous chunk,
    /// signed and being committed (bulk only).
    InFlight,
    /// The same handle and subject as request `i` of this chunk.
    SameAs(usize),
    /// Refused, with the status an IssueBinding call gets.
    Refused(Status),
    /// To be issued (before signing).
    Issue(Wanted),
    /// Issued: `entries[i]` of the prepared chunk.
    Signed(usize),
}

/// How a chunk's new bindings are signed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Signing {
    /// One batch signature per key over the chunk (SPEC §8.9).
    Batch,
    /// One plain signature per binding and key.
    PerBinding,
}

/// The most IssueBinding calls signed and committed as one group.
const MAX_ISSUE_GROUP: usize = 64;

/// Issuing workers, each with its own two-group pipeline. While one
/// worker reads the store and the provider record for its next group,
/// the other's group is at the signer, so the HSM is not left waiting
/// for those reads (measured: 20% of its time with one worker).
const ISSUE_WORKERS: usize = 2;

impl ProviderApiService {
    /// The service with the default handle policy (`ascii`).
    pub fn new(record_id: Hash32, peers: Peers, batch_size: usize) -> Self {
        Self::with_policy(record_id, peers, batch_size, HandlePolicy::default())
    }

    /// The service for `record_id`, issuing handles under `policy`.
    pub fn with_policy(
        record_id: Hash32,
        peers: Peers,
        batch_size: usize,
        policy: HandlePolicy,
    ) -> Self {
        std::sync::LazyLock::force(&BULK);
        let upstream = Upstream {
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
            policy,
        };
        // Each queue holds at most a few groups; beyond that callers wait
        // to enqueue, which is the backpressure a flood of calls gets.
        let issues = (0..ISSUE_WORKERS)
            .map(|_| {
                let (tx, rx) = tokio::sync::mpsc::channel(4 * MAX_ISSUE_GROUP);
                tokio::spawn(upstream.clone().issue_groups(rx));
                tx
            })
            .collect();
        ProviderApiService { upstream, issues }
    }
}

impl Upstream {
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
        let held = self.held_keys().await?;
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

    /// IssueCertificate: the provider's record at its head, verified; the
    /// CA keys it names for the host that the signer holds; the first of
    /// them signs through SignCertificate (whose policy and audit apply).
    async fn issue_certificate(
        &self,
        r: pb::IssueCertificateRequest,
    ) -> Result<pb::SignedCertificate, Status> {
        let host = poz::ca::normalize_host(&r.host);
        if !poz::ca::is_dns_host(&host) {
            return Err(Status::invalid_argument(format!(
                "host {:?} is not a DNS host name a certificate can carry (SPEC §21)",
                r.host
            )));
        }
        let (bytes, _) = self.provider().await?;
        let checked = bytes.clone();
        let verified = tokio::task::spawn_blocking(move || {
            let rec = Record::from_bytes(&checked)
                .map_err(|e| Status::internal(format!("stored provider record: {e}")))?;
            poz::verify::verify_and_accept(rec).map_err(|report| {
                let f: Vec<String> = report
                    .failures()
                    .map(|(r, d)| format!("{r}: {d}"))
                    .collect();
                Status::failed_precondition(format!(
                    "the provider's record does not verify: {}",
                    f.join("; ")
                ))
            })
        })
        .await
        .map_err(|e| Status::internal(format!("verification task: {e}")))??;
        let named = poz::ca::ca_keys_for_host(&verified, &host);
        let held = self.held_keys().await?;
        let Some(ca) = named.iter().find(|k| held.contains(&k.key.id())) else {
            return Err(Status::failed_precondition(if named.is_empty() {
                format!(
                    "the provider's Service Zone names no CA key (ca_key_idx) for host {host:?}"
                )
            } else {
                format!(
                    "the signer holds none of the CA keys the provider's Service Zone names for host {host:?} (key index(es) {})",
                    named
                        .iter()
                        .map(|k| k.key_idx.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }));
        };
        let signed = self
            .signer
            .clone()
            .sign_certificate(pb::SignCertificateRequest {
                issuer_record: bytes,
                host,
                subject_public_key_info: r.subject_public_key_info,
                days: r.days,
                key_id: pbhash(&ca.key.id()),
            })
            .await
            .map_err(|s| match s.code() {
                // The key was chosen from the record the signer checks
                // against; its refusal is a state to report, not a
                // refusal of this API's caller.
                tonic::Code::PermissionDenied => Status::failed_precondition(format!(
                    "the signer refused the certificate: {}",
                    s.message()
                )),
                _ => s,
            })?
            .into_inner();
        Ok(signed)
    }

    /// The IDs of the keys the signer holds.
    async fn held_keys(&self) -> Result<Vec<Hash32>, Status> {
        Ok(self
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
            .collect())
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

    /// Decides each request of a chunk, in order: already issued (same
    /// subject), in flight, a repeat within the chunk, refused (another
    /// subject, a handle twice with different subjects, bad arguments), or
    /// to issue. `inflight` holds the handles of the previous chunk,
    /// signed but perhaps not yet committed (the store cannot see them).
    async fn triage(
        &self,
        chunk: &[pb::IssueBindingRequest],
        inflight: &HashMap<String, Hash32>,
    ) -> Result<Vec<Decision>, Status> {
        let mut decisions = Vec::with_capacity(chunk.len());
        // Handle -> (subject, index of its first request in this chunk).
        let mut seen: HashMap<&str, (Hash32, usize)> = HashMap::new();
        let mut lookup = Vec::new();
        for (i, r) in chunk.iter().enumerate() {
            let subject = match subject_arg(&r.subject) {
                Ok(s) => s,
                Err(message) => {
                    decisions.push(Decision::Refused(Status::invalid_argument(message)));
                    continue;
                }
            };
            if let Err(e) = poz::handle::check_handle(&r.handle, self.policy) {
                decisions.push(Decision::Refused(Status::invalid_argument(e.to_string())));
                continue;
            }
            if let Err(message) = expiry_arg(r.expires_at) {
                decisions.push(Decision::Refused(Status::invalid_argument(message)));
                continue;
            }
            let earlier = seen
                .get(r.handle.as_str())
                .map(|(s, first)| (*s, Some(*first)))
                .or_else(|| inflight.get(&r.handle).map(|s| (*s, None)));
            decisions.push(match earlier {
                Some((s, Some(first))) if s == subject => Decision::SameAs(first),
                Some((s, None)) if s == subject => Decision::InFlight,
                Some(_) => Decision::Refused(Status::already_exists(format!(
                    "binding-unique: handle {:?} is being issued to another subject",
                    r.handle
                ))),
                None => {
                    seen.insert(&r.handle, (subject, i));
                    lookup.push(r.handle.clone());
                    Decision::Issue(Wanted {
                        handle: r.handle.clone(),
                        subject,
                        expires_at: r.expires_at,
                    })
                }
            });
        }
        let existing = self.existing(&lookup).await?;
        for d in &mut decisions {
            let Decision::Issue(w) = d else { continue };
            // Already bound to this subject and not revoked: a retry.
            if let Some((e, false)) = existing.get(&w.handle) {
                let same = poz::entries::IdentityBinding::from_bytes(&e.body)
                    .map(|b| b.subject == w.subject)
                    .unwrap_or(false);
                if same {
                    *d = Decision::Existing(e.clone());
                }
            }
        }
        // The rest, judged by the store as its commit will judge them
        // (SPEC §8.4): one live binding per handle, look-alikes, reserved
        // handles. The previous chunk's handles, signed but perhaps not
        // yet committed, go first so this chunk is judged against them.
        let mut candidates: Vec<pb::HandleCandidate> = inflight
            .iter()
            .map(|(h, s)| pb::HandleCandidate {
                handle: h.clone(),
                subject: pbhash(s),
            })
            .collect();
        let skip = candidates.len();
        let mut judged = Vec::new();
        for (i, d) in decisions.iter().enumerate() {
            if let Decision::Issue(w) = d {
                judged.push(i);
                candidates.push(pb::HandleCandidate {
                    handle: w.handle.clone(),
                    subject: pbhash(&w.subject),
                });
            }
        }
        if judged.is_empty() {
            return Ok(decisions);
        }
        let verdicts = self
            .store_read
            .clone()
            .check_handles(pb::CheckHandlesRequest {
                record: self.record_ref(),
                candidates,
            })
            .await?
            .into_inner()
            .verdicts;
        if verdicts.len() != skip + judged.len() {
            return Err(Status::internal(format!(
                "the store judged {} of {} handles",
                verdicts.len(),
                skip + judged.len()
            )));
        }
        for (i, v) in judged.into_iter().zip(&verdicts[skip..]) {
            if v.rule.is_empty() {
                continue;
            }
            let about_the_handle = matches!(
                v.rule.as_str(),
                "handle-length" | "handle-bidi" | "handle-format"
            );
            decisions[i] = Decision::Refused(if about_the_handle {
                Status::invalid_argument(v.message.clone())
            } else {
                Status::already_exists(v.message.clone())
            });
        }
        Ok(decisions)
    }

    /// First half of a chunk: triage, then the new bindings signed, with
    /// one batch signature per key or one signature per binding and key.
    async fn prepare_chunk(
        &self,
        chunk: &[pb::IssueBindingRequest],
        inflight: &HashMap<String, Hash32>,
        signing: Signing,
    ) -> Result<PreparedChunk, Status> {
        let t0 = std::time::Instant::now();
        let mut p = PreparedChunk {
            decisions: self.triage(chunk, inflight).await?,
            entries: Vec::new(),
            record: Vec::new(),
        };
        if !p.decisions.iter().any(|d| matches!(d, Decision::Issue(_))) {
            return Ok(p);
        }
        let t1 = t0.elapsed();
        let (record_bytes, rec) = self.provider().await?;
        let keys = self.signing_keys(&rec, Authority::Grant).await?;
        let t2 = t0.elapsed();
        let now = now_ms();
        for d in &mut p.decisions {
            let Decision::Issue(w) = d else { continue };
            *d = match workflow::new_binding(&rec, w.subject, &w.handle, now, w.expires_at) {
                Ok(e) => {
                    p.entries.push(e);
                    Decision::Signed(p.entries.len() - 1)
                }
                Err(e) => Decision::Refused(Status::invalid_argument(e.to_string())),
            };
        }
        if p.entries.is_empty() {
            return Ok(p);
        }
        let encoded: Vec<Vec<u8>> = p.entries.iter().map(|e| e.to_bytes()).collect();
        let bad_sig = |e: poz::DecodeError| Status::internal(format!("signer's signature: {e}"));
        for key in &keys {
            match signing {
                Signing::Batch => {
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
                    let sig = Signature::from_bytes(&r.signature).map_err(bad_sig)?;
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
                Signing::PerBinding => {
                    let r = self
                        .signer
                        .clone()
                        .sign_entries(pb::SignEntriesRequest {
                            issuer_record: record_bytes.clone(),
                            zone_type: ZoneType::IDENTITY.0 as u32,
                            entries: encoded.clone(),
                            key_id: pbhash(key),
                        })
                        .await?
                        .into_inner();
                    if r.signatures.len() != p.entries.len() {
                        return Err(Status::internal(format!(
                            "the signer answered {} signatures for {} entries",
                            r.signatures.len(),
                            p.entries.len()
                        )));
                    }
                    for (e, s) in p.entries.iter_mut().zip(&r.signatures) {
                        e.add_signature(Signature::from_bytes(&s.signature).map_err(bad_sig)?);
                    }
                }
            }
        }
        p.record = record_bytes;
        tracing::debug!(n = p.entries.len(), triage = ?t1, provider = ?t2, signed = ?t0.elapsed(), "chunk prepared");
        Ok(p)
    }

    /// The store commits a verified chunk's new bindings.
    async fn commit_chunk(&self, p: &PreparedChunk) -> Result<(), Status> {
        if !p.entries.is_empty() {
            let t0 = std::time::Instant::now();
            self.commit(&p.entries, "").await?;
            tracing::debug!(n = p.entries.len(), committed = ?t0.elapsed(), "chunk committed");
        }
        Ok(())
    }

    /// Second half: the verifier checks the signed bindings, the store
    /// commits them; only then may they be acknowledged.
    async fn finish_chunk(&self, p: &PreparedChunk) -> Result<(), Status> {
        if !p.entries.is_empty() {
            let t0 = std::time::Instant::now();
            self.verify(&p.record, &p.entries).await?;
            let t1 = t0.elapsed();
            self.commit(&p.entries, "").await?;
            tracing::debug!(n = p.entries.len(), verified = ?t1, committed = ?t0.elapsed(), "chunk finished");
        }
        Ok(())
    }

    /// A bulk issue, as a three-stage pipeline over chunks of up to
    /// `batch_size` requests: this task reads a chunk, triages it and has
    /// it signed (one batch signature per key); a task per chunk has the
    /// verifier check it; one committer task commits the chunks in order
    /// and reports each one's progress after its commit. So the signer,
    /// the verifier and the store each work on a different chunk at once
    /// (measured: a chunk of 4,096 spends ~50 ms being signed, ~60 ms
    /// being verified and ~130 ms being committed).
    async fn bulk(
        self,
        mut inbound: Streaming<pb::IssueBindingRequest>,
        tx: tokio::sync::mpsc::Sender<Result<pb::BulkIssueProgress, Status>>,
    ) {
        let _open = OpenStream::start();
        type Verifying = tokio::task::JoinHandle<Result<(), Status>>;
        // Handles signed but not yet committed: the store cannot see
        // them, so a repeat must be recognised here.
        let inflight: Arc<Mutex<HashMap<String, Hash32>>> = Arc::default();
        // Capacity 1: at most one chunk waits for the committer while
        // another is committed and a third is read and signed.
        let (to_commit, mut committing) = tokio::sync::mpsc::channel::<(
            Vec<pb::IssueBindingRequest>,
            PreparedChunk,
            Verifying,
            u64,
        )>(1);
        let committer = {
            let (up, tx, inflight) = (self.clone(), tx.clone(), inflight.clone());
            tokio::spawn(async move {
                let mut committed = 0u64;
                while let Some((chunk, p, verifying, received)) = committing.recv().await {
                    let verified = verifying
                        .await
                        .unwrap_or_else(|e| Err(Status::internal(format!("bulk task: {e}"))));
                    let done = match verified {
                        Ok(()) => up.commit_chunk(&p).await,
                        Err(e) => Err(e),
                    };
                    let update = done.map(|()| {
                        let mut progress = p.progress(&chunk);
                        BULK.committed.inc_by(progress.committed);
                        BULK.refused.inc_by(progress.errors.len() as u64);
                        committed += progress.committed;
                        progress.received = received;
                        progress.committed = committed;
                        progress
                    });
                    let failed = update.is_err();
                    {
                        let mut held = inflight.lock().unwrap_or_else(|e| e.into_inner());
                        for r in &chunk {
                            held.remove(&r.handle);
                        }
                    }
                    if tx.send(update).await.is_err() || failed {
                        return;
                    }
                }
            })
        };
        let mut received = 0u64;
        let mut ended = false;
        while !ended {
            let mut chunk = Vec::new();
            // Fill a chunk; flush early when the client pauses.
            while chunk.len() < self.batch_size {
                let next = if chunk.is_empty() {
                    inbound.message().await
                } else {
                    match tokio::time::timeout(Duration::from_millis(50), inbound.message()).await {
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
                        tracing::info!(error = %e, received, "bulk stream broken");
                        ended = true;
                        break;
                    }
                }
            }
            if chunk.is_empty() {
                break;
            }
            received += chunk.len() as u64;
            BULK.received.inc_by(chunk.len() as u64);
            let held = inflight.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let p = match self.prepare_chunk(&chunk, &held, Signing::Batch).await {
                Ok(p) => p,
                Err(e) => {
                    // Chunks already signed are still committed and
                    // reported first; then the stream ends with the error.
                    drop(to_commit);
                    let _ = committer.await;
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            {
                let mut held = inflight.lock().unwrap_or_else(|e| e.into_inner());
                for (d, r) in p.decisions.iter().zip(&chunk) {
                    if let (Decision::Signed(_), Ok(s)) = (d, subject_arg(&r.subject)) {
                        held.insert(r.handle.clone(), s);
                    }
                }
            }
            let verifying = {
                let (up, record, entries) = (self.clone(), p.record.clone(), p.entries.clone());
                tokio::spawn(async move {
                    if entries.is_empty() {
                        return Ok(());
                    }
                    up.verify(&record, &entries).await
                })
            };
            if to_commit
                .send((chunk, p, verifying, received))
                .await
                .is_err()
            {
                // The committer stopped on an error it has reported.
                return;
            }
        }
        drop(to_commit);
        let _ = committer.await;
    }

    /// The IssueBinding worker: gathers waiting calls into groups, signs
    /// one group while the previous one is checked and committed, and
    /// answers each call once its group is committed.
    async fn issue_groups(self, mut rx: tokio::sync::mpsc::Receiver<PendingIssue>) {
        type Finishing = tokio::task::JoinHandle<()>;
        let mut finishing: Option<Finishing> = None;
        let mut inflight: HashMap<String, Hash32> = HashMap::new();
        while let Some(first) = rx.recv().await {
            let mut group = vec![first];
            while group.len() < MAX_ISSUE_GROUP {
                match rx.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            let (requests, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
            // A call for a handle of the group still in flight waits for
            // it: its binding must be read back from the store.
            if requests.iter().any(|r| inflight.contains_key(&r.handle)) {
                if let Some(h) = finishing.take() {
                    let _ = h.await;
                }
                inflight.clear();
            }
            let prepared = self
                .prepare_chunk(&requests, &inflight, Signing::PerBinding)
                .await;
            if let Some(h) = finishing.take() {
                let _ = h.await;
            }
            let p = match prepared {
                Ok(p) => p,
                Err(status) => {
                    for reply in replies {
                        let _ = reply.send(Err(status.clone()));
                    }
                    inflight.clear();
                    continue;
                }
            };
            inflight = p
                .decisions
                .iter()
                .zip(&requests)
                .filter(|(d, _)| matches!(d, Decision::Signed(_)))
                .filter_map(|(_, r)| subject_arg(&r.subject).ok().map(|s| (r.handle.clone(), s)))
                .collect();
            let up = self.clone();
            finishing = Some(tokio::spawn(async move {
                let committed = up.finish_chunk(&p).await;
                let answers = p.answers(&requests, &up.record_id, committed);
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(answer);
                }
            }));
        }
        if let Some(h) = finishing.take() {
            let _ = h.await;
        }
    }
}

/// A chunk signed and waiting for verification and commit.
struct PreparedChunk {
    /// One per request, in order.
    decisions: Vec<Decision>,
    /// The signed new bindings (`Decision::Signed` indexes them).
    entries: Vec<SignedEntry>,
    /// The provider record the entries were signed against.
    record: Vec<u8>,
}

impl PreparedChunk {
    /// Each IssueBinding call's answer once the chunk's commit ended with
    /// `committed`.
    fn answers(
        &self,
        requests: &[pb::IssueBindingRequest],
        issuer: &Hash32,
        committed: Result<(), Status>,
    ) -> Vec<Result<pb::IssuedBinding, Status>> {
        let one = |i: usize, d: &Decision| -> Result<pb::IssuedBinding, Status> {
            let key = requests[i].idempotency_key.clone();
            match d {
                Decision::Existing(e) => Ok(issued(e, issuer, key)),
                Decision::Signed(j) => committed
                    .clone()
                    .map(|()| issued(&self.entries[*j], issuer, key)),
                Decision::Refused(s) => Err(s.clone()),
                Decision::Issue(_) | Decision::InFlight | Decision::SameAs(_) => {
                    Err(Status::internal("request left undecided"))
                }
            }
        };
        self.decisions
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                Decision::SameAs(first) => one(*first, &self.decisions[*first]).map(|mut b| {
                    b.idempotency_key = requests[i].idempotency_key.clone();
                    b
                }),
                _ => one(i, d),
            })
            .collect()
    }

    /// The bulk progress of the chunk once committed: keys of every
    /// request issued, existing or in flight, and the refusals.
    fn progress(self, requests: &[pb::IssueBindingRequest]) -> pb::BulkIssueProgress {
        let mut committed_keys = Vec::new();
        let mut errors = Vec::new();
        for (d, r) in self.decisions.into_iter().zip(requests) {
            match d {
                Decision::Refused(s) => errors.push(pb::BulkIssueError {
                    idempotency_key: r.idempotency_key.clone(),
                    message: s.message().to_string(),
                }),
                _ => committed_keys.push(r.idempotency_key.clone()),
            }
        }
        pb::BulkIssueProgress {
            received: 0,
            committed: committed_keys.len() as u64,
            committed_keys,
            errors,
        }
    }
}

#[tonic::async_trait]
impl pb::provider_api_server::ProviderApi for ProviderApiService {
    async fn issue_binding(
        &self,
        req: Request<pb::IssueBindingRequest>,
    ) -> Result<Response<pb::IssuedBinding>, Status> {
        let r = req.into_inner();
        subject_arg(&r.subject).map_err(Status::invalid_argument)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let worker = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            r.handle.hash(&mut h);
            (h.finish() % self.issues.len() as u64) as usize
        };
        self.issues[worker]
            .send((r, tx))
            .await
            .map_err(|_| Status::unavailable("the issuing worker has stopped"))?;
        let issued = rx
            .await
            .map_err(|_| Status::unavailable("the issuing worker has stopped"))??;
        Ok(Response::new(issued))
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
            .upstream
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
        let (record_bytes, rec) = self.upstream.provider().await?;
        let mut rev = workflow::new_revocation(
            binding.identity_digest(&self.upstream.record_id),
            now_ms(),
            reason,
        );
        for k in self.upstream.signing_keys(&rec, Authority::Deny).await? {
            let s = self
                .upstream
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
        self.upstream
            .verify(&record_bytes, std::slice::from_ref(&rev))
            .await?;
        self.upstream.commit(std::slice::from_ref(&rev), "").await?;
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
            .upstream
            .existing(std::slice::from_ref(&h))
            .await?
            .remove(&h)
            .ok_or_else(|| Status::not_found(format!("no binding for handle {h:?}")))?;
        Ok(Response::new(issued(
            &e,
            &self.upstream.record_id,
            String::new(),
        )))
    }

    async fn list_bindings(
        &self,
        req: Request<pb::ListBindingsRequest>,
    ) -> Result<Response<pb::ListBindingsResponse>, Status> {
        let r = req.into_inner();
        let page = self
            .upstream
            .store_read
            .clone()
            .list_bindings(pb::ListStoreBindingsRequest {
                record: self.upstream.record_ref(),
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
                    .map(|e| issued(&e, &self.upstream.record_id, String::new()))
                    .map_err(|e| Status::internal(format!("stored binding: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Response::new(pb::ListBindingsResponse {
            bindings,
            next_after,
        }))
    }

    async fn free_handle(
        &self,
        req: Request<pb::FreeHandleRequest>,
    ) -> Result<Response<pb::FreedHandle>, Status> {
        let handle = req.into_inner().handle;
        let freed = self
            .upstream
            .store_write
            .clone()
            .free_handle(pb::FreeStoreHandleRequest {
                record_id: pbhash(&self.upstream.record_id),
                handle,
            })
            .await?
            .into_inner()
            .freed;
        Ok(Response::new(pb::FreedHandle { freed }))
    }

    async fn get_provider(
        &self,
        _req: Request<pb::GetProviderRequest>,
    ) -> Result<Response<pb::ProviderInfo>, Status> {
        Ok(Response::new(pb::ProviderInfo {
            record_id: pbhash(&self.upstream.record_id),
        }))
    }

    async fn list_binding_requests(
        &self,
        req: Request<pb::ListBindingRequestsRequest>,
    ) -> Result<Response<pb::ListBindingRequestsResponse>, Status> {
        Ok(Response::new(self.list_requests(req.into_inner()).await?))
    }

    async fn decide_binding_request(
        &self,
        req: Request<pb::DecideBindingRequestRequest>,
    ) -> Result<Response<pb::BindingRequest>, Status> {
        Ok(Response::new(self.decide(req.into_inner()).await?))
    }

    async fn issue_certificate(
        &self,
        req: Request<pb::IssueCertificateRequest>,
    ) -> Result<Response<pb::SignedCertificate>, Status> {
        Ok(Response::new(
            self.upstream.issue_certificate(req.into_inner()).await?,
        ))
    }

    type BulkIssueStream = ReceiverStream<Result<pb::BulkIssueProgress, Status>>;

    async fn bulk_issue(
        &self,
        req: Request<Streaming<pb::IssueBindingRequest>>,
    ) -> Result<Response<Self::BulkIssueStream>, Status> {
        let inbound = req.into_inner();
        // A small queue: progress the client does not read holds the next
        // chunk back, and an unread request stream holds the client back
        // (HTTP/2 flow control), so memory stays bounded end to end.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(self.upstream.clone().bulk(inbound, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn issued(e: &SignedEntry, issuer: &Hash32, key: String) -> pb::IssuedBinding {
    pb::IssuedBinding {
        entry: e.to_bytes(),
        digest: pbhash(&e.identity_digest(issuer)),
        idempotency_key: key,
    }
}
