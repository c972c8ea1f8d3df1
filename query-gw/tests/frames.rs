//! Frames exactly as SPEC §14 says, over real sockets to the query
//! gateway (plain 7074 and Noise 7075): the request id is echoed whenever
//! its two bytes arrived, however the request was cut into writes; id 0
//! only when the client stopped before them; payload rules per type
//! (CHALLENGE is empty). Issue 12 §6, each input as sent there.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod support;

use poz::gate::{Gate, Port};
use poz::noise::StaticKeypair;
use poz::pow::{Challenger, LoadTargets, PowConfig, Secrets};
use poz::wire::{Response, Status};
use poz_edge::{Discipline, Edge, LoadMeter};
use poz_query_gw::StoreLookup;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::{raw_noise, raw_plain, raw_plain_pieces, store_with_provider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Gateway {
    plain: SocketAddr,
    noise: SocketAddr,
    key: StaticKeypair,
    _store: support::StoreServer,
}

async fn gateway(discipline: Discipline) -> Gateway {
    let s = store_with_provider().await;
    let key = StaticKeypair::generate();
    let pow = PowConfig::default();
    let channel = poz_kit::Channels::default().lazy(&s.url).unwrap();
    let edge = Edge::new(
        discipline,
        key.clone(),
        Gate::new(Challenger::new(pow, Secrets(vec![[7; 32]])), 10_000),
        StoreLookup::new(channel),
        Arc::new(LoadMeter::new(pow, LoadTargets::default())),
    );
    let mut addrs = Vec::new();
    for port in [Port::Plain, Port::NoiseQuery] {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap());
        tokio::spawn(edge.clone().serve(l, port, std::future::pending()));
    }
    Gateway {
        plain: addrs[0],
        noise: addrs[1],
        key,
        _store: s,
    }
}

/// `01 12 34 00 00 0d` + the str8 `demo.example`: a MASTER of version 1.
fn after_version_byte() -> Vec<u8> {
    let mut b = vec![0x01, 0x12, 0x34, 0x00, 0x00, 0x0d, 12];
    b.extend_from_slice(b"demo.example");
    b
}

fn too_large_with_pow() -> Vec<u8> {
    let mut b = vec![0x00, 0x01, 0x43, 0x21, 0x01];
    b.extend_from_slice(&[0x5A; 32]);
    b.extend_from_slice(&[0xff, 0xff]);
    b
}

const TOO_LARGE: [u8; 7] = [0x00, 0x01, 0x43, 0x21, 0x00, 0xff, 0xff];
const CHALLENGE_WITH_A_BYTE: [u8; 8] = [0x00, 0x13, 0x07, 0x07, 0x00, 0x00, 0x01, 0x00];

fn status_and_id(r: Option<Response>) -> (Status, u16) {
    let r = r.expect("an answer");
    (r.status, r.request_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_version_echoes_the_id_however_the_frame_was_cut() {
    let g = gateway(Discipline::default()).await;
    let rest = after_version_byte();
    // `01` alone, the rest 0.3 s later.
    let r = raw_plain_pieces(g.plain, &[&[0x01], &rest], Duration::from_millis(300)).await;
    assert_eq!(status_and_id(r), (Status::UNSUPPORTED_VERSION, 0x1234));
    // In one write.
    let mut whole = vec![0x01];
    whole.extend_from_slice(&rest);
    let r = raw_plain(g.plain, &whole).await;
    assert_eq!(status_and_id(r), (Status::UNSUPPORTED_VERSION, 0x1234));
    // Cut inside the id.
    let r = raw_plain_pieces(
        g.plain,
        &[&whole[..3], &whole[3..]],
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(status_and_id(r), (Status::UNSUPPORTED_VERSION, 0x1234));
    // Inside Noise.
    let r = raw_noise(g.noise, &g.key.public, &whole).await;
    assert_eq!(status_and_id(r), (Status::UNSUPPORTED_VERSION, 0x1234));
    let r = raw_noise(g.noise, &g.key.public, &[0x01]).await;
    assert_eq!(status_and_id(r), (Status::UNSUPPORTED_VERSION, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_echoes_the_id_plain_with_pow_and_inside_noise() {
    let g = gateway(Discipline::default()).await;
    for frame in [TOO_LARGE.to_vec(), too_large_with_pow()] {
        let r = raw_plain(g.plain, &frame).await;
        assert_eq!(
            status_and_id(r),
            (Status::TOO_LARGE, 0x4321),
            "{frame:02x?}"
        );
        let r = raw_plain_pieces(
            g.plain,
            &[&frame[..4], &frame[4..]],
            Duration::from_millis(100),
        )
        .await;
        assert_eq!(
            status_and_id(r),
            (Status::TOO_LARGE, 0x4321),
            "{frame:02x?}"
        );
        let r = raw_noise(g.noise, &g.key.public, &frame).await;
        assert_eq!(
            status_and_id(r),
            (Status::TOO_LARGE, 0x4321),
            "{frame:02x?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_with_a_payload_is_a_bad_request() {
    let g = gateway(Discipline::default()).await;
    let r = raw_plain(g.plain, &CHALLENGE_WITH_A_BYTE).await;
    assert_eq!(status_and_id(r), (Status::BAD_REQUEST, 0x0707));
    let r = raw_noise(g.noise, &g.key.public, &CHALLENGE_WITH_A_BYTE).await;
    assert_eq!(status_and_id(r), (Status::BAD_REQUEST, 0x0707));
    // The empty one is answered.
    let mut ok = CHALLENGE_WITH_A_BYTE[..7].to_vec();
    ok[6] = 0;
    let r = raw_plain(g.plain, &ok).await;
    assert_eq!(status_and_id(r), (Status::OK, 0x0707));
    // A lookup with a trailing byte after its domain.
    let mut master = vec![0x00, 0x01, 0x0b, 0x0b, 0x00, 0x00, 0x10, 14];
    master.extend_from_slice(b"social.example");
    master.push(0);
    let r = raw_plain(g.plain, &master).await.unwrap();
    assert_eq!((r.status, r.request_id), (Status::BAD_REQUEST, 0x0b0b));
}

/// A client that stops sending (shuts its side) part-way: the frame so
/// far is judged whole; its id is echoed if it arrived, else 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_cut_short_by_the_client_is_answered_with_what_arrived() {
    let g = gateway(Discipline::default()).await;
    let cases: [(&[u8], Status, u16); 4] = [
        (&[0x01], Status::UNSUPPORTED_VERSION, 0),
        (&[0x00, 0x01, 0x43], Status::BAD_REQUEST, 0),
        (&[0x00, 0x01, 0x43, 0x21], Status::BAD_REQUEST, 0x4321),
        (
            &[0x00, 0x01, 0x43, 0x21, 0x00, 0x00, 0x05, 1],
            Status::BAD_REQUEST,
            0x4321,
        ),
    ];
    for (sent, status, id) in cases {
        let mut s = tokio::net::TcpStream::connect(g.plain).await.unwrap();
        s.write_all(sent).await.unwrap();
        s.shutdown().await.unwrap();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let r = <Response as poz::codec::Codec>::from_bytes(&buf).unwrap();
        assert_eq!((r.status, r.request_id), (status, id), "{sent:02x?}");
    }
}

/// The per-address limit answers before the frame is decoded: it echoes
/// the id of any frame whose id bytes are there (here one too large).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_echoes_the_id_of_a_frame_it_never_decoded() {
    let g = gateway(Discipline {
        rate_per_ip: 1,
        burst_per_ip: 1,
        ..Discipline::default()
    })
    .await;
    let challenge = [0x00, 0x13, 0x00, 0x01, 0x00, 0x00, 0x00];
    let r = raw_noise(g.noise, &g.key.public, &challenge).await;
    assert_eq!(status_and_id(r), (Status::OK, 1));
    let r = raw_noise(g.noise, &g.key.public, &TOO_LARGE).await;
    assert_eq!(status_and_id(r), (Status::RATE_LIMITED, 0x4321));
}
