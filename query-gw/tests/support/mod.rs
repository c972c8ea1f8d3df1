//! A store (SQLite) serving the sample provider under `social.example`
//! over real gRPC on loopback, for the gateway tests.
#![allow(dead_code, clippy::unwrap_used)]

use poz::codec::Codec;
use poz::wire::{Request, Response};
use poz::Record;
use poz_proto::v1 as pb;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct StoreServer {
    pub url: String,
    pub provider: Record,
    pub store: poz_store::Store,
    _dir: tempfile::TempDir,
}

/// The store with the sample provider (all zones, alice's binding) bound
/// to `social.example`.
pub async fn store_with_provider() -> StoreServer {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
    let store = poz_store::Store::open(&url, poz_store::StoreOptions::default())
        .await
        .unwrap();
    let provider = poz::sample::provider().unwrap();
    let genesis = Record::new(provider.keys.clone(), provider.history[0].clone());
    store
        .create_record(&genesis.to_bytes(), &["social.example".into()], "")
        .await
        .unwrap();
    store
        .advance_head(&provider.to_bytes(), 1, "")
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = poz_store::grpc::StoreReader {
        store: store.clone(),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::store_read_server::StoreReadServer::new(svc))
            .serve_with_incoming(poz_kit::incoming(listener)),
    );
    StoreServer {
        url: format!("http://{addr}"),
        provider,
        store,
        _dir: dir,
    }
}

/// One plaintext exchange with raw frames: the response, or None when
/// the server closed without one.
pub async fn raw_plain(addr: SocketAddr, frame: &[u8]) -> Option<Response> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(frame).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    if buf.is_empty() {
        return None;
    }
    Some(Response::from_bytes(&buf).unwrap())
}

pub fn frame(t: poz::wire::MessageType, id: u16, payload: Vec<u8>) -> Vec<u8> {
    Request::new(t, id, payload).to_bytes()
}

/// One plaintext exchange whose request is sent in `pieces`, with `pause`
/// between them: the response, or None when the server closed without one.
pub async fn raw_plain_pieces(
    addr: SocketAddr,
    pieces: &[&[u8]],
    pause: std::time::Duration,
) -> Option<Response> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    for (i, p) in pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        s.write_all(p).await.unwrap();
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    if buf.is_empty() {
        return None;
    }
    Some(Response::from_bytes(&buf).unwrap())
}

/// One Noise NK exchange carrying `frame` as the request (any bytes, so a
/// test can send frames no client would), its message sent in `pieces`
/// equal parts with `pause` between them: the response, or None when the
/// server closed without one.
pub async fn raw_noise_pieces(
    addr: SocketAddr,
    server_key: &[u8; 32],
    frame: &[u8],
    pieces: usize,
    pause: std::time::Duration,
) -> Option<Response> {
    let mut client = poz::noise::NkInitiator::new(server_key).unwrap();
    let msg = poz::noise::length_prefixed(&client.write_request(frame).unwrap());
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let size = msg.len().div_ceil(pieces.max(1));
    for (i, p) in msg.chunks(size).enumerate() {
        if i > 0 {
            tokio::time::sleep(pause).await;
        }
        s.write_all(p).await.unwrap();
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let mut rest = &buf[..];
    while let Some((m, used)) = poz::noise::split_message(rest) {
        if let Some(r) = client.read_message(m).unwrap() {
            return Some(r);
        }
        rest = &rest[used..];
    }
    None
}

/// One Noise NK exchange with `frame` as the request.
pub async fn raw_noise(addr: SocketAddr, server_key: &[u8; 32], frame: &[u8]) -> Option<Response> {
    raw_noise_pieces(addr, server_key, frame, 1, std::time::Duration::ZERO).await
}
