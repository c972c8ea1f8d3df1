//! Answers to admitted queries, from the store over gRPC (SPEC §14.4).
//! The gateway holds no records: each answer is what the store serves,
//! wrapped in a response frame. A store that cannot answer is
//! UNAVAILABLE with a retry hint, never a dropped connection.

use pb::store_read_client::StoreReadClient;
use poz::codec::Codec;
use poz::wire::{
    DomainQuery, IdentityAnswer, IdentityQuery, MessageType, MirrorsAnswer, Request, Response,
    SerialAnswer, Status, ZoneAnswer, ZoneQuery,
};
use poz::zone::SignedEntry;
use poz::Hash32;
use poz_proto::v1 as pb;
use tonic::transport::Channel;

/// How long a client should wait before retrying when the store is
/// unavailable.
pub const STORE_RETRY_MS: u32 = 1_000;

/// The store, as the gateway asks it, with a small cache of answers.
///
/// The cache keeps OK and NOT_FOUND answers by (type, query bytes) for
/// `ttl`, at most `capacity` of them: a hot handle or record is read from
/// the store once per `ttl` however many clients ask, which is also what
/// keeps a flood of identical lookups off the store. The price is
/// staleness: an update or revocation is served at most `ttl` late
/// (default 1 s; 0 turns the cache off). Clients verify every answer, so
/// a cached answer can be old but never forged.
#[derive(Clone)]
pub struct StoreLookup {
    store: StoreReadClient<Channel>,
    cache: Option<std::sync::Arc<AnswerCache>>,
}

/// A query: its message type and payload bytes.
type CacheKey = (u8, Vec<u8>);

/// Answers by (message type, payload), each with the time it was read.
pub struct AnswerCache {
    ttl: std::time::Duration,
    capacity: usize,
    entries: std::sync::Mutex<std::collections::HashMap<CacheKey, (std::time::Instant, Response)>>,
}

impl AnswerCache {
    fn get(&self, key: &CacheKey) -> Option<Response> {
        let m = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        m.get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, r)| r.clone())
    }

    fn put(&self, key: CacheKey, r: &Response) {
        let mut m = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= self.capacity {
            // Full: drop what has expired; if nothing has, start afresh
            // (a bounded cache under a flood of distinct queries).
            let ttl = self.ttl;
            m.retain(|_, (at, _)| at.elapsed() < ttl);
            if m.len() >= self.capacity {
                m.clear();
            }
        }
        m.insert(key, (std::time::Instant::now(), r.clone()));
    }
}

fn by_domain(domain: &str) -> Option<pb::RecordRef> {
    Some(pb::RecordRef {
        by: Some(pb::record_ref::By::Domain(domain.to_ascii_lowercase())),
    })
}

/// The response frame for a store error.
fn store_error(id: u16, s: &tonic::Status) -> Response {
    match s.code() {
        tonic::Code::NotFound => Response::error(Status::NOT_FOUND, id, 0, s.message()),
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => {
            Response::error(Status::BAD_REQUEST, id, 0, s.message())
        }
        _ => {
            tracing::warn!(code = ?s.code(), message = s.message(), "store lookup failed");
            Response::error(
                Status::UNAVAILABLE,
                id,
                STORE_RETRY_MS,
                "the store is unavailable",
            )
        }
    }
}

/// Bytes the store returned that are not what it promised: the store is
/// broken, so the client is told to go elsewhere.
fn corrupt(id: u16, what: &str, e: impl std::fmt::Display) -> Response {
    tracing::error!(what, error = %e, "the store answered undecodable bytes");
    Response::error(
        Status::UNAVAILABLE,
        id,
        STORE_RETRY_MS,
        "the store answered badly",
    )
}

impl StoreLookup {
    /// Without a cache.
    pub fn new(channel: Channel) -> Self {
        StoreLookup {
            store: StoreReadClient::new(channel)
                .max_decoding_message_size(poz_kit::MAX_GRPC_MESSAGE),
            cache: None,
        }
    }

    /// With a cache of `capacity` answers kept for `ttl` (zero: none).
    pub fn with_cache(channel: Channel, ttl: std::time::Duration, capacity: usize) -> Self {
        let mut l = StoreLookup::new(channel);
        if !ttl.is_zero() && capacity > 0 {
            l.cache = Some(std::sync::Arc::new(AnswerCache {
                ttl,
                capacity,
                entries: std::sync::Mutex::new(std::collections::HashMap::new()),
            }));
        }
        l
    }
}

impl crate::edge::Answer for StoreLookup {
    /// Answers a query the gate admitted, from the cache when it can.
    async fn answer(&self, req: &Request) -> Response {
        let Some(cache) = &self.cache else {
            return self.ask_store(req).await;
        };
        let key = (req.message_type.0, req.payload.clone());
        if let Some(mut r) = cache.get(&key) {
            r.request_id = req.request_id;
            return r;
        }
        let r = self.ask_store(req).await;
        if r.status == Status::OK || r.status == Status::NOT_FOUND {
            cache.put(key, &r);
        }
        r
    }
}

impl StoreLookup {
    async fn ask_store(&self, req: &Request) -> Response {
        let id = req.request_id;
        let bad = |e: poz::DecodeError| {
            Response::error(Status::BAD_REQUEST, id, 0, &format!("payload: {e}"))
        };
        let mut store = self.store.clone();
        match req.message_type {
            MessageType::MASTER | MessageType::SERIAL | MessageType::MIRRORS => {
                let q = match DomainQuery::from_bytes(&req.payload) {
                    Ok(q) => q,
                    Err(e) => return bad(e),
                };
                let record = by_domain(&q.domain);
                match req.message_type {
                    MessageType::MASTER => {
                        match store.get_master(pb::GetMasterRequest { record }).await {
                            Ok(r) => Response::ok(id, r.into_inner().record),
                            Err(s) => store_error(id, &s),
                        }
                    }
                    MessageType::SERIAL => {
                        match store.get_head(pb::GetHeadRequest { record }).await {
                            Ok(r) => {
                                let r = r.into_inner();
                                let hash = |h: Option<pb::Hash>| {
                                    h.and_then(|h| <[u8; 32]>::try_from(h.value.as_slice()).ok())
                                        .map(Hash32)
                                };
                                match (hash(r.record_id), hash(r.master_hash)) {
                                    (Some(record_id), Some(current_master_hash)) => Response::ok(
                                        id,
                                        SerialAnswer {
                                            record_id,
                                            serial: r.serial,
                                            current_master_hash,
                                            timestamp: r.timestamp,
                                        }
                                        .to_bytes(),
                                    ),
                                    _ => corrupt(id, "head", "hash not 32 bytes"),
                                }
                            }
                            Err(s) => store_error(id, &s),
                        }
                    }
                    _ => match store.get_mirrors(pb::GetMirrorsRequest { record }).await {
                        Ok(r) => {
                            let hosts: Result<Vec<_>, _> = r
                                .into_inner()
                                .hosts
                                .iter()
                                .map(|h| poz::entries::PoolHost::from_bytes(h))
                                .collect();
                            match hosts {
                                Ok(hosts) => Response::ok(id, MirrorsAnswer { hosts }.to_bytes()),
                                Err(e) => corrupt(id, "mirrors", e),
                            }
                        }
                        Err(s) => store_error(id, &s),
                    },
                }
            }
            MessageType::IDENTITY | MessageType::CHAIN => {
                let q = match IdentityQuery::from_bytes(&req.payload) {
                    Ok(q) => q,
                    Err(e) => return bad(e),
                };
                let ask = pb::GetBindingRequest {
                    record: by_domain(&q.domain),
                    handle: q.handle.clone(),
                };
                if req.message_type == MessageType::CHAIN {
                    return match store.get_chain(ask).await {
                        Ok(r) => Response::ok(id, r.into_inner().chain),
                        Err(s) => store_error(id, &s),
                    };
                }
                match store.get_binding(ask).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        let binding = match SignedEntry::from_bytes(&r.binding) {
                            Ok(b) => b,
                            Err(e) => return corrupt(id, "binding", e),
                        };
                        let revocation = match r.revocation.map(|b| SignedEntry::from_bytes(&b)) {
                            None => None,
                            Some(Ok(e)) => Some(e),
                            Some(Err(e)) => return corrupt(id, "revocation", e),
                        };
                        Response::ok(
                            id,
                            IdentityAnswer {
                                binding,
                                revocation,
                            }
                            .to_bytes(),
                        )
                    }
                    Err(s) => store_error(id, &s),
                }
            }
            MessageType::ZONE => {
                let q = match ZoneQuery::from_bytes(&req.payload) {
                    Ok(q) => q,
                    Err(e) => return bad(e),
                };
                let ask = pb::ListZoneRequest {
                    record: by_domain(&q.domain),
                    zone_type: q.zone_type.0 as u32,
                    after: if q.after.is_zero() {
                        Vec::new()
                    } else {
                        q.after.0.to_vec()
                    },
                    limit: q.limit as u32,
                };
                match store.list_zone(ask).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        let entries: Result<Vec<_>, _> = r
                            .entries
                            .iter()
                            .map(|e| SignedEntry::from_bytes(e))
                            .collect();
                        let next = if r.next.is_empty() {
                            Ok(Hash32::ZERO)
                        } else {
                            <[u8; 32]>::try_from(r.next.as_slice()).map(Hash32)
                        };
                        match (entries, next) {
                            (Ok(entries), Ok(next)) => {
                                Response::ok(id, ZoneAnswer { next, entries }.to_bytes())
                            }
                            (Err(e), _) => corrupt(id, "zone entries", e),
                            (_, Err(e)) => corrupt(id, "zone cursor", e),
                        }
                    }
                    Err(s) => store_error(id, &s),
                }
            }
            other => Response::error(
                Status::WRONG_PORT,
                id,
                0,
                &format!("{other} is not a query"),
            ),
        }
    }
}
