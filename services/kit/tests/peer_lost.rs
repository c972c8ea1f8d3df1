//! A peer that cannot answer is UNAVAILABLE to the caller, whatever the
//! transport called it (issue 16: the fault harness saw a Provider API
//! pass on UNKNOWN "transport error" and "h2 protocol error" from a
//! killed verifier, and a client see the same from a killed Provider
//! API): no listener, a connection closed before any answer, and a
//! connection lost in the middle of a streamed answer.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod support;

use poz_kit::{Channels, ServeSettings};
use poz_proto::v1 as pb;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

async fn verify(url: &str) -> tonic::Status {
    pb::verifier_client::VerifierClient::new(Channels::default().lazy(url).unwrap())
        .verify_record(pb::VerifyRecordRequest {
            record: vec![1, 2, 3],
            now_ms: 0,
        })
        .await
        .unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_listener_is_unavailable() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let s = verify(&format!("http://{addr}")).await;
    assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_before_the_answer_is_unavailable() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    // Accepts, reads what comes (the HTTP/2 preface and the call), and
    // closes without a word: a peer killed as the call arrived.
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ =
                tokio::time::timeout(std::time::Duration::from_millis(200), s.read(&mut buf)).await;
            drop(s);
        }
    });
    let s = verify(&format!("http://{addr}")).await;
    assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
}

/// A TCP proxy to `to` that forwards both ways until `cut` fires, then
/// drops both sockets: the network failing under a call.
async fn proxy(
    to: std::net::SocketAddr,
) -> (std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (cut, mut cut_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let (mut a, _) = l.accept().await.unwrap();
        let mut b = TcpStream::connect(to).await.unwrap();
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
            _ = cut_rx.changed() => {}
        }
        // Dropped here: both connections reset mid-stream.
    });
    (addr, cut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_mid_stream_is_unavailable() {
    let settings = ServeSettings {
        insecure: true,
        ..ServeSettings::default()
    };
    let server = support::bind(&settings).await;
    let at = server.local_addr();
    let running = support::Running::start(server);
    let (via, cut) = proxy(at).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        Channels::default().lazy(&format!("http://{via}")).unwrap(),
    );
    let mut watch = health
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    // The first report arrives; then the connection is lost.
    watch.message().await.unwrap().unwrap();
    cut.send(true).unwrap();
    let s = tokio::time::timeout(std::time::Duration::from_secs(10), watch.message())
        .await
        .expect("the stream ends when its connection is lost")
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unavailable, "{s:?}");
    running.stop_and_join().abort();
}
