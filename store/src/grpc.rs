//! The store's gRPC services (poz.v1.StoreRead, poz.v1.StoreWrite).
//!
//! Status mapping (documented in proto/poz/v1/store.proto):
//! NotFound → NOT_FOUND; Invalid → INVALID_ARGUMENT; Conflict (the head
//! moved) → ABORTED; Fork → ALREADY_EXISTS; an idempotency key reused for
//! another request → FAILED_PRECONDITION; database errors → UNAVAILABLE;
//! a handle rule (SPEC §8.4) → INVALID_ARGUMENT for the handle's own
//! characters, ALREADY_EXISTS for `binding-unique`, `handle-confusable`
//! and `handle-reserved` (the message begins with the rule's name); a time
//! ≥ 2^63 → OUT_OF_RANGE; too many pending binding requests →
//! RESOURCE_EXHAUSTED; a read no replica could serve at the read mark
//! (replica_fallback = "unavailable") → UNAVAILABLE with
//! `grpc-retry-pushback-ms`.

use crate::{ReadSource, Store, StoreError};
use poz::codec::Codec;
use poz::zone::ZoneType;
use poz::Hash32;
use poz_proto::v1 as pb;
use tonic::{Request, Response, Status};

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Status {
        match e {
            StoreError::NotFound(m) => Status::not_found(m),
            StoreError::Invalid(m) => Status::invalid_argument(m),
            e @ StoreError::Conflict { .. } => Status::aborted(e.to_string()),
            e @ StoreError::Fork { .. } => Status::already_exists(e.to_string()),
            e @ StoreError::IdempotencyMismatch(_) => Status::failed_precondition(e.to_string()),
            StoreError::Database(e) => {
                tracing::error!(%e, "database");
                Status::unavailable(format!("database: {e}"))
            }
            StoreError::Migration(e) => Status::internal(format!("migration: {e}")),
            // The message begins with the rule's name (SPEC §8.4).
            StoreError::Handle(r) if r.rule.is_about_the_handle() => {
                Status::invalid_argument(r.to_string())
            }
            StoreError::Handle(r) => Status::already_exists(r.to_string()),
            e @ StoreError::TimeOutOfRange { .. } => Status::out_of_range(e.to_string()),
            e @ StoreError::TooManyPending { .. } => Status::resource_exhausted(e.to_string()),
            StoreError::ReplicasBehind { mark, retry_after } => {
                let mut s = Status::unavailable(
                    StoreError::ReplicasBehind { mark, retry_after }.to_string(),
                );
                let ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX);
                s.metadata_mut()
                    .insert(RETRY_PUSHBACK, tonic::metadata::MetadataValue::from(ms));
                s
            }
        }
    }
}

/// Candidates per CheckHandles call: two bulk chunks of the largest size
/// (16,384, the Provider API's in-flight chunk and the next) with room.
pub const MAX_CANDIDATES: usize = 40_000;

/// Lookups per LookupBindings call.
pub const MAX_LOOKUPS: usize = 1_024;

fn hash_arg(field: &str, h: &Option<pb::Hash>) -> Result<Hash32, Status> {
    let v = h.as_ref().map(|h| h.value.as_slice()).unwrap_or_default();
    <[u8; 32]>::try_from(v).map(Hash32).map_err(|_| {
        Status::invalid_argument(format!("{field}: a hash is 32 bytes, got {}", v.len()))
    })
}

/// A 32-byte cursor or digest; empty is zero (from the start).
fn cursor_arg(field: &str, b: &[u8]) -> Result<Hash32, Status> {
    if b.is_empty() {
        return Ok(Hash32::ZERO);
    }
    <[u8; 32]>::try_from(b)
        .map(Hash32)
        .map_err(|_| Status::invalid_argument(format!("{field}: 32 bytes or empty")))
}

/// A page size of 1..=`max`.
fn limit_arg(limit: u32, max: u16) -> Result<u16, Status> {
    u16::try_from(limit)
        .ok()
        .filter(|l| (1..=max).contains(l))
        .ok_or_else(|| Status::invalid_argument(format!("limit: 1..={max}")))
}

fn zone_arg(z: u32) -> Result<ZoneType, Status> {
    u8::try_from(z)
        .ok()
        .map(ZoneType)
        .filter(|z| z.is_known())
        .ok_or_else(|| Status::invalid_argument(format!("zone_type {z} is not 1..=5")))
}

fn pbhash(h: &Hash32) -> pb::Hash {
    pb::Hash {
        value: h.0.to_vec(),
    }
}

/// `poz.v1.StoreRead` over a store: the lookups gateways and the
/// Provider API make. Its own type (not shared with [`StoreWriter`]) so
/// that each service can admit its own callers.
#[derive(Clone, Debug)]
pub struct StoreReader {
    pub store: Store,
}

/// `poz.v1.StoreWrite` over a store: what only its writers (the submit
/// gateway, the Provider API, operators' tools) may call.
#[derive(Clone, Debug)]
pub struct StoreWriter {
    pub store: Store,
}

/// The record a request names, by domain or by ID.
async fn record_ref(store: &Store, r: &Option<pb::RecordRef>) -> Result<Hash32, Status> {
    match r.as_ref().and_then(|r| r.by.as_ref()) {
        Some(pb::record_ref::By::Domain(d)) => Ok(store.resolve(d).await?),
        Some(pb::record_ref::By::RecordId(h)) => hash_arg("record.record_id", &Some(h.clone())),
        None => Err(Status::invalid_argument(
            "record: give a domain or a record_id",
        )),
    }
}

/// Request metadata: a read mark (decimal WAL position) the caller got
/// from an earlier answer, perhaps of another store process; the read is
/// served from a source at least that new (replicas.rs).
pub const READ_AFTER: &str = "poz-read-after";

/// Response metadata (on answers and on errors): the store's read mark
/// after this read, for the caller to send back as [`READ_AFTER`]. Only
/// when the store reads from replicas.
pub const READ_MARK: &str = "poz-read-lsn";

/// Error metadata on a read refused because no replica had caught up
/// (`replica_fallback = "unavailable"`): milliseconds to wait before a
/// retry, the name gRPC's retry policy reads.
pub const RETRY_PUSHBACK: &str = "grpc-retry-pushback-ms";

impl StoreReader {
    /// Runs one read on the source the read mark allows (replicas.rs):
    /// `f` gets the store to read through. A replica that fails the read
    /// with a database error (UNAVAILABLE) is marked down and the read
    /// runs once more on the fallback. The answer (or error) carries the
    /// read mark as [`READ_MARK`].
    async fn read<T, F, Fut>(
        &self,
        meta: &tonic::metadata::MetadataMap,
        f: F,
    ) -> Result<Response<T>, Status>
    where
        F: Fn(Store) -> Fut,
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        if !self.store.has_replicas() {
            return f(self.store.clone()).await.map(Response::new);
        }
        let after = match meta.get(READ_AFTER) {
            None => 0,
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    Status::invalid_argument(format!("{READ_AFTER}: a decimal WAL position"))
                })?,
        };
        let (store, mut source) = self.store.read_source(after).await?;
        let mut answer = f(store).await;
        if matches!(source, ReadSource::Replica(_))
            && matches!(&answer, Err(e) if e.code() == tonic::Code::Unavailable)
        {
            self.store.replica_failed(source);
            let (store, again) = self.store.retry_source()?;
            source = again;
            answer = f(store).await;
        }
        let mark = self.store.read_done(source).await?;
        let value = tonic::metadata::MetadataValue::from(mark);
        match answer {
            Ok(a) => {
                let mut resp = Response::new(a);
                resp.metadata_mut().insert(READ_MARK, value);
                Ok(resp)
            }
            Err(mut e) => {
                e.metadata_mut().insert(READ_MARK, value);
                Err(e)
            }
        }
    }
}

#[tonic::async_trait]
impl pb::store_read_server::StoreRead for StoreReader {
    async fn check_handles(
        &self,
        req: Request<pb::CheckHandlesRequest>,
    ) -> Result<Response<pb::CheckHandlesResponse>, Status> {
        let r = req.get_ref();
        if r.candidates.len() > MAX_CANDIDATES {
            return Err(Status::invalid_argument(format!(
                "candidates: at most {MAX_CANDIDATES} per call"
            )));
        }
        let candidates = r
            .candidates
            .iter()
            .enumerate()
            .map(|(i, c)| {
                hash_arg(&format!("candidates[{i}].subject"), &c.subject)
                    .map(|s| (c.handle.clone(), s))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let candidates = &candidates;
        self.read(req.metadata(), |store| async move {
            let id = record_ref(&store, &r.record).await?;
            let verdicts = store.check_handles(&id, candidates).await?;
            Ok(pb::CheckHandlesResponse {
                verdicts: verdicts
                    .into_iter()
                    .map(|v| match v {
                        Ok(()) => pb::HandleVerdict::default(),
                        Err(e) => pb::HandleVerdict {
                            rule: e.rule.name().to_string(),
                            message: e.to_string(),
                        },
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn get_master(
        &self,
        req: Request<pb::GetMasterRequest>,
    ) -> Result<Response<pb::GetMasterResponse>, Status> {
        let r = req.get_ref();
        self.read(req.metadata(), |store| async move {
            let id = record_ref(&store, &r.record).await?;
            // The serial from the record read, not a second read of the
            // head: a revision landing in between would pair this record
            // with the next serial.
            let record = store.master_record(&id).await?;
            Ok(pb::GetMasterResponse {
                serial: record.master.serial,
                record: record.to_bytes(),
            })
        })
        .await
    }

    async fn get_head(
        &self,
        req: Request<pb::GetHeadRequest>,
    ) -> Result<Response<pb::GetHeadResponse>, Status> {
        let r = req.get_ref();
        self.read(req.metadata(), |store| async move {
            let id = record_ref(&store, &r.record).await?;
            let (serial, h, ts) = store.head(&id).await?;
            Ok(pb::GetHeadResponse {
                record_id: Some(pbhash(&id)),
                serial,
                master_hash: Some(pbhash(&h)),
                timestamp: ts,
            })
        })
        .await
    }

    async fn get_binding(
        &self,
        req: Request<pb::GetBindingRequest>,
    ) -> Result<Response<pb::GetBindingResponse>, Status> {
        let r = req.get_ref();
        self.read(req.metadata(), |store| async move {
            Ok(match r.record.as_ref().and_then(|x| x.by.as_ref()) {
                Some(pb::record_ref::By::Domain(d)) => {
                    let b = store.binding_by_domain(d, &r.handle).await?;
                    pb::GetBindingResponse {
                        binding: b.entry,
                        revocation: b.revocation,
                    }
                }
                _ => {
                    let id = record_ref(&store, &r.record).await?;
                    let (b, rev) = store.binding(&id, &r.handle).await?;
                    pb::GetBindingResponse {
                        binding: b.to_bytes(),
                        revocation: rev.map(|r| r.to_bytes()),
                    }
                }
            })
        })
        .await
    }

    async fn lookup_bindings(
        &self,
        req: Request<pb::LookupBindingsRequest>,
    ) -> Result<Response<pb::LookupBindingsResponse>, Status> {
        let lookups = &req.get_ref().lookups;
        if lookups.is_empty() || lookups.len() > MAX_LOOKUPS {
            return Err(Status::invalid_argument(format!(
                "lookups: 1..={MAX_LOOKUPS} per call, got {}",
                lookups.len()
            )));
        }
        let asks: Vec<(String, String)> = lookups
            .iter()
            .map(|l| (l.domain.clone(), l.handle.clone()))
            .collect();
        let asks = &asks;
        self.read(req.metadata(), |store| async move {
            let mut results = Vec::with_capacity(asks.len());
            for answer in store.lookup_bindings(asks).await? {
                results.push(pb::BindingLookupResult {
                    outcome: Some(match answer {
                        // The stored bytes as written: no decode here,
                        // none at the gateway (SPEC §14.4).
                        Ok(b) => {
                            pb::binding_lookup_result::Outcome::Found(pb::GetBindingResponse {
                                binding: b.entry,
                                revocation: b.revocation,
                            })
                        }
                        Err(StoreError::NotFound(why)) => {
                            pb::binding_lookup_result::Outcome::NotFound(why)
                        }
                        Err(e) => return Err(e.into()),
                    }),
                });
            }
            Ok(pb::LookupBindingsResponse { results })
        })
        .await
    }

    async fn get_bindings(
        &self,
        req: Request<pb::GetBindingsRequest>,
    ) -> Result<Response<pb::GetBindingsResponse>, Status> {
        let r = req.get_ref();
        if r.handles.len() > 10_000 {
            return Err(Status::invalid_argument("handles: at most 10,000 per call"));
        }
        self.read(req.metadata(), |store| async move {
            let id = record_ref(&store, &r.record).await?;
            let found = store.bindings_for_handles(&id, &r.handles).await?;
            Ok(pb::GetBindingsResponse {
                bindings: handle_bindings(found),
            })
        })
        .await
    }

    async fn list_bindings(
        &self,
        req: Request<pb::ListStoreBindingsRequest>,
    ) -> Result<Response<pb::ListStoreBindingsResponse>, Status> {
        let r = req.get_ref();
        if !(1..=1000).contains(&r.limit) {
            return Err(Status::invalid_argument("limit: 1..=1000"));
        }
        self.read(req.metadata(), |store| async move {
            let id = record_ref(&store, &r.record).await?;
            let page = store.list_bindings(&id, &r.after_handle, r.limit).await?;
            Ok(pb::ListStoreBindingsResponse {
                bindings: handle_bindings(page),
            })
        })
        .await
    }

    async fn get_chain(
        &self,
        req: Request<pb::GetBindingRequest>,
    ) -> Result<Response<pb::GetChainResponse>, Status> {
        let r = req.get_ref();
        self.read(req.metadata(), |store| async move {
            let id = record_ref(&store, &r.record).await?;
            let chain = store.chain(&id, &r.handle).await?;
            Ok(pb::GetChainResponse { chain })
        })
        .await
    }

    async fn list_zone(
        &self,
        req: Request<pb::ListZoneRequest>,
    ) -> Result<Response<pb::ListZoneResponse>, Status> {
        let r = req.get_ref();
        let zone = zone_arg(r.zone_type)?;
        let after = cursor_arg("after", &r.after)?;
        let limit = limit_arg(r.limit, poz::wire::MAX_ZONE_PAGE)?;
        let root = if r.batch_root.is_empty() {
            None
        } else {
            Some(cursor_arg("batch_root", &r.batch_root)?)
        };
        self.read(req.metadata(), |store| async move {
            let id = record_ref(&store, &r.record).await?;
            let (entries, next) = match root {
                None => {
                    let page = store.zone_page(&id, zone, &after, limit).await?;
                    if page.0.is_empty() && after.is_zero() {
                        return Err(Status::not_found(format!("record {id} has no {zone} zone")));
                    }
                    page
                }
                Some(root) => {
                    // A batch the log does not hold is NOT_FOUND, whatever
                    // the cursor: an auditor must tell "no such batch" from
                    // "no more".
                    if !store.has_batch(&id, zone, &root).await? {
                        return Err(Status::not_found(format!(
                            "record {id} has no {zone} batch {root}"
                        )));
                    }
                    store.batch_page(&id, zone, &root, &after, limit).await?
                }
            };
            Ok(pb::ListZoneResponse {
                entries,
                next: next.map(|d| d.0.to_vec()).unwrap_or_default(),
            })
        })
        .await
    }

    async fn list_batches(
        &self,
        req: Request<pb::ListBatchesRequest>,
    ) -> Result<Response<pb::ListBatchesResponse>, Status> {
        let r = req.get_ref();
        let zone = zone_arg(r.zone_type)?;
        let limit = limit_arg(r.limit, poz::audit::MAX_BATCH_PAGE)?;
        self.read(req.metadata(), |store| async move {
            let id = record_ref(&store, &r.record).await?;
            let (page, more) = store.batch_log(&id, zone, r.after, limit).await?;
            let next = if more {
                page.last().map_or(0, |b| b.0)
            } else {
                0
            };
            Ok(pb::ListBatchesResponse {
                batches: page
                    .into_iter()
                    .map(|(seq, root, stored_ms)| pb::BatchRow {
                        seq,
                        root_digest: root.0.to_vec(),
                        stored_ms,
                    })
                    .collect(),
                next,
            })
        })
        .await
    }

    async fn list_handle_bindings(
        &self,
        req: Request<pb::ListHandleBindingsRequest>,
    ) -> Result<Response<pb::ListHandleBindingsResponse>, Status> {
        let r = req.get_ref();
        let after = cursor_arg("after", &r.after)?;
        let limit = limit_arg(r.limit, poz::audit::MAX_HISTORY_PAGE)?;
        self.read(req.metadata(), |store| async move {
            let id = record_ref(&store, &r.record).await?;
            let (items, next) = store.handle_bindings(&id, &r.handle, &after, limit).await?;
            if items.is_empty() && after.is_zero() {
                return Err(Status::not_found(format!(
                    "no binding for handle {:?}",
                    r.handle
                )));
            }
            Ok(pb::ListHandleBindingsResponse {
                bindings: items
                    .into_iter()
                    .map(|(binding, revocation)| pb::GetBindingResponse {
                        binding,
                        revocation,
                    })
                    .collect(),
                next: next.map(|d| d.0.to_vec()).unwrap_or_default(),
            })
        })
        .await
    }

    async fn get_mirrors(
        &self,
        req: Request<pb::GetMirrorsRequest>,
    ) -> Result<Response<pb::GetMirrorsResponse>, Status> {
        // Nothing else of the record is read, so MIRRORS stays cheap for
        // any record size.
        let r = req.get_ref();
        self.read(req.metadata(), |store| async move {
            let id = record_ref(&store, &r.record).await?;
            let hosts = store.mirrors(&id).await?;
            Ok(pb::GetMirrorsResponse { hosts })
        })
        .await
    }

    async fn get_history(
        &self,
        req: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        let r = req.get_ref();
        self.read(req.metadata(), |store| async move {
            let id = record_ref(&store, &r.record).await?;
            let h = store.history(&id, r.from_serial.max(1)).await?;
            Ok(pb::GetHistoryResponse {
                revisions: h.iter().map(|m| m.to_bytes()).collect(),
            })
        })
        .await
    }

    async fn get_submission(
        &self,
        req: Request<pb::GetSubmissionRequest>,
    ) -> Result<Response<pb::Submission>, Status> {
        let id = submission_id_arg(&req.get_ref().submission_id)?;
        self.read(req.metadata(), |store| async move {
            Ok(to_pb_submission(store.submission(&id).await?))
        })
        .await
    }

    async fn list_submissions(
        &self,
        req: Request<pb::ListSubmissionsRequest>,
    ) -> Result<Response<pb::ListSubmissionsResponse>, Status> {
        let r = req.get_ref();
        let after = if r.after.is_empty() {
            None
        } else {
            Some(submission_id_arg(&r.after)?)
        };
        self.read(req.metadata(), |store| async move {
            let page = store.pending_submissions(after, r.limit).await?;
            let created_ms = page.iter().map(|(_, c)| *c).collect();
            Ok(pb::ListSubmissionsResponse {
                submissions: page.into_iter().map(|(s, _)| to_pb_submission(s)).collect(),
                created_ms,
            })
        })
        .await
    }
}

impl StoreWriter {
    /// After a committed write: raises the read mark past it, so that
    /// reads through this store (from replicas) see it. A failure to read
    /// the primary's position is logged; the write stands.
    async fn wrote(&self) {
        if let Err(e) = self.store.wrote().await {
            tracing::warn!(error = %e, "reading the primary's WAL position after a write");
        }
    }
}

#[tonic::async_trait]
impl pb::store_write_server::StoreWrite for StoreWriter {
    async fn free_handle(
        &self,
        req: Request<pb::FreeStoreHandleRequest>,
    ) -> Result<Response<pb::FreeHandleResponse>, Status> {
        let r = req.into_inner();
        let id = hash_arg("record_id", &r.record_id)?;
        let freed = self.store.free_handle(&id, &r.handle).await?;
        self.wrote().await;
        Ok(Response::new(pb::FreeHandleResponse { freed }))
    }

    async fn create_record(
        &self,
        req: Request<pb::CreateRecordRequest>,
    ) -> Result<Response<pb::CreateRecordResponse>, Status> {
        let r = req.into_inner();
        let id = self
            .store
            .create_record(&r.record, &r.domains, &r.idempotency_key)
            .await?;
        self.wrote().await;
        Ok(Response::new(pb::CreateRecordResponse {
            record_id: Some(pbhash(&id)),
        }))
    }

    async fn advance_head(
        &self,
        req: Request<pb::AdvanceHeadRequest>,
    ) -> Result<Response<pb::AdvanceHeadResponse>, Status> {
        let r = req.into_inner();
        let (serial, h) = self
            .store
            .advance_head(&r.record, r.expected_serial, &r.idempotency_key)
            .await?;
        self.wrote().await;
        Ok(Response::new(pb::AdvanceHeadResponse {
            serial,
            master_hash: Some(pbhash(&h)),
        }))
    }

    async fn put_entries(
        &self,
        req: Request<pb::PutEntriesRequest>,
    ) -> Result<Response<pb::PutEntriesResponse>, Status> {
        let r = req.into_inner();
        let id = hash_arg("record_id", &r.record_id)?;
        let zone = zone_arg(r.zone_type)?;
        let (stored, already_present) = self
            .store
            .put_entries(&id, zone, &r.entries, &r.idempotency_key)
            .await?;
        self.wrote().await;
        Ok(Response::new(pb::PutEntriesResponse {
            stored,
            already_present,
        }))
    }

    async fn bind_domain(
        &self,
        req: Request<pb::BindDomainRequest>,
    ) -> Result<Response<pb::BindDomainResponse>, Status> {
        let r = req.into_inner();
        let id = hash_arg("record_id", &r.record_id)?;
        self.store.bind_domain(&r.domain, &id).await?;
        self.wrote().await;
        Ok(Response::new(pb::BindDomainResponse {}))
    }

    async fn set_mirrors(
        &self,
        req: Request<pb::SetMirrorsRequest>,
    ) -> Result<Response<pb::SetMirrorsResponse>, Status> {
        let r = req.get_ref();
        let id = hash_arg("record_id", &r.record_id)?;
        self.store.set_mirrors(&id, &r.hosts).await?;
        self.wrote().await;
        Ok(Response::new(pb::SetMirrorsResponse {}))
    }

    async fn put_submission(
        &self,
        req: Request<pb::Submission>,
    ) -> Result<Response<pb::Submission>, Status> {
        let r = req.into_inner();
        let state = u8::try_from(r.state)
            .ok()
            .filter(|s| *s <= 3)
            .ok_or_else(|| Status::invalid_argument(format!("state {} is not 0..=3", r.state)))?;
        let stored = self
            .store
            .put_submission(&crate::Submission {
                id: submission_id_arg(&r.submission_id)?,
                state,
                request: r.request,
                entry: r.entry,
                message: r.message,
            })
            .await?;
        self.wrote().await;
        Ok(Response::new(to_pb_submission(stored)))
    }
}

/// Bindings by handle as the API carries them.
fn handle_bindings(found: Vec<(String, poz::zone::SignedEntry, bool)>) -> Vec<pb::HandleBinding> {
    found
        .into_iter()
        .map(|(handle, e, revoked)| pb::HandleBinding {
            handle,
            binding: e.to_bytes(),
            revoked,
        })
        .collect()
}

fn submission_id_arg(v: &[u8]) -> Result<[u8; 16], Status> {
    <[u8; 16]>::try_from(v).map_err(|_| Status::invalid_argument("submission_id is not 16 bytes"))
}

fn to_pb_submission(s: crate::Submission) -> pb::Submission {
    pb::Submission {
        submission_id: s.id.to_vec(),
        state: s.state as u32,
        request: s.request,
        entry: s.entry,
        message: s.message,
    }
}
