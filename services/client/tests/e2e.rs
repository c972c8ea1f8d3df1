//! The client against a real server on loopback: plain and Noise lookups
//! verified end to end, proof of work, retries, staleness, and hostile
//! frames that must get their documented status or a clean close.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod support;

use poz::codec::Codec;
use poz::sample;
use poz::serve::{Catalog, ServedRecord};
use poz::wire::{
    DomainQuery, ErrorDetail, MessageType, PowReason, PowRequired, Request, Response, Status,
    MAX_REQUEST_LEN,
};
use poz::Record;
use poz_client::{Client, ClientConfig, ClientError, Endpoint, Security};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn catalog() -> Catalog {
    let mut c = Catalog::default();
    c.insert(
        "social.example",
        ServedRecord::new(sample::provider().unwrap(), vec![]),
    );
    c
}

fn fast_client() -> Client {
    Client::new(ClientConfig {
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        exchange_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    })
}

fn plain(s: &support::TestServer) -> Vec<Endpoint> {
    vec![Endpoint {
        addr: s.plain,
        security: Security::Plain,
    }]
}

fn noise(s: &support::TestServer) -> Vec<Endpoint> {
    vec![Endpoint {
        addr: s.noise,
        security: Security::Noise(s.key.public),
    }]
}

#[tokio::test]
async fn plain_and_noise_lookups_verify() {
    let s = support::start(catalog(), 0).await;
    let c = fast_client();
    for eps in [plain(&s), noise(&s)] {
        let m = c.master(&eps, "social.example", None).await.unwrap();
        assert_eq!(m.record.master.serial, 2);
        let (p, b) = c
            .chain(&eps, "social.example", "alice", Some(m.id))
            .await
            .unwrap();
        assert_eq!(p.id, m.id);
        assert_eq!(b.binding.handle, "alice");
        assert_eq!(b.namespace, "social.example");
        let serial = c.serial(&eps, "social.example").await.unwrap();
        assert_eq!((serial.record_id, serial.serial), (m.id, 2));
    }
    // Unknown handle and unknown domain: NOT_FOUND, not retried.
    let e = c
        .chain(&plain(&s), "social.example", "nobody", None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Status {
                status: Status::NOT_FOUND,
                ..
            }
        ),
        "{e}"
    );
    let e = c
        .master(&noise(&s), "nowhere.example", None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Status {
                status: Status::NOT_FOUND,
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn a_pinned_record_id_that_differs_is_refused() {
    let s = support::start(catalog(), 0).await;
    let c = fast_client();
    let e = c
        .master(&plain(&s), "social.example", Some(poz::Hash32([7; 32])))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::PinMismatch { .. }), "{e}");
}

#[tokio::test]
async fn wrong_server_key_fails_without_an_answer() {
    let s = support::start(catalog(), 0).await;
    let c = fast_client();
    let bad = vec![Endpoint {
        addr: s.noise,
        security: Security::Noise([9; 32]),
    }];
    let e = c.master(&bad, "social.example", None).await.unwrap_err();
    // The server cannot decrypt and closes: the client never sees data.
    assert!(!matches!(e, ClientError::Invalid(_)), "{e}");
}

#[tokio::test]
async fn proof_of_work_is_solved_when_asked_within_the_limit() {
    let s = support::start(catalog(), 10).await;
    let c = fast_client();
    let m = c.master(&noise(&s), "social.example", None).await.unwrap();
    assert_eq!(m.record.master.serial, 2);
    let lazy = Client::new(ClientConfig {
        max_pow_difficulty: 4,
        ..ClientConfig::default()
    });
    let e = lazy
        .master(&plain(&s), "social.example", None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::PowTooHard {
                difficulty: 10,
                allowed: 4,
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn an_older_serial_after_a_newer_one_is_stale() {
    let s = support::start(catalog(), 0).await;
    let c = fast_client();
    c.master(&plain(&s), "social.example", None).await.unwrap();
    // The same record as it was at serial 1 (its genesis).
    let p = sample::provider().unwrap();
    let old = Record::new(p.keys.clone(), p.history[0].clone());
    assert!(poz::verify_record(&old).is_complete());
    s.catalog
        .write()
        .unwrap()
        .insert("social.example", ServedRecord::new(old, vec![]));
    let e = c
        .master(&plain(&s), "social.example", None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            ClientError::Stale {
                seen: 2,
                served: 1,
                ..
            }
        ),
        "{e}"
    );
}

#[tokio::test]
async fn unreachable_endpoints_are_retried_then_reported() {
    let c = fast_client();
    // A port nobody listens on (bound, then released).
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let one = [Endpoint {
        addr,
        security: Security::Plain,
    }];
    let e = c.master(&one, "social.example", None).await.unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e}");
    let two = [one[0], one[0]];
    let e = c.master(&two, "social.example", None).await.unwrap_err();
    assert!(matches!(e, ClientError::Exhausted(_)), "{e}");
}

/// Sends raw bytes on a plain port and returns what came back before close.
async fn raw(addr: std::net::SocketAddr, bytes: &[u8], half_close: bool) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    if half_close {
        s.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

fn status_of(bytes: &[u8]) -> (Status, u16) {
    let r = Response::from_bytes(bytes).unwrap();
    (r.status, r.request_id)
}

#[tokio::test]
async fn hostile_frames_get_their_status_or_a_clean_close() {
    let s = support::start(catalog(), 0).await;
    let good = Request::new(
        MessageType::MASTER,
        0x4242,
        DomainQuery {
            domain: "social.example".into(),
        }
        .to_bytes(),
    )
    .to_bytes();

    // Truncated: the server waits, then closes without answering.
    assert!(raw(s.plain, &good[..good.len() - 3], true).await.is_empty());
    // Wrong version: UNSUPPORTED_VERSION with the request id echoed.
    let mut v1 = good.clone();
    v1[0] = 1;
    assert_eq!(
        status_of(&raw(s.plain, &v1, false).await),
        (Status::UNSUPPORTED_VERSION, 0x4242)
    );
    // Unknown type.
    let mut t = good.clone();
    t[1] = 0x7E;
    assert_eq!(
        status_of(&raw(s.plain, &t, false).await),
        (Status::BAD_REQUEST, 0x4242)
    );
    // A submit type on a lookup port.
    let sub = Request::new(MessageType::SUBMIT_STATUS, 9, vec![0; 16]).to_bytes();
    assert_eq!(
        status_of(&raw(s.plain, &sub, false).await),
        (Status::WRONG_PORT, 9)
    );
    // Oversized: refused from the header, before the body is read.
    let mut big = vec![0u8, 0x01, 0, 5, 1];
    big.extend_from_slice(&[0; 32]);
    big.extend_from_slice(&0xFFFFu16.to_be_bytes());
    assert!(big.len() + 0xFFFF > MAX_REQUEST_LEN);
    let (st, _) = status_of(&raw(s.plain, &big, false).await);
    assert_eq!(st, Status::TOO_LARGE);
    // Garbage payload with a valid header.
    let junk = Request::new(MessageType::MASTER, 3, vec![0xFF; 40]).to_bytes();
    let r = Response::from_bytes(&raw(s.plain, &junk, false).await).unwrap();
    assert_eq!(r.status, Status::BAD_REQUEST);
    assert!(ErrorDetail::from_bytes(&r.payload)
        .unwrap()
        .message
        .contains("query.domain"));
    // Plaintext on the Noise port: closed, nothing answered.
    assert!(raw(s.noise, &good, true).await.is_empty());
    // Random bytes on every port: an answer or a clean close, never a hang.
    for addr in [s.plain, s.noise, s.submit] {
        let _ = raw(
            addr,
            b"\x00\x01\x02\x03\x04\x05\x06\x07\x08 not a frame",
            true,
        )
        .await;
    }
}

#[tokio::test]
async fn a_replayed_proof_of_work_is_refused() {
    let s = support::start(catalog(), 6).await;
    let req = Request::new(
        MessageType::SERIAL,
        11,
        DomainQuery {
            domain: "social.example".into(),
        }
        .to_bytes(),
    );
    let (st, _) = status_of(&raw(s.plain, &req.to_bytes(), false).await);
    assert_eq!(st, Status::POW_REQUIRED);
    let r = Response::from_bytes(&raw(s.plain, &req.to_bytes(), false).await).unwrap();
    let p = PowRequired::from_bytes(&r.payload).unwrap();
    let sol = poz::pow::solve(
        &p.challenge.challenge,
        p.challenge.difficulty,
        support::now_ms(),
        0,
        1 << 24,
    )
    .unwrap();
    let mut with = req.clone();
    with.pow = Some(sol);
    assert_eq!(
        status_of(&raw(s.plain, &with.to_bytes(), false).await).0,
        Status::OK
    );
    let again = Response::from_bytes(&raw(s.plain, &with.to_bytes(), false).await).unwrap();
    assert_eq!(again.status, Status::POW_REQUIRED);
    assert_eq!(
        PowRequired::from_bytes(&again.payload).unwrap().reason,
        PowReason::REPLAYED
    );
}
