//! Noise NK sessions for ports 7075 and 7076 (SPEC §16), sans I/O.
//!
//! One round trip: the request rides in the client's first handshake
//! message (`e, es`), the response in the server's reply (`e, ee`). A
//! response too large for that one message continues in transport
//! messages. On TCP every Noise message is preceded by its length as a
//! u16, so no message exceeds 65,535 bytes.

use crate::codec::DecodeError;
use crate::wire::{Response, MAX_RESPONSE_PAYLOAD, RESPONSE_HEADER_LEN};
use rand_core::RngCore;

pub const NOISE_PARAMS: &str = "Noise_NK_25519_ChaChaPoly_SHA256";
/// The Noise limit on one message.
pub const MAX_MESSAGE: usize = 65_535;
/// Plaintext in a handshake message: less the ephemeral key and the tag.
pub const HANDSHAKE_PAYLOAD: usize = MAX_MESSAGE - 32 - 16;
/// Plaintext in a transport message: less the tag.
pub const TRANSPORT_PAYLOAD: usize = MAX_MESSAGE - 16;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NoiseError {
    /// The peer's message failed to decrypt or authenticate: wrong server
    /// key, tampering, or not Noise at all (e.g. plaintext on 7075).
    #[error("noise: {0}")]
    Protocol(String),
    #[error("message of {len} bytes exceeds the Noise limit")]
    TooLarge { len: usize },
    /// The message says the decode error itself: no `source`, so a chain
    /// printer does not say it twice.
    #[error("the response frame is invalid: {0}")]
    Frame(DecodeError),
    #[error("a message arrived after the response was complete")]
    Unexpected,
}

impl From<DecodeError> for NoiseError {
    fn from(e: DecodeError) -> Self {
        NoiseError::Frame(e)
    }
}

fn proto(e: snow::Error) -> NoiseError {
    NoiseError::Protocol(e.to_string())
}

fn params() -> snow::params::NoiseParams {
    // A constant that snow parses; a failure here is a build defect that
    // every test would show at once.
    NOISE_PARAMS
        .parse()
        .unwrap_or_else(|_| unreachable!("NOISE_PARAMS is a valid Noise name"))
}

/// An X25519 static key pair: a server's Noise identity. The secret is
/// wiped from memory when the pair is dropped.
#[derive(Clone)]
pub struct StaticKeypair {
    secret: [u8; 32],
    pub public: [u8; 32],
}

impl StaticKeypair {
    pub fn generate() -> Self {
        let mut secret = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut secret);
        Self::from_secret(secret)
    }

    pub fn from_secret(secret: [u8; 32]) -> Self {
        // StaticSecret zeroizes itself on drop (x25519-dalek's `zeroize`).
        let s = x25519_dalek::StaticSecret::from(secret);
        let public = x25519_dalek::PublicKey::from(&s).to_bytes();
        StaticKeypair { secret, public }
    }

    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }
}

impl Drop for StaticKeypair {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

impl std::fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StaticKeypair(public {})", hex::encode(self.public))
    }
}

/// The server side of one NK exchange.
pub struct NkResponder {
    hs: snow::HandshakeState,
}

impl NkResponder {
    pub fn new(key: &StaticKeypair) -> Result<Self, NoiseError> {
        let hs = snow::Builder::new(params())
            .local_private_key(&key.secret)
            .build_responder()
            .map_err(proto)?;
        Ok(NkResponder { hs })
    }

    /// Reads the client's first message and returns the request inside.
    pub fn read_request(&mut self, msg: &[u8]) -> Result<Vec<u8>, NoiseError> {
        if msg.len() > MAX_MESSAGE {
            return Err(NoiseError::TooLarge { len: msg.len() });
        }
        let mut out = vec![0u8; msg.len()];
        let n = self.hs.read_message(msg, &mut out).map_err(proto)?;
        out.truncate(n);
        Ok(out)
    }

    /// Encrypts the whole response: the handshake reply carrying its first
    /// part, then transport messages for the rest. Each returned message
    /// is sent with its u16 length.
    pub fn write_response(mut self, response: &[u8]) -> Result<Vec<Vec<u8>>, NoiseError> {
        let first = response.len().min(HANDSHAKE_PAYLOAD);
        let mut msgs = Vec::with_capacity(1 + (response.len() - first).div_ceil(TRANSPORT_PAYLOAD));
        let mut buf = vec![0u8; MAX_MESSAGE];
        let n = self
            .hs
            .write_message(&response[..first], &mut buf)
            .map_err(proto)?;
        msgs.push(buf[..n].to_vec());
        if first < response.len() {
            let mut t = self.hs.into_transport_mode().map_err(proto)?;
            for chunk in response[first..].chunks(TRANSPORT_PAYLOAD) {
                let n = t.write_message(chunk, &mut buf).map_err(proto)?;
                msgs.push(buf[..n].to_vec());
            }
        }
        Ok(msgs)
    }
}

enum ClientState {
    Handshake(Box<snow::HandshakeState>),
    Transport(Box<snow::TransportState>),
    Done,
}

/// The client side of one NK exchange: writes the request, then takes the
/// server's messages until the response frame is whole.
pub struct NkInitiator {
    state: ClientState,
    received: Vec<u8>,
    max_payload: usize,
}

impl NkInitiator {
    /// `server_public` is the server's X25519 key, from the record's
    /// Service Zone or the operator.
    pub fn new(server_public: &[u8; 32]) -> Result<Self, NoiseError> {
        let hs = snow::Builder::new(params())
            .remote_public_key(server_public)
            .build_initiator()
            .map_err(proto)?;
        Ok(NkInitiator {
            state: ClientState::Handshake(Box::new(hs)),
            received: Vec::new(),
            max_payload: MAX_RESPONSE_PAYLOAD,
        })
    }

    /// Lowers the largest response accepted.
    pub fn with_max_payload(mut self, max: usize) -> Self {
        self.max_payload = max.min(MAX_RESPONSE_PAYLOAD);
        self
    }

    /// The first message, carrying the request.
    pub fn write_request(&mut self, request: &[u8]) -> Result<Vec<u8>, NoiseError> {
        if request.len() > HANDSHAKE_PAYLOAD {
            return Err(NoiseError::TooLarge { len: request.len() });
        }
        let ClientState::Handshake(hs) = &mut self.state else {
            return Err(NoiseError::Unexpected);
        };
        let mut buf = vec![0u8; MAX_MESSAGE];
        let n = hs.write_message(request, &mut buf).map_err(proto)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Takes one server message; returns the response once whole.
    pub fn read_message(&mut self, msg: &[u8]) -> Result<Option<Response>, NoiseError> {
        if msg.len() > MAX_MESSAGE {
            return Err(NoiseError::TooLarge { len: msg.len() });
        }
        let mut out = vec![0u8; msg.len()];
        let n = match std::mem::replace(&mut self.state, ClientState::Done) {
            ClientState::Handshake(mut hs) => {
                let n = hs.read_message(msg, &mut out).map_err(proto)?;
                self.state =
                    ClientState::Transport(Box::new(hs.into_transport_mode().map_err(proto)?));
                n
            }
            ClientState::Transport(mut t) => {
                let n = t.read_message(msg, &mut out).map_err(proto)?;
                self.state = ClientState::Transport(t);
                n
            }
            ClientState::Done => return Err(NoiseError::Unexpected),
        };
        self.received.extend_from_slice(&out[..n]);
        match Response::check(&self.received, self.max_payload)? {
            None => Ok(None),
            Some(total) if total == self.received.len() => {
                self.state = ClientState::Done;
                let r = <Response as crate::Codec>::from_bytes(&self.received)?;
                Ok(Some(r))
            }
            Some(_) => Err(NoiseError::Frame(DecodeError::TrailingBytes {
                field: "response",
                offset: RESPONSE_HEADER_LEN,
                extra: self.received.len(),
            })),
        }
    }
}

/// Prefixes a Noise message with its u16 length for TCP.
pub fn length_prefixed(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + msg.len());
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// If `buf` starts with a whole length-prefixed message, returns it and
/// the bytes it took.
pub fn split_message(buf: &[u8]) -> Option<(&[u8], usize)> {
    if buf.len() < 2 {
        return None;
    }
    let len = u16::from_be_bytes([buf[0], buf[1]]) as usize;
    (buf.len() >= 2 + len).then(|| (&buf[2..2 + len], 2 + len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{MessageType, Request, Status};
    use crate::Codec;

    fn exchange(response_len: usize) -> Response {
        let server = StaticKeypair::generate();
        let mut client = NkInitiator::new(&server.public).unwrap();
        let req = Request::new(MessageType::CHALLENGE, 7, vec![]);
        let m1 = client.write_request(&req.to_bytes()).unwrap();
        let mut resp = NkResponder::new(&server).unwrap();
        let got = Request::decode(&resp.read_request(&m1).unwrap()).unwrap();
        assert_eq!(got, req);
        let answer = Response::ok(7, vec![0xAB; response_len]);
        let msgs = resp.write_response(&answer.to_bytes()).unwrap();
        let mut out = None;
        for (i, m) in msgs.iter().enumerate() {
            assert!(m.len() <= MAX_MESSAGE);
            let r = client.read_message(m).unwrap();
            assert_eq!(r.is_some(), i == msgs.len() - 1);
            out = r;
        }
        out.unwrap()
    }

    #[test]
    fn small_and_large_responses() {
        for len in [0, 100, HANDSHAKE_PAYLOAD - 8, HANDSHAKE_PAYLOAD, 200_000] {
            let r = exchange(len);
            assert_eq!(r.status, Status::OK);
            assert_eq!(r.payload.len(), len);
        }
    }

    #[test]
    fn wrong_server_key_fails_cleanly() {
        let server = StaticKeypair::generate();
        let other = StaticKeypair::generate();
        let mut client = NkInitiator::new(&other.public).unwrap();
        let m1 = client
            .write_request(b"\x00\x13\x00\x01\x00\x00\x00")
            .unwrap();
        let mut resp = NkResponder::new(&server).unwrap();
        assert!(matches!(
            resp.read_request(&m1),
            Err(NoiseError::Protocol(_))
        ));
    }

    #[test]
    fn plaintext_on_a_noise_port_fails_cleanly() {
        let server = StaticKeypair::generate();
        let mut resp = NkResponder::new(&server).unwrap();
        assert!(resp
            .read_request(b"\x00\x01\x00\x01\x00\x00\x05hello")
            .is_err());
    }

    #[test]
    fn framing() {
        let m = length_prefixed(b"abc");
        assert_eq!(split_message(&m), Some((&b"abc"[..], 5)));
        assert_eq!(split_message(&m[..4]), None);
    }
}
