//! `/readyz` on the metrics endpoint follows the server's life: 503
//! before it serves, 200 while it serves, 503 from the moment its drain
//! begins (issue 14: the Kubernetes readiness probe). Its own test binary:
//! readiness is one per process.
#![allow(clippy::unwrap_used)]

mod support;

use poz_kit::ServeSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The status line and body of `GET path` on `addr`.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let code = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (code, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_serving_and_drain() {
    let metrics = poz_kit::metrics::Endpoint::start("127.0.0.1:0")
        .await
        .unwrap()
        .unwrap();
    let at = metrics.local_addr();
    assert_eq!(get(at, "/readyz").await, (503, "starting\n".into()));
    assert_eq!(get(at, "/healthz").await, (200, "ok\n".into()));

    let settings = ServeSettings {
        insecure: true,
        ..ServeSettings::default()
    };
    let server = support::bind(&settings).await;
    let running = support::Running::start(server);
    // Serving starts on the spawned task: wait for it, bounded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while get(at, "/readyz").await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "never turned ready");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(get(at, "/readyz").await, (200, "ready\n".into()));

    running.stop().await;
    assert_eq!(get(at, "/readyz").await, (503, "draining\n".into()));
    // Liveness does not follow the drain: the process is still alive.
    assert_eq!(get(at, "/healthz").await, (200, "ok\n".into()));
}
