//! Issue 12 §9: a server's retry hint stalled a client for 49 days
//! (RATE_LIMITED with `retry_after_ms` = 0xFFFFFFFF put pozctl to sleep
//! after one request). Every hint is clamped to the client's backoff
//! maximum and the call's deadline; a pool lookup moves on to the next
//! host. A fake server on a real loopback socket answers every request
//! that way.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::codec::Codec;
use poz::wire::{Request, Response, Status};
use poz_client::{Client, ClientConfig, ClientError, Endpoint, Security};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server that answers every whole request RATE_LIMITED, retry after
/// `hint_ms`; returns its address and how many requests it answered.
async fn rate_limiting_server(hint_ms: u32) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let count = count.clone();
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
                let resp =
                    Response::error(Status::RATE_LIMITED, req.request_id, hint_ms, "slow down");
                count.fetch_add(1, Ordering::SeqCst);
                let _ = s.write_all(&resp.to_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, answered)
}

fn plain(addr: std::net::SocketAddr) -> Endpoint {
    Endpoint {
        addr,
        security: Security::Plain,
    }
}

/// The bound on each call is loose on purpose (the fault was 49 days):
/// what the tests prove is that the hint did not set the wait.
const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_49_day_retry_hint_gives_the_server_up_and_the_pool_moves_on() {
    let (stalling, stalled) = rate_limiting_server(0xFFFF_FFFF).await;
    let (other, other_answered) = rate_limiting_server(0xFFFF_FFFF).await;
    let c = Client::new(ClientConfig {
        attempts: 3,
        ..ClientConfig::default()
    });
    let r = tokio::time::timeout(PATIENCE, c.serial(&[plain(stalling)], "a.example"))
        .await
        .expect("the client must not sleep on the server's hint");
    match r {
        Err(ClientError::Status { status, .. }) => assert_eq!(status, Status::RATE_LIMITED),
        other => panic!("{other:?}"),
    }
    // One request: a hint beyond the backoff maximum is neither waited
    // for nor disobeyed by an early retry.
    assert_eq!(stalled.load(Ordering::SeqCst), 1);
    // In a pool, the next host is asked at once.
    let r = tokio::time::timeout(
        PATIENCE,
        c.serial(&[plain(stalling), plain(other)], "a.example"),
    )
    .await
    .expect("one bad host does not stall the pool");
    assert!(r.is_err(), "{r:?}");
    assert_eq!(stalled.load(Ordering::SeqCst), 2);
    assert_eq!(other_answered.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn hints_within_the_backoff_maximum_are_obeyed_within_the_deadline() {
    // A short hint is waited for, and every attempt is made.
    let (addr, answered) = rate_limiting_server(20).await;
    let c = Client::new(ClientConfig {
        attempts: 3,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        ..ClientConfig::default()
    });
    let r = tokio::time::timeout(PATIENCE, c.serial(&[plain(addr)], "a.example"))
        .await
        .unwrap();
    assert!(r.is_err(), "{r:?}");
    assert_eq!(answered.load(Ordering::SeqCst), 3);

    // A hint the backoff maximum allows but the deadline does not: the
    // attempts end at once (no wait starts that would end past it).
    let (addr, answered) = rate_limiting_server(3_000).await;
    let c = Client::new(ClientConfig {
        attempts: 3,
        deadline: Duration::from_secs(2),
        ..ClientConfig::default()
    });
    let r = tokio::time::timeout(PATIENCE, c.serial(&[plain(addr)], "a.example"))
        .await
        .unwrap();
    assert!(r.is_err(), "{r:?}");
    // Had it slept the hint, it would have retried: one request only.
    assert_eq!(answered.load(Ordering::SeqCst), 1);
}
