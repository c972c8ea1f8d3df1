//! The internet-facing side: accepting connections on 7074 (plain) and
//! 7075 (Noise NK), one request and one response each, under a
//! connection discipline that keeps the gateway up and fair under floods
//! and slow senders (docs/OPERATIONS.md, "The query gateway"):
//!
//! - at most `max_connections` connections at once, and at most
//!   `max_connections_per_ip` from one address: beyond either, the
//!   connection is closed at once, before a byte is read;
//! - at most `max_pending` connections still reading their request (the
//!   handshake cap): a slow sender holds a pending slot, never more;
//! - the whole request must arrive within `read_timeout`, with no gap
//!   longer than `idle_timeout`; frames are checked from their header
//!   (SPEC §14), so no more than one frame's bytes are ever buffered;
//! - a token bucket per address (`rate_per_ip`, `burst_per_ip`): a
//!   request over it is answered RATE_LIMITED with the wait in
//!   `retry_after_ms`;
//! - at most `max_lookups` store lookups at once; a request that cannot
//!   get a slot within `queue_wait` is answered UNAVAILABLE with a retry
//!   hint (load is shed, not queued without bound); the slots, the
//!   requests waiting for one and the requests shed are what the
//!   proof-of-work difficulty follows ([`LoadMeter`]);
//! - the response must be written within `write_timeout`;
//! - on shutdown, listeners close and connections in progress finish
//!   within `drain_timeout`.
//!
//! A proof of work admitted by the gate is spent fleet-wide when the
//! gateway shares a Redis ([`crate::SharedReplay`], SPEC §15).
//! The latency fed to the load meter is the server's own: from the whole
//! request to the answer ready to send, so a slow sender (or reader) does
//! not count its own time as the gateway's.

use crate::fleet::{SharedReplay, Spend};
use crate::load::LoadMeter;
use crate::metrics::{port_name, OpenConnection, PortLabels, RefusedLabels, EDGE};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use poz::codec::Codec;
use poz::gate::{Admission, Decision, Gate, Port};
use poz::noise::{length_prefixed, split_message, NkResponder, StaticKeypair, MAX_MESSAGE};
use poz::wire::{MessageType, Request, Response, Status};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// The connection discipline's limits.
#[derive(Clone, Debug)]
pub struct Discipline {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_pending: usize,
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    pub rate_per_ip: u32,
    pub burst_per_ip: u32,
    pub max_lookups: usize,
    pub queue_wait: Duration,
    /// After shutdown is asked, how long the listeners still accept while
    /// `/readyz` says 503 (`drain_delay_ms`), before they close.
    pub drain_delay: Duration,
    pub drain_timeout: Duration,
}

impl Default for Discipline {
    fn default() -> Self {
        Discipline {
            max_connections: 10_000,
            max_connections_per_ip: 16,
            max_pending: 1_024,
            read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(5),
            rate_per_ip: 50,
            burst_per_ip: 100,
            max_lookups: 256,
            queue_wait: Duration::from_millis(500),
            drain_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// What the gateway counts, for logs and metrics: plain counters that
/// only grow (read them with [`Counters::values`], or each field's
/// `load`).
#[derive(Default, Debug)]
pub struct Counters {
    pub accepted: AtomicUsize,
    pub refused_busy: AtomicUsize,
    pub refused_per_ip: AtomicUsize,
    pub refused_pending: AtomicUsize,
    pub timed_out: AtomicUsize,
    pub rate_limited: AtomicUsize,
    pub shed: AtomicUsize,
    /// Proofs refused as spent at another gateway (fleet-wide guard).
    pub replayed_in_fleet: AtomicUsize,
    pub answered: AtomicUsize,
}

impl Counters {
    /// Every counter by name (the field's), in declaration order: what a
    /// metrics exporter reads.
    pub fn values(&self) -> [(&'static str, usize); 9] {
        let v = |c: &AtomicUsize| c.load(Ordering::Relaxed);
        [
            ("accepted", v(&self.accepted)),
            ("refused_busy", v(&self.refused_busy)),
            ("refused_per_ip", v(&self.refused_per_ip)),
            ("refused_pending", v(&self.refused_pending)),
            ("timed_out", v(&self.timed_out)),
            ("rate_limited", v(&self.rate_limited)),
            ("shed", v(&self.shed)),
            ("replayed_in_fleet", v(&self.replayed_in_fleet)),
            ("answered", v(&self.answered)),
        ]
    }
}

/// What a gateway answers once the gate admitted a request: lookups from
/// the store (query gateway), submissions (submit gateway).
pub trait Answer: Send + Sync + 'static {
    /// The answer to `req`, which arrived from the address `from` (for
    /// per-address limits of what the answer costs, such as hosting a
    /// new record).
    fn answer(
        &self,
        req: &Request,
        from: IpAddr,
    ) -> impl std::future::Future<Output = Response> + Send;
}

/// The shared state of one gateway process.
pub struct Edge<A> {
    pub discipline: Discipline,
    pub key: StaticKeypair,
    pub gate: Mutex<Gate>,
    pub answerer: A,
    pub load: Arc<LoadMeter>,
    pub counters: Counters,
    /// The fleet's spent proofs (None: this gateway's own guard only).
    replay: Option<Arc<SharedReplay>>,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    pending: Semaphore,
    lookups: Semaphore,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

/// A connection's place in the limits, released when it ends.
struct Slot<'a> {
    open: &'a AtomicUsize,
    per_ip: &'a Mutex<HashMap<IpAddr, usize>>,
    ip: IpAddr,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        let mut m = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// A request waiting for a lookup slot, counted in the load meter while
/// it lives.
struct Waiting<'a>(&'a LoadMeter);

impl<'a> Waiting<'a> {
    fn start(load: &'a LoadMeter) -> Self {
        load.waiting_started();
        Waiting(load)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting_finished();
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Why reading a request stopped.
enum ReadEnd {
    /// A whole frame (plain) or Noise message.
    Whole(Vec<u8>),
    /// A frame error the client is told about (plain only).
    Refuse(Response),
    /// EOF, a timeout, or bytes that cannot be answered: close.
    Close,
}

/// A request read whole, and when its last byte arrived: the server's
/// latency starts there.
struct Read {
    end: ReadEnd,
    arrived: Instant,
}

impl<A: Answer> Edge<A> {
    pub fn new(
        discipline: Discipline,
        key: StaticKeypair,
        gate: Gate,
        answerer: A,
        load: Arc<LoadMeter>,
    ) -> Arc<Self> {
        Self::with_replay(discipline, key, gate, answerer, load, None)
    }

    /// Like [`Edge::new`], with the fleet's replay guard: a proof admitted
    /// here is refused at every gateway sharing `replay` (SPEC §15).
    pub fn with_replay(
        discipline: Discipline,
        key: StaticKeypair,
        gate: Gate,
        answerer: A,
        load: Arc<LoadMeter>,
        replay: Option<Arc<SharedReplay>>,
    ) -> Arc<Self> {
        let nz = |v: u32| NonZeroU32::new(v.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota =
            Quota::per_second(nz(discipline.rate_per_ip)).allow_burst(nz(discipline.burst_per_ip));
        // This edge's slots are part of the capacity the difficulty
        // follows (pozd's three ports share one meter: their sum).
        load.add_capacity(discipline.max_lookups);
        Arc::new(Edge {
            pending: Semaphore::new(discipline.max_pending),
            lookups: Semaphore::new(discipline.max_lookups),
            discipline,
            key,
            gate: Mutex::new(gate),
            answerer,
            load,
            counters: Counters::default(),
            replay,
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            limiter: RateLimiter::keyed(quota),
        })
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn admit_connection(&self, ip: IpAddr, port: Port) -> Option<Slot<'_>> {
        let refused = |reason| {
            EDGE.refused
                .get_or_create(&RefusedLabels {
                    port: port_name(port),
                    reason,
                })
                .inc()
        };
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.discipline.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.counters.refused_busy.fetch_add(1, Ordering::Relaxed);
            refused("busy");
            return None;
        }
        let mut m = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= self.discipline.max_connections_per_ip {
            drop(m);
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.counters.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            refused("per_ip");
            return None;
        }
        *n += 1;
        Some(Slot {
            open: &self.open,
            per_ip: &self.per_ip,
            ip,
        })
    }

    /// Accepts on `listener` until `shutdown` resolves, then waits for the
    /// connections in progress (up to `drain_timeout`).
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        port: Port,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            // Out of file descriptors and the like: back off
                            // rather than spin.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let edge = self.clone();
                    tokio::spawn(async move { edge.connection(stream, peer, port).await });
                }
            }
        }
        drop(listener);
        let deadline = Instant::now() + self.discipline.drain_timeout;
        while self.open_connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!(
            port = port.number(),
            left = self.open_connections(),
            "drained"
        );
    }

    async fn connection(self: Arc<Self>, mut stream: TcpStream, peer: SocketAddr, port: Port) {
        let ip = peer.ip();
        let Some(_slot) = self.admit_connection(ip, port) else {
            return; // dropped: closed before a byte is read
        };
        let _open = OpenConnection::start(port);
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        EDGE.accepted
            .get_or_create(&PortLabels {
                port: port_name(port),
            })
            .inc();
        self.load.connection_opened();
        let _ = stream.set_nodelay(true);
        let Read { end: read, arrived } = {
            let Ok(_pending) = self.pending.try_acquire() else {
                self.counters
                    .refused_pending
                    .fetch_add(1, Ordering::Relaxed);
                EDGE.refused
                    .get_or_create(&RefusedLabels {
                        port: port_name(port),
                        reason: "pending",
                    })
                    .inc();
                return;
            };
            self.read_request(&mut stream, port).await
        };
        let out: Vec<Vec<u8>> = match (read, port) {
            (ReadEnd::Close, _) => return,
            (ReadEnd::Refuse(r), _) => {
                EDGE.answered(port, None, r.status);
                vec![r.to_bytes()]
            }
            (ReadEnd::Whole(frame), Port::Plain) => {
                vec![self.respond_counted(ip, port, &frame).await.to_bytes()]
            }
            (ReadEnd::Whole(msg), _) => {
                let Ok(mut responder) = NkResponder::new(&self.key) else {
                    return;
                };
                // Not Noise (e.g. plaintext on 7075): nothing can be
                // answered privately, so the connection is closed.
                let Ok(frame) = responder.read_request(&msg) else {
                    return;
                };
                let resp = self.respond_counted(ip, port, &frame).await;
                match responder.write_response(&resp.to_bytes()) {
                    Ok(msgs) => msgs.iter().map(|m| length_prefixed(m)).collect(),
                    Err(_) => return,
                }
            }
        };
        // The server's latency: from the whole request to the answer ready
        // to send. Neither the client's upload nor its reading counts.
        self.load.request_done(arrived.elapsed());
        let write = async {
            for m in &out {
                stream.write_all(m).await?;
            }
            stream.shutdown().await
        };
        if tokio::time::timeout(self.discipline.write_timeout, write)
            .await
            .is_err()
        {
            self.timed_out(port);
        }
    }

    /// Reads one request: a whole plain frame (checked from its header) or
    /// one length-prefixed Noise message, under the read and idle timeouts.
    async fn read_request(&self, stream: &mut TcpStream, port: Port) -> Read {
        let end = self.read_until_whole(stream, port).await;
        Read {
            end,
            arrived: Instant::now(),
        }
    }

    async fn read_until_whole(&self, stream: &mut TcpStream, port: Port) -> ReadEnd {
        let deadline = Instant::now() + self.discipline.read_timeout;
        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0u8; 4096];
        loop {
            if port == Port::Plain {
                // Errors come only once the id arrived, so they echo it.
                match Request::check(&buf) {
                    Ok(Some(n)) => {
                        buf.truncate(n);
                        return ReadEnd::Whole(buf);
                    }
                    Ok(None) => {}
                    Err(e) => return ReadEnd::Refuse(e.response()),
                }
            } else {
                if let Some((m, _)) = split_message(&buf) {
                    return ReadEnd::Whole(m.to_vec());
                }
                if buf.len() > MAX_MESSAGE + 2 {
                    return ReadEnd::Close;
                }
            }
            let now = Instant::now();
            if now >= deadline {
                self.timed_out(port);
                return ReadEnd::Close;
            }
            let wait = self.discipline.idle_timeout.min(deadline - now);
            match tokio::time::timeout(wait, stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                // The client stopped sending (EOF) part-way through a
                // plain frame: what arrived is judged as the whole frame
                // (SPEC §14.2: id 0 only if its id bytes never came).
                Ok(Ok(_)) if port == Port::Plain && !buf.is_empty() => {
                    return Request::decode(&buf)
                        .err()
                        .map_or(ReadEnd::Close, |e| ReadEnd::Refuse(e.response()));
                }
                Ok(_) => return ReadEnd::Close,
                Err(_) => {
                    self.timed_out(port);
                    return ReadEnd::Close;
                }
            }
        }
    }

    fn timed_out(&self, port: Port) {
        self.counters.timed_out.fetch_add(1, Ordering::Relaxed);
        EDGE.timed_out
            .get_or_create(&PortLabels {
                port: port_name(port),
            })
            .inc();
    }

    /// [`Edge::respond`] under a `poz.request` span (the parent of any
    /// gRPC call made to answer, so a trace runs from here through the
    /// store), counted in `poz_edge_requests_total`.
    async fn respond_counted(&self, ip: IpAddr, port: Port, frame: &[u8]) -> Response {
        use tracing::Instrument;
        // The type byte follows the version byte (SPEC §14.1).
        let kind = frame.get(1).map(|b| MessageType(*b));
        let span = tracing::info_span!(
            "poz.request",
            poz.port = port.number(),
            "poz.type" = kind.and_then(|k| k.name()).unwrap_or("invalid"),
            poz.status = tracing::field::Empty,
        );
        let r = self.respond(ip, port, frame).instrument(span.clone()).await;
        span.record("poz.status", r.status.name().unwrap_or("unknown"));
        EDGE.answered(port, kind, r.status);
        r
    }

    /// The answer to one whole request frame from `ip`.
    async fn respond(&self, ip: IpAddr, port: Port, frame: &[u8]) -> Response {
        if let Err(not_until) = self.limiter.check_key(&ip) {
            self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            // Echo the id whenever it arrived, even in a frame that
            // would not decode.
            let id = Request::peek_id(frame).unwrap_or(0);
            let ms = wait.as_millis().clamp(1, u32::MAX as u128) as u32;
            return Response::error(
                Status::RATE_LIMITED,
                id,
                ms,
                "too many requests from this address",
            );
        }
        let difficulty = self.load.difficulty();
        let Decision { admission, spent } = self
            .gate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .decide(port, frame, now_ms(), difficulty);
        let req = match admission {
            Admission::Respond(r) => return r,
            Admission::Admit(req) => req,
        };
        // A proof new here must be new to the fleet too (SPEC §15).
        if let (Some(spent), Some(fleet)) = (spent, &self.replay) {
            if fleet.spend(&spent.key, spent.ttl_ms).await == Spend::Replayed {
                self.counters
                    .replayed_in_fleet
                    .fetch_add(1, Ordering::Relaxed);
                let gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
                return gate.replayed(req.request_id, now_ms(), difficulty);
            }
        }
        let permit = match self.lookups.try_acquire() {
            Ok(p) => Ok(p),
            // Every slot busy: this request waits, which is what the
            // difficulty follows (SPEC §15, "Capacity").
            Err(_) => {
                let _waiting = Waiting::start(&self.load);
                match tokio::time::timeout(self.discipline.queue_wait, self.lookups.acquire()).await
                {
                    Ok(Ok(p)) => Ok(p),
                    _ => Err(()),
                }
            }
        };
        let Ok(_permit) = permit else {
            self.counters.shed.fetch_add(1, Ordering::Relaxed);
            self.load.shed();
            EDGE.shed.inc();
            return Response::error(
                Status::UNAVAILABLE,
                req.request_id,
                1_000,
                "the gateway is at capacity",
            );
        };
        self.load.lookup_started();
        let r = self.answerer.answer(&req, ip).await;
        self.load.lookup_finished();
        self.counters.answered.fetch_add(1, Ordering::Relaxed);
        r
    }

    /// Forgets rate-limit state of addresses that are quiet again, so the
    /// limiter's memory follows the active addresses, not every address
    /// ever seen. Called periodically.
    pub fn forget_quiet_addresses(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}
