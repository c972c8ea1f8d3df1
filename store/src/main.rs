//! `poz-store`: the store as a gRPC service. Configuration from flags or
//! the environment (`POZ_STORE_*`), validated at start.
#![forbid(unsafe_code)]

use clap::Parser;
use poz_proto::v1::{store_read_server::StoreReadServer, store_write_server::StoreWriteServer};
use poz_store::grpc::StoreService;
use poz_store::{Store, StoreOptions};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "poz-store",
    version,
    about = "The POZ store: gRPC over Postgres (or SQLite)"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "POZ_STORE_LISTEN", default_value = "127.0.0.1:50051")]
    listen: String,
    /// postgres://… for the fleet, sqlite://PATH?mode=rwc for one machine.
    #[arg(long, env = "POZ_STORE_DATABASE_URL")]
    database_url: String,
    /// Connections in the pool.
    #[arg(long, env = "POZ_STORE_MAX_CONNECTIONS", default_value_t = 16)]
    max_connections: u32,
    /// Postgres statement_timeout, ms.
    #[arg(long, env = "POZ_STORE_STATEMENT_TIMEOUT_MS", default_value_t = 5000)]
    statement_timeout_ms: u64,
    /// JSON log lines.
    #[arg(long, env = "POZ_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    poz_kit::init_tracing(args.log_json);
    if args.max_connections == 0 {
        anyhow::bail!("--max-connections must be at least 1");
    }
    let options = StoreOptions {
        max_connections: args.max_connections,
        statement_timeout: Duration::from_millis(args.statement_timeout_ms),
        ..StoreOptions::default()
    };
    let store = Store::open(&args.database_url, options).await?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    // Tests and supervisors read the bound address from this line.
    tracing::info!(addr = %listener.local_addr()?, backend = ?store.backend(), "poz-store listening");
    println!("listening {}", listener.local_addr()?);
    let (health, reflection) =
        poz_kit::health_and_reflection(&["poz.v1.StoreRead", "poz.v1.StoreWrite"]).await?;
    let svc = StoreService { store };
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(
            StoreReadServer::new(svc.clone())
                .max_decoding_message_size(poz_kit::MAX_GRPC_MESSAGE)
                .max_encoding_message_size(poz_kit::MAX_GRPC_MESSAGE),
        )
        .add_service(
            StoreWriteServer::new(svc)
                .max_decoding_message_size(poz_kit::MAX_GRPC_MESSAGE)
                .max_encoding_message_size(poz_kit::MAX_GRPC_MESSAGE),
        )
        .serve_with_incoming_shutdown(poz_kit::incoming(listener), poz_kit::shutdown_signal())
        .await?;
    tracing::info!("poz-store stopped");
    Ok(())
}
