//! `poz-provider-api`: the Provider API as a gRPC service. Settings:
//! docs/OPERATIONS.md ("poz-provider-api" and "Every service").
#![forbid(unsafe_code)]

use clap::Parser;
use poz::Hash32;
use poz_kit::allow::identity;
use poz_kit::{Allowlist, GrpcRoutes, GrpcServer, ServeSettings, ServiceConfig};
use poz_proto::v1::provider_api_server::ProviderApiServer;
use poz_provider::{Peers, ProviderApiService};
use serde::{Deserialize, Serialize};

const NAME: &str = "poz-provider-api";

/// Every setting, with its default.
#[derive(Serialize, Deserialize, Debug)]
#[serde(default)]
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
    #[serde(flatten)]
    serve: ServeSettings,
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
            serve: ServeSettings::default(),
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
            poz_kit::channel::check_peer(name, url, self.serve.tls.is_set())?;
        }
        if !(1..=100_000).contains(&self.batch_size) {
            return Err("batch_size must be 1..=100000".into());
        }
        self.handle_policy
            .parse::<poz::handle::HandlePolicy>()
            .map_err(|e| format!("handle_policy: {e}"))?;
        self.serve.validate()
    }
}

/// Flags: each overrides the file and the environment.
#[derive(Parser, Serialize, Debug)]
#[command(
    name = NAME,
    version,
    about = "The POZ Provider API: issue, revoke and bulk-issue identity bindings"
)]
struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    common: poz_kit::GrpcArgs,
    /// The provider record this API issues under (64 hex digits).
    #[arg(long)]
    record_id: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let Some(c) = poz_kit::start::<Config>("POZ_PROVIDER_", &args.common.config, &args)? else {
        return Ok(());
    };
    let _telemetry = poz_kit::telemetry::init(NAME, c.serve.log_json)?;
    // k8s:// peers: balanced over their EndpointSlices (refused here
    // when the Kubernetes API cannot be reached).
    poz_cluster::install_for(&[&c.store, &c.verifier, &c.signer]).await?;
    let record_id = Hash32::from_hex(&c.record_id)
        .ok_or_else(|| anyhow::anyhow!("record_id is not 64 hex digits"))?;
    // Peers are connected lazily: the API starts even if a peer is still
    // starting, and each call reports UNAVAILABLE until it is up.
    let channels = c.serve.channels()?;
    let peers = Peers {
        store: channels.lazy(&c.store)?,
        verifier: channels.lazy(&c.verifier)?,
        signer: channels.lazy(&c.signer)?,
    };
    let policy = c
        .handle_policy
        .parse()
        .map_err(|e: String| anyhow::anyhow!("handle_policy: {e}"))?;
    // The provider's account systems, its operators, and the submit
    // gateway forwarding binding requests.
    // Deciding binding requests is the provider's own business: the
    // submit gateway files them but may neither list nor decide them.
    let deciders: &[&str] = &[identity::ACCOUNT_SYSTEM, identity::OPERATOR];
    let allow = Allowlist::of(&[
        (
            "poz.v1.ProviderApi",
            &[
                identity::ACCOUNT_SYSTEM,
                identity::OPERATOR,
                identity::SUBMIT_GW,
            ],
        ),
        ("poz.v1.ProviderApi/ListBindingRequests", deciders),
        ("poz.v1.ProviderApi/DecideBindingRequest", deciders),
        // A TLS certificate for one of the provider's own hosts: the
        // operator's business, not the account system's.
        ("poz.v1.ProviderApi/IssueCertificate", &[identity::OPERATOR]),
    ]);
    let server = GrpcServer::bind(NAME, &c.listen, &c.serve, allow).await?;
    tracing::info!(%record_id, "serving the Provider API");
    let api = ProviderApiServer::new(ProviderApiService::with_policy(
        record_id,
        peers,
        c.batch_size,
        policy,
    ));
    server.serve(GrpcRoutes::new().service(api)).await?;
    Ok(())
}
