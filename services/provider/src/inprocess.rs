//! The store, verifier, signer and Provider API as gRPC servers on
//! loopback inside one process, each with health and reflection: the shape `pozd` runs, and what tests and
//! the bulk benchmark start. Every call still crosses real gRPC, so the
//! figures and the behaviour are the services'.

use crate::{Peers, ProviderApiService};
use poz::handle::HandlePolicy;
use poz::Hash32;
use poz_kit::Channel;
use poz_kit::{GrpcRoutes, GrpcServer};
use poz_proto::v1 as pb;
use poz_signer::KeyStore;
use std::sync::Arc;

async fn listen() -> std::io::Result<(tokio::net::TcpListener, String)> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = format!("http://{}", l.local_addr()?);
    Ok((l, addr))
}

/// Serves `routes` on loopback with the kit's runner (health, reflection
/// v1 and v1alpha, metrics, spans), without TLS: every caller is in this
/// process. Runs until the process ends.
fn serve(name: &'static str, listener: tokio::net::TcpListener, routes: GrpcRoutes) {
    tokio::spawn(async move {
        if let Err(e) = GrpcServer::plain(name, listener)
            .serve_until(routes, std::future::pending())
            .await
        {
            tracing::error!(error = %e, "{name} (in process) stopped");
        }
    });
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
    serve(
        "poz-store",
        l,
        GrpcRoutes::new()
            .service(
                pb::store_read_server::StoreReadServer::new(poz_store::grpc::StoreReader {
                    store: store.clone(),
                })
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
            )
            .service(
                pb::store_write_server::StoreWriteServer::new(poz_store::grpc::StoreWriter {
                    store: store.clone(),
                })
                .max_decoding_message_size(m),
            ),
    );
    let (l, verifier_addr) = listen().await?;
    serve(
        "poz-verifier",
        l,
        GrpcRoutes::new().service(
            pb::verifier_server::VerifierServer::new(poz_verifier::VerifierService::default())
                .max_decoding_message_size(m),
        ),
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
    serve(
        "poz-signer",
        l,
        GrpcRoutes::new().service(
            pb::signer_server::SignerServer::new(poz_signer::SignerService::new(keys, audit))
                .max_decoding_message_size(m),
        ),
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
    serve(
        "poz-provider-api",
        l,
        GrpcRoutes::new().service(pb::provider_api_server::ProviderApiServer::new(api)),
    );
    Ok(LocalFleet {
        store: store_addr,
        verifier: verifier_addr,
        signer: signer_addr,
        provider_api: api_addr,
    })
}
