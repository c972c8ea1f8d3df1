//! `poz-query-gw`: the query gateway. Configuration from a TOML file, the
//! environment (`POZ_QUERY_GW_*`) and flags, validated at start
//! (docs/OPERATIONS.md lists every setting).
#![forbid(unsafe_code)]

use clap::Parser;
use poz::gate::{Gate, Port};
use poz::pow::{Challenger, LoadTargets, PowConfig};
use poz_kit::ServiceConfig;
use poz_query_gw::{gateway, Discipline, Edge, LoadMeter, StoreLookup};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Every setting, with its default.
#[derive(Serialize, Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Config {
    /// 7074: plaintext lookups.
    listen_plain: String,
    /// 7075: Noise NK lookups.
    listen_noise: String,
    /// The store's gRPC address.
    store: String,
    /// This gateway's Noise static secret: 64 hex digits, first line (the
    /// ceremony writes it; mount it from a Kubernetes Secret).
    noise_key_file: Option<PathBuf>,
    /// PoW challenge secrets, 64 hex digits per line, the current one
    /// first; shared by every gateway of the fleet. Add a new first line
    /// and keep the old one for a window to rotate without breaking
    /// challenges in flight.
    challenge_secrets_file: Option<PathBuf>,
    pow_base: u8,
    pow_cap: u8,
    pow_step: u8,
    pow_window_ms: u64,
    /// Load this gateway sustains without asking for proofs of work.
    target_new_connections_per_s: f64,
    target_in_flight: f64,
    target_p99_latency_ms: f64,
    /// Requests a one-second window must hold before its p99 latency can
    /// raise the difficulty (fewer: no latency overload).
    min_latency_samples: usize,
    max_connections: usize,
    max_connections_per_ip: usize,
    max_pending: usize,
    read_timeout_ms: u64,
    idle_timeout_ms: u64,
    write_timeout_ms: u64,
    rate_per_ip: u32,
    burst_per_ip: u32,
    max_lookups: usize,
    queue_wait_ms: u64,
    drain_timeout_ms: u64,
    /// Redis for the fleet's shared load and spent proofs of work (e.g.
    /// redis://redis:6379/0); empty: this gateway's own only.
    redis_url: String,
    /// This gateway's name in the shared load (default: host name and
    /// process ID).
    gateway_id: String,
    /// How long a gateway's report lives in Redis.
    load_ttl_ms: u64,
    /// Redis slower than this counts as unreachable (own load used).
    redis_timeout_ms: u64,
    /// How long an answer is reused (0: always ask the store); updates and
    /// revocations are served at most this late.
    cache_ttl_ms: u64,
    /// Answers kept at most.
    cache_entries: usize,
    /// IDENTITY lookups gathered into one LookupBindings call at most
    /// (1: each lookup its own call).
    store_gather_max: usize,
    /// LookupBindings calls out at once; lookups that arrive while all
    /// are out wait and go together in the next.
    store_gather_in_flight: usize,
    /// JSON log lines.
    log_json: bool,
}

impl Default for Config {
    fn default() -> Self {
        let d = Discipline::default();
        let p = PowConfig::default();
        let t = LoadTargets::default();
        Config {
            listen_plain: "0.0.0.0:7074".into(),
            listen_noise: "0.0.0.0:7075".into(),
            store: "http://127.0.0.1:50051".into(),
            noise_key_file: None,
            challenge_secrets_file: None,
            pow_base: p.base,
            pow_cap: p.cap,
            pow_step: p.step,
            pow_window_ms: p.window_ms,
            target_new_connections_per_s: t.new_connections_per_s,
            target_in_flight: t.in_flight,
            target_p99_latency_ms: t.p99_latency_ms,
            min_latency_samples: poz_query_gw::load::MIN_LATENCY_SAMPLES,
            max_connections: d.max_connections,
            max_connections_per_ip: d.max_connections_per_ip,
            max_pending: d.max_pending,
            read_timeout_ms: d.read_timeout.as_millis() as u64,
            idle_timeout_ms: d.idle_timeout.as_millis() as u64,
            write_timeout_ms: d.write_timeout.as_millis() as u64,
            rate_per_ip: d.rate_per_ip,
            burst_per_ip: d.burst_per_ip,
            max_lookups: d.max_lookups,
            queue_wait_ms: d.queue_wait.as_millis() as u64,
            drain_timeout_ms: d.drain_timeout.as_millis() as u64,
            redis_url: String::new(),
            gateway_id: String::new(),
            load_ttl_ms: 3_000,
            redis_timeout_ms: 250,
            cache_ttl_ms: 1_000,
            cache_entries: 100_000,
            store_gather_max: poz_query_gw::lookup::GATHER_MAX,
            store_gather_in_flight: poz_query_gw::lookup::GATHER_IN_FLIGHT,
            log_json: false,
        }
    }
}

impl ServiceConfig for Config {
    fn validate(&self) -> Result<(), String> {
        poz_kit::check_listen("listen_plain", &self.listen_plain)?;
        poz_kit::check_listen("listen_noise", &self.listen_noise)?;
        if !(self.store.starts_with("http://") || self.store.starts_with("https://")) {
            return Err(format!("store {:?} is not an http(s):// URL", self.store));
        }
        if self.noise_key_file.is_none() {
            return Err("noise_key_file is required (the ceremony writes one per gateway)".into());
        }
        if self.challenge_secrets_file.is_none() {
            return Err(
                "challenge_secrets_file is required (shared by the fleet's gateways)".into(),
            );
        }
        if self.pow_cap > 32 || self.pow_base > self.pow_cap {
            return Err("pow: base <= cap <= 32".into());
        }
        if self.pow_window_ms < 1_000 {
            return Err("pow_window_ms: at least 1000".into());
        }
        for (name, v) in [
            ("max_connections", self.max_connections),
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("max_pending", self.max_pending),
            ("max_lookups", self.max_lookups),
            ("store_gather_in_flight", self.store_gather_in_flight),
        ] {
            if v == 0 {
                return Err(format!("{name}: at least 1"));
            }
        }
        if !(1..=1_024).contains(&self.store_gather_max) {
            return Err("store_gather_max: 1..=1024 (the store's limit per call)".into());
        }
        if self.rate_per_ip == 0 || self.burst_per_ip == 0 {
            return Err("rate_per_ip and burst_per_ip: at least 1".into());
        }
        let redis_ok = self.redis_url.is_empty()
            || self.redis_url.starts_with("redis://")
            || self.redis_url.starts_with("rediss://");
        if !redis_ok {
            return Err(format!(
                "redis_url {:?} is not a redis:// URL",
                self.redis_url
            ));
        }
        if self.load_ttl_ms < 500 || self.redis_timeout_ms == 0 {
            return Err("load_ttl_ms: at least 500; redis_timeout_ms: at least 1".into());
        }
        if self.read_timeout_ms == 0 || self.idle_timeout_ms == 0 || self.write_timeout_ms == 0 {
            return Err("timeouts: at least 1 ms".into());
        }
        Ok(())
    }
}

/// Flags: each overrides the file and the environment.
#[derive(Parser, Serialize, Debug)]
#[command(
    name = "poz-query-gw",
    version,
    about = "The POZ query gateway (7074 plain, 7075 Noise NK)"
)]
struct Args {
    #[command(flatten)]
    #[serde(skip)]
    config: poz_kit::ConfigArgs,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen_plain: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    listen_noise: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    redis_url: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway_id: Option<String>,
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A supervisor that pipes our stdin may tie our life to its own.
    poz_kit::exit_with_stdin();
    let args = Args::parse();
    let c: Config = poz_kit::load_config("POZ_QUERY_GW_", &args.config, &args)?;
    if args.config.print_config {
        print!("{}", poz_kit::to_toml(&c)?);
        return Ok(());
    }
    poz_kit::init_tracing(c.log_json);
    let key = gateway::read_noise_key(&c.noise_key_file.clone().unwrap_or_default())?;
    let secrets = gateway::read_secrets(&c.challenge_secrets_file.clone().unwrap_or_default())?;
    let pow = PowConfig {
        base: c.pow_base,
        cap: c.pow_cap,
        step: c.pow_step,
        window_ms: c.pow_window_ms,
    };
    let targets = LoadTargets {
        new_connections_per_s: c.target_new_connections_per_s,
        in_flight: c.target_in_flight,
        p99_latency_ms: c.target_p99_latency_ms,
    };
    let discipline = Discipline {
        max_connections: c.max_connections,
        max_connections_per_ip: c.max_connections_per_ip,
        max_pending: c.max_pending,
        read_timeout: Duration::from_millis(c.read_timeout_ms),
        idle_timeout: Duration::from_millis(c.idle_timeout_ms),
        write_timeout: Duration::from_millis(c.write_timeout_ms),
        rate_per_ip: c.rate_per_ip,
        burst_per_ip: c.burst_per_ip,
        max_lookups: c.max_lookups,
        queue_wait: Duration::from_millis(c.queue_wait_ms),
        drain_timeout: Duration::from_millis(c.drain_timeout_ms),
    };
    let store = tonic::transport::Endpoint::from_shared(c.store.clone())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    let load =
        Arc::new(LoadMeter::new(pow, targets).with_min_latency_samples(c.min_latency_samples));
    let replay = gateway::shared_replay(&c.redis_url, Duration::from_millis(c.redis_timeout_ms))?;
    let edge = Edge::with_replay(
        discipline,
        key.clone(),
        Gate::new(Challenger::new(pow, secrets), 1_000_000),
        StoreLookup::with_cache(
            store,
            Duration::from_millis(c.cache_ttl_ms),
            c.cache_entries,
        )
        .gathering(c.store_gather_max, c.store_gather_in_flight),
        load.clone(),
        replay,
    );
    let plain = tokio::net::TcpListener::bind(&c.listen_plain).await?;
    let noise = tokio::net::TcpListener::bind(&c.listen_noise).await?;
    tracing::info!(
        plain = %plain.local_addr()?,
        noise = %noise.local_addr()?,
        noise_public_key = %hex::encode(key.public),
        "poz-query-gw listening"
    );
    println!(
        "listening plain {} noise {} key {}",
        plain.local_addr()?,
        noise.local_addr()?,
        hex::encode(key.public)
    );

    // The difficulty follows the load (the fleet's, through Redis, when
    // configured), four times a second.
    let tuner = gateway::spawn_tuner(
        load.clone(),
        gateway::SharedLoad {
            redis_url: &c.redis_url,
            gateway_id: &c.gateway_id,
            ttl: Duration::from_millis(c.load_ttl_ms),
            timeout: Duration::from_millis(c.redis_timeout_ms),
        },
    )?;
    let forget = gateway::spawn_forgetter(edge.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let a = tokio::spawn(
        edge.clone()
            .serve(plain, Port::Plain, stopped(stop_rx.clone())),
    );
    let b = tokio::spawn(
        edge.clone()
            .serve(noise, Port::NoiseQuery, stopped(stop_rx)),
    );
    poz_kit::shutdown_signal().await;
    tracing::info!("draining");
    let _ = stop_tx.send(true);
    let _ = tokio::join!(a, b);
    tuner.abort();
    forget.abort();
    tracing::info!(counters = ?edge.counters, "poz-query-gw stopped");
    Ok(())
}
