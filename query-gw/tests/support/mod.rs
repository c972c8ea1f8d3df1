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
    let svc = poz_store::grpc::StoreService {
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
