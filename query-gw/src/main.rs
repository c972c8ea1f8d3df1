//! `poz-query-gw`: the query gateway. Configuration from a TOML file, the
//! environment (`POZ_QUERY_GW_*`) and flags, validated at start
//! (docs/OPERATIONS.md lists every setting); then `poz_query_gw::serve`.
#![forbid(unsafe_code)]

use clap::Parser;
use poz_query_gw::{Config, Listeners};
use serde::Serialize;

/// Flags: each overrides the file and the environment.
#[derive(Parser, Serialize, Debug)]
#[command(
    name = "poz-query-gw",
    version,
    about = "The POZ query gateway (7074 plain, 7075 Noise NK)"
)]
struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    gateway: poz_edge::GatewayArgs,
    /// Plaintext POZ port (IP:port; 7074).
    #[arg(long)]
    listen_plain: Option<String>,
    /// Noise NK POZ port (IP:port; 7075).
    #[arg(long)]
    listen_noise: Option<String>,
    /// The store's StoreRead endpoint (http(s)://HOST:PORT).
    #[arg(long)]
    store: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let Some(c) = poz_kit::start::<Config>("POZ_QUERY_GW_", &args.gateway.config, &args)? else {
        return Ok(()); // --print-config
    };
    let _telemetry = poz_kit::telemetry::init("poz-query-gw", c.edge.serve.log_json)?;
    // k8s:// peers: balanced over their EndpointSlices (refused here
    // when the Kubernetes API cannot be reached).
    poz_cluster::install_for(&[&c.store]).await?;
    let listeners = Listeners::bind(&c).await?;
    Ok(poz_query_gw::serve(c, listeners, poz_kit::shutdown_signal()).await?)
}
