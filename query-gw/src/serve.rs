//! The query gateway as a whole: its configuration, its listeners, and
//! [`serve`], which runs it until shutdown. The binary only loads the
//! configuration and binds; `pozd` builds the same edge ([`edge`]) on a
//! [`Guard`] it shares with its submit gateway.

use crate::lookup::{StoreLookup, GATHER_IN_FLIGHT, GATHER_MAX};
use poz::gate::Port;
use poz_edge::{Edge, EdgeConfig, EdgeError, Guard};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Every setting, with its default (docs/OPERATIONS.md, "The query
/// gateway" and "The edge"). The edge's keys sit flat beside these.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Config {
    /// 7074: plaintext lookups.
    pub listen_plain: String,
    /// 7075: Noise NK lookups.
    pub listen_noise: String,
    /// The store's gRPC address.
    pub store: String,
    /// Discipline, proof of work, shared load, key files.
    #[serde(flatten)]
    pub edge: EdgeConfig,
    /// How long an answer is reused (0: always ask the store); updates and
    /// revocations are served at most this late.
    pub cache_ttl_ms: u64,
    /// Answers kept at most.
    pub cache_entries: usize,
    /// IDENTITY lookups gathered into one LookupBindings call at most
    /// (1: each lookup its own call).
    pub store_gather_max: usize,
    /// LookupBindings calls out at once; lookups that arrive while all
    /// are out wait and go together in the next.
    pub store_gather_in_flight: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen_plain: "0.0.0.0:7074".into(),
            listen_noise: "0.0.0.0:7075".into(),
            store: "http://127.0.0.1:50051".into(),
            edge: EdgeConfig::default(),
            cache_ttl_ms: 1_000,
            cache_entries: 100_000,
            store_gather_max: GATHER_MAX,
            store_gather_in_flight: GATHER_IN_FLIGHT,
        }
    }
}

impl poz_kit::ServiceConfig for Config {
    fn validate(&self) -> Result<(), String> {
        poz_kit::check_listen("listen_plain", &self.listen_plain)?;
        poz_kit::check_listen("listen_noise", &self.listen_noise)?;
        poz_kit::channel::check_peer("store", &self.store, self.edge.serve.tls.is_set())?;
        if self.store_gather_in_flight == 0 {
            return Err("store_gather_in_flight: at least 1".into());
        }
        if !(1..=1_024).contains(&self.store_gather_max) {
            return Err("store_gather_max: 1..=1024 (the store's limit per call)".into());
        }
        self.edge.validate()
    }
}

/// Why the gateway could not start: a key file, the challenge secrets,
/// `redis_url`, `store`, or a listen address (each error names which).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Edge(#[from] EdgeError),
    #[error("configuration: {0}")]
    Invalid(String),
}

/// The two query ports, bound.
pub struct Listeners {
    /// 7074.
    pub plain: TcpListener,
    /// 7075.
    pub noise: TcpListener,
}

impl Listeners {
    /// Binds `listen_plain` and `listen_noise`.
    pub async fn bind(config: &Config) -> Result<Listeners, ServeError> {
        Ok(Listeners {
            plain: poz_edge::bind(&config.listen_plain).await?,
            noise: poz_edge::bind(&config.listen_noise).await?,
        })
    }
}

/// The query edge of `config` on `guard`: its Noise key read from
/// `noise_key_file`, lookups from the store (cached and gathered as
/// configured; the channel connects lazily, each call within 5 s).
pub fn edge(config: &Config, guard: &Guard) -> Result<Arc<Edge<StoreLookup>>, ServeError> {
    let store = config.edge.peer("store", &config.store)?;
    let lookups = StoreLookup::with_cache(
        store,
        Duration::from_millis(config.cache_ttl_ms),
        config.cache_entries,
    )
    .gathering(config.store_gather_max, config.store_gather_in_flight);
    Ok(guard.edge(&config.edge, config.edge.noise_key()?, lookups))
}

/// Serves `edge` on both query ports until `shutdown`, then drains.
pub async fn run(
    edge: Arc<Edge<StoreLookup>>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) {
    let ports = vec![
        (listeners.plain, Port::Plain),
        (listeners.noise, Port::NoiseQuery),
    ];
    poz_edge::run("poz-query-gw", edge, ports, shutdown).await;
}

/// Runs the query gateway of `config` on `listeners` until `shutdown`
/// resolves, then drains (up to `drain_timeout_ms`). Prints
/// `listening plain ADDR noise ADDR key HEX` on stdout once serving
/// (supervisors and tests read it). Needs a Tokio runtime.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let guard = Guard::for_gateway(&config.edge).await?;
    let lookups = edge(&config, &guard)?;
    let key = hex::encode(lookups.key.public);
    let [plain, noise] = [
        poz_edge::local_addr(&listeners.plain, "listen_plain")?,
        poz_edge::local_addr(&listeners.noise, "listen_noise")?,
    ];
    tracing::info!(%plain, %noise, noise_public_key = %key, "poz-query-gw listening");
    println!("listening plain {plain} noise {noise} key {key}");
    run(lookups, listeners, shutdown).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    #![allow(clippy::result_large_err)] // figment::Jail's closures
    use super::*;

    /// The edge's settings keep their flat keys and environment
    /// variables; unknown keys are still refused.
    #[test]
    fn edge_settings_load_flat_and_unknown_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("POZ_QUERY_GW_NOISE_KEY_FILE", "/k");
            jail.set_env("POZ_QUERY_GW_CHALLENGE_SECRETS_FILE", "/s");
            jail.set_env("POZ_QUERY_GW_MAX_CONNECTIONS_PER_IP", "3");
            jail.set_env("POZ_QUERY_GW_CACHE_TTL_MS", "0");
            jail.set_env("POZ_QUERY_GW_INSECURE", "true");
            let none = poz_kit::ConfigArgs::default();
            let flags = poz_edge::GatewayArgs::default();
            let c: Config = poz_kit::load_config("POZ_QUERY_GW_", &none, &flags).unwrap();
            assert_eq!(c.edge.max_connections_per_ip, 3);
            assert_eq!(c.edge.discipline().max_connections_per_ip, 3);
            assert_eq!(c.cache_ttl_ms, 0);
            assert_eq!(c.edge.noise_key_file, Some("/k".into()));
            jail.create_file(
                "q.toml",
                "listen_plain = \"127.0.0.1:1\"\nrate_per_ip = 9\n",
            )?;
            let file = poz_kit::ConfigArgs {
                file: Some(jail.directory().join("q.toml")),
                print_config: false,
            };
            let c: Config = poz_kit::load_config("POZ_QUERY_GW_", &file, &flags).unwrap();
            assert_eq!(
                (c.listen_plain.as_str(), c.edge.rate_per_ip),
                ("127.0.0.1:1", 9)
            );
            jail.create_file("q.toml", "rate_per_iq = 9\n")?;
            let e = poz_kit::load_config::<Config>("POZ_QUERY_GW_", &file, &flags).unwrap_err();
            assert!(e.to_string().contains("rate_per_iq"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn the_printed_configuration_is_flat_and_loads_back() {
        let c = Config {
            edge: EdgeConfig {
                noise_key_file: Some("/k".into()),
                challenge_secrets_file: Some("/s".into()),
                ..EdgeConfig::default()
            },
            ..Config::default()
        };
        let printed = poz_kit::to_toml(&c).unwrap();
        assert!(printed.contains("\nmax_connections = 10000\n"), "{printed}");
        assert!(!printed.contains("[edge]"), "{printed}");
        let back: Config = toml::from_str(&printed).unwrap();
        assert_eq!(back.edge, c.edge);
    }
}
