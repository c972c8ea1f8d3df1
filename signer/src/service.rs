//! The Signer gRPC service. Order of every signing call:
//!
//! 1. decode the request strictly (INVALID_ARGUMENT);
//! 2. re-validate it: the issuer's record verifies, the entry's body
//!    decodes for its zone and a binding names this issuer; a draft after
//!    genesis carries its chain, which verifies from genesis up to the
//!    authorizing revision ([`DraftRefused`], FAILED_PRECONDITION);
//! 3. policy: the key is held (NOT_FOUND) and may sign this object, as
//!    the standard decides it: an authorizing master key for a draft, a
//!    delegation key with grant (GRANT) or deny (REVOKE) weight for an
//!    entry, a CA key the issuer's Service Zone names for the host by
//!    `ca_key_idx` for a certificate (PERMISSION_DENIED; nothing is
//!    signed);
//! 4. sign in the key store, on a blocking thread (UNAVAILABLE when the
//!    HSM fails);
//! 5. write the audit row (UNAVAILABLE when it cannot be written: the
//!    signature is then withheld, never returned unaudited);
//! 6. answer with the signature.

use crate::audit::{SignatureAudit, SignatureAuditLog};
use crate::keystore::{KeyStore, KeyStoreError};
use poz::entries::EntryBody;
use poz::keys::{KeyId, SigType, Signature};
use poz::verify::{RecordRefused, VerifiedRecord, VerifiedRecordCache};
use poz::zone::{EntryKind, SignedEntry, ZoneType};
use poz::{Codec, Hash32, Record};
use poz_proto::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The Signer service over a key store, auditing into the audit log.
#[derive(Clone)]
pub struct SignerService {
    keys: Arc<dyn KeyStore>,
    audit: SignatureAuditLog,
    /// Issuer records already verified (by exact bytes): every entry a
    /// provider issues comes with the same record.
    issuers: Arc<VerifiedRecordCache>,
}

impl SignerService {
    pub fn new(keys: Arc<dyn KeyStore>, audit: SignatureAuditLog) -> Self {
        std::sync::LazyLock::force(&SIGNER);
        SignerService {
            keys,
            audit,
            issuers: Arc::new(VerifiedRecordCache::new(16)),
        }
    }

    /// Steps 3 to 6 for a digest the caller has validated: sign with the
    /// held key, audit, return the signature (with `key_idx`).
    async fn sign_and_audit(
        &self,
        key_id: KeyId,
        key_idx: u8,
        digest: Hash32,
        record_id: Hash32,
        zone_type: u8,
        what: &str,
    ) -> Result<pb::SignatureResponse, Status> {
        let mut out = self
            .sign_and_audit_many(key_id, &[(key_idx, digest)], record_id, zone_type, what)
            .await?;
        out.pop().ok_or_else(|| Status::internal("signature lost"))
    }

    /// Steps 3 to 6 for several digests: the group is split across the
    /// key store's sessions, signed, audited in one commit, answered in
    /// order. Nothing is returned unless every row is written.
    async fn sign_and_audit_many(
        &self,
        key_id: KeyId,
        targets: &[(u8, Hash32)],
        record_id: Hash32,
        zone_type: u8,
        what: &str,
    ) -> Result<Vec<pb::SignatureResponse>, Status> {
        let ways = self.keys.parallelism().clamp(1, targets.len().max(1));
        let per = targets.len().div_ceil(ways);
        let mut tasks = Vec::with_capacity(ways);
        for part in targets.chunks(per.max(1)) {
            let keys = self.keys.clone();
            let digests: Vec<Hash32> = part.iter().map(|(_, d)| *d).collect();
            tasks.push(tokio::task::spawn_blocking(move || {
                let t0 = std::time::Instant::now();
                let signed = keys.sign_many(&key_id, &digests);
                SIGNER.key_call.observe(t0.elapsed().as_secs_f64());
                signed
            }));
        }
        let mut sigs = Vec::with_capacity(targets.len());
        for t in tasks {
            sigs.extend(
                t.await
                    .map_err(|e| Status::internal(format!("signing task: {e}")))?
                    .map_err(|e| match e {
                        KeyStoreError::UnknownKey(_) => Status::not_found(e.to_string()),
                        _ => Status::unavailable(e.to_string()),
                    })?,
            );
        }
        let rows: Vec<SignatureAudit> = targets
            .iter()
            .zip(sigs)
            .map(|((key_idx, digest), sig)| SignatureAudit {
                key_id,
                record_id,
                zone_type,
                what: what.into(),
                digest: *digest,
                signature: Signature {
                    key_idx: *key_idx,
                    sig_type: SigType::ED25519,
                    data: sig.to_vec(),
                }
                .to_bytes(),
            })
            .collect();
        let ids = self.audit_before_release(&rows).await?;
        Ok(rows
            .into_iter()
            .zip(ids)
            .map(|(row, audit_id)| pb::SignatureResponse {
                signature: row.signature,
                audit_id,
            })
            .collect())
    }

    /// Step 5: the rows of signatures already made, in one commit; their
    /// IDs in order. UNAVAILABLE when they cannot be written: the caller
    /// then withholds the signatures.
    async fn audit_before_release(&self, rows: &[SignatureAudit]) -> Result<Vec<u64>, Status> {
        let ids = self.audit.append(rows).await.map_err(|e| {
            tracing::error!(error = %e, "audit log write failed; signatures withheld");
            SIGNER.withheld.inc_by(rows.len() as u64);
            Status::unavailable(format!("audit log unavailable, signature withheld: {e}"))
        })?;
        for r in rows {
            tracing::debug!(key_id = %r.key_id, record_id = %r.record_id, what = %r.what, "signed");
            SIGNER
                .signatures
                .get_or_create(&SignatureKind {
                    kind: r.what.clone(),
                })
                .inc();
        }
        Ok(ids)
    }

    fn held_key(&self, h: &Option<pb::Hash>) -> Result<KeyId, Status> {
        let id = hash_arg("key_id", h)?;
        if self.keys.held(&id).is_none() {
            return Err(Status::not_found(format!(
                "key {id} is not held by this signer"
            )));
        }
        Ok(id)
    }
}

/// Why a master-zone draft is refused before any key is asked to sign it
/// (SPEC §6: a revision after genesis is authorized by the master keys of
/// the revision before it, which only a chain from genesis establishes).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DraftRefused {
    /// A draft after genesis without its zone history: nothing says which
    /// master keys authorize it, and its own would vouch for themselves.
    #[error("draft serial {serial} carries no zone history: a revision after genesis is signed only with the chain that authorizes it, from genesis")]
    NoHistory { serial: u32 },
    /// A genesis draft (serial 1) that carries a history.
    #[error("a genesis draft (serial 1) carries a zone history of {revisions} revisions")]
    GenesisWithHistory { revisions: usize },
    /// The draft does not follow the last revision of its history.
    #[error("draft serial {serial} does not follow the history's last revision, serial {last}")]
    NotNext { serial: u32, last: u32 },
    /// The chain the draft extends fails a rule.
    #[error("the chain this draft extends does not verify: {0}")]
    ChainInvalid(String),
    /// The chain verifies but does not reach genesis.
    #[error("the chain this draft extends does not verify from genesis: {0}")]
    ChainIncomplete(String),
}

impl From<DraftRefused> for Status {
    fn from(e: DraftRefused) -> Self {
        Status::failed_precondition(e.to_string())
    }
}

/// Step 2 for a master-zone draft: a genesis draft stands alone; any later
/// draft carries a zone history that verifies from genesis and ends at the
/// revision right before it. CPU-bound (signature checks): run it on a
/// blocking thread.
pub fn check_draft_chain(draft: &Record) -> Result<(), DraftRefused> {
    let serial = draft.master.serial;
    if serial <= 1 {
        return match draft.history.len() {
            0 => Ok(()),
            revisions => Err(DraftRefused::GenesisWithHistory { revisions }),
        };
    }
    let Some(prev) = draft.history.last() else {
        return Err(DraftRefused::NoHistory { serial });
    };
    if prev.serial.checked_add(1) != Some(serial) {
        return Err(DraftRefused::NotNext {
            serial,
            last: prev.serial,
        });
    }
    let mut head = draft.clone();
    head.master = prev.clone();
    head.history.pop();
    head.zones.clear();
    head.authorities.clear();
    let report = poz::verify_record(&head);
    if let Some((rule, detail)) = report.failures().next() {
        return Err(DraftRefused::ChainInvalid(format!("{rule}: {detail}")));
    }
    if !report.is_complete() {
        let why: Vec<String> = report
            .checks
            .iter()
            .filter_map(|c| match &c.outcome {
                poz::verify::Outcome::NotChecked(why) => Some(format!("{}: {why}", c.rule)),
                _ => None,
            })
            .collect();
        return Err(DraftRefused::ChainIncomplete(why.join("; ")));
    }
    Ok(())
}

/// This host's clock, ms since the epoch (0 if it is before 1970).
/// Labels of `poz_signer_signatures_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct SignatureKind {
    /// `master-draft`, `entry`, `batch-root`, `ca-certificate` or
    /// `certificate`.
    kind: String,
}

/// The signer's Prometheus metrics (docs/OPERATIONS.md).
struct SignerMetrics {
    signatures: prometheus_client::metrics::family::Family<
        SignatureKind,
        prometheus_client::metrics::counter::Counter,
    >,
    withheld: prometheus_client::metrics::counter::Counter,
    key_call: prometheus_client::metrics::histogram::Histogram,
}

static SIGNER: std::sync::LazyLock<SignerMetrics> = std::sync::LazyLock::new(|| {
    use poz_kit::metrics::{latency_buckets, register};
    let m = SignerMetrics {
        signatures: Default::default(),
        withheld: Default::default(),
        key_call: prometheus_client::metrics::histogram::Histogram::new(latency_buckets()),
    };
    register(
        "poz_signer_signatures",
        "Signatures released (each audited first), by kind",
        None,
        m.signatures.clone(),
    );
    register(
        "poz_signer_withheld_signatures",
        "Signatures made but withheld because their audit rows could not be written",
        None,
        m.withheld.clone(),
    );
    register(
        "poz_signer_key_call_duration",
        "One call into the key store (an HSM session or the software keys) signing a run of digests",
        Some(prometheus_client::registry::Unit::Seconds),
        m.key_call.clone(),
    );
    m
});

fn clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn hash_arg(field: &str, h: &Option<pb::Hash>) -> Result<Hash32, Status> {
    let v = h
        .as_ref()
        .ok_or_else(|| Status::invalid_argument(format!("{field} is missing")))?;
    <[u8; 32]>::try_from(v.value.as_slice())
        .map(Hash32)
        .map_err(|_| Status::invalid_argument(format!("{field} is not 32 bytes")))
}

fn decode_record(field: &str, b: &[u8]) -> Result<Record, Status> {
    Record::from_bytes(b).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

/// Policy refusals are PERMISSION_DENIED; anything else about the
/// object's state is FAILED_PRECONDITION.
fn policy_status(e: poz::Error) -> Status {
    match e {
        poz::Error::NotAuthorizingKey { .. } | poz::Error::NotDelegated { .. } => {
            Status::permission_denied(e.to_string())
        }
        _ => Status::failed_precondition(e.to_string()),
    }
}

/// The longest certificate validity SignCertificate grants, days (the
/// same bound as `pozctl cert issue`, SPEC §21).
pub const MAX_CERTIFICATE_DAYS: u32 = 825;

/// A held key as POZ-as-CA's signer: PureEd25519 over the TBSCertificate
/// the service built, each signed message's SHA3-256 and signature kept
/// for the audit rows.
struct CertificateKey {
    keys: Arc<dyn KeyStore>,
    key_id: KeyId,
    public: poz::keys::PublicKey,
    signed: Arc<std::sync::Mutex<Vec<SignedMessage>>>,
}

/// A signed TBSCertificate's SHA3-256 and its signature.
type SignedMessage = (Hash32, [u8; 64]);

impl poz_client::ca::RemoteCaKey for CertificateKey {
    fn public(&self) -> &poz::keys::PublicKey {
        &self.public
    }

    fn sign(&self, message: &[u8]) -> Result<[u8; 64], String> {
        let t0 = std::time::Instant::now();
        let sig = self
            .keys
            .sign_message(&self.key_id, message)
            .map_err(|e| e.to_string())?;
        SIGNER.key_call.observe(t0.elapsed().as_secs_f64());
        let digest = tagless_sha3(message);
        self.signed
            .lock()
            .map_err(|_| "signature list poisoned".to_string())?
            .push((digest, sig));
        Ok(sig)
    }
}

/// SHA3-256 of `bytes` with no POZ tag: the audit digest of a
/// certificate signature (X.509 signs the TBSCertificate itself).
fn tagless_sha3(bytes: &[u8]) -> Hash32 {
    use sha3::Digest;
    Hash32(sha3::Sha3_256::digest(bytes).into())
}

/// The issuer's record, verified (or found verified in `issuers`).
/// INVALID_ARGUMENT: it does not decode; FAILED_PRECONDITION: it does not
/// verify.
async fn verified_issuer(
    issuers: &Arc<VerifiedRecordCache>,
    issuer_record: &[u8],
) -> Result<Arc<VerifiedRecord>, Status> {
    if let Some(hit) = issuers.get(issuer_record) {
        return Ok(hit);
    }
    let (cache, bytes) = (issuers.clone(), issuer_record.to_vec());
    tokio::task::spawn_blocking(move || cache.accept(&bytes))
        .await
        .map_err(|e| Status::internal(format!("verification task: {e}")))?
        .map_err(|e| match e {
            RecordRefused::Decode(e) => Status::invalid_argument(format!("issuer_record: {e}")),
            RecordRefused::Invalid(rep) => {
                let f: Vec<String> = rep.failures().map(|(r, d)| format!("{r}: {d}")).collect();
                Status::failed_precondition(format!(
                    "issuer_record does not verify: {}",
                    f.join("; ")
                ))
            }
        })
}

/// Step 1 and 2 for entries: the zone is known, the issuer's record
/// decodes and verifies, every entry decodes for the zone, and a binding
/// names this issuer.
async fn validated_entries(
    issuers: &Arc<VerifiedRecordCache>,
    zone_type: u32,
    issuer_record: &[u8],
    entries: &[Vec<u8>],
) -> Result<(ZoneType, Arc<VerifiedRecord>, Vec<SignedEntry>), Status> {
    let zone = u8::try_from(zone_type)
        .ok()
        .map(ZoneType)
        .filter(|z| z.is_known())
        .ok_or_else(|| Status::invalid_argument(format!("zone_type {zone_type} is not 1..=5")))?;
    let mut decoded = Vec::with_capacity(entries.len());
    let mut bindings = Vec::new();
    for (i, b) in entries.iter().enumerate() {
        let e = SignedEntry::from_bytes(b)
            .map_err(|e| Status::invalid_argument(format!("entries[{i}]: {e}")))?;
        match EntryBody::decode(zone, e.kind, &e.body)
            .map_err(|e| Status::invalid_argument(format!("entries[{i}] body: {e}")))?
        {
            EntryBody::Binding(b) => bindings.push((i, b.issuer)),
            _ if zone == ZoneType::IDENTITY && e.kind == EntryKind::GRANT => {
                return Err(Status::invalid_argument(format!(
                    "entries[{i}]: an identity GRANT must be a binding"
                )))
            }
            _ => {}
        }
        decoded.push(e);
    }
    // Nothing stamped beyond the clock skew is signed (SPEC §6.7): the
    // store would refuse it anyway, and a signature must not outlive that.
    poz::verify::check_entry_times(zone, &decoded, clock_ms())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let issuer = verified_issuer(issuers, issuer_record).await?;
    if let Some((i, other)) = bindings.iter().find(|(_, b)| *b != issuer.id) {
        return Err(Status::failed_precondition(format!(
            "entries[{i}]: the binding names issuer {other}, not this record {}",
            issuer.id
        )));
    }
    Ok((zone, issuer, decoded))
}

#[tonic::async_trait]
impl pb::signer_server::Signer for SignerService {
    async fn list_keys(
        &self,
        _req: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        Ok(Response::new(pb::ListKeysResponse {
            keys: self
                .keys
                .keys()
                .iter()
                .map(|k| pb::HeldKey {
                    key_id: Some(pb::Hash {
                        value: k.public.id().0.to_vec(),
                    }),
                    public_key: k.public.bytes().to_vec(),
                    label: k.label.clone(),
                })
                .collect(),
        }))
    }

    async fn sign_master_draft(
        &self,
        req: Request<pb::SignMasterDraftRequest>,
    ) -> Result<Response<pb::SignatureResponse>, Status> {
        let r = req.into_inner();
        let key_id = self.held_key(&r.key_id)?;
        let draft = decode_record("draft", &r.draft)?;
        poz::verify::check_times(&draft, clock_ms())
            .map_err(|e| Status::invalid_argument(format!("draft: {e}")))?;
        // The chain the draft extends verifies from genesis up to its
        // last revision: only that says which master keys authorize it.
        let checked = draft.clone();
        tokio::task::spawn_blocking(move || check_draft_chain(&checked))
            .await
            .map_err(|e| Status::internal(format!("verification task: {e}")))??;
        let (idx, digest) =
            poz::workflow::draft_signing_target(&draft, &key_id).map_err(policy_status)?;
        let out = self
            .sign_and_audit(key_id, idx, digest, draft.id(), 0, "master-draft")
            .await?;
        Ok(Response::new(out))
    }

    async fn sign_entry(
        &self,
        req: Request<pb::SignEntryRequest>,
    ) -> Result<Response<pb::SignatureResponse>, Status> {
        let r = req.into_inner();
        let key_id = self.held_key(&r.key_id)?;
        let (zone, issuer, mut entries) = validated_entries(
            &self.issuers,
            r.zone_type,
            &r.issuer_record,
            std::slice::from_ref(&r.entry),
        )
        .await?;
        let entry = entries
            .pop()
            .ok_or_else(|| Status::internal("entry lost"))?;
        let (idx, digest) =
            poz::workflow::entry_signing_target(&issuer.record, zone, &entry, &key_id)
                .map_err(policy_status)?;
        let out = self
            .sign_and_audit(key_id, idx, digest, issuer.id, zone.0, "entry")
            .await?;
        Ok(Response::new(out))
    }

    async fn sign_entries(
        &self,
        req: Request<pb::SignEntriesRequest>,
    ) -> Result<Response<pb::SignaturesResponse>, Status> {
        let r = req.into_inner();
        let key_id = self.held_key(&r.key_id)?;
        if r.entries.is_empty() {
            return Err(Status::invalid_argument("no entries to sign"));
        }
        let (zone, issuer, entries) =
            validated_entries(&self.issuers, r.zone_type, &r.issuer_record, &r.entries).await?;
        // The policy holds for every entry, or nothing is signed.
        let targets = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                poz::workflow::entry_signing_target(&issuer.record, zone, e, &key_id).map_err(
                    |err| {
                        let s = policy_status(err);
                        Status::new(s.code(), format!("entries[{i}]: {}", s.message()))
                    },
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let signatures = self
            .sign_and_audit_many(key_id, &targets, issuer.id, zone.0, "entry")
            .await?;
        Ok(Response::new(pb::SignaturesResponse { signatures }))
    }

    async fn sign_batch_root(
        &self,
        req: Request<pb::SignBatchRootRequest>,
    ) -> Result<Response<pb::SignatureResponse>, Status> {
        let r = req.into_inner();
        let key_id = self.held_key(&r.key_id)?;
        if r.entries.is_empty() {
            return Err(Status::invalid_argument("a batch needs at least one entry"));
        }
        let (zone, issuer, entries) =
            validated_entries(&self.issuers, r.zone_type, &r.issuer_record, &r.entries).await?;
        // The policy holds for every entry, or nothing is signed.
        let target = tokio::task::spawn_blocking(move || {
            poz::workflow::batch_signing_target(&issuer.record, zone, &entries, &key_id)
                .map(|(idx, tree, root)| (idx, tree.size(), root, issuer.id))
        })
        .await
        .map_err(|e| Status::internal(format!("batch task: {e}")))?;
        let (idx, size, root, id) = target.map_err(policy_status)?;
        tracing::debug!(size, "batch root");
        let out = self
            .sign_and_audit(key_id, idx, root, id, zone.0, "batch-root")
            .await?;
        Ok(Response::new(out))
    }

    async fn sign_certificate(
        &self,
        req: Request<pb::SignCertificateRequest>,
    ) -> Result<Response<pb::SignedCertificate>, Status> {
        let r = req.into_inner();
        let key_id = self.held_key(&r.key_id)?;
        if !(1..=MAX_CERTIFICATE_DAYS).contains(&r.days) {
            return Err(Status::invalid_argument(format!(
                "days {} is not 1..={MAX_CERTIFICATE_DAYS}",
                r.days
            )));
        }
        // Normalized once, here; every later step compares this name.
        let host = poz::ca::normalize_host(&r.host);
        if !poz::ca::is_dns_host(&host) {
            return Err(Status::invalid_argument(format!(
                "host {:?} is not a DNS host name a certificate can carry (SPEC §21)",
                r.host
            )));
        }
        let issuer = verified_issuer(&self.issuers, &r.issuer_record).await?;
        // Policy (SPEC §21): the issuer's Service Zone names this key for
        // this host by ca_key_idx.
        let named = poz::ca::ca_keys_for_host(&issuer, &host);
        let Some(ca) = named.iter().find(|k| k.key.id() == key_id) else {
            let idx: Vec<String> = named.iter().map(|k| k.key_idx.to_string()).collect();
            return Err(Status::permission_denied(if idx.is_empty() {
                format!("the issuer's Service Zone names no CA key for host {host:?}")
            } else {
                format!(
                    "the issuer's Service Zone names key index(es) {} for host {host:?}, not key {key_id}",
                    idx.join(", ")
                )
            }));
        };
        let (key_idx, public) = (ca.key_idx, ca.key.clone());
        let signed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let key = CertificateKey {
            keys: self.keys.clone(),
            key_id,
            public,
            signed: signed.clone(),
        };
        let (spki, days) = (r.subject_public_key_info, u64::from(r.days));
        let made = tokio::task::spawn_blocking(move || {
            // Five minutes back for clocks a little behind (as pozctl).
            let now = std::time::SystemTime::now();
            let not_before = now - std::time::Duration::from_secs(300);
            let not_after = now + std::time::Duration::from_secs(days * 86_400);
            let mut serial = [0u8; 16];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut serial);
            poz_client::ca::sign_host_cert(
                Box::new(key),
                &host,
                not_before,
                not_after,
                &spki,
                serial,
            )
        })
        .await
        .map_err(|e| Status::internal(format!("certificate task: {e}")))?;
        use poz_client::ca::IssueError;
        let made = made.map_err(|e| match e {
            IssueError::HostName(_) | IssueError::SubjectKey(_) | IssueError::Validity => {
                Status::invalid_argument(e.to_string())
            }
            IssueError::Sign(_) => Status::unavailable(e.to_string()),
            IssueError::Generate(_) => Status::internal(e.to_string()),
        })?;
        let signed = std::mem::take(
            &mut *signed
                .lock()
                .map_err(|_| Status::internal("signature list poisoned"))?,
        );
        // The issuer certificate is signed first, then the host's.
        if signed.len() != 2 {
            return Err(Status::internal(format!(
                "expected 2 certificate signatures, made {}",
                signed.len()
            )));
        }
        let rows: Vec<SignatureAudit> = signed
            .iter()
            .zip(["ca-certificate", "certificate"])
            .map(|((digest, sig), what)| SignatureAudit {
                key_id,
                record_id: issuer.id,
                zone_type: ZoneType::SERVICE.0,
                what: what.into(),
                digest: *digest,
                signature: Signature {
                    key_idx,
                    sig_type: SigType::ED25519,
                    data: sig.to_vec(),
                }
                .to_bytes(),
            })
            .collect();
        let ids = self.audit_before_release(&rows).await?;
        Ok(Response::new(pb::SignedCertificate {
            certificate: made.cert_der,
            issuer_certificate: made.issuer_der,
            audit_id: ids.last().copied().unwrap_or_default(),
            key_idx: u32::from(key_idx),
        }))
    }
}
