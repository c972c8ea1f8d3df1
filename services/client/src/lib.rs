//! The POZ client: lookups on 7074 (plain) and 7075 (Noise NK),
//! submissions on 7076; proof of work on demand; timeouts, retries with
//! exponential backoff and jitter; pool hosts by priority and weight;
//! discovery through DNS and the well-known file; and verification of
//! every answer before the caller sees it.
//!
//! Connection discipline follows what the seed's protocol pages prescribe:
//! one connection per question, a connect timeout, a handshake/read
//! timeout on the whole exchange, capped backoff (1 s, 2 s, 4 s … at most
//! 30 s, with jitter), and a hard cap on what a server can make us buffer.
#![forbid(unsafe_code)]

pub mod ca;
pub mod discovery;

use poz::codec::Codec;
use poz::entries::{Encryption, PoolHost, ServiceEntry};
use poz::noise::{length_prefixed, split_message, NkInitiator, NoiseError};
use poz::pow::solve;
use poz::verify::{verify_and_accept, verify_binding, VerifiedBinding, VerifiedRecord};
use poz::wire::{
    DomainQuery, ErrorDetail, IdentityQuery, MessageType, PowRequired, Request, Response,
    SerialAnswer, Status, StatusAnswer, StatusQuery, SubmitRequest, SubmitSigned, SubmitTicket,
    MAX_RESPONSE_PAYLOAD,
};
use poz::zone::ZoneType;
use poz::{Hash32, Record};
use rand_core::RngCore;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How the client talks to one server.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Security {
    /// Port 7074: no encryption (answers are self-verifying).
    Plain,
    /// Ports 7075/7076: Noise NK to this X25519 server key.
    Noise([u8; 32]),
}

/// One server to ask.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub security: Security,
}

/// Client settings. Defaults follow the seed's connection discipline.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub connect_timeout: Duration,
    /// Handshake, request and response together.
    pub exchange_timeout: Duration,
    /// Attempts per endpoint for retryable failures (at least 1).
    pub attempts: u32,
    pub backoff_base: Duration,
    /// The longest wait between attempts. A server whose retry hint
    /// (`retry_after_ms`) asks for longer is given up, not waited for.
    pub backoff_max: Duration,
    /// The longest one call may take over all its attempts, backoffs and
    /// endpoints (`request`, `request_any` and what is built on them): no
    /// wait starts that would end past it, whatever a server hints.
    pub deadline: Duration,
    /// The hardest proof of work the caller is willing to do.
    pub max_pow_difficulty: u8,
    pub max_response: usize,
    /// Connect from this local address (load generators spread their
    /// connections over many; None: the system chooses).
    pub local_ip: Option<std::net::IpAddr>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(5),
            exchange_timeout: Duration::from_secs(10),
            attempts: 3,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            deadline: Duration::from_secs(60),
            max_pow_difficulty: 24,
            max_response: MAX_RESPONSE_PAYLOAD,
            local_ip: None,
        }
    }
}

/// Nonces tried between checks of whether a proof of work is still
/// wanted: about 10 ms of SHA3 on one core.
const POW_ROUND: u64 = 1 << 14;

/// Set when the request that started a proof-of-work solve is dropped,
/// so the blocking solver stops at its next round.
#[derive(Default)]
struct CallerGone(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for CallerGone {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Everything that can go wrong, by kind, so callers can react.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    // The cause is in the message and deliberately not a `source`: a
    // chain printer (anyhow's `{:#}`) would say it twice.
    #[error("connecting to {addr}: {error}")]
    Connect {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("{stage} with {addr} timed out after {after:?}")]
    Timeout {
        addr: SocketAddr,
        stage: &'static str,
        after: Duration,
    },
    #[error("talking to {addr}: {error}")]
    Io {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("noise with {addr}: {error}")]
    Noise { addr: SocketAddr, error: NoiseError },
    #[error("{addr} sent a malformed response: {detail}")]
    Malformed { addr: SocketAddr, detail: String },
    #[error("{addr} answered {status}: {message}")]
    Status {
        addr: SocketAddr,
        status: Status,
        message: String,
        retry_after_ms: u32,
    },
    #[error("{addr} asks for proof of work of difficulty {difficulty}; the limit is {allowed}")]
    PowTooHard {
        addr: SocketAddr,
        difficulty: u8,
        allowed: u8,
    },
    #[error("the answer does not verify: {0}")]
    Invalid(String),
    #[error(
        "stale answer: serial {served} of record {record_id}, but serial {seen} was already seen"
    )]
    Stale {
        record_id: Hash32,
        seen: u32,
        served: u32,
    },
    #[error("record {got} is not the record {pinned} that {source_name} pins")]
    PinMismatch {
        pinned: Hash32,
        got: Hash32,
        source_name: &'static str,
    },
    #[error("discovery of {domain}: {detail}")]
    Discovery { domain: String, detail: String },
    #[error("no endpoint answered: {0}")]
    Exhausted(String),
}

impl ClientError {
    /// Whether another attempt (same or next endpoint) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Timeout { .. } | ClientError::Io { .. } => {
                true
            }
            ClientError::Status { status, .. } => {
                matches!(*status, Status::RATE_LIMITED | Status::UNAVAILABLE)
            }
            _ => false,
        }
    }
}

/// The server closed the connection before its response was whole
/// (`got` bytes of it read): a connection failure, retryable like a
/// reset (a server stopping or killed mid-exchange ends this way), not a
/// malformed answer. Issue 16: the fault harness saw a query gateway
/// killed under load reported as a wrong answer.
fn closed_early(addr: SocketAddr, got: usize) -> ClientError {
    ClientError::Io {
        addr,
        error: std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("connection closed after {got} bytes of the response"),
        ),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The async client.
#[derive(Debug)]
pub struct Client {
    pub config: ClientConfig,
    next_id: Mutex<u16>,
    /// Highest serial seen per record: a server serving less is stale.
    seen: Mutex<HashMap<Hash32, u32>>,
}

impl Default for Client {
    fn default() -> Self {
        Client::new(ClientConfig::default())
    }
}

impl Client {
    pub fn new(config: ClientConfig) -> Self {
        let mut seed = [0u8; 2];
        rand_core::OsRng.fill_bytes(&mut seed);
        Client {
            config,
            next_id: Mutex::new(u16::from_be_bytes(seed)),
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn request_id(&self) -> u16 {
        let mut g = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
        *g = g.wrapping_add(1);
        *g
    }

    /// One connection, one request, one response. No retries.
    pub async fn exchange_once(
        &self,
        ep: &Endpoint,
        req: &Request,
    ) -> Result<Response, ClientError> {
        let addr = ep.addr;
        let connect = async {
            match self.config.local_ip {
                None => TcpStream::connect(addr).await,
                Some(ip) => {
                    let socket = if addr.is_ipv4() {
                        tokio::net::TcpSocket::new_v4()?
                    } else {
                        tokio::net::TcpSocket::new_v6()?
                    };
                    socket.bind(SocketAddr::new(ip, 0))?;
                    socket.connect(addr).await
                }
            }
        };
        let stream = tokio::time::timeout(self.config.connect_timeout, connect)
            .await
            .map_err(|_| ClientError::Timeout {
                addr,
                stage: "connect",
                after: self.config.connect_timeout,
            })?
            .map_err(|error| ClientError::Connect { addr, error })?;
        let _ = stream.set_nodelay(true);
        let work = async {
            match ep.security {
                Security::Plain => self.plain(stream, addr, req).await,
                Security::Noise(key) => self.noise(stream, addr, &key, req).await,
            }
        };
        let resp = tokio::time::timeout(self.config.exchange_timeout, work)
            .await
            .map_err(|_| ClientError::Timeout {
                addr,
                stage: "exchange",
                after: self.config.exchange_timeout,
            })??;
        if resp.request_id != req.request_id && resp.status != Status::UNSUPPORTED_VERSION {
            return Err(ClientError::Malformed {
                addr,
                detail: format!(
                    "request id {} answered as {}",
                    req.request_id, resp.request_id
                ),
            });
        }
        Ok(resp)
    }

    async fn plain(
        &self,
        mut s: TcpStream,
        addr: SocketAddr,
        req: &Request,
    ) -> Result<Response, ClientError> {
        let io = |error| ClientError::Io { addr, error };
        s.write_all(&req.to_bytes()).await.map_err(io)?;
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match Response::check(&buf, self.config.max_response) {
                Ok(Some(total)) if total == buf.len() => {
                    return Response::from_bytes(&buf).map_err(|e| ClientError::Malformed {
                        addr,
                        detail: e.to_string(),
                    })
                }
                Ok(Some(_)) => {
                    return Err(ClientError::Malformed {
                        addr,
                        detail: "bytes after the response".into(),
                    })
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(ClientError::Malformed {
                        addr,
                        detail: e.to_string(),
                    })
                }
            }
            let n = s.read(&mut chunk).await.map_err(io)?;
            if n == 0 {
                return Err(closed_early(addr, buf.len()));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn noise(
        &self,
        mut s: TcpStream,
        addr: SocketAddr,
        key: &[u8; 32],
        req: &Request,
    ) -> Result<Response, ClientError> {
        let io = |error| ClientError::Io { addr, error };
        let noise = |error| ClientError::Noise { addr, error };
        let mut session = NkInitiator::new(key)
            .map_err(noise)?
            .with_max_payload(self.config.max_response);
        let first = session.write_request(&req.to_bytes()).map_err(noise)?;
        s.write_all(&length_prefixed(&first)).await.map_err(io)?;
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut chunk = vec![0u8; 64 * 1024];
        let mut answered = false;
        let mut handshook = false;
        loop {
            while let Some((msg, used)) = split_message(&buf) {
                let first = !handshook;
                let done = session.read_message(msg).map_err(|error| {
                    if first {
                        // The first message back is not the handshake's
                        // answer: a plain port answering, or another key.
                        ClientError::Malformed {
                            addr,
                            detail: format!(
                                "the reply is not a Noise NK handshake answer ({error}): is this a Noise port, and the server key given for it its own?"
                            ),
                        }
                    } else {
                        noise(error)
                    }
                })?;
                handshook = true;
                buf.drain(..used);
                if let Some(resp) = done {
                    return Ok(resp);
                }
            }
            let n = s.read(&mut chunk).await.map_err(io)?;
            if n == 0 {
                if answered {
                    return Err(closed_early(addr, buf.len()));
                }
                // Nothing at all came back: a Noise NK server closes a
                // first message it cannot decrypt, which is what a message
                // encrypted to another server's key looks like to it. Still
                // a connection failure (a server killed before it answered
                // ends the same way), so retried like one.
                return Err(ClientError::Io {
                    addr,
                    error: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection closed without a reply to the Noise handshake \
                         (a server does that to a first message encrypted to another key: \
                         is the server key given for it its own?)",
                    ),
                });
            }
            answered = true;
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The wait before retry `attempt` (0-based): exponential from
    /// `backoff_base` up to `backoff_max`, with jitter, and never shorter
    /// than the server's hint. `None` when the hint asks for more than
    /// `backoff_max`: the client neither sleeps that long on a server's
    /// word (a hint of 0xFFFFFFFF ms is 49 days) nor retries before it
    /// (SPEC §14.3); it gives that server up.
    fn backoff(&self, attempt: u32, hint_ms: u32) -> Option<Duration> {
        let max = self.config.backoff_max;
        let hint = Duration::from_millis(hint_ms as u64);
        if hint > max {
            return None;
        }
        let exp = self
            .config
            .backoff_base
            .saturating_mul(1u32 << attempt.min(16))
            .min(max);
        // Full jitter on the upper half: spreads clients that failed together.
        let mut r = [0u8; 4];
        rand_core::OsRng.fill_bytes(&mut r);
        let frac = u32::from_be_bytes(r) as f64 / u32::MAX as f64;
        Some(exp.mul_f64(0.5 + 0.5 * frac).max(hint))
    }

    /// Sends a request, solving proof of work when asked (up to the
    /// configured difficulty) and retrying retryable failures with backoff,
    /// within `deadline` from now (the last error is returned when the
    /// next wait would end past it).
    pub async fn request(
        &self,
        ep: &Endpoint,
        message_type: MessageType,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, ClientError> {
        let deadline = tokio::time::Instant::now() + self.config.deadline;
        self.request_until(ep, message_type, payload, deadline)
            .await
    }

    async fn request_until(
        &self,
        ep: &Endpoint,
        message_type: MessageType,
        payload: Vec<u8>,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<u8>, ClientError> {
        let mut req = Request::new(message_type, self.request_id(), payload);
        let mut attempt = 0;
        let mut pow_rounds = 0;
        loop {
            let result = match self.exchange_once(ep, &req).await {
                Ok(resp) if resp.status == Status::OK => return Ok(resp.payload),
                Ok(resp) if resp.status == Status::POW_REQUIRED && pow_rounds < 3 => {
                    pow_rounds += 1;
                    let p = PowRequired::from_bytes(&resp.payload).map_err(|e| {
                        ClientError::Malformed {
                            addr: ep.addr,
                            detail: format!("POW_REQUIRED payload: {e}"),
                        }
                    })?;
                    let d = p.challenge.difficulty;
                    if d > self.config.max_pow_difficulty {
                        return Err(ClientError::PowTooHard {
                            addr: ep.addr,
                            difficulty: d,
                            allowed: self.config.max_pow_difficulty,
                        });
                    }
                    let challenge = p.challenge.challenge;
                    let mut start = [0u8; 8];
                    rand_core::OsRng.fill_bytes(&mut start);
                    let start = u64::from_be_bytes(start);
                    let now = now_ms();
                    // Nobody wants the solve once the call's deadline has
                    // passed or the caller dropped this future. (The
                    // challenge's expiry is the server's clock: a client
                    // whose clock runs ahead must not give up early.)
                    let give_up = deadline.into_std();
                    let gone = CallerGone::default();
                    let caller_gone = gone.0.clone();
                    // Solving is CPU work: keep it off the async workers,
                    // in rounds that stop as soon as any of those happens,
                    // so a client that gave up never keeps burning a core
                    // (a blocking task cannot be cancelled from outside).
                    let sol = tokio::task::spawn_blocking(move || {
                        let mut from = start;
                        loop {
                            if caller_gone.load(std::sync::atomic::Ordering::Relaxed)
                                || std::time::Instant::now() >= give_up
                            {
                                return None;
                            }
                            if let Some(s) = solve(&challenge, d, now, from, POW_ROUND) {
                                return Some(s);
                            }
                            from = from.wrapping_add(POW_ROUND);
                        }
                    })
                    .await
                    .ok()
                    .flatten()
                    .ok_or(ClientError::Timeout {
                        addr: ep.addr,
                        stage: "pow",
                        after: self.config.deadline,
                    })?;
                    drop(gone);
                    req.pow = Some(sol);
                    req.request_id = self.request_id();
                    continue;
                }
                Ok(resp) => {
                    let detail = ErrorDetail::from_bytes(&resp.payload)
                        .unwrap_or_else(|_| ErrorDetail::new(0, ""));
                    Err(ClientError::Status {
                        addr: ep.addr,
                        status: resp.status,
                        message: detail.message,
                        retry_after_ms: detail.retry_after_ms,
                    })
                }
                Err(e) => Err(e),
            };
            let err = match result {
                Err(e) => e,
                Ok(never) => return Ok(never),
            };
            attempt += 1;
            if !err.is_retryable() || attempt >= self.config.attempts.max(1) {
                return Err(err);
            }
            let hint = match &err {
                ClientError::Status { retry_after_ms, .. } => *retry_after_ms,
                _ => 0,
            };
            let Some(wait) = self.backoff(attempt - 1, hint) else {
                tracing::debug!(%err, attempt, hint, "giving up: the server's retry hint exceeds the backoff maximum");
                return Err(err);
            };
            if tokio::time::Instant::now() + wait > deadline {
                tracing::debug!(%err, attempt, "giving up: the next attempt would start past the deadline");
                return Err(err);
            }
            tracing::debug!(%err, attempt, ?wait, "retrying");
            tokio::time::sleep(wait).await;
            req.request_id = self.request_id();
        }
    }

    /// Tries `endpoints` in order until one answers. A non-retryable error
    /// ends the search at once; when every endpoint failed, the error of a
    /// lone endpoint is returned as it is, several as `Exhausted`.
    pub async fn request_any(
        &self,
        endpoints: &[Endpoint],
        message_type: MessageType,
        payload: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        let mut errors = Vec::new();
        // One deadline for the whole pool: a host that stalls cannot hold
        // up the others past it.
        let deadline = tokio::time::Instant::now() + self.config.deadline;
        for ep in endpoints {
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            match self
                .request_until(ep, message_type, payload.to_vec(), deadline)
                .await
            {
                Ok(p) => return Ok(p),
                Err(e) if e.is_retryable() => errors.push(e),
                Err(e) => return Err(e),
            }
        }
        match errors.len() {
            0 => Err(ClientError::Exhausted("no endpoints".into())),
            1 => Err(errors.remove(0)),
            _ => Err(ClientError::Exhausted(
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        }
    }

    fn note_serial(&self, record_id: Hash32, serial: u32) -> Result<(), ClientError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let e = seen.entry(record_id).or_insert(serial);
        if serial < *e {
            return Err(ClientError::Stale {
                record_id,
                seen: *e,
                served: serial,
            });
        }
        *e = serial;
        Ok(())
    }

    /// The highest serial this client has seen for a record.
    pub fn seen_serial(&self, record_id: &Hash32) -> Option<u32> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(record_id)
            .copied()
    }

    fn accept_record(
        &self,
        bytes: &[u8],
        pinned: Option<Hash32>,
    ) -> Result<VerifiedRecord, ClientError> {
        let rec =
            Record::from_bytes(bytes).map_err(|e| ClientError::Invalid(format!("record: {e}")))?;
        let vr = verify_and_accept(rec).map_err(|report| {
            let f: Vec<String> = report
                .failures()
                .map(|(r, d)| format!("{r}: {d}"))
                .collect();
            ClientError::Invalid(f.join("; "))
        })?;
        if !vr.from_genesis {
            return Err(ClientError::Invalid(
                "the record's chain does not reach genesis".into(),
            ));
        }
        if let Some(pin) = pinned {
            if pin != vr.id {
                return Err(ClientError::PinMismatch {
                    pinned: pin,
                    got: vr.id,
                    source_name: "discovery",
                });
            }
        }
        self.note_serial(vr.id, vr.record.master.serial)?;
        Ok(vr)
    }

    /// MASTER, verified from genesis (and against `pinned`, when discovery
    /// pinned a record ID).
    pub async fn master(
        &self,
        endpoints: &[Endpoint],
        domain: &str,
        pinned: Option<Hash32>,
    ) -> Result<VerifiedRecord, ClientError> {
        let q = DomainQuery {
            domain: domain.into(),
        }
        .to_bytes();
        let bytes = self.request_any(endpoints, MessageType::MASTER, &q).await?;
        self.accept_record(&bytes, pinned)
    }

    /// CHAIN for one handle: the provider's chain and the binding, both
    /// verified; a revoked or expired binding is an error.
    pub async fn chain(
        &self,
        endpoints: &[Endpoint],
        domain: &str,
        handle: &str,
        pinned: Option<Hash32>,
    ) -> Result<(VerifiedRecord, VerifiedBinding), ClientError> {
        let q = IdentityQuery {
            domain: domain.into(),
            handle: handle.into(),
        }
        .to_bytes();
        let bytes = self.request_any(endpoints, MessageType::CHAIN, &q).await?;
        let vr = self.accept_record(&bytes, pinned)?;
        let entry = vr
            .record
            .zones
            .get(&ZoneType::IDENTITY)
            .and_then(|z| {
                z.entries.iter().find(|e| {
                    e.kind == poz::EntryKind::GRANT
                        && poz::entries::IdentityBinding::from_bytes(&e.body)
                            .is_ok_and(|b| b.handle == handle)
                })
            })
            .cloned()
            .ok_or_else(|| {
                ClientError::Invalid(format!("the CHAIN answer holds no binding for {handle:?}"))
            })?;
        let b = verify_binding(&vr, &entry, now_ms())
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        Ok((vr, b))
    }

    /// CHAIN for one handle, verified as a record from genesis (and
    /// against `pinned`) but with its binding left unjudged: what a caller
    /// needs to judge a binding it already holds (a copy in a holder's
    /// record) against the provider's record, revocation included
    /// (`poz::verify::verify_binding`).
    pub async fn chain_record(
        &self,
        endpoints: &[Endpoint],
        domain: &str,
        handle: &str,
        pinned: Option<Hash32>,
    ) -> Result<VerifiedRecord, ClientError> {
        let q = IdentityQuery {
            domain: domain.into(),
            handle: handle.into(),
        }
        .to_bytes();
        let bytes = self.request_any(endpoints, MessageType::CHAIN, &q).await?;
        self.accept_record(&bytes, pinned)
    }

    /// SERIAL: the cheap freshness check. Unsigned, so it is compared with
    /// what was seen but never trusted beyond that.
    pub async fn serial(
        &self,
        endpoints: &[Endpoint],
        domain: &str,
    ) -> Result<SerialAnswer, ClientError> {
        let q = DomainQuery {
            domain: domain.into(),
        }
        .to_bytes();
        let bytes = self.request_any(endpoints, MessageType::SERIAL, &q).await?;
        let a = SerialAnswer::from_bytes(&bytes)
            .map_err(|e| ClientError::Invalid(format!("SERIAL: {e}")))?;
        if let Some(seen) = self.seen_serial(&a.record_id) {
            if a.serial < seen {
                return Err(ClientError::Stale {
                    record_id: a.record_id,
                    seen,
                    served: a.serial,
                });
            }
        }
        Ok(a)
    }
}

impl Client {
    /// SUBMIT_SIGNED on 7076: acknowledged only once the authority has
    /// committed the update.
    pub async fn submit_signed(
        &self,
        endpoints: &[Endpoint],
        submission: &SubmitSigned,
    ) -> Result<SubmitTicket, ClientError> {
        self.require_noise(endpoints)?;
        let bytes = self
            .request_any(
                endpoints,
                MessageType::SUBMIT_SIGNED,
                &submission.to_bytes(),
            )
            .await?;
        SubmitTicket::from_bytes(&bytes).map_err(|e| ClientError::Invalid(format!("ticket: {e}")))
    }

    /// SUBMIT_REQUEST on 7076: asks the provider to issue a binding.
    pub async fn submit_request(
        &self,
        endpoints: &[Endpoint],
        request: &SubmitRequest,
    ) -> Result<SubmitTicket, ClientError> {
        self.require_noise(endpoints)?;
        let bytes = self
            .request_any(endpoints, MessageType::SUBMIT_REQUEST, &request.to_bytes())
            .await?;
        SubmitTicket::from_bytes(&bytes).map_err(|e| ClientError::Invalid(format!("ticket: {e}")))
    }

    /// SUBMIT_STATUS on 7076.
    pub async fn submit_status(
        &self,
        endpoints: &[Endpoint],
        submission_id: [u8; 16],
    ) -> Result<StatusAnswer, ClientError> {
        self.require_noise(endpoints)?;
        let bytes = self
            .request_any(
                endpoints,
                MessageType::SUBMIT_STATUS,
                &StatusQuery { submission_id }.to_bytes(),
            )
            .await?;
        StatusAnswer::from_bytes(&bytes).map_err(|e| ClientError::Invalid(format!("status: {e}")))
    }

    /// Submissions are always encrypted: refuse to send one in the clear.
    fn require_noise(&self, endpoints: &[Endpoint]) -> Result<(), ClientError> {
        if endpoints.iter().any(|e| e.security == Security::Plain) {
            return Err(ClientError::Invalid(
                "submissions travel only over Noise NK (port 7076)".into(),
            ));
        }
        Ok(())
    }
}

/// Pool hosts as endpoints, in the order to try them: by priority, and
/// within one priority by weighted random choice (RFC 2782's rule), so
/// load spreads as the weights say. Hosts the client cannot talk to
/// (TLS, UDP, Noise without a key) are skipped; `resolve` maps a host
/// name and port to addresses.
pub fn endpoints_from_service(
    service: &ServiceEntry,
    resolve: impl Fn(&str, u16) -> Vec<SocketAddr>,
) -> Vec<Endpoint> {
    let mut by_prio: std::collections::BTreeMap<u16, Vec<&PoolHost>> = Default::default();
    for h in &service.pool {
        by_prio.entry(h.priority).or_default().push(h);
    }
    let mut out = Vec::new();
    for (_, mut hosts) in by_prio {
        while !hosts.is_empty() {
            let total: u64 = hosts.iter().map(|h| h.weight as u64 + 1).sum();
            let mut r = [0u8; 8];
            rand_core::OsRng.fill_bytes(&mut r);
            let mut pick = u64::from_be_bytes(r) % total;
            let mut idx = 0;
            for (i, h) in hosts.iter().enumerate() {
                let w = h.weight as u64 + 1;
                if pick < w {
                    idx = i;
                    break;
                }
                pick -= w;
            }
            let h = hosts.remove(idx);
            let security = match (h.encryption, h.server_key) {
                (Encryption::NONE, _) => Security::Plain,
                (Encryption::NOISE_NK, Some(k)) => Security::Noise(k),
                _ => continue,
            };
            for addr in resolve(&h.hostname, h.port) {
                out.push(Endpoint { addr, security });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use poz::entries::{ServiceType, Transport, NO_CA_KEY};

    fn host(name: &str, priority: u16, weight: u16, enc: Encryption) -> PoolHost {
        PoolHost {
            hostname: name.into(),
            port: 7075,
            transport: Transport::TCP,
            encryption: enc,
            server_key: (enc == Encryption::NOISE_NK).then_some([1; 32]),
            ca_key_idx: NO_CA_KEY,
            priority,
            weight,
        }
    }

    #[test]
    fn pool_order_is_by_priority_then_weighted() {
        let svc = ServiceEntry {
            service_type: ServiceType::POZ_QUERY,
            name: String::new(),
            pool: vec![
                host("b", 20, 1, Encryption::NOISE_NK),
                host("heavy", 10, 900, Encryption::NOISE_NK),
                host("light", 10, 99, Encryption::NOISE_NK),
                host("tls", 5, 1, Encryption::TLS),
            ],
        };
        let addr_of = |h: &str| -> SocketAddr {
            match h {
                "heavy" => "127.0.0.1:1".parse().unwrap(),
                "light" => "127.0.0.1:2".parse().unwrap(),
                _ => "127.0.0.1:3".parse().unwrap(),
            }
        };
        let mut heavy_first = 0;
        for _ in 0..2000 {
            let eps = endpoints_from_service(&svc, |h, _| vec![addr_of(h)]);
            // TLS hosts are skipped; priority 20 always comes last.
            assert_eq!(eps.len(), 3);
            assert_eq!(eps[2].addr, addr_of("b"));
            if eps[0].addr == addr_of("heavy") {
                heavy_first += 1;
            }
        }
        // Weights 900 and 99 (+1 each): heavy first ~90% of the time.
        assert!((1700..=1900).contains(&heavy_first), "{heavy_first}");
    }
}
