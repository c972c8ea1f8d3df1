//! `poz-verifier`: the stateless verifier as a gRPC service. Configuration
//! from a TOML file, the environment (`POZ_VERIFIER_*`) and flags,
//! validated at start.
#![forbid(unsafe_code)]

use clap::Parser;
use poz_kit::ServiceConfig;
use poz_proto::v1::verifier_server::VerifierServer;
use poz_verifier::VerifierService;
use serde::{Deserialize, Serialize};

/// Every setting, with its default.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Config {
    /// gRPC address.
    listen: String,
    /// JSON log lines.
    log_json: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:50052".into(),
            log_json: false,
        }
    }
}

impl ServiceConfig for Config {
    fn validate(&self) -> Result<(), String> {
        poz_kit::check_listen("listen", &self.listen)
    }
}

/// Flags: each overrides the file and the environment.
#[derive(Parser, Serialize, Debug)]
#[command(
    name = "poz-verifier",
    version,
    about = "The POZ verifier (stateless gRPC)"
)]
struct Args {
    #[command(flatten)]
    #[serde(skip)]
    config: poz_kit::ConfigArgs,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A supervisor that pipes our stdin may tie our life to its own.
    poz_kit::exit_with_stdin();
    let args = Args::parse();
    let c: Config = poz_kit::load_config("POZ_VERIFIER_", &args.config, &args)?;
    if args.config.print_config {
        print!("{}", poz_kit::to_toml(&c)?);
        return Ok(());
    }
    poz_kit::init_tracing(c.log_json);
    let listener = tokio::net::TcpListener::bind(&c.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "poz-verifier listening");
    println!("listening {}", listener.local_addr()?);
    let (health, reflection) = poz_kit::health_and_reflection(&["poz.v1.Verifier"]).await?;
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(
            VerifierServer::new(VerifierService::default())
                .max_decoding_message_size(poz_kit::MAX_GRPC_MESSAGE),
        )
        .serve_with_incoming_shutdown(poz_kit::incoming(listener), poz_kit::shutdown_signal())
        .await?;
    tracing::info!("poz-verifier stopped");
    Ok(())
}
