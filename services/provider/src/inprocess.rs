//! The store, verifier, signer and Provider API as gRPC servers on
//! loopback inside one process: the shape `pozd` runs, and what tests and
//! the bulk benchmark start. Every call still crosses real gRPC, so the
//! figures and the behaviour are the services'.

use crate::{Peers, ProviderApiService};
use poz::handle::HandlePolicy;
use poz::Hash32;
use poz_kit::Channel;
use poz_proto::v1 as pb;
use poz_signer::KeyStore;
use std::sync::Arc;
use tonic::transport::Server;

async fn listen() -> std::io::Result<(tokio::net::TcpListener, String)> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = format!("http://{}", l.local_addr()?);
    Ok((l, addr))
}

fn channel(addr: &str) -> anyhow::Result<Channel> {
    Ok(poz_kit::Channels::default().lazy(addr)?)
}

/// Addresses of a running in-process fleet.
pub struct LocalFleet {
    pub store: String,
    pub verifier: String,
    pub signer: String,
    pub provider_api: String,
}

/// Starts the four services for `record_id` over `store` and `keys`, with
/// the default handle policy (`ascii`).
pub async fn start(
    store: poz_store::Store,
    keys: Arc<dyn KeyStore>,
    record_id: Hash32,
    batch_size: usize,
) -> anyhow::Result<LocalFleet> {
    start_with_policy(store, keys, record_id, batch_size, HandlePolicy::default()).await
}

/// [`start`] with the Provider API issuing handles under `policy`.
pub async fn start_with_policy(
    store: poz_store::Store,
    keys: Arc<dyn KeyStore>,
    record_id: Hash32,
    batch_size: usize,
    policy: HandlePolicy,
) -> anyhow::Result<LocalFleet> {
    let m = poz_kit::MAX_GRPC_MESSAGE;
    let (l, store_addr) = listen().await?;
    tokio::spawn(
        Server::builder()
            .add_service(
                pb::store_read_server::StoreReadServer::new(poz_store::grpc::StoreReader {
                    store: store.clone(),
                })
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
            )
            .add_service(
                pb::store_write_server::StoreWriteServer::new(poz_store::grpc::StoreWriter {
                    store: store.clone(),
                })
                .max_decoding_message_size(m),
            )
            .serve_with_incoming(poz_kit::incoming(l)),
    );
    let (l, verifier_addr) = listen().await?;
    tokio::spawn(
        Server::builder()
            .add_service(
                pb::verifier_server::VerifierServer::new(poz_verifier::VerifierService::default())
                    .max_decoding_message_size(m),
            )
            .serve_with_incoming(poz_kit::incoming(l)),
    );
    // The signer writes its audit rows over the store's pool (one
    // database, migrated by the store as it opened).
    let audit = poz_signer::SignatureAuditLog::with_pool(
        store.pool().clone(),
        match store.backend() {
            poz_store::Backend::Postgres => poz_signer::AuditBackend::Postgres,
            poz_store::Backend::Sqlite => poz_signer::AuditBackend::Sqlite,
        },
    );
    let (l, signer_addr) = listen().await?;
    tokio::spawn(
        Server::builder()
            .add_service(
                pb::signer_server::SignerServer::new(poz_signer::SignerService::new(keys, audit))
                    .max_decoding_message_size(m),
            )
            .serve_with_incoming(poz_kit::incoming(l)),
    );
    let api = ProviderApiService::with_policy(
        record_id,
        Peers {
            store: channel(&store_addr)?,
            verifier: channel(&verifier_addr)?,
            signer: channel(&signer_addr)?,
        },
        batch_size,
        policy,
    );
    let (l, api_addr) = listen().await?;
    tokio::spawn(
        Server::builder()
            .add_service(pb::provider_api_server::ProviderApiServer::new(api))
            .serve_with_incoming(poz_kit::incoming(l)),
    );
    Ok(LocalFleet {
        store: store_addr,
        verifier: verifier_addr,
        signer: signer_addr,
        provider_api: api_addr,
    })
}
