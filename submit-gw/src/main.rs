//! `poz-submit-gw`: the submit gateway (7076, Noise NK only). Configuration
//! from a TOML file, the environment (`POZ_SUBMIT_GW_*`) and flags,
//! validated at start (docs/OPERATIONS.md lists every setting); then
//! `poz_submit_gw::serve`.
#![forbid(unsafe_code)]

use clap::Parser;
use poz_submit_gw::{Config, Listeners};
use serde::Serialize;

/// Flags: each overrides the file and the environment.
#[derive(Parser, Serialize, Debug)]
#[command(
    name = "poz-submit-gw",
    version,
    about = "The POZ submit gateway (7076 Noise NK)"
)]
struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    gateway: poz_edge::GatewayArgs,
    /// Noise NK submit port (IP:port; 7076).
    #[arg(long)]
    listen: Option<String>,
    /// The store's endpoint (http(s)://HOST:PORT).
    #[arg(long)]
    store: Option<String>,
    /// The verifier's endpoint (http(s)://HOST:PORT).
    #[arg(long)]
    verifier: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let Some(c) = poz_kit::start::<Config>("POZ_SUBMIT_GW_", &args.gateway.config, &args)? else {
        return Ok(()); // --print-config
    };
    let _telemetry = poz_kit::telemetry::init("poz-submit-gw", c.edge.serve.log_json)?;
    // k8s:// peers: balanced over their EndpointSlices (refused here
    // when the Kubernetes API cannot be reached).
    poz_cluster::install_for(&[&c.store, &c.verifier, &c.provider_api]).await?;
    let listeners = Listeners::bind(&c).await?;
    Ok(poz_submit_gw::serve(c, listeners, poz_kit::shutdown_signal()).await?)
}
