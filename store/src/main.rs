//! `poz-store`: the store as a gRPC service. Configuration from a TOML
//! file, the environment (`POZ_STORE_*`) and flags, validated at start
//! (docs/OPERATIONS.md lists every setting).
#![forbid(unsafe_code)]

use clap::Parser;
use poz_kit::ServiceConfig;
use poz_proto::v1::{store_read_server::StoreReadServer, store_write_server::StoreWriteServer};
use poz_store::grpc::{StoreReader, StoreWriter};
use poz_store::{Store, StoreOptions};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Every setting, with its default.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Config {
    /// gRPC address.
    listen: String,
    /// postgres://… for the fleet, sqlite://PATH?mode=rwc for one machine.
    database_url: String,
    /// Connections in the pool.
    max_connections: u32,
    /// How long a request waits for a pooled connection, ms.
    acquire_timeout_ms: u64,
    /// Postgres statement_timeout, ms.
    statement_timeout_ms: u64,
    /// SQLite busy_timeout, ms.
    busy_timeout_ms: u64,
    /// Attempts for a transaction that hit a serialization failure.
    retries: u32,
    /// How long a handle revoked for reason unspecified or superseded
    /// stays reserved, ms; 0: until an operator frees it (SPEC §8.4.3).
    revoked_handle_cooldown_ms: u64,
    /// Pending binding requests one subject may have at once.
    pending_per_subject: u32,
    /// A pending binding request older than this is refused, ms.
    pending_ttl_ms: u64,
    /// JSON log lines.
    log_json: bool,
}

impl Default for Config {
    fn default() -> Self {
        let o = StoreOptions::default();
        Config {
            listen: "127.0.0.1:50051".into(),
            database_url: String::new(),
            max_connections: o.max_connections,
            acquire_timeout_ms: o.acquire_timeout.as_millis() as u64,
            statement_timeout_ms: o.statement_timeout.as_millis() as u64,
            busy_timeout_ms: o.busy_timeout.as_millis() as u64,
            retries: o.retries,
            revoked_handle_cooldown_ms: 0,
            pending_per_subject: o.pending_per_subject,
            pending_ttl_ms: u64::try_from(o.pending_ttl.as_millis()).unwrap_or(u64::MAX),
            log_json: false,
        }
    }
}

impl ServiceConfig for Config {
    fn validate(&self) -> Result<(), String> {
        poz_kit::check_listen("listen", &self.listen)?;
        let url = self.database_url.as_str();
        if !(url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.starts_with("sqlite:"))
        {
            // The value is not echoed: a libpq key=value string such as
            // "host=db password=…" lands here, password and all.
            let scheme = url.split_once(':').map_or("no scheme", |(s, _)| s);
            return Err(format!(
                "database_url must be postgres://… or sqlite:… (got {})",
                if url.is_empty() {
                    "nothing".to_string()
                } else {
                    format!("{} characters, scheme {scheme:?}", url.chars().count())
                }
            ));
        }
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        if self.pending_per_subject == 0 {
            return Err("pending_per_subject must be at least 1".into());
        }
        for (name, v) in [
            ("acquire_timeout_ms", self.acquire_timeout_ms),
            ("statement_timeout_ms", self.statement_timeout_ms),
            ("busy_timeout_ms", self.busy_timeout_ms),
            ("pending_ttl_ms", self.pending_ttl_ms),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        Ok(())
    }
}

/// Flags: each overrides the file and the environment.
#[derive(Parser, Serialize, Debug)]
#[command(
    name = "poz-store",
    version,
    about = "The POZ store: gRPC over Postgres (or SQLite)"
)]
struct Args {
    #[command(flatten)]
    #[serde(skip)]
    config: poz_kit::ConfigArgs,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    database_url: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections: Option<u32>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    statement_timeout_ms: Option<u64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A supervisor that pipes our stdin may tie our life to its own.
    poz_kit::exit_with_stdin();
    let args = Args::parse();
    let c: Config = poz_kit::load_config("POZ_STORE_", &args.config, &args)?;
    if args.config.print_config {
        print!("{}", poz_kit::to_toml(&c)?);
        return Ok(());
    }
    poz_kit::init_tracing(c.log_json);
    let options = StoreOptions {
        max_connections: c.max_connections,
        acquire_timeout: Duration::from_millis(c.acquire_timeout_ms),
        statement_timeout: Duration::from_millis(c.statement_timeout_ms),
        busy_timeout: Duration::from_millis(c.busy_timeout_ms),
        retries: c.retries,
        revoked_handle_cooldown: (c.revoked_handle_cooldown_ms > 0)
            .then(|| Duration::from_millis(c.revoked_handle_cooldown_ms)),
        pending_per_subject: c.pending_per_subject,
        pending_ttl: Duration::from_millis(c.pending_ttl_ms),
    };
    let store = Store::open(&c.database_url, options).await?;
    let listener = tokio::net::TcpListener::bind(&c.listen).await?;
    // Tests and supervisors read the bound address from this line.
    tracing::info!(addr = %listener.local_addr()?, backend = ?store.backend(), "poz-store listening");
    println!("listening {}", listener.local_addr()?);
    let (health, reflection) =
        poz_kit::health_and_reflection(&["poz.v1.StoreRead", "poz.v1.StoreWrite"]).await?;
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(
            StoreReadServer::new(StoreReader {
                store: store.clone(),
            })
            .max_decoding_message_size(poz_kit::MAX_GRPC_MESSAGE)
            .max_encoding_message_size(poz_kit::MAX_GRPC_MESSAGE),
        )
        .add_service(
            StoreWriteServer::new(StoreWriter { store })
                .max_decoding_message_size(poz_kit::MAX_GRPC_MESSAGE)
                .max_encoding_message_size(poz_kit::MAX_GRPC_MESSAGE),
        )
        .serve_with_incoming_shutdown(poz_kit::incoming(listener), poz_kit::shutdown_signal())
        .await?;
    tracing::info!("poz-store stopped");
    Ok(())
}
