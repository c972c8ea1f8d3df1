//! The audit queries (SPEC §14.8): BATCHES, BATCH and HANDLE_HISTORY,
//! answered from the store's batch log and entries over gRPC. Entries
//! travel as the store keeps them, spliced unchanged, as for ZONE: the
//! auditor verifies every one.

use crate::lookup::{by_domain, corrupt, store_error};
use pb::store_read_client::StoreReadClient;
use poz::audit::{BatchInfo, BatchQuery, BatchesAnswer, BatchesQuery, HistoryAnswer, HistoryQuery};
use poz::codec::Codec;
use poz::wire::{Response, Status, ZoneAnswer};
use poz::Hash32;
use poz_kit::Channel;
use poz_proto::v1 as pb;

fn bad(id: u16, e: poz::DecodeError) -> Response {
    Response::error(Status::BAD_REQUEST, id, 0, &format!("payload: {e}"))
}

/// Zero as the empty bytes the store takes for "from the start".
fn cursor(h: &Hash32) -> Vec<u8> {
    if h.is_zero() {
        Vec::new()
    } else {
        h.0.to_vec()
    }
}

/// The store's cursor (empty: last page) as the wire's (zero).
fn next_of(b: &[u8]) -> Result<Hash32, std::array::TryFromSliceError> {
    if b.is_empty() {
        Ok(Hash32::ZERO)
    } else {
        <[u8; 32]>::try_from(b).map(Hash32)
    }
}

/// BATCHES: a page of the batch log.
pub(crate) async fn batches(
    store: &mut StoreReadClient<Channel>,
    id: u16,
    payload: &[u8],
) -> Response {
    let q = match BatchesQuery::from_bytes(payload) {
        Ok(q) => q,
        Err(e) => return bad(id, e),
    };
    let ask = pb::ListBatchesRequest {
        record: by_domain(&q.domain),
        zone_type: q.zone_type.0 as u32,
        after: q.after,
        limit: q.limit as u32,
    };
    match store.list_batches(ask).await {
        Ok(r) => {
            let r = r.into_inner();
            let batches: Result<Vec<BatchInfo>, _> = r
                .batches
                .iter()
                .map(|b| {
                    <[u8; 32]>::try_from(b.root_digest.as_slice()).map(|d| BatchInfo {
                        seq: b.seq,
                        root_digest: Hash32(d),
                        stored_at: b.stored_ms,
                    })
                })
                .collect();
            match batches {
                Ok(batches) => Response::ok(
                    id,
                    BatchesAnswer {
                        batches,
                        next: r.next,
                    }
                    .to_bytes(),
                ),
                Err(e) => corrupt(id, "batch root digest", e),
            }
        }
        Err(s) => store_error(id, &s),
    }
}

/// BATCH: a page of one batch's entries, as a ZONE answer.
pub(crate) async fn batch(
    store: &mut StoreReadClient<Channel>,
    id: u16,
    payload: &[u8],
) -> Response {
    let q = match BatchQuery::from_bytes(payload) {
        Ok(q) => q,
        Err(e) => return bad(id, e),
    };
    let ask = pb::ListZoneRequest {
        record: by_domain(&q.domain),
        zone_type: q.zone_type.0 as u32,
        after: cursor(&q.after),
        limit: q.limit as u32,
        batch_root: q.root_digest.0.to_vec(),
    };
    match store.list_zone(ask).await {
        Ok(r) => {
            let r = r.into_inner();
            match next_of(&r.next) {
                Ok(next) => Response::ok(id, ZoneAnswer::splice(&r.entries, &next)),
                Err(e) => corrupt(id, "batch cursor", e),
            }
        }
        Err(s) => store_error(id, &s),
    }
}

/// HANDLE_HISTORY: a page of one handle's bindings with their
/// revocations.
pub(crate) async fn history(
    store: &mut StoreReadClient<Channel>,
    id: u16,
    payload: &[u8],
) -> Response {
    let q = match HistoryQuery::from_bytes(payload) {
        Ok(q) => q,
        Err(e) => return bad(id, e),
    };
    let ask = pb::ListHandleBindingsRequest {
        record: by_domain(&q.domain),
        handle: q.handle.clone(),
        after: cursor(&q.after),
        limit: q.limit as u32,
    };
    match store.list_handle_bindings(ask).await {
        Ok(r) => {
            let r = r.into_inner();
            let items: Vec<(Vec<u8>, Option<Vec<u8>>)> = r
                .bindings
                .into_iter()
                .map(|b| (b.binding, b.revocation))
                .collect();
            match next_of(&r.next) {
                Ok(next) => Response::ok(id, HistoryAnswer::splice(&items, &next)),
                Err(e) => corrupt(id, "history cursor", e),
            }
        }
        Err(s) => store_error(id, &s),
    }
}
