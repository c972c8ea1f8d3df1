//! A proof-of-work solve ends with the call. Found while loading pozd in
//! an open loop (issue #10): queries that had timed out kept their solves
//! running on blocking threads to the end (a difficulty-24 solve is ~2^24
//! SHA3 hashes, seconds of a core), so the load generator kept both cores
//! busy for minutes after its run. Now the solver stops at the call's
//! deadline (the call fails `Timeout { stage: "pow" }`) and when the caller
//! drops the call. A fake server on a real loopback socket asks every
//! request for a proof at difficulty 24.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::codec::Codec;
use poz::wire::{
    Challenge, DomainQuery, MessageType, PowReason, PowRequired, Request, Response, Status,
};
use poz_client::{Client, ClientConfig, ClientError, Endpoint, Security};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server that answers every whole request POW_REQUIRED at `difficulty`.
async fn demanding_server(difficulty: u8) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                let n = loop {
                    if let Ok(Some(n)) = Request::check(&buf) {
                        break n;
                    }
                    match s.read(&mut chunk).await {
                        Ok(k) if k > 0 => buf.extend_from_slice(&chunk[..k]),
                        _ => return,
                    }
                };
                let req = Request::decode(&buf[..n]).unwrap();
                let resp = Response {
                    status: Status::POW_REQUIRED,
                    request_id: req.request_id,
                    payload: PowRequired {
                        reason: PowReason::REQUIRED,
                        challenge: Challenge {
                            difficulty,
                            challenge: [7; 16],
                            expires_at: u64::MAX,
                        },
                    }
                    .to_bytes(),
                };
                let _ = s.write_all(&resp.to_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_solve_that_outlives_the_deadline_ends_with_the_call() {
    let addr = demanding_server(24).await;
    let c = Client::new(ClientConfig {
        attempts: 1,
        max_pow_difficulty: 24,
        deadline: Duration::from_millis(300),
        ..ClientConfig::default()
    });
    let ep = Endpoint {
        addr,
        security: Security::Plain,
    };
    let query = DomainQuery {
        domain: "a.example".into(),
    }
    .to_bytes();
    // The bound is loose on purpose: the stage of the error is the proof.
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        c.request(&ep, MessageType::SERIAL, query),
    )
    .await
    .expect("the call must end");
    match r {
        Err(ClientError::Timeout { stage, .. }) => assert_eq!(stage, "pow"),
        other => panic!("{other:?}"),
    }
}
