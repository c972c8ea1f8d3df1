//! `poz-verifier`: the stateless verifier as a gRPC service. Settings:
//! docs/OPERATIONS.md ("poz-verifier" and "Every service").
#![forbid(unsafe_code)]

use clap::Parser;
use poz_kit::allow::identity;
use poz_kit::{Allowlist, GrpcRoutes, GrpcServer, ServeSettings, ServiceConfig};
use poz_proto::v1::verifier_server::VerifierServer;
use poz_verifier::VerifierService;
use serde::{Deserialize, Serialize};

const NAME: &str = "poz-verifier";

/// Every setting, with its default.
#[derive(Serialize, Deserialize, Debug)]
#[serde(default)]
struct Config {
    /// gRPC address.
    listen: String,
    #[serde(flatten)]
    serve: ServeSettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:50052".into(),
            serve: ServeSettings::default(),
        }
    }
}

impl ServiceConfig for Config {
    fn validate(&self) -> Result<(), String> {
        poz_kit::check_listen("listen", &self.listen)?;
        self.serve.validate()
    }
}

/// Flags: each overrides the file and the environment.
#[derive(Parser, Serialize, Debug)]
#[command(name = NAME, version, about = "The POZ verifier (stateless gRPC)")]
struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    common: poz_kit::GrpcArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let Some(c) = poz_kit::start::<Config>("POZ_VERIFIER_", &args.common.config, &args)? else {
        return Ok(());
    };
    let _telemetry = poz_kit::telemetry::init(NAME, c.serve.log_json)?;
    // Only the writers verify: the Provider API and the submit gateway.
    let allow = Allowlist::of(&[(
        "poz.v1.Verifier",
        &[identity::PROVIDER_API, identity::SUBMIT_GW],
    )]);
    let server = GrpcServer::bind(NAME, &c.listen, &c.serve, allow).await?;
    let verifier = VerifierServer::new(VerifierService::default())
        .max_decoding_message_size(poz_kit::MAX_GRPC_MESSAGE);
    server.serve(GrpcRoutes::new().service(verifier)).await?;
    Ok(())
}
