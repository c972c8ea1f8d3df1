//! `poz-provider-api`: the Provider API as a gRPC service. Configuration
//! from a TOML file, the environment (`POZ_PROVIDER_*`) and flags,
//! validated at start.
#![forbid(unsafe_code)]

use clap::Parser;
use poz::Hash32;
use poz_kit::ServiceConfig;
use poz_proto::v1::provider_api_server::ProviderApiServer;
use poz_provider::{Peers, ProviderApiService};
use serde::{Deserialize, Serialize};

/// Every setting, with its default.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Config {
    /// gRPC address.
    listen: String,
    /// The provider's record ID (hex).
    record_id: String,
    /// The store's gRPC endpoint.
    store: String,
    /// The verifier's gRPC endpoint.
    verifier: String,
    /// The signer's gRPC endpoint.
    signer: String,
    /// Bindings per batch signature in a bulk issue.
    batch_size: usize,
    /// The handle namespace policy (SPEC §8.4.1): "ascii" (lowercase
    /// a-z, 0-9 and . - _) or "unicode" (one script, NFC, case-folded).
    handle_policy: String,
    /// JSON log lines.
    log_json: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:50054".into(),
            record_id: String::new(),
            store: "http://127.0.0.1:50051".into(),
            verifier: "http://127.0.0.1:50052".into(),
            signer: "http://127.0.0.1:50053".into(),
            batch_size: 1000,
            handle_policy: "ascii".into(),
            log_json: false,
        }
    }
}

impl ServiceConfig for Config {
    fn validate(&self) -> Result<(), String> {
        poz_kit::check_listen("listen", &self.listen)?;
        Hash32::from_hex(&self.record_id)
            .ok_or_else(|| format!("record_id {:?} is not 64 hex digits", self.record_id))?;
        for (name, url) in [
            ("store", &self.store),
            ("verifier", &self.verifier),
            ("signer", &self.signer),
        ] {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "{name} must be an http(s):// endpoint, not {url:?}"
                ));
            }
        }
        if !(1..=100_000).contains(&self.batch_size) {
            return Err("batch_size must be 1..=100000".into());
        }
        self.handle_policy
            .parse::<poz::handle::HandlePolicy>()
            .map_err(|e| format!("handle_policy: {e}"))?;
        Ok(())
    }
}

/// Flags: each overrides the file and the environment.
#[derive(Parser, Serialize, Debug)]
#[command(
    name = "poz-provider-api",
    version,
    about = "The POZ Provider API: issue, revoke and bulk-issue identity bindings"
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
    record_id: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A supervisor that pipes our stdin may tie our life to its own.
    poz_kit::exit_with_stdin();
    let args = Args::parse();
    let c: Config = poz_kit::load_config("POZ_PROVIDER_", &args.config, &args)?;
    if args.config.print_config {
        print!("{}", poz_kit::to_toml(&c)?);
        return Ok(());
    }
    poz_kit::init_tracing(c.log_json);
    let record_id = Hash32::from_hex(&c.record_id)
        .ok_or_else(|| anyhow::anyhow!("record_id is not 64 hex digits"))?;
    // Peers are connected lazily: the API starts even if a peer is still
    // starting, and each call reports UNAVAILABLE until it is up.
    let lazy = |url: &str| -> anyhow::Result<tonic::transport::Channel> {
        Ok(tonic::transport::Channel::from_shared(url.to_string())?.connect_lazy())
    };
    let peers = Peers {
        store: lazy(&c.store)?,
        verifier: lazy(&c.verifier)?,
        signer: lazy(&c.signer)?,
    };
    let listener = tokio::net::TcpListener::bind(&c.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, %record_id, "poz-provider-api listening");
    println!("listening {}", listener.local_addr()?);
    let (health, reflection) = poz_kit::health_and_reflection(&["poz.v1.ProviderApi"]).await?;
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(ProviderApiServer::new(ProviderApiService::with_policy(
            record_id,
            peers,
            c.batch_size,
            c.handle_policy
                .parse()
                .map_err(|e: String| anyhow::anyhow!("handle_policy: {e}"))?,
        )))
        .serve_with_incoming_shutdown(poz_kit::incoming(listener), poz_kit::shutdown_signal())
        .await?;
    tracing::info!("poz-provider-api stopped");
    Ok(())
}
