//! Issue 16: a server that closes the connection before its response is
//! whole (a gateway killed mid-exchange) is a connection failure, not a
//! malformed answer: retryable, so the client's next attempt reaches a
//! server that answers. Found by the fault harness, which counted a query
//! gateway's SIGKILL as a wrong answer. Plain and Noise NK, with nothing
//! or part of the response sent before the close.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::codec::Codec;
use poz::noise::{length_prefixed, split_message, NkResponder, StaticKeypair};
use poz::wire::{MessageType, Request, Response};
use poz_client::{Client, ClientConfig, ClientError, Endpoint, Security};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server whose first `cut` connections read the request and close
/// after sending `partial` bytes of the response (over Noise when `key`
/// is given: `partial` bytes of the framed reply); later connections get
/// the whole response (OK, payload "pong").
async fn server(key: Option<StaticKeypair>, cut: usize, partial: usize) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let key = key.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let reply = loop {
                    let k = s.read(&mut chunk).await.unwrap_or(0);
                    if k == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..k]);
                    match &key {
                        None => {
                            if let Ok(Some(len)) = Request::check(&buf) {
                                let req = Request::from_bytes(&buf[..len]).unwrap();
                                break Response::ok(req.request_id, b"pong".to_vec()).to_bytes();
                            }
                        }
                        Some(key) => {
                            if let Some((msg, _)) = split_message(&buf) {
                                let mut r = NkResponder::new(key).unwrap();
                                let req = r.read_request(msg).unwrap();
                                let req = Request::from_bytes(&req).unwrap();
                                let resp = Response::ok(req.request_id, b"pong".to_vec());
                                let out = r.write_response(&resp.to_bytes()).unwrap();
                                break out.iter().flat_map(|m| length_prefixed(m)).collect();
                            }
                        }
                    }
                };
                if n < cut {
                    let _ = s.write_all(&reply[..partial.min(reply.len() - 1)]).await;
                    return; // dropped: closed before the response is whole
                }
                let _ = s.write_all(&reply).await;
            });
        }
    });
    addr
}

fn client(attempts: u32) -> Client {
    Client::new(ClientConfig {
        attempts,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        deadline: Duration::from_secs(10),
        ..ClientConfig::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_before_the_whole_response_is_a_retryable_connection_failure() {
    for partial in [0, 5] {
        for noise in [false, true] {
            let key = noise.then(StaticKeypair::generate);
            let security = match &key {
                Some(k) => Security::Noise(k.public),
                None => Security::Plain,
            };
            let ep = |addr| Endpoint { addr, security };
            // One attempt: the failure as it is, a connection failure.
            let e = client(1)
                .request(
                    &ep(server(key.clone(), 1, partial).await),
                    MessageType::SERIAL,
                    b"x".to_vec(),
                )
                .await
                .unwrap_err();
            assert!(
                matches!(e, ClientError::Io { .. }) && e.is_retryable(),
                "partial {partial}, noise {noise}: {e:?}"
            );
            // Two: the first is cut, the second answered.
            let got = client(2)
                .request(
                    &ep(server(key, 1, partial).await),
                    MessageType::SERIAL,
                    b"x".to_vec(),
                )
                .await
                .unwrap();
            assert_eq!(got, b"pong", "partial {partial}, noise {noise}");
        }
    }
}
