//! Targets over what a POZ server does with the bytes of one connection
//! (SPEC §14–§17): the gate's admission of request frames on each port,
//! and Noise NK first messages on 7075 and 7076 as the gateways take
//! them (`poz_edge::Edge`: split the u16-prefixed message, read it with
//! [`NkResponder`], judge the request inside with [`Gate::decide`],
//! write the response back), without sockets.

use poz::codec::Codec;
use poz::gate::{Admission, Gate, Port};
use poz::noise::{
    length_prefixed, split_message, NkInitiator, NkResponder, StaticKeypair, HANDSHAKE_PAYLOAD,
    MAX_MESSAGE, NOISE_PARAMS,
};
use poz::pow::{Challenger, PowConfig, Secrets};
use poz::serve::{Catalog, ServedRecord};
use poz::wire::{Request, Response};
use std::num::NonZeroU8;
use std::sync::OnceLock;

/// The clock of every fuzzed exchange, ms since the epoch: fixed, so an
/// input behaves the same on every run (a proof of work in a corpus file
/// solves a challenge issued at this time by [`challenger`]).
pub const NOW: u64 = 1_767_225_600_000;

/// The domain the sample records are served under by [`catalog`].
pub const DOMAIN: &str = "social.example";

/// The gates' challenger: fixed secret, default configuration.
pub fn challenger() -> Challenger {
    Challenger::new(PowConfig::default(), Secrets(vec![[1; 32]]))
}

/// What the embedded server answers admitted lookups from: the sample
/// provider record (bindings, batches) at [`DOMAIN`] and the tour record
/// at `tour.example`.
pub fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let mut c = Catalog::default();
        if let Ok(p) = poz::sample::provider() {
            c.insert(DOMAIN, ServedRecord::new(p, vec![]));
        }
        if let Ok(t) = poz::sample::tour_record() {
            c.insert("tour.example", ServedRecord::new(t, vec![]));
        }
        c
    })
}

/// The gateways' Noise static key in these targets (fixed, so corpus
/// files keep meaning the same thing).
pub fn server_key() -> &'static StaticKeypair {
    static KEY: OnceLock<StaticKeypair> = OnceLock::new();
    KEY.get_or_init(|| StaticKeypair::from_secret([7; 32]))
}

/// The gate's decision on one whole request frame, and the answer a
/// server sends: the gate's own response, or for an admitted query the
/// embedded server's answer (an admitted submission: an empty OK, as the
/// submit gateway's answer needs its peers). An admitted request
/// re-encodes to the frame it came from.
fn judge(gate: &mut Gate, port: Port, frame: &[u8], difficulty: u8) -> Response {
    match gate.decide(port, frame, NOW, difficulty).admission {
        Admission::Respond(r) => r,
        Admission::Admit(req) => {
            assert!(
                req.to_bytes() == frame,
                "an admitted request re-encodes differently"
            );
            match port {
                Port::NoiseSubmit => Response::ok(req.request_id, Vec::new()),
                Port::Plain | Port::NoiseQuery => catalog().answer(&req),
            }
        }
    }
}

/// Asserts that a response a server sends decodes back to itself.
fn sendable(r: &Response) -> Vec<u8> {
    let bytes = r.to_bytes();
    let back = Response::from_bytes(&bytes);
    assert!(
        back.as_ref() == Ok(r),
        "a server's response does not decode to itself"
    );
    bytes
}

/// Any bytes as a request frame arriving on each port at difficulty 0
/// and 8: the gate decides without panicking, an admitted request
/// re-encodes to the same bytes and is answered; any bytes as a response
/// frame: checked from its header and decoded without panicking.
pub fn frame(data: &[u8]) {
    let mut gate = Gate::new(challenger(), 64);
    for port in [Port::Plain, Port::NoiseQuery, Port::NoiseSubmit] {
        for difficulty in [0, 8] {
            sendable(&judge(&mut gate, port, data, difficulty));
        }
    }
    // What the plain port's reader does with the bytes before the gate.
    let _ = Request::peek_id(data);
    if let Ok(Some(n)) = Request::check(data) {
        assert!(n <= data.len(), "Request::check claims more than it saw");
    }
    if let Ok(Some(n)) = Response::check(data, 1 << 20) {
        assert!(n <= data.len(), "Response::check claims more than it saw");
        let _ = Response::from_bytes(&data[..n]);
    }
}

/// One connection to a Noise port, as the `noise` target reads its
/// input: `flags u8 ‖ difficulty u8 ‖ tamper_at u16 ‖ tamper_xor u8 ‖
/// body`. Flags: bit 0 the submit port 7076 (else the query port 7075);
/// bit 1 `body` is a request a client seals into its first message (else
/// `body` is the bytes a gateway reads off TCP: `u16 length ‖ message`,
/// mostly not Noise at all); bit 2 with a sealed request and a non-zero
/// `tamper_xor`, the byte at `tamper_at` (modulo the message's length) is
/// XORed with it before the server reads the message; bit 3 the whole
/// exchange: the client is snow's (`NkInitiator`), the server writes its
/// Noise response and the client reads it back (three X25519 operations
/// more). Without bit 3 the first message is sealed by [`seal`] with a
/// fixed ephemeral key, so an execution costs the server's one X25519
/// operation, as a flood of first messages costs a gateway. The gate's
/// difficulty is `difficulty` modulo 9 (0: no proof asked for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoiseInput {
    pub submit: bool,
    pub answer: bool,
    pub difficulty: u8,
    pub shape: NoiseShape,
}

/// What arrives on a Noise port: see [`NoiseInput`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoiseShape {
    Wire(Vec<u8>),
    Sealed {
        request: Vec<u8>,
        tamper: Option<(u16, NonZeroU8)>,
    },
}

impl NoiseInput {
    /// Reads the layout above; `None` for fewer than 5 bytes.
    pub fn parse(data: &[u8]) -> Option<NoiseInput> {
        let (head, body) = data.split_at_checked(5)?;
        let flags = head[0];
        let shape = if flags & 2 == 0 {
            NoiseShape::Wire(body.to_vec())
        } else {
            let tamper = NonZeroU8::new(head[4])
                .filter(|_| flags & 4 != 0)
                .map(|x| (u16::from_be_bytes([head[2], head[3]]), x));
            NoiseShape::Sealed {
                request: body.to_vec(),
                tamper,
            }
        };
        Some(NoiseInput {
            submit: flags & 1 != 0,
            answer: flags & 8 != 0,
            difficulty: head[1] % 9,
            shape,
        })
    }

    /// The bytes [`NoiseInput::parse`] reads back as `self` (for seeds).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut flags = u8::from(self.submit) | (u8::from(self.answer) << 3);
        let (at, x, body) = match &self.shape {
            NoiseShape::Wire(b) => (0, 0, b),
            NoiseShape::Sealed { request, tamper } => {
                flags |= 2;
                match tamper {
                    Some((at, x)) => {
                        flags |= 4;
                        (*at, x.get(), request)
                    }
                    None => (0, 0, request),
                }
            }
        };
        let mut out = vec![flags, self.difficulty];
        out.extend_from_slice(&at.to_be_bytes());
        out.push(x);
        out.extend_from_slice(body);
        out
    }
}

/// What a server sent on a Noise connection it answered.
struct Served {
    /// The Noise messages (none when not asked to write them).
    msgs: Vec<Vec<u8>>,
    /// The response frame inside them.
    response: Vec<u8>,
    /// The request frame the first message carried.
    frame: Vec<u8>,
}

/// The server's side of one Noise connection, as the gateways run it:
/// `None` when the connection is closed without an answer (not Noise, or
/// not for this key).
fn serve_noise(port: Port, difficulty: u8, msg: &[u8], answer: bool) -> Option<Served> {
    let mut responder = match NkResponder::new(server_key()) {
        Ok(r) => r,
        Err(e) => panic!("a responder for a valid key: {e}"),
    };
    let frame = responder.read_request(msg).ok()?;
    let mut gate = Gate::new(challenger(), 64);
    let response = sendable(&judge(&mut gate, port, &frame, difficulty));
    if !answer {
        return Some(Served {
            msgs: Vec::new(),
            response,
            frame,
        });
    }
    let msgs = match responder.write_response(&response) {
        Ok(m) => m,
        Err(e) => panic!("the response to a decrypted request cannot be sent: {e}"),
    };
    for m in &msgs {
        assert!(m.len() <= MAX_MESSAGE, "a Noise message over the limit");
        assert!(split_message(&length_prefixed(m)) == Some((&m[..], m.len() + 2)));
    }
    Some(Served {
        msgs,
        response,
        frame,
    })
}

/// A Noise first message through the gate (structure-aware: see
/// [`NoiseInput`]). Bytes off the wire are judged without panicking; a
/// client's own first message decrypts to its request, is answered, and
/// the client reads back exactly the response the server sent; a first
/// message with any byte changed is refused (closed without an answer).
pub fn noise(data: &[u8]) {
    let Some(input) = NoiseInput::parse(data) else {
        return;
    };
    let port = if input.submit {
        Port::NoiseSubmit
    } else {
        Port::NoiseQuery
    };
    let difficulty = input.difficulty;
    match input.shape {
        NoiseShape::Wire(bytes) => {
            if let Some((msg, _)) = split_message(&bytes) {
                let _ = serve_noise(port, difficulty, msg, input.answer);
            }
        }
        NoiseShape::Sealed { request, tamper } => {
            if request.len() > HANDSHAKE_PAYLOAD {
                return;
            }
            let mut client = None;
            let mut msg = if input.answer {
                let mut c = match NkInitiator::new(&server_key().public) {
                    Ok(c) => c,
                    Err(e) => panic!("an initiator for a valid key: {e}"),
                };
                let m = match c.write_request(&request) {
                    Ok(m) => m,
                    Err(e) => panic!("a request within the limit cannot be sent: {e}"),
                };
                client = Some(c);
                m
            } else {
                seal(&request)
            };
            if let Some((at, x)) = tamper {
                let i = usize::from(at) % msg.len();
                msg[i] ^= x.get();
            }
            match (tamper, serve_noise(port, difficulty, &msg, input.answer)) {
                (None, None) => panic!("a client's own first message was refused"),
                (Some(_), Some(_)) => panic!("a first message with a byte changed was accepted"),
                (Some(_), None) => {}
                (
                    None,
                    Some(Served {
                        msgs,
                        response,
                        frame,
                    }),
                ) => {
                    assert!(frame == request, "the request decrypted differently");
                    let Some(mut client) = client else { return };
                    let mut got = None;
                    for (i, m) in msgs.iter().enumerate() {
                        match client.read_message(m) {
                            Ok(r) => {
                                assert!(r.is_some() == (i + 1 == msgs.len()));
                                got = r;
                            }
                            Err(e) => {
                                panic!("the client cannot read the server's message {i}: {e}")
                            }
                        }
                    }
                    assert!(
                        got.map(|r| r.to_bytes()) == Some(response),
                        "the client read another response than was sent"
                    );
                }
            }
        }
    }
}

/// The state of an NK initiator with a fixed ephemeral key right before
/// it encrypts its first payload: the ephemeral public key, the cipher
/// key after `es`, and the handshake hash (the payload's associated data).
struct Sealer {
    e_public: [u8; 32],
    k: [u8; 32],
    h: [u8; 32],
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    use sha2::Digest;
    let mut d = sha2::Sha256::new();
    for p in parts {
        d.update(p);
    }
    d.finalize().into()
}

fn sealer() -> &'static Sealer {
    static S: OnceLock<Sealer> = OnceLock::new();
    S.get_or_init(|| {
        // The Noise spec's (rev. 34) HandshakeState for NK, initiator:
        // a 32-byte protocol name is the initial h and ck as it is.
        let mut h = [0u8; 32];
        h.copy_from_slice(&NOISE_PARAMS.as_bytes()[..32]);
        let ck = h;
        h = sha256(&[&h, b""]); // MixHash(prologue), empty
        h = sha256(&[&h, &server_key().public]); // <- s
        let e = x25519_dalek::StaticSecret::from([9u8; 32]);
        let e_public = x25519_dalek::PublicKey::from(&e).to_bytes();
        h = sha256(&[&h, &e_public]); // -> e
        let dh = e.diffie_hellman(&x25519_dalek::PublicKey::from(server_key().public));
        let mut okm = [0u8; 64]; // es: MixKey(DH(e, rs))
        if hkdf::Hkdf::<sha2::Sha256>::new(Some(&ck), dh.as_bytes())
            .expand(&[], &mut okm)
            .is_err()
        {
            unreachable!("64 bytes is a valid HKDF-SHA256 length");
        }
        let mut k = [0u8; 32];
        k.copy_from_slice(&okm[32..]);
        Sealer { e_public, k, h }
    })
}

/// A client's NK first message (`e, es` and the encrypted request)
/// sealed by this harness rather than snow: the fixed ephemeral key's
/// handshake state is computed once, so sealing costs one ChaCha20-Poly1305
/// encryption. A second implementation of the first message: the server
/// (snow) must read it back exactly.
pub fn seal(request: &[u8]) -> Vec<u8> {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    let s = sealer();
    let cipher = chacha20poly1305::ChaCha20Poly1305::new(&s.k.into());
    let nonce = [0u8; 12]; // n = 0
    let c = match cipher.encrypt(
        &nonce.into(),
        Payload {
            msg: request,
            aad: &s.h,
        },
    ) {
        Ok(c) => c,
        Err(e) => panic!("sealing a request within the limit: {e}"),
    };
    let mut out = Vec::with_capacity(32 + c.len());
    out.extend_from_slice(&s.e_public);
    out.extend_from_slice(&c);
    out
}
