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
use poz::Hash32;
use poz_kit::Channel;
use poz_proto::v1 as pb;

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
///
/// IDENTITY lookups, the hot path, are gathered: a lookup that arrives
/// while `in_flight` LookupBindings calls are already out waits for the
/// next call and goes with every other lookup that queued meanwhile (at
/// most `max` per call). An idle gateway therefore sends each lookup at
/// once, alone, and a busy one pays one gRPC call and one SQL statement
/// per group instead of per lookup; no timer ever holds a lookup back.
#[derive(Clone)]
pub struct StoreLookup {
    store: StoreReadClient<Channel>,
    cache: Option<std::sync::Arc<AnswerCache>>,
    bindings: BindingGather,
}

/// Default most lookups per LookupBindings call.
pub const GATHER_MAX: usize = 64;
/// Default LookupBindings calls out at once.
pub const GATHER_IN_FLIGHT: usize = 2;

/// What a gathered lookup gets back.
type Outcome = Result<pb::binding_lookup_result::Outcome, tonic::Status>;

/// One IDENTITY lookup waiting for its group's call.
struct PendingLookup {
    lookup: pb::BindingLookup,
    reply: tokio::sync::oneshot::Sender<Outcome>,
    /// The request's span: the group's call is traced under the first
    /// lookup's and linked from the others'.
    span: tracing::Span,
}

/// Gathering, for Prometheus (docs/OPERATIONS.md, "Metrics").
struct GatherMetrics {
    calls: prometheus_client::metrics::counter::Counter,
    lookups: prometheus_client::metrics::counter::Counter,
    queued: prometheus_client::metrics::gauge::Gauge,
}

static GATHER: std::sync::LazyLock<GatherMetrics> = std::sync::LazyLock::new(|| {
    use poz_kit::metrics::register;
    let m = GatherMetrics {
        calls: Default::default(),
        lookups: Default::default(),
        queued: Default::default(),
    };
    register(
        "poz_gather_calls",
        "LookupBindings calls sent to the store, each carrying a group of IDENTITY lookups",
        None,
        m.calls.clone(),
    );
    register(
        "poz_gather_lookups",
        "IDENTITY lookups sent in gathered LookupBindings calls",
        None,
        m.lookups.clone(),
    );
    register(
        "poz_gather_queue_depth",
        "IDENTITY lookups waiting for a LookupBindings call now",
        None,
        m.queued.clone(),
    );
    m
});

/// The queue into the task that sends the groups.
#[derive(Clone)]
struct BindingGather {
    queue: tokio::sync::mpsc::Sender<PendingLookup>,
    counts: std::sync::Arc<GatherCounts>,
}

#[derive(Default)]
struct GatherCounts {
    calls: std::sync::atomic::AtomicU64,
    lookups: std::sync::atomic::AtomicU64,
}

/// How IDENTITY lookups have been gathered so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatherStats {
    /// LookupBindings calls sent.
    pub calls: u64,
    /// Lookups they carried.
    pub lookups: u64,
    /// Lookups waiting for a call now.
    pub queued: usize,
}

impl BindingGather {
    /// Starts the task that sends the groups; it ends when the last
    /// `BindingGather` clone is dropped. Needs a Tokio runtime.
    fn start(store: StoreReadClient<Channel>, max: usize, in_flight: usize) -> Self {
        std::sync::LazyLock::force(&GATHER);
        let max = max.clamp(1, STORE_MAX_LOOKUPS);
        let in_flight = in_flight.max(1);
        let (queue, mut rx) = tokio::sync::mpsc::channel::<PendingLookup>(max * 64);
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(in_flight));
        let counts = std::sync::Arc::new(GatherCounts::default());
        let counted = counts.clone();
        tokio::spawn(async move {
            loop {
                // A free slot first, then whatever has queued: while every
                // slot is busy the queue fills, and the next group takes
                // it all.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let Some(first) = rx.recv().await else {
                    return;
                };
                let mut group = vec![first];
                while group.len() < max {
                    match rx.try_recv() {
                        Ok(p) => group.push(p),
                        Err(_) => break,
                    }
                }
                use std::sync::atomic::Ordering::Relaxed;
                counted.calls.fetch_add(1, Relaxed);
                counted.lookups.fetch_add(group.len() as u64, Relaxed);
                GATHER.calls.inc();
                GATHER.lookups.inc_by(group.len() as u64);
                GATHER.queued.dec_by(group.len() as i64);
                let span = gather_span(&group);
                let mut store = store.clone();
                tokio::spawn(async move {
                    use tracing::Instrument;
                    let _slot = slot;
                    let (lookups, replies): (Vec<_>, Vec<_>) =
                        group.into_iter().map(|p| (p.lookup, p.reply)).unzip();
                    let n = lookups.len();
                    match store
                        .lookup_bindings(pb::LookupBindingsRequest { lookups })
                        .instrument(span)
                        .await
                    {
                        Ok(r) => {
                            let results = r.into_inner().results;
                            if results.len() != n {
                                let bad = tonic::Status::data_loss(format!(
                                    "the store answered {} of {n} lookups",
                                    results.len()
                                ));
                                for reply in replies {
                                    let _ = reply.send(Err(bad.clone()));
                                }
                                return;
                            }
                            for (reply, result) in replies.into_iter().zip(results) {
                                let _ = reply.send(result.outcome.ok_or_else(|| {
                                    tonic::Status::data_loss("a lookup result without an outcome")
                                }));
                            }
                        }
                        Err(s) => {
                            for reply in replies {
                                let _ = reply.send(Err(s.clone()));
                            }
                        }
                    }
                });
            }
        });
        BindingGather { queue, counts }
    }

    fn stats(&self) -> GatherStats {
        use std::sync::atomic::Ordering::Relaxed;
        GatherStats {
            calls: self.counts.calls.load(Relaxed),
            lookups: self.counts.lookups.load(Relaxed),
            queued: self.queue.max_capacity() - self.queue.capacity(),
        }
    }

    async fn lookup(&self, domain: String, handle: String) -> Outcome {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let pending = PendingLookup {
            lookup: pb::BindingLookup { domain, handle },
            reply,
            span: tracing::Span::current(),
        };
        GATHER.queued.inc();
        if self.queue.send(pending).await.is_err() {
            GATHER.queued.dec();
            return Err(tonic::Status::unavailable("the lookup task has stopped"));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(tonic::Status::unavailable("the lookup task has stopped")))
    }
}

/// The span of one gathered call: a child of the first lookup's request
/// span (so that trace runs from the edge through the store), linked to
/// every other lookup's, whose traces it also serves.
fn gather_span(group: &[PendingLookup]) -> tracing::Span {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let Some(first) = group.first() else {
        return tracing::Span::none();
    };
    let span = tracing::info_span!(parent: &first.span, "poz.gather", poz.lookups = group.len());
    for other in &group[1..] {
        let cx = other.span.context();
        let linked = cx.span().span_context().clone();
        if linked.is_valid() {
            span.add_link(linked);
        }
    }
    span
}

/// The store's limit on lookups per LookupBindings call (store.proto).
const STORE_MAX_LOOKUPS: usize = 1_024;

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

pub(crate) fn by_domain(domain: &str) -> Option<pb::RecordRef> {
    Some(pb::RecordRef {
        by: Some(pb::record_ref::By::Domain(domain.to_ascii_lowercase())),
    })
}

/// The response frame for a store error.
pub(crate) fn store_error(id: u16, s: &tonic::Status) -> Response {
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
pub(crate) fn corrupt(id: u16, what: &str, e: impl std::fmt::Display) -> Response {
    tracing::error!(what, error = %e, "the store answered undecodable bytes");
    Response::error(
        Status::UNAVAILABLE,
        id,
        STORE_RETRY_MS,
        "the store answered badly",
    )
}

impl StoreLookup {
    /// Without a cache, gathering IDENTITY lookups by the defaults. Needs
    /// a Tokio runtime.
    pub fn new(channel: Channel) -> Self {
        let store =
            StoreReadClient::new(channel).max_decoding_message_size(poz_kit::MAX_GRPC_MESSAGE);
        StoreLookup {
            bindings: BindingGather::start(store.clone(), GATHER_MAX, GATHER_IN_FLIGHT),
            store,
            cache: None,
        }
    }

    /// How IDENTITY lookups have been gathered so far.
    pub fn gather_stats(&self) -> GatherStats {
        self.bindings.stats()
    }

    /// IDENTITY lookups gathered at most `max` per call (1: each alone),
    /// with at most `in_flight` calls out at once.
    pub fn gathering(mut self, max: usize, in_flight: usize) -> Self {
        self.bindings = BindingGather::start(self.store.clone(), max, in_flight);
        self
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

impl poz_edge::Answer for StoreLookup {
    /// Answers a query the gate admitted, from the cache when it can.
    async fn answer(&self, req: &Request, _from: std::net::IpAddr) -> Response {
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
                if req.message_type == MessageType::CHAIN {
                    let ask = pb::GetBindingRequest {
                        record: by_domain(&q.domain),
                        handle: q.handle.clone(),
                    };
                    return match store.get_chain(ask).await {
                        Ok(r) => Response::ok(id, r.into_inner().chain),
                        Err(s) => store_error(id, &s),
                    };
                }
                // The codec admits lowercase domains only; the store
                // lowercases anyway for its other callers.
                match self.bindings.lookup(q.domain, q.handle).await {
                    Ok(pb::binding_lookup_result::Outcome::NotFound(why)) => {
                        Response::error(Status::NOT_FOUND, id, 0, &why)
                    }
                    // The store's bytes spliced as they are: clients
                    // verify every answer (SPEC §14.4).
                    Ok(pb::binding_lookup_result::Outcome::Found(r)) => Response::ok(
                        id,
                        IdentityAnswer::splice(&r.binding, r.revocation.as_deref()),
                    ),
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
                    batch_root: Vec::new(),
                };
                match store.list_zone(ask).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        let next = if r.next.is_empty() {
                            Ok(Hash32::ZERO)
                        } else {
                            <[u8; 32]>::try_from(r.next.as_slice()).map(Hash32)
                        };
                        match next {
                            // Entries spliced as stored, as for IDENTITY.
                            Ok(next) => Response::ok(id, ZoneAnswer::splice(&r.entries, &next)),
                            Err(e) => corrupt(id, "zone cursor", e),
                        }
                    }
                    Err(s) => store_error(id, &s),
                }
            }
            MessageType::BATCHES => crate::audit::batches(&mut store, id, &req.payload).await,
            MessageType::BATCH => crate::audit::batch(&mut store, id, &req.payload).await,
            MessageType::HANDLE_HISTORY => {
                crate::audit::history(&mut store, id, &req.payload).await
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
