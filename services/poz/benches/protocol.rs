//! The server side of one Noise NK exchange (read the request, write the
//! response) through `poz::noise`, against a bare `snow` NK responder
//! doing the same messages; and the cost of verifying one proof of work.
//!
//! `cargo bench -p poz --bench protocol` prints Criterion's figures, then
//! `RATIO` lines from interleaved rounds (median of 15).
#![allow(clippy::unwrap_used)] // a panic in a bench is a failure with a backtrace

use criterion::{black_box, Criterion};
use poz::codec::Codec;
use poz::noise::{NkInitiator, NkResponder, StaticKeypair, MAX_MESSAGE, NOISE_PARAMS};
use poz::pow::{solve, Challenger, PowConfig, Secrets};
use poz::wire::{IdentityQuery, MessageType, Request, Response};
use std::time::Instant;

/// A client's first message for an IDENTITY query and a ~300-byte answer
/// (the size of an IDENTITY response).
fn setup() -> (StaticKeypair, Vec<u8>, Vec<u8>) {
    let server = StaticKeypair::from_secret([7; 32]);
    let mut client = NkInitiator::new(&server.public).unwrap();
    let q = Request::new(
        MessageType::IDENTITY,
        1,
        IdentityQuery {
            domain: "social.example".into(),
            handle: "alice".into(),
        }
        .to_bytes(),
    );
    let first = client.write_request(&q.to_bytes()).unwrap();
    let answer = Response::ok(1, vec![0x5A; 300]).to_bytes();
    (server, first, answer)
}

fn ours(server: &StaticKeypair, first: &[u8], answer: &[u8]) {
    let mut r = NkResponder::new(server).unwrap();
    let req = r.read_request(first).unwrap();
    black_box(Request::decode(&req).unwrap());
    black_box(r.write_response(answer).unwrap());
}

fn bare(server: &StaticKeypair, first: &[u8], answer: &[u8]) {
    let mut hs = snow::Builder::new(NOISE_PARAMS.parse().unwrap())
        .local_private_key(server.secret())
        .build_responder()
        .unwrap();
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = hs.read_message(first, &mut buf).unwrap();
    black_box(&buf[..n]);
    let mut out = vec![0u8; MAX_MESSAGE];
    let m = hs.write_message(answer, &mut out).unwrap();
    black_box(&out[..m]);
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let (server, first, answer) = setup();
    let challenger = Challenger::new(PowConfig::default(), Secrets(vec![[1; 32]]));
    let now = 10_000_000;
    let ch = challenger.issue(now, 8);
    let sol = solve(&ch.challenge, 8, now, 0, 1 << 20).unwrap();

    c.bench_function("noise/bare snow NK responder", |b| {
        b.iter(|| bare(&server, &first, &answer))
    });
    c.bench_function("noise/poz NkResponder + request decode", |b| {
        b.iter(|| ours(&server, &first, &answer))
    });
    c.bench_function("pow/verify one solution", |b| {
        b.iter(|| challenger.check(black_box(&sol), now, 8).unwrap())
    });
    c.final_summary();

    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let mut ratios = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        for _ in 0..500 {
            bare(&server, &first, &answer);
        }
        let b = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..500 {
            ours(&server, &first, &answer);
        }
        ratios.push(b / t.elapsed().as_secs_f64());
    }
    ratios.sort_by(|a, b| a.total_cmp(b));
    println!(
        "RATIO noise step ours vs bare snow: {:.3} (median of 15 rounds, min {:.3}, max {:.3})",
        ratios[7], ratios[0], ratios[14]
    );
    let t = Instant::now();
    let n = 200_000;
    for _ in 0..n {
        challenger.check(black_box(&sol), now, 8).unwrap();
    }
    println!(
        "POW verify: {:.3} µs per frame ({n} checks)",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}
