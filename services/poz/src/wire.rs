//! The POZ network protocol's frames and payloads (SPEC §14), sans I/O.
//!
//! A connection carries one request and one response. On 7074 the frames
//! travel as they are; on 7075/7076 inside Noise NK messages (`noise`).

use crate::codec::{read_str8, write_str8, Codec, DecodeError, Reader};
use crate::entries::PoolHost;
use crate::hash::Hash32;
use crate::keys::{read_signatures, write_signatures, Signature};
use crate::wire_enum;
use crate::zone::{SignedEntry, ZoneType};

/// The only protocol version.
pub const VERSION: u8 = 0;
/// Request header without PoW: version, type, id, PoW flag, payload length.
pub const REQUEST_HEADER_LEN: usize = 7;
/// PoW fields: challenge (16), timestamp (8), nonce (8).
pub const POW_LEN: usize = 32;
/// Response header: version, status, id, payload length.
pub const RESPONSE_HEADER_LEN: usize = 8;
/// A request must fit one Noise handshake message (65,535 bytes less the
/// 32-byte ephemeral key and the 16-byte tag), on every port alike.
pub const MAX_REQUEST_LEN: usize = 65_535 - 48;
/// The largest response a client accepts (header excluded): a CHAIN or
/// MASTER answer is a record; 16 MiB bounds what a hostile server can make
/// a client buffer.
pub const MAX_RESPONSE_PAYLOAD: usize = 16 * 1024 * 1024;

wire_enum! {
    /// Query (7074/7075) and submit (7076) types.
    MessageType(u8) {
        MASTER = 0x01 => "master",
        MIRRORS = 0x02 => "mirrors",
        SERIAL = 0x03 => "serial",
        IDENTITY = 0x10 => "identity",
        CHAIN = 0x11 => "chain",
        ZONE = 0x12 => "zone",
        CHALLENGE = 0x13 => "challenge",
        BATCHES = 0x14 => "batches",
        BATCH = 0x15 => "batch",
        HANDLE_HISTORY = 0x16 => "handle_history",
        SUBMIT_SIGNED = 0x20 => "submit_signed",
        SUBMIT_REQUEST = 0x21 => "submit_request",
        SUBMIT_STATUS = 0x22 => "submit_status",
    }
}

impl MessageType {
    /// Answered on the lookup ports 7074 and 7075.
    pub fn is_query(self) -> bool {
        matches!(self.0, 0x01..=0x03 | 0x10..=0x16)
    }
    /// Accepted on the submit port 7076 only.
    pub fn is_submit(self) -> bool {
        matches!(self.0, 0x20..=0x22)
    }
}

wire_enum! {
    /// Response status codes. Every code a client can receive is here.
    Status(u8) {
        OK = 0x00 => "OK",
        NOT_FOUND = 0x01 => "NOT_FOUND",
        POW_REQUIRED = 0x02 => "POW_REQUIRED",
        BAD_REQUEST = 0x03 => "BAD_REQUEST",
        UNSUPPORTED_VERSION = 0x04 => "UNSUPPORTED_VERSION",
        WRONG_PORT = 0x05 => "WRONG_PORT",
        RATE_LIMITED = 0x06 => "RATE_LIMITED",
        UNAVAILABLE = 0x07 => "UNAVAILABLE",
        CONFLICT = 0x08 => "CONFLICT",
        UNAUTHORIZED = 0x09 => "UNAUTHORIZED",
        TOO_LARGE = 0x0A => "TOO_LARGE",
    }
}

/// A proof of work carried by a request.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PowSolution {
    pub challenge: [u8; 16],
    /// The client's clock, ms since the epoch.
    pub timestamp: u64,
    pub nonce: u64,
}

/// A request frame.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Request {
    pub message_type: MessageType,
    pub request_id: u16,
    pub pow: Option<PowSolution>,
    pub payload: Vec<u8>,
}

/// Why a request frame could not be used, with what a server needs to
/// answer it: the request id, whenever its two bytes (offsets 2–3)
/// arrived (SPEC §14.2).
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum FrameError {
    #[error("protocol version {version} is not supported (only 0)")]
    UnsupportedVersion {
        version: u8,
        /// None when the frame ended before its id bytes.
        request_id: Option<u16>,
    },
    #[error("request of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        len: usize,
        max: usize,
        /// Always known: the length comes after the id.
        request_id: u16,
    },
    #[error("malformed frame: {error}")]
    Malformed {
        request_id: Option<u16>,
        error: DecodeError,
    },
}

impl FrameError {
    /// The status a server answers with.
    pub fn status(&self) -> Status {
        match self {
            FrameError::UnsupportedVersion { .. } => Status::UNSUPPORTED_VERSION,
            FrameError::TooLarge { .. } => Status::TOO_LARGE,
            FrameError::Malformed { .. } => Status::BAD_REQUEST,
        }
    }

    /// The request id to echo: the frame's whenever its id bytes arrived,
    /// 0 only when the frame ended before them (SPEC §14.2).
    pub fn request_id(&self) -> u16 {
        match self {
            FrameError::UnsupportedVersion { request_id, .. } => request_id.unwrap_or(0),
            FrameError::TooLarge { request_id, .. } => *request_id,
            FrameError::Malformed { request_id, .. } => request_id.unwrap_or(0),
        }
    }

    /// The error response for this frame: its status, the echoed id, and
    /// the reason as the detail (not retryable).
    pub fn response(&self) -> Response {
        Response::error(self.status(), self.request_id(), 0, &self.to_string())
    }
}

/// Offset of the request id in a request frame (after version and type),
/// in every version: a server that cannot read a frame still echoes it.
const REQUEST_ID_AT: usize = 2;

impl Request {
    pub fn new(message_type: MessageType, request_id: u16, payload: Vec<u8>) -> Self {
        Request {
            message_type,
            request_id,
            pow: None,
            payload,
        }
    }

    /// The request id of the bytes of a frame so far: `Some` as soon as
    /// its two bytes (offsets 2–3) are there, whatever else the frame
    /// holds.
    pub fn peek_id(buf: &[u8]) -> Option<u16> {
        let b = buf.get(REQUEST_ID_AT..REQUEST_ID_AT + 2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Decides cheaply whether `buf` holds a whole request yet: `Ok(None)`
    /// means read more, `Ok(Some(n))` means the frame is the first `n`
    /// bytes. Fails as soon as the header shows the frame is unusable, so
    /// a server never buffers more than `MAX_REQUEST_LEN` for one request;
    /// but never before the request id arrived, so that every error it
    /// returns echoes the id (SPEC §14.2). A frame that ends before its id
    /// is judged by [`Request::decode`].
    pub fn check(buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(request_id) = Request::peek_id(buf) else {
            return Ok(None);
        };
        if buf[0] != VERSION {
            return Err(FrameError::UnsupportedVersion {
                version: buf[0],
                request_id: Some(request_id),
            });
        }
        if buf.len() < 5 {
            return Ok(None);
        }
        let pow_len = match buf[4] {
            0 => 0,
            1 => POW_LEN,
            v => {
                return Err(FrameError::Malformed {
                    request_id: Some(request_id),
                    error: DecodeError::InvalidValue {
                        field: "request.pow_flag",
                        offset: 4,
                        value: v as u64,
                    },
                })
            }
        };
        let len_at = 5 + pow_len;
        if buf.len() < len_at + 2 {
            return Ok(None);
        }
        let payload_len = u16::from_be_bytes([buf[len_at], buf[len_at + 1]]) as usize;
        let total = len_at + 2 + payload_len;
        if total > MAX_REQUEST_LEN {
            return Err(FrameError::TooLarge {
                len: total,
                max: MAX_REQUEST_LEN,
                request_id,
            });
        }
        Ok((buf.len() >= total).then_some(total))
    }

    /// Decodes exactly one whole request: `buf` is everything the client
    /// sent (a Noise message's payload, or a plain frame whose sender
    /// stopped). A frame that ends early is UNSUPPORTED_VERSION if its
    /// first byte says so, else malformed; either echoes the id if it
    /// arrived.
    pub fn decode(buf: &[u8]) -> Result<Request, FrameError> {
        let Some(total) = Request::check(buf)? else {
            let request_id = Request::peek_id(buf);
            return Err(match buf.first() {
                Some(&version) if version != VERSION => FrameError::UnsupportedVersion {
                    version,
                    request_id,
                },
                _ => FrameError::Malformed {
                    request_id,
                    error: DecodeError::Truncated {
                        field: "request",
                        offset: buf.len(),
                        needed: 1,
                    },
                },
            });
        };
        let request_id = u16::from_be_bytes([buf[2], buf[3]]);
        if total != buf.len() {
            return Err(FrameError::Malformed {
                request_id: Some(request_id),
                error: DecodeError::TrailingBytes {
                    field: "request",
                    offset: total,
                    extra: buf.len() - total,
                },
            });
        }
        Request::from_bytes(buf).map_err(|error| FrameError::Malformed {
            request_id: Some(request_id),
            error,
        })
    }
}

impl Codec for Request {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        out.push(self.message_type.0);
        out.extend_from_slice(&self.request_id.to_be_bytes());
        match &self.pow {
            Some(p) => {
                out.push(1);
                out.extend_from_slice(&p.challenge);
                out.extend_from_slice(&p.timestamp.to_be_bytes());
                out.extend_from_slice(&p.nonce.to_be_bytes());
            }
            None => out.push(0),
        }
        out.extend_from_slice(&(self.payload.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.payload);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let v = r.u8("request.version")?;
        if v != VERSION {
            return Err(DecodeError::InvalidValue {
                field: "request.version",
                offset: 0,
                value: v as u64,
            });
        }
        let message_type = MessageType(r.u8("request.type")?);
        let request_id = r.u16("request.id")?;
        let pow = match r.u8("request.pow_flag")? {
            0 => None,
            1 => Some(PowSolution {
                challenge: r.array("request.pow.challenge")?,
                timestamp: r.u64("request.pow.timestamp")?,
                nonce: r.u64("request.pow.nonce")?,
            }),
            f => return Err(r.invalid("request.pow_flag", f as u64)),
        };
        let len = r.u16("request.payload_length")? as usize;
        let payload = r.take(len, "request.payload")?.to_vec();
        Ok(Request {
            message_type,
            request_id,
            pow,
            payload,
        })
    }
}

/// A response frame.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Response {
    pub status: Status,
    pub request_id: u16,
    pub payload: Vec<u8>,
}

impl Response {
    pub fn ok(request_id: u16, payload: Vec<u8>) -> Self {
        Response {
            status: Status::OK,
            request_id,
            payload,
        }
    }

    /// An error response with its detail payload.
    pub fn error(status: Status, request_id: u16, retry_after_ms: u32, message: &str) -> Self {
        Response {
            status,
            request_id,
            payload: ErrorDetail::new(retry_after_ms, message).to_bytes(),
        }
    }

    /// Like `Request::check`: `Ok(Some(n))` once the first `n` bytes are a
    /// whole response; refuses a payload over `max_payload` from the header.
    pub fn check(buf: &[u8], max_payload: usize) -> Result<Option<usize>, DecodeError> {
        if buf.len() < RESPONSE_HEADER_LEN {
            return Ok(None);
        }
        if buf[0] != VERSION {
            return Err(DecodeError::InvalidValue {
                field: "response.version",
                offset: 0,
                value: buf[0] as u64,
            });
        }
        let len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
        if len > max_payload {
            return Err(DecodeError::TooMany {
                field: "response.payload_length",
                offset: 4,
                count: len as u64,
                max: max_payload as u64,
            });
        }
        let total = RESPONSE_HEADER_LEN + len;
        Ok((buf.len() >= total).then_some(total))
    }
}

impl Codec for Response {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        out.push(self.status.0);
        out.extend_from_slice(&self.request_id.to_be_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.payload);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let v = r.u8("response.version")?;
        if v != VERSION {
            return Err(DecodeError::InvalidValue {
                field: "response.version",
                offset: 0,
                value: v as u64,
            });
        }
        let status = Status(r.u8("response.status")?);
        let request_id = r.u16("response.id")?;
        let len = r.u32("response.payload_length")? as usize;
        if len > MAX_RESPONSE_PAYLOAD {
            return Err(r.invalid("response.payload_length", len as u64));
        }
        let payload = r.take(len, "response.payload")?.to_vec();
        Ok(Response {
            status,
            request_id,
            payload,
        })
    }
}

/// The payload of every error status except POW_REQUIRED.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ErrorDetail {
    /// When to try again, in ms (0: not a retryable condition).
    pub retry_after_ms: u32,
    pub message: String,
}

impl ErrorDetail {
    pub fn new(retry_after_ms: u32, message: &str) -> Self {
        let mut m = message.replace(|c: char| c.is_control(), " ");
        while m.len() > 255 {
            m.pop();
        }
        ErrorDetail {
            retry_after_ms,
            message: m,
        }
    }
}

impl Codec for ErrorDetail {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.retry_after_ms.to_be_bytes());
        write_str8(out, &self.message);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ErrorDetail {
            retry_after_ms: r.u32("error.retry_after_ms")?,
            message: read_str8(r, "error.message")?,
        })
    }
}

/// A domain name as queries carry it: 1..=253 bytes, lowercase ASCII
/// letters, digits, '-', '.' (so one name has one spelling).
pub fn valid_domain(d: &str) -> bool {
    domain_rule_broken(d).is_none()
}

/// The rule of SPEC §14.4 that `d` breaks as a query's domain, in words a
/// client's log can show, or `None` when it is a valid domain.
pub fn domain_rule_broken(d: &str) -> Option<&'static str> {
    if d.is_empty() {
        Some("domain is empty (1..=253 bytes)")
    } else if d.len() > 253 {
        Some("domain is longer than 253 bytes")
    } else if d.bytes().any(|b| b.is_ascii_uppercase()) {
        Some("domain has upper-case letters (queries carry lowercase only)")
    } else if !d
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        Some("domain has a character other than a-z, 0-9, '-' and '.'")
    } else if d.starts_with('.') || d.ends_with('.') || d.contains("..") {
        Some("domain has an empty label (leading, trailing or doubled '.')")
    } else {
        None
    }
}

pub use crate::handle::handle_rule_broken;

/// The record a query's domain field names when it is a **record name**
/// (SPEC §14.4, "Records without a domain"): exactly 64 lowercase hex
/// digits, the record ID. A person's record has no domain; a provider that
/// hosts it answers for it under this name. No DNS name is spelled so (a
/// DNS label is at most 63 bytes), so a record name never shadows a
/// domain. `None` for anything else, which is an ordinary domain.
pub fn record_name_id(domain: &str) -> Option<Hash32> {
    if domain.len() != 64 || domain.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    Hash32::from_hex(domain)
}

/// The record name of `id` (SPEC §14.4): its 64 lowercase hex digits,
/// carried wherever a query or submission carries a domain.
pub fn record_name(id: &Hash32) -> String {
    id.to_hex()
}

pub(crate) fn read_domain(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let at = r.offset();
    let d = read_str8(r, "query.domain")?;
    if let Some(reason) = domain_rule_broken(&d) {
        return Err(DecodeError::Layout {
            field: "query.domain",
            offset: at,
            reason,
        });
    }
    Ok(d)
}

/// MASTER, MIRRORS, SERIAL: which record, by domain.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DomainQuery {
    pub domain: String,
}

impl Codec for DomainQuery {
    fn encode(&self, out: &mut Vec<u8>) {
        write_str8(out, &self.domain);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(DomainQuery {
            domain: read_domain(r)?,
        })
    }
}

/// IDENTITY, CHAIN: a handle within a domain's Identity Zone.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct IdentityQuery {
    pub domain: String,
    pub handle: String,
}

impl Codec for IdentityQuery {
    fn encode(&self, out: &mut Vec<u8>) {
        write_str8(out, &self.domain);
        write_str8(out, &self.handle);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let domain = read_domain(r)?;
        let at = r.offset();
        let handle = read_str8(r, "query.handle")?;
        if let Some(reason) = handle_rule_broken(&handle) {
            return Err(DecodeError::Layout {
                field: "query.handle",
                offset: at,
                reason,
            });
        }
        Ok(IdentityQuery { domain, handle })
    }
}

/// Entries per ZONE page at most.
pub const MAX_ZONE_PAGE: u16 = 1000;

/// ZONE: a page of a zone's entries, in ascending digest order, starting
/// after `after` (zero: from the start). `limit` = 1 with `after` set to
/// the predecessor addresses one entry by key.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ZoneQuery {
    pub domain: String,
    pub zone_type: ZoneType,
    pub after: Hash32,
    pub limit: u16,
}

impl Codec for ZoneQuery {
    fn encode(&self, out: &mut Vec<u8>) {
        write_str8(out, &self.domain);
        out.push(self.zone_type.0);
        self.after.encode(out);
        out.extend_from_slice(&self.limit.to_be_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let domain = read_domain(r)?;
        let zone_type = ZoneType(r.u8("zone_query.zone_type")?);
        if !zone_type.is_known() {
            return Err(r.invalid("zone_query.zone_type", zone_type.0 as u64));
        }
        let after = Hash32::read(r)?;
        let limit = r.u16("zone_query.limit")?;
        if limit == 0 || limit > MAX_ZONE_PAGE {
            return Err(r.invalid("zone_query.limit", limit as u64));
        }
        Ok(ZoneQuery {
            domain,
            zone_type,
            after,
            limit,
        })
    }
}

/// SERIAL answer: the cheap freshness check.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SerialAnswer {
    pub record_id: Hash32,
    pub serial: u32,
    pub current_master_hash: Hash32,
    pub timestamp: u64,
}

impl Codec for SerialAnswer {
    fn encode(&self, out: &mut Vec<u8>) {
        self.record_id.encode(out);
        out.extend_from_slice(&self.serial.to_be_bytes());
        self.current_master_hash.encode(out);
        out.extend_from_slice(&self.timestamp.to_be_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SerialAnswer {
            record_id: Hash32::read(r)?,
            serial: r.u32("serial.serial")?,
            current_master_hash: Hash32::read(r)?,
            timestamp: r.u64("serial.timestamp")?,
        })
    }
}

/// MIRRORS answer: servers known to carry the record (unsigned: a server
/// may lie about mirrors, never about data).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MirrorsAnswer {
    pub hosts: Vec<PoolHost>,
}

impl Codec for MirrorsAnswer {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.hosts.len() as u8);
        for h in &self.hosts {
            h.encode(out);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.u8("mirrors.count")? as usize;
        let mut hosts = Vec::with_capacity(n.min(r.left()));
        for _ in 0..n {
            hosts.push(PoolHost::read(r)?);
        }
        Ok(MirrorsAnswer { hosts })
    }
}

/// IDENTITY answer: the binding, and the provider's revocation of it if
/// there is one (a server that omits it serves stale data; CHAIN from the
/// provider settles it).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct IdentityAnswer {
    pub binding: SignedEntry,
    pub revocation: Option<SignedEntry>,
}

impl Codec for IdentityAnswer {
    fn encode(&self, out: &mut Vec<u8>) {
        self.binding.encode(out);
        match &self.revocation {
            Some(r) => {
                out.push(1);
                r.encode(out);
            }
            None => out.push(0),
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let binding = SignedEntry::read(r)?;
        let revocation = match r.u8("identity.has_revocation")? {
            0 => None,
            1 => Some(SignedEntry::read(r)?),
            v => return Err(r.invalid("identity.has_revocation", v as u64)),
        };
        Ok(IdentityAnswer {
            binding,
            revocation,
        })
    }
}

impl IdentityAnswer {
    /// The answer's bytes spliced from a binding and revocation that are
    /// already encoded (as the store keeps them), without decoding them:
    /// exactly what [`Codec::to_bytes`] gives for the decoded pair, at the
    /// cost of one copy. The serving path of every IDENTITY lookup (SPEC
    /// §14.4): the store verified each entry before it wrote it, and
    /// clients verify every answer, so a gateway re-checking the framing
    /// would pay a decode per answer for nothing. Callers must pass whole
    /// SignedEntry encodings; anything else makes an answer clients refuse.
    pub fn splice(binding: &[u8], revocation: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::with_capacity(binding.len() + 1 + revocation.map_or(0, <[u8]>::len));
        out.extend_from_slice(binding);
        match revocation {
            Some(r) => {
                out.push(1);
                out.extend_from_slice(r);
            }
            None => out.push(0),
        }
        out
    }
}

/// ZONE answer: a page of entries and the cursor for the next one.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ZoneAnswer {
    pub entries: Vec<SignedEntry>,
    /// Zero when this page is the last.
    pub next: Hash32,
}

impl Codec for ZoneAnswer {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for e in &self.entries {
            e.encode(out);
        }
        self.next.encode(out);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.u32("zone_answer.count")? as usize;
        if n > MAX_ZONE_PAGE as usize {
            return Err(r.invalid("zone_answer.count", n as u64));
        }
        let mut entries = Vec::with_capacity(n.min(r.left() / 6));
        for _ in 0..n {
            entries.push(SignedEntry::read(r)?);
        }
        Ok(ZoneAnswer {
            entries,
            next: Hash32::read(r)?,
        })
    }
}

impl ZoneAnswer {
    /// A page's bytes spliced from entries that are already encoded (as
    /// the store keeps them), without decoding them: the same bytes as
    /// [`Codec::to_bytes`] of the decoded page, for the reasons given at
    /// [`IdentityAnswer::splice`]. At most [`MAX_ZONE_PAGE`] entries (the
    /// store's page limit); the count is written as a u32.
    pub fn splice<E: AsRef<[u8]>>(entries: &[E], next: &Hash32) -> Vec<u8> {
        let len: usize = entries.iter().map(|e| e.as_ref().len()).sum();
        let mut out = Vec::with_capacity(4 + len + 32);
        out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        for e in entries {
            out.extend_from_slice(e.as_ref());
        }
        next.encode(&mut out);
        out
    }
}

/// CHALLENGE answer, also carried by POW_REQUIRED.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Challenge {
    /// Leading zero bits the solution's hash must have.
    pub difficulty: u8,
    pub challenge: [u8; 16],
    /// When the server stops accepting it, ms since the epoch.
    pub expires_at: u64,
}

impl Codec for Challenge {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.difficulty);
        out.extend_from_slice(&self.challenge);
        out.extend_from_slice(&self.expires_at.to_be_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Challenge {
            difficulty: r.u8("challenge.difficulty")?,
            challenge: r.array("challenge.challenge")?,
            expires_at: r.u64("challenge.expires_at")?,
        })
    }
}

wire_enum! {
    /// Why POW_REQUIRED was sent.
    PowReason(u8) {
        REQUIRED = 0x00 => "required",
        INVALID = 0x01 => "invalid",
        EXPIRED = 0x02 => "expired",
        REPLAYED = 0x03 => "replayed",
        INSUFFICIENT = 0x04 => "insufficient",
    }
}

/// POW_REQUIRED payload: why, and a fresh challenge to solve at once.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PowRequired {
    pub reason: PowReason,
    pub challenge: Challenge,
}

impl Codec for PowRequired {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.reason.0);
        self.challenge.encode(out);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(PowRequired {
            reason: PowReason(r.u8("pow_required.reason")?),
            challenge: Challenge::read(r)?,
        })
    }
}

wire_enum! {
    /// What SUBMIT_SIGNED carries.
    SubmitKind(u8) {
        /// A whole record whose master zone is the next revision.
        RECORD = 0x01 => "record",
        /// One signed zone entry for the record of `domain`.
        ENTRY = 0x02 => "entry",
        /// A record published to a provider that hosts records (SPEC
        /// §14.5): named by its own ID, no domain.
        NEW_RECORD = 0x03 => "new_record",
    }
}

/// SUBMIT_SIGNED: a fully signed update, pushed to its authority.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum SubmitSigned {
    Record {
        domain: String,
        record: Vec<u8>,
    },
    Entry {
        domain: String,
        zone_type: ZoneType,
        entry: SignedEntry,
    },
    /// Kind 3: a whole record, complete from genesis, to be hosted by the
    /// provider under its record name (SPEC §14.5). The record runs to the
    /// end of the payload.
    NewRecord {
        record: Vec<u8>,
    },
}

impl Codec for SubmitSigned {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            SubmitSigned::Record { domain, record } => {
                out.push(SubmitKind::RECORD.0);
                write_str8(out, domain);
                out.extend_from_slice(record);
            }
            SubmitSigned::Entry {
                domain,
                zone_type,
                entry,
            } => {
                out.push(SubmitKind::ENTRY.0);
                write_str8(out, domain);
                out.push(zone_type.0);
                entry.encode(out);
            }
            SubmitSigned::NewRecord { record } => {
                out.push(SubmitKind::NEW_RECORD.0);
                out.extend_from_slice(record);
            }
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let kind = SubmitKind(r.u8("submit.kind")?);
        if !kind.is_known() {
            return Err(DecodeError::InvalidValue {
                field: "submit.kind",
                offset: r.offset() - 1,
                value: kind.0 as u64,
            });
        }
        // The record runs to the end of the payload; it is decoded
        // (strictly) when verified, but it cannot be empty.
        fn rest_record(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
            let at = r.offset();
            let record = r.rest();
            if record.is_empty() {
                return Err(DecodeError::Truncated {
                    field: "submit.record",
                    offset: at,
                    needed: 1,
                });
            }
            Ok(record.to_vec())
        }
        if kind == SubmitKind::NEW_RECORD {
            return Ok(SubmitSigned::NewRecord {
                record: rest_record(r)?,
            });
        }
        let domain = read_domain(r)?;
        match kind {
            SubmitKind::RECORD => Ok(SubmitSigned::Record {
                domain,
                record: rest_record(r)?,
            }),
            SubmitKind::ENTRY => {
                let zone_type = ZoneType(r.u8("submit.zone_type")?);
                if !zone_type.is_known() {
                    return Err(r.invalid("submit.zone_type", zone_type.0 as u64));
                }
                Ok(SubmitSigned::Entry {
                    domain,
                    zone_type,
                    entry: SignedEntry::read(r)?,
                })
            }
            other => Err(r.invalid("submit.kind", other.0 as u64)),
        }
    }
}

/// SUBMIT_REQUEST: ask a provider to issue a binding `handle` -> `subject`.
/// `proof` is the subject record's master keys signing
/// `H("POZ-v0 submit-request", domain ‖ handle ‖ subject)` to threshold, so
/// only the holder of a record can ask for a binding to it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SubmitRequest {
    pub domain: String,
    pub handle: String,
    pub subject: Hash32,
    pub proof: Vec<Signature>,
}

impl SubmitRequest {
    /// The digest the subject's keys sign.
    pub fn digest(&self) -> Hash32 {
        let mut b = Vec::with_capacity(64 + self.domain.len() + self.handle.len());
        write_str8(&mut b, &self.domain);
        write_str8(&mut b, &self.handle);
        self.subject.encode(&mut b);
        crate::hash::tagged_hash(crate::hash::tag::SUBMIT_REQUEST, &[&b])
    }

    /// The submission ID of this request (SPEC §14.4): the first 16 bytes
    /// of `H("POZ-v0 submission-id", str8(lowercase domain) ‖ str8(handle)
    /// ‖ subject)`. It names what is asked, not the proof: the same ask
    /// with another proof (or junk appended) is the same submission.
    pub fn submission_id(&self) -> [u8; 16] {
        let mut b = Vec::with_capacity(64 + self.domain.len() + self.handle.len());
        write_str8(&mut b, &self.domain.to_ascii_lowercase());
        write_str8(&mut b, &self.handle);
        self.subject.encode(&mut b);
        let h = crate::hash::tagged_hash("POZ-v0 submission-id", &[&b]);
        let mut id = [0u8; 16];
        id.copy_from_slice(&h.0[..16]);
        id
    }
}

impl Codec for SubmitRequest {
    fn encode(&self, out: &mut Vec<u8>) {
        write_str8(out, &self.domain);
        write_str8(out, &self.handle);
        self.subject.encode(out);
        write_signatures(out, &self.proof);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let domain = read_domain(r)?;
        let at = r.offset();
        let handle = read_str8(r, "submit_request.handle")?;
        if let Some(reason) = handle_rule_broken(&handle) {
            return Err(DecodeError::Layout {
                field: "submit_request.handle",
                offset: at,
                reason,
            });
        }
        Ok(SubmitRequest {
            domain,
            handle,
            subject: Hash32::read(r)?,
            proof: read_signatures(r, "submit_request.proof")?,
        })
    }
}

/// SUBMIT_SIGNED / SUBMIT_REQUEST answer: the submission's ticket.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SubmitTicket {
    pub submission_id: [u8; 16],
    pub state: SubmissionState,
}

wire_enum! {
    SubmissionState(u8) {
        /// Stored and committed (SUBMIT_SIGNED acknowledges only this).
        COMMITTED = 0x00 => "committed",
        /// Queued for the authority's decision.
        PENDING = 0x01 => "pending",
        /// Issued: SUBMIT_STATUS carries the signed entry.
        ISSUED = 0x02 => "issued",
        /// Refused by the authority's policy.
        REFUSED = 0x03 => "refused",
    }
}

impl Codec for SubmitTicket {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.submission_id);
        out.push(self.state.0);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let submission_id = r.array("ticket.id")?;
        let state = SubmissionState(r.u8("ticket.state")?);
        if !state.is_known() {
            return Err(r.invalid("ticket.state", state.0 as u64));
        }
        Ok(SubmitTicket {
            submission_id,
            state,
        })
    }
}

/// SUBMIT_STATUS request: which submission.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct StatusQuery {
    pub submission_id: [u8; 16],
}

impl Codec for StatusQuery {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.submission_id);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(StatusQuery {
            submission_id: r.array("status.id")?,
        })
    }
}

/// A request's payload decoded by its type's rule (SPEC §14.4): exactly
/// the bytes the type names, nothing after them (CHALLENGE: nothing at
/// all). Error offsets count from the payload's first byte.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum RequestPayload {
    /// CHALLENGE: empty.
    Challenge,
    /// MASTER, MIRRORS, SERIAL: a domain.
    Domain(DomainQuery),
    /// IDENTITY, CHAIN: a domain and a handle.
    Identity(IdentityQuery),
    /// ZONE.
    Zone(ZoneQuery),
    /// BATCHES: a page of the batch log (SPEC §14.8).
    Batches(BatchesQuery),
    /// BATCH: a page of one batch's entries.
    Batch(BatchQuery),
    /// HANDLE_HISTORY: a page of one handle's bindings.
    HandleHistory(HistoryQuery),
    SubmitSigned(SubmitSigned),
    SubmitRequest(SubmitRequest),
    /// SUBMIT_STATUS: a 16-byte submission id.
    SubmitStatus(StatusQuery),
}

impl RequestPayload {
    /// Decodes the payload of a request of type `t`. Errors:
    /// `TrailingBytes` at `<type>.payload` for bytes after what the type
    /// names (any byte, for CHALLENGE); the field's error for a field that
    /// is missing, cut short or invalid; `InvalidValue` at `request.type`
    /// for a type that has no payload rule (not a query or submit type).
    pub fn decode(t: MessageType, payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let (p, field) = match t {
            MessageType::CHALLENGE => (RequestPayload::Challenge, "challenge.payload"),
            MessageType::MASTER => (
                RequestPayload::Domain(DomainQuery::read(&mut r)?),
                "master.payload",
            ),
            MessageType::MIRRORS => (
                RequestPayload::Domain(DomainQuery::read(&mut r)?),
                "mirrors.payload",
            ),
            MessageType::SERIAL => (
                RequestPayload::Domain(DomainQuery::read(&mut r)?),
                "serial.payload",
            ),
            MessageType::IDENTITY => (
                RequestPayload::Identity(IdentityQuery::read(&mut r)?),
                "identity.payload",
            ),
            MessageType::CHAIN => (
                RequestPayload::Identity(IdentityQuery::read(&mut r)?),
                "chain.payload",
            ),
            MessageType::ZONE => (
                RequestPayload::Zone(ZoneQuery::read(&mut r)?),
                "zone.payload",
            ),
            MessageType::BATCHES => (
                RequestPayload::Batches(BatchesQuery::read(&mut r)?),
                "batches.payload",
            ),
            MessageType::BATCH => (
                RequestPayload::Batch(BatchQuery::read(&mut r)?),
                "batch.payload",
            ),
            MessageType::HANDLE_HISTORY => (
                RequestPayload::HandleHistory(HistoryQuery::read(&mut r)?),
                "handle_history.payload",
            ),
            MessageType::SUBMIT_SIGNED => (
                RequestPayload::SubmitSigned(SubmitSigned::read(&mut r)?),
                "submit_signed.payload",
            ),
            MessageType::SUBMIT_REQUEST => (
                RequestPayload::SubmitRequest(SubmitRequest::read(&mut r)?),
                "submit_request.payload",
            ),
            MessageType::SUBMIT_STATUS => (
                RequestPayload::SubmitStatus(StatusQuery::read(&mut r)?),
                "submit_status.payload",
            ),
            other => {
                return Err(DecodeError::InvalidValue {
                    field: "request.type",
                    offset: 1,
                    value: other.0 as u64,
                })
            }
        };
        r.expect_end(field)?;
        Ok(p)
    }
}

/// SUBMIT_STATUS answer.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StatusAnswer {
    pub ticket: SubmitTicket,
    /// The issued entry, when the state is ISSUED.
    pub entry: Option<SignedEntry>,
    pub message: String,
}

impl Codec for StatusAnswer {
    fn encode(&self, out: &mut Vec<u8>) {
        self.ticket.encode(out);
        match &self.entry {
            Some(e) => {
                out.push(1);
                e.encode(out);
            }
            None => out.push(0),
        }
        write_str8(out, &self.message);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let ticket = SubmitTicket::read(r)?;
        let entry = match r.u8("status.has_entry")? {
            0 => None,
            1 => Some(SignedEntry::read(r)?),
            v => return Err(r.invalid("status.has_entry", v as u64)),
        };
        Ok(StatusAnswer {
            ticket,
            entry,
            message: read_str8(r, "status.message")?,
        })
    }
}

// Public audit queries and answers (SPEC §14.8); the checks over them
// are in `audit`.

/// Batches per BATCHES page at most.
pub const MAX_BATCH_PAGE: u16 = 1000;
/// Bindings per HANDLE_HISTORY page at most.
pub const MAX_HISTORY_PAGE: u16 = 1000;

fn read_zone_type(r: &mut Reader<'_>, field: &'static str) -> Result<ZoneType, DecodeError> {
    let z = ZoneType(r.u8(field)?);
    if !z.is_known() {
        return Err(r.invalid(field, z.0 as u64));
    }
    Ok(z)
}

fn read_limit(r: &mut Reader<'_>, field: &'static str, max: u16) -> Result<u16, DecodeError> {
    let limit = r.u16(field)?;
    if limit == 0 || limit > max {
        return Err(r.invalid(field, limit as u64));
    }
    Ok(limit)
}

/// BATCHES request (SPEC §14.8): `domain ‖ u8 zone_type ‖ u64 after ‖
/// u16 limit` — the batches of `zone_type` whose sequence number is above
/// `after` (0: from the first), at most `limit` (1..=1000).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BatchesQuery {
    pub domain: String,
    pub zone_type: ZoneType,
    pub after: u64,
    pub limit: u16,
}

impl Codec for BatchesQuery {
    fn encode(&self, out: &mut Vec<u8>) {
        write_str8(out, &self.domain);
        out.push(self.zone_type.0);
        out.extend_from_slice(&self.after.to_be_bytes());
        out.extend_from_slice(&self.limit.to_be_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(BatchesQuery {
            domain: read_domain(r)?,
            zone_type: read_zone_type(r, "batches_query.zone_type")?,
            after: r.u64("batches_query.after")?,
            limit: read_limit(r, "batches_query.limit", MAX_BATCH_PAGE)?,
        })
    }
}

/// One batch in the provider's log: 48 bytes on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BatchInfo {
    /// The batch's place in the log: 1, 2, 3, … per record and zone, in
    /// the order the store committed them. Assigned by the store, not
    /// signed: a gap is visible, a renumbering is not (SPEC §14.8).
    pub seq: u64,
    /// The batch root digest its root signatures sign (SPEC §8.9 step 3).
    pub root_digest: Hash32,
    /// When the store first committed one of its entries, ms since the
    /// epoch (unsigned, informative).
    pub stored_at: u64,
}

impl Codec for BatchInfo {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.seq.to_be_bytes());
        self.root_digest.encode(out);
        out.extend_from_slice(&self.stored_at.to_be_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(BatchInfo {
            seq: r.u64("batch.seq")?,
            root_digest: Hash32::read(r)?,
            stored_at: r.u64("batch.stored_at")?,
        })
    }
}

/// BATCHES answer: `u32 count ‖ count × batch (48 bytes) ‖ u64 next`, the
/// batches ascending by `seq`; `next` is the last one's `seq` when more
/// follow, 0 when this page is the last.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BatchesAnswer {
    pub batches: Vec<BatchInfo>,
    pub next: u64,
}

impl Codec for BatchesAnswer {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.batches.len() as u32).to_be_bytes());
        for b in &self.batches {
            b.encode(out);
        }
        out.extend_from_slice(&self.next.to_be_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.u32("batches_answer.count")? as usize;
        if n > MAX_BATCH_PAGE as usize {
            return Err(r.invalid("batches_answer.count", n as u64));
        }
        let mut batches = Vec::with_capacity(n.min(r.left() / 48));
        for _ in 0..n {
            batches.push(BatchInfo::read(r)?);
        }
        Ok(BatchesAnswer {
            batches,
            next: r.u64("batches_answer.next")?,
        })
    }
}

/// BATCH request (SPEC §14.8): `domain ‖ u8 zone_type ‖ hash root_digest
/// ‖ hash after ‖ u16 limit` — the entries of one batch, ascending by
/// digest after `after` (zero: from the start), at most `limit`
/// (1..=1000). The answer is a ZONE answer (`wire::ZoneAnswer`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BatchQuery {
    pub domain: String,
    pub zone_type: ZoneType,
    pub root_digest: Hash32,
    pub after: Hash32,
    pub limit: u16,
}

impl Codec for BatchQuery {
    fn encode(&self, out: &mut Vec<u8>) {
        write_str8(out, &self.domain);
        out.push(self.zone_type.0);
        self.root_digest.encode(out);
        self.after.encode(out);
        out.extend_from_slice(&self.limit.to_be_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(BatchQuery {
            domain: read_domain(r)?,
            zone_type: read_zone_type(r, "batch_query.zone_type")?,
            root_digest: Hash32::read(r)?,
            after: Hash32::read(r)?,
            limit: read_limit(r, "batch_query.limit", MAX_ZONE_PAGE)?,
        })
    }
}

/// HANDLE_HISTORY request (SPEC §14.8): `domain ‖ handle ‖ hash after ‖
/// u16 limit` — every binding of `handle` in the record's Identity Zone,
/// live, expired or revoked, ascending by digest after `after`, at most
/// `limit` (1..=1000).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HistoryQuery {
    pub domain: String,
    pub handle: String,
    pub after: Hash32,
    pub limit: u16,
}

impl Codec for HistoryQuery {
    fn encode(&self, out: &mut Vec<u8>) {
        write_str8(out, &self.domain);
        write_str8(out, &self.handle);
        self.after.encode(out);
        out.extend_from_slice(&self.limit.to_be_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let domain = read_domain(r)?;
        let at = r.offset();
        let handle = read_str8(r, "history_query.handle")?;
        if let Some(reason) = crate::handle::handle_rule_broken(&handle) {
            return Err(DecodeError::Layout {
                field: "history_query.handle",
                offset: at,
                reason,
            });
        }
        Ok(HistoryQuery {
            domain,
            handle,
            after: Hash32::read(r)?,
            limit: read_limit(r, "history_query.limit", MAX_HISTORY_PAGE)?,
        })
    }
}

/// HANDLE_HISTORY answer: `u32 count ‖ count × (binding ‖ u8
/// has_revocation ‖ [revocation]) ‖ hash next` (each item laid out as an
/// IDENTITY answer); `next` is the last binding's digest when more
/// follow, zero when this page is the last.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HistoryAnswer {
    pub bindings: Vec<IdentityAnswer>,
    pub next: Hash32,
}

impl Codec for HistoryAnswer {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.bindings.len() as u32).to_be_bytes());
        for b in &self.bindings {
            b.encode(out);
        }
        self.next.encode(out);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.u32("history_answer.count")? as usize;
        if n > MAX_HISTORY_PAGE as usize {
            return Err(r.invalid("history_answer.count", n as u64));
        }
        let mut bindings = Vec::with_capacity(n.min(r.left() / 7));
        for _ in 0..n {
            bindings.push(IdentityAnswer::read(r)?);
        }
        Ok(HistoryAnswer {
            bindings,
            next: Hash32::read(r)?,
        })
    }
}

impl HistoryAnswer {
    /// The answer's bytes from (binding, revocation) pairs already encoded
    /// as the store keeps them: the same bytes as [`Codec::to_bytes`] of
    /// the decoded answer (see `wire::IdentityAnswer::splice` for why a
    /// gateway does not decode them). At most [`MAX_HISTORY_PAGE`] items.
    pub fn splice<E: AsRef<[u8]>>(items: &[(E, Option<E>)], next: &Hash32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(items.len() as u32).to_be_bytes());
        for (b, r) in items {
            out.extend_from_slice(&IdentityAnswer::splice(
                b.as_ref(),
                r.as_ref().map(AsRef::as_ref),
            ));
        }
        next.encode(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: u8, body: &[u8], sigs: &[u8]) -> SignedEntry {
        SignedEntry {
            kind: crate::zone::EntryKind(kind),
            body: body.to_vec(),
            signatures: sigs
                .iter()
                .map(|&k| Signature {
                    key_idx: k,
                    sig_type: crate::types::SigType::ED25519,
                    data: vec![k; 64],
                })
                .collect(),
        }
    }

    /// Splicing stored bytes gives exactly the encoding of the decoded
    /// answer, with and without a revocation, and decodes back to it.
    #[test]
    fn spliced_answers_are_the_encoded_answers() {
        let binding = entry(1, b"binding body", &[0, 2]);
        let revocation = entry(2, b"revocation", &[1]);
        for revocation in [None, Some(revocation)] {
            let a = IdentityAnswer {
                binding: binding.clone(),
                revocation: revocation.clone(),
            };
            let spliced = IdentityAnswer::splice(
                &binding.to_bytes(),
                revocation.as_ref().map(|r| r.to_bytes()).as_deref(),
            );
            assert_eq!(spliced, a.to_bytes());
            assert_eq!(IdentityAnswer::from_bytes(&spliced).unwrap(), a);
        }
        for entries in [vec![], vec![binding.clone(), entry(1, b"other", &[0])]] {
            let page = ZoneAnswer {
                entries: entries.clone(),
                next: Hash32([9; 32]),
            };
            let stored: Vec<Vec<u8>> = entries.iter().map(|e| e.to_bytes()).collect();
            let spliced = ZoneAnswer::splice(&stored, &page.next);
            assert_eq!(spliced, page.to_bytes());
            assert_eq!(ZoneAnswer::from_bytes(&spliced).unwrap(), page);
        }
    }

    #[test]
    fn request_round_trip_and_check() {
        let mut q = Request::new(
            MessageType::IDENTITY,
            0xBEEF,
            IdentityQuery {
                domain: "social.example".into(),
                handle: "alice".into(),
            }
            .to_bytes(),
        );
        q.pow = Some(PowSolution {
            challenge: [7; 16],
            timestamp: 5,
            nonce: 9,
        });
        let b = q.to_bytes();
        for i in 0..b.len() {
            assert_eq!(Request::check(&b[..i]).unwrap(), None, "prefix {i}");
        }
        assert_eq!(Request::check(&b).unwrap(), Some(b.len()));
        assert_eq!(Request::decode(&b).unwrap(), q);
        let mut extra = b.clone();
        extra.push(0);
        assert!(matches!(
            Request::decode(&extra),
            Err(FrameError::Malformed {
                request_id: Some(0xBEEF),
                ..
            })
        ));
    }

    #[test]
    fn wrong_version_keeps_the_request_id() {
        let e = Request::check(&[1, 0x10, 0x12, 0x34, 0]).unwrap_err();
        assert_eq!(e.status(), Status::UNSUPPORTED_VERSION);
        assert_eq!(e.request_id(), 0x1234);
    }

    /// Issue 12 §6: `01` alone, then `01 12 34 00 00 0d` + domain: the
    /// reader waits for the id instead of answering id 0 at the first byte.
    fn version_1_master() -> Vec<u8> {
        let mut b = vec![0x01, 0x01, 0x12, 0x34, 0x00, 0x00, 0x0d];
        write_str8(&mut b, "demo.example");
        assert_eq!(b.len(), 7 + 13);
        b
    }

    #[test]
    fn a_wrong_version_waits_for_the_id_bytes() {
        let b = version_1_master();
        for i in 0..4 {
            assert_eq!(Request::check(&b[..i]), Ok(None), "prefix {i}");
        }
        for i in 4..=b.len() {
            let e = Request::check(&b[..i]).unwrap_err();
            assert_eq!(
                (e.status(), e.request_id()),
                (Status::UNSUPPORTED_VERSION, 0x1234)
            );
        }
        let r = Request::decode(&b).unwrap_err().response();
        assert_eq!(
            (r.status, r.request_id),
            (Status::UNSUPPORTED_VERSION, 0x1234)
        );
        // A frame that ends before its id (the client stopped, or a Noise
        // message that short): id 0, the only case.
        for short in [&b[..1], &b[..3]] {
            let e = Request::decode(short).unwrap_err();
            assert_eq!(
                (e.status(), e.request_id()),
                (Status::UNSUPPORTED_VERSION, 0)
            );
        }
        let e = Request::decode(&[0, 0x01, 0x43]).unwrap_err();
        assert_eq!((e.status(), e.request_id()), (Status::BAD_REQUEST, 0));
        let e = Request::decode(&[0, 0x01, 0x43, 0x21, 0]).unwrap_err();
        assert_eq!((e.status(), e.request_id()), (Status::BAD_REQUEST, 0x4321));
    }

    #[test]
    fn too_large_echoes_the_id() {
        let plain = [0x00, 0x01, 0x43, 0x21, 0x00, 0xff, 0xff];
        let mut with_pow = vec![0x00, 0x01, 0x43, 0x21, 0x01];
        with_pow.extend_from_slice(&[0xAB; POW_LEN]);
        with_pow.extend_from_slice(&[0xff, 0xff]);
        for b in [&plain[..], &with_pow[..]] {
            let e = Request::check(b).unwrap_err();
            assert_eq!((e.status(), e.request_id()), (Status::TOO_LARGE, 0x4321));
            // As a Noise payload, decoded whole.
            let r = Request::decode(b).unwrap_err().response();
            assert_eq!((r.status, r.request_id), (Status::TOO_LARGE, 0x4321));
        }
        // The largest frame that fits is not too large.
        let len = (MAX_REQUEST_LEN - REQUEST_HEADER_LEN) as u16;
        let [hi, lo] = len.to_be_bytes();
        assert_eq!(Request::check(&[0, 1, 0x43, 0x21, 0, hi, lo]), Ok(None));
        let [hi, lo] = (len + 1).to_be_bytes();
        assert!(Request::check(&[0, 1, 0x43, 0x21, 0, hi, lo]).is_err());
    }

    /// A valid payload of type `t` decodes; one byte more is trailing
    /// bytes at `<type>.payload`, right after it; one byte less fails.
    fn payload_rule(t: MessageType, valid: &[u8], field: &'static str) {
        assert!(RequestPayload::decode(t, valid).is_ok(), "{t}");
        let mut extra = valid.to_vec();
        extra.push(0);
        let e = RequestPayload::decode(t, &extra).unwrap_err();
        assert_eq!(
            e,
            DecodeError::TrailingBytes {
                field,
                offset: valid.len(),
                extra: 1
            },
            "{t}"
        );
        assert_eq!(e.field(), field);
        if let Some((_, short)) = valid.split_last() {
            assert!(RequestPayload::decode(t, short).is_err(), "{t} cut short");
        }
    }

    fn domain() -> Vec<u8> {
        DomainQuery {
            domain: "demo.example".into(),
        }
        .to_bytes()
    }

    fn identity() -> Vec<u8> {
        IdentityQuery {
            domain: "demo.example".into(),
            handle: "alice".into(),
        }
        .to_bytes()
    }

    #[test]
    fn challenge_payload_is_empty() {
        payload_rule(MessageType::CHALLENGE, &[], "challenge.payload");
        // Issue 12 §6: `00 13 rr rr 00 00 01 00` frames a 1-byte payload.
        let frame = [0x00, 0x13, 0x5a, 0xa5, 0x00, 0x00, 0x01, 0x00];
        let req = Request::decode(&frame).unwrap();
        assert_eq!(req.request_id, 0x5aa5);
        let e = RequestPayload::decode(req.message_type, &req.payload).unwrap_err();
        assert_eq!(e.field(), "challenge.payload");
    }

    #[test]
    fn master_payload_is_a_domain() {
        payload_rule(MessageType::MASTER, &domain(), "master.payload");
    }

    #[test]
    fn mirrors_payload_is_a_domain() {
        payload_rule(MessageType::MIRRORS, &domain(), "mirrors.payload");
    }

    #[test]
    fn serial_payload_is_a_domain() {
        payload_rule(MessageType::SERIAL, &domain(), "serial.payload");
    }

    #[test]
    fn identity_payload_is_a_domain_and_a_handle() {
        payload_rule(MessageType::IDENTITY, &identity(), "identity.payload");
    }

    #[test]
    fn chain_payload_is_a_domain_and_a_handle() {
        payload_rule(MessageType::CHAIN, &identity(), "chain.payload");
    }

    #[test]
    fn zone_payload() {
        let q = ZoneQuery {
            domain: "demo.example".into(),
            zone_type: ZoneType::SERVICE,
            after: Hash32::ZERO,
            limit: 10,
        };
        payload_rule(MessageType::ZONE, &q.to_bytes(), "zone.payload");
    }

    #[test]
    fn submit_signed_payloads() {
        let rec = crate::sample::provider().unwrap();
        let entry = rec.zones[&ZoneType::IDENTITY].entries[0].clone();
        let kind2 = SubmitSigned::Entry {
            domain: "demo.example".into(),
            zone_type: ZoneType::IDENTITY,
            entry,
        };
        payload_rule(
            MessageType::SUBMIT_SIGNED,
            &kind2.to_bytes(),
            "submit_signed.payload",
        );
        // Kind 1: the record runs to the end (its own decoder refuses
        // trailing bytes), but it is not empty.
        let kind1 = SubmitSigned::Record {
            domain: "demo.example".into(),
            record: rec.to_bytes(),
        };
        assert!(RequestPayload::decode(MessageType::SUBMIT_SIGNED, &kind1.to_bytes()).is_ok());
        let empty = SubmitSigned::Record {
            domain: "demo.example".into(),
            record: Vec::new(),
        };
        let e = RequestPayload::decode(MessageType::SUBMIT_SIGNED, &empty.to_bytes()).unwrap_err();
        assert_eq!(e.field(), "submit.record");
        let e = RequestPayload::decode(MessageType::SUBMIT_SIGNED, &[7]).unwrap_err();
        assert_eq!((e.field(), e.offset()), ("submit.kind", 0));
        assert!(RequestPayload::decode(MessageType::SUBMIT_SIGNED, &[]).is_err());
    }

    #[test]
    fn submit_request_payload() {
        let q = SubmitRequest {
            domain: "demo.example".into(),
            handle: "alice".into(),
            subject: Hash32([5; 32]),
            proof: vec![Signature {
                key_idx: 0,
                sig_type: crate::types::SigType::ED25519,
                data: vec![1; 64],
            }],
        };
        payload_rule(
            MessageType::SUBMIT_REQUEST,
            &q.to_bytes(),
            "submit_request.payload",
        );
    }

    #[test]
    fn submit_status_payload_is_a_submission_id() {
        payload_rule(
            MessageType::SUBMIT_STATUS,
            &[9; 16],
            "submit_status.payload",
        );
    }

    #[test]
    fn every_known_type_has_a_payload_rule() {
        for t in 0..=255u8 {
            let t = MessageType(t);
            let e = RequestPayload::decode(t, &[]);
            if !t.is_known() {
                assert_eq!(e.unwrap_err().field(), "request.type");
            } else if t != MessageType::CHALLENGE {
                assert_ne!(e.unwrap_err().field(), "request.type", "{t}");
            }
        }
    }

    #[test]
    fn domains_have_one_spelling() {
        assert!(valid_domain("social.example"));
        for d in ["", "Social.example", "a..b", ".a", "a.", "a b", "é.example"] {
            assert!(!valid_domain(d), "{d:?}");
        }
    }

    /// Issue 12 §6: a refused domain or handle names the rule it breaks,
    /// not "must be UTF-8 without control characters".
    #[test]
    fn refused_domains_and_handles_name_their_rule() {
        let query = |domain: &str, handle: &str| {
            let mut p = vec![domain.len() as u8];
            p.extend_from_slice(domain.as_bytes());
            p.push(handle.len() as u8);
            p.extend_from_slice(handle.as_bytes());
            IdentityQuery::from_bytes(&p).unwrap_err().to_string()
        };
        let long = format!("{}.example", "a".repeat(246));
        assert_eq!(long.len(), 254);
        let e = query(&long, "alice");
        assert!(e.contains("longer than 253 bytes"), "{e}");
        let e = query("Demo.example", "alice");
        assert!(e.contains("upper-case"), "{e}");
        let e = query("demo.example", &"a".repeat(65));
        assert!(e.contains("handle is longer than 64 bytes"), "{e}");
        let e = query("demo.example", "");
        assert!(e.contains("handle is empty"), "{e}");
        for e in [query(&long, "a"), query("demo.example", "")] {
            assert!(!e.contains("control characters"), "{e}");
        }
        // Control characters are still refused as text.
        let e = query("demo.example", "al\u{7}ice");
        assert!(e.contains("control characters"), "{e}");
        assert_eq!(
            crate::entries::IdentityBinding::new(Hash32::ZERO, Hash32::ZERO, &"a".repeat(65), 1, 0)
                .unwrap_err()
                .to_string(),
            "handle-length: handle is longer than 64 bytes"
        );
        // Handles that display as another are refused on the wire and in
        // bindings, whatever the provider's policy (SPEC §8.4.1).
        let e = query("demo.example", "\u{202E}ecila");
        assert!(e.contains("handle-bidi"), "{e}");
        let e = query("demo.example", "bob\u{200B}");
        assert!(e.contains("handle-format"), "{e}");
        for h in ["\u{202E}ecila", "bob\u{200B}"] {
            assert!(
                crate::entries::IdentityBinding::new(Hash32::ZERO, Hash32::ZERO, h, 1, 0).is_err(),
                "{h:?}"
            );
            let raw = crate::entries::IdentityBinding {
                issuer: Hash32::ZERO,
                subject: Hash32::ZERO,
                handle: h.into(),
                issued_at: 1,
                expires_at: 0,
            };
            let e = crate::entries::IdentityBinding::from_bytes(&raw.to_bytes()).unwrap_err();
            assert_eq!(e.field(), "binding.handle");
        }
    }
}
