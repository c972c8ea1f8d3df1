//! The submit gateway as a whole: its configuration, its listener, and
//! [`serve`], which runs it until shutdown. The binary only loads the
//! configuration and binds; `pozd` builds the same edge ([`edge`]) on a
//! [`Guard`] it shares with its query gateway.

use crate::{BindingRequests, Policy, SignedSubmissions, Submissions};
use poz::gate::Port;
use poz::handle::HandlePolicy;
use poz_edge::{Edge, EdgeConfig, EdgeError, Guard};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Every setting, with its default (docs/OPERATIONS.md, "The submit
/// gateway" and "The edge"). The edge's keys sit flat beside these.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Config {
    /// 7076: Noise NK submissions.
    pub listen: String,
    /// The store's gRPC address.
    pub store: String,
    /// The verifier's gRPC address.
    pub verifier: String,
    /// Binding requests (SUBMIT_REQUEST): "off" (refused), "queue"
    /// (recorded as pending for the provider to decide) or "issue" (issued
    /// at once through the Provider API when the proof holds).
    pub binding_requests: String,
    /// The Provider API's gRPC address (for "issue").
    pub provider_api: String,
    /// The handle namespace policy (SPEC §8.4.1) for SUBMIT_REQUEST and
    /// SUBMIT_SIGNED bindings: "ascii" or "unicode"; the Provider API's.
    pub handle_policy: String,
    /// This provider's record ID (64 hex digits): binding requests for
    /// another record's domain are refused here. Empty: the Provider API
    /// refuses them ("issue"); a "queue" provider checks them itself.
    pub provider_record: String,
    /// Host new records published over SUBMIT_SIGNED kind 3 (SPEC §14.5):
    /// people's records, looked up afterwards by record name. Off: kind 3
    /// is UNAUTHORIZED.
    pub host_records: bool,
    /// The largest record hosted, in bytes (a record over it is
    /// TOO_LARGE). At most 65,000: a submission fits one Noise message.
    pub max_hosted_record_bytes: usize,
    /// The least proof of work, in leading zero bits, that publishing a
    /// new record costs whatever the load (at most `pow_cap`).
    pub publish_difficulty: u8,
    /// New records one address may publish per `publish_window_ms`, per
    /// gateway process (0: none).
    pub publishes_per_address: u32,
    /// The window of `publishes_per_address`, in ms (at least 1,000).
    pub publish_window_ms: u64,
    /// Discipline, proof of work, shared load, key files.
    #[serde(flatten)]
    pub edge: EdgeConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:7076".into(),
            store: "http://127.0.0.1:50051".into(),
            verifier: "http://127.0.0.1:50052".into(),
            binding_requests: "queue".into(),
            provider_api: "http://127.0.0.1:50054".into(),
            handle_policy: "ascii".into(),
            provider_record: String::new(),
            host_records: false,
            max_hosted_record_bytes: DEFAULT_MAX_HOSTED_RECORD,
            publish_difficulty: 16,
            publishes_per_address: 4,
            publish_window_ms: 3_600_000,
            edge: EdgeConfig::default(),
        }
    }
}

impl poz_kit::ServiceConfig for Config {
    fn validate(&self) -> Result<(), String> {
        poz_kit::check_listen("listen", &self.listen)?;
        if !["off", "queue", "issue"].contains(&self.binding_requests.as_str()) {
            return Err(format!(
                "binding_requests must be off, queue or issue, not {:?}",
                self.binding_requests
            ));
        }
        for (name, url) in [
            ("store", &self.store),
            ("verifier", &self.verifier),
            ("provider_api", &self.provider_api),
        ] {
            poz_kit::channel::check_peer(name, url, self.edge.serve.tls.is_set())?;
        }
        self.handle_policy()?;
        if !(1..=65_000).contains(&self.max_hosted_record_bytes) {
            return Err(format!(
                "max_hosted_record_bytes must be 1..=65000, not {}",
                self.max_hosted_record_bytes
            ));
        }
        if self.publish_window_ms < 1_000 {
            return Err("publish_window_ms: at least 1000".into());
        }
        if self.publish_difficulty > 24 {
            return Err("publish_difficulty: at most 24 bits".into());
        }
        if !self.provider_record.is_empty()
            && poz::Hash32::from_hex(&self.provider_record).is_none()
        {
            return Err(format!(
                "provider_record {:?} is not 64 hex digits",
                self.provider_record
            ));
        }
        self.edge.validate()
    }
}

impl Config {
    fn handle_policy(&self) -> Result<HandlePolicy, String> {
        self.handle_policy
            .parse::<HandlePolicy>()
            .map_err(|e| format!("handle_policy: {e}"))
    }
}

/// The default size cap of a hosted record: a person's record with a few
/// keys, revisions and bindings copied in is a few KiB; 16 KiB leaves
/// room and keeps a store of a million hosted records within 16 GiB.
pub const DEFAULT_MAX_HOSTED_RECORD: usize = 16 * 1024;

/// Addresses each gateway remembers publish quotas for at once.
const QUOTA_ADDRESSES: usize = 100_000;

/// Why the gateway could not start: a key file, the challenge secrets,
/// `redis_url`, a peer's address, the listen address (each error names
/// which), or a setting `validate` would have refused.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Edge(#[from] EdgeError),
    #[error("configuration: {0}")]
    Invalid(String),
}

/// The submission port, bound.
pub struct Listeners {
    /// 7076.
    pub submit: TcpListener,
}

impl Listeners {
    /// Binds `listen`.
    pub async fn bind(config: &Config) -> Result<Listeners, ServeError> {
        Ok(Listeners {
            submit: poz_edge::bind(&config.listen).await?,
        })
    }
}

/// The submit edge of `config` on `guard`: its Noise key read from
/// `noise_key_file`; submissions through the store and the verifier, and
/// binding requests by `binding_requests` (channels connect lazily, each
/// call within 10 s).
pub fn edge(config: &Config, guard: &Guard) -> Result<Arc<Edge<Submissions>>, ServeError> {
    let peer = |setting, url: &str| config.edge.peer(setting, url);
    let handle_policy = config.handle_policy().map_err(ServeError::Invalid)?;
    let store = peer("store", &config.store)?;
    let requests = |api, policy| {
        let r = BindingRequests::new(store.clone(), api, policy).with_handle_policy(handle_policy);
        match poz::Hash32::from_hex(&config.provider_record) {
            Some(p) => r.with_provider_record(p),
            None => r,
        }
    };
    let verifier = peer("verifier", &config.verifier)?;
    let hosting = config.host_records.then(|| {
        crate::Hosting::new(
            store.clone(),
            verifier.clone(),
            config.max_hosted_record_bytes,
            crate::AddressQuota::new(
                config.publishes_per_address,
                config.publish_window_ms,
                QUOTA_ADDRESSES,
            ),
        )
    });
    let submissions = Submissions {
        hosting,
        signed: SignedSubmissions::new(store.clone(), verifier).with_handle_policy(handle_policy),
        requests: match config.binding_requests.as_str() {
            "off" => None,
            "issue" => Some(requests(
                Some(peer("provider_api", &config.provider_api)?),
                Policy::Issue,
            )),
            _ => Some(requests(None, Policy::Queue)),
        },
    };
    let edge = guard.edge(&config.edge, config.edge.noise_key()?, submissions);
    // The floor applies on this edge's gate only: kind 3 arrives on 7076.
    edge.gate
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .set_publish_difficulty(config.publish_difficulty);
    Ok(edge)
}

/// Serves `edge` on the submission port until `shutdown`, then drains.
pub async fn run(
    edge: Arc<Edge<Submissions>>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) {
    let ports = vec![(listeners.submit, Port::NoiseSubmit)];
    poz_edge::run("poz-submit-gw", edge, ports, shutdown).await;
}

/// Runs the submit gateway of `config` on `listeners` until `shutdown`
/// resolves, then drains (up to `drain_timeout_ms`). Prints
/// `listening ADDR` on stdout once serving (supervisors and tests read
/// it). Needs a Tokio runtime.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let guard = Guard::for_gateway(&config.edge).await?;
    let submissions = edge(&config, &guard)?;
    let addr = poz_edge::local_addr(&listeners.submit, "listen")?;
    tracing::info!(
        %addr,
        noise_public_key = %hex::encode(submissions.key.public),
        "poz-submit-gw listening"
    );
    println!("listening {addr}");
    run(submissions, listeners, shutdown).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The edge's settings keep their flat keys (file) and environment
    /// variables beside the submit gateway's; unknown keys are refused.
    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closures
    fn edge_settings_sit_beside_the_gateways_own() {
        figment::Jail::expect_with(|jail| {
            let toml = "noise_key_file = \"/k\"\nchallenge_secrets_file = \"/s\"\n";
            jail.create_file("s.toml", &format!("{toml}binding_requests = \"issue\"\n"))?;
            jail.set_env(
                "POZ_SUBMIT_GW_CONFIG",
                jail.directory().join("s.toml").display(),
            );
            jail.set_env("POZ_SUBMIT_GW_POW_BASE", "6");
            jail.set_env("POZ_SUBMIT_GW_INSECURE", "true");
            let load = || {
                poz_kit::load_config::<Config>(
                    "POZ_SUBMIT_GW_",
                    &poz_kit::ConfigArgs::default(),
                    &poz_edge::GatewayArgs::default(),
                )
            };
            let c = load().unwrap();
            assert_eq!(c.edge.pow().base, 6);
            assert_eq!(c.binding_requests, "issue");
            jail.set_env("POZ_SUBMIT_GW_POW_BASE", "30");
            let e = load().unwrap_err();
            assert_eq!(e.to_string(), "configuration: pow: base <= cap <= 32");
            jail.set_env("POZ_SUBMIT_GW_POW_BASE", "6");
            // A query gateway's setting is not the submit gateway's.
            jail.set_env("POZ_SUBMIT_GW_CACHE_TTL_MS", "0");
            assert!(load().unwrap_err().to_string().contains("cache_ttl_ms"));
            Ok(())
        });
    }
}
