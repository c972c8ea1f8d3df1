//! What every edge of a process shares and runs beside its listeners:
//! the proof-of-work gate (one replay guard for all its ports), the load
//! meter and the tuner that keeps the difficulty following the load (the
//! fleet's through Redis, or the process's own), the fleet's replay
//! guard; and [`run`], which serves one edge on its listeners and forgets
//! quiet addresses until shutdown.

use crate::edge::{Answer, Edge};
use crate::fleet::{RedisLoad, SharedReplay};
use crate::load::LoadMeter;
use crate::share::{LoadShare, LocalLoad};
use crate::{EdgeConfig, EdgeError};
use poz::gate::{Gate, Port};
use poz::noise::StaticKeypair;
use poz::pow::Challenger;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Spent proofs remembered by one process's gate, at most (SPEC §15).
pub const REPLAY_CAPACITY: usize = 1_000_000;

/// What the edges of one process share. The tuner runs while the guard
/// lives and stops when it is dropped.
pub struct Guard {
    /// Every edge's load goes here; the difficulty is read from here.
    pub load: Arc<LoadMeter>,
    gate: Gate,
    replay: Option<Arc<SharedReplay>>,
    tuner: tokio::task::JoinHandle<()>,
    /// A gateway's own `/metrics` endpoint (none in pozd, which serves
    /// one for the whole process).
    metrics: Option<poz_kit::metrics::Endpoint>,
}

impl Guard {
    /// Reads the challenge secrets, connects (lazily) to the fleet's Redis
    /// when `redis_url` is set, and starts the tuner. Needs a Tokio
    /// runtime. Errors: the secrets file cannot be read or holds no
    /// secret; `redis_url` does not parse.
    pub fn start(config: &EdgeConfig) -> Result<Guard, EdgeError> {
        // Every edge family is on /metrics from the start, not only
        // once it has counted something (absent() alerts, dashboards).
        std::sync::LazyLock::force(&crate::metrics::EDGE);
        let secrets = config.secrets()?;
        let load = Arc::new(config.load_meter());
        let (replay, tuner) = if config.redis_url.is_empty() {
            (None, spawn_tuner(load.clone(), LocalLoad))
        } else {
            let replay = SharedReplay::new(&config.redis_url, config.redis_timeout())?;
            let share = RedisLoad::new(
                &config.redis_url,
                config.gateway_id(),
                config.load_ttl(),
                config.redis_timeout(),
            )?;
            (Some(Arc::new(replay)), spawn_tuner(load.clone(), share))
        };
        Ok(Guard {
            gate: Gate::new(Challenger::new(config.pow(), secrets), REPLAY_CAPACITY),
            load,
            replay,
            tuner,
            metrics: None,
        })
    }

    /// [`Guard::start`] for a gateway binary: refuses to serve with
    /// neither TLS for its gRPC calls nor `insecure`, and serves its own
    /// `/metrics` at `metrics_listen` while the guard lives. Errors: as
    /// [`Guard::start`], [`EdgeError::NoTls`], [`EdgeError::Bind`] (the
    /// metrics address).
    pub async fn for_gateway(config: &EdgeConfig) -> Result<Guard, EdgeError> {
        config
            .serve
            .require_tls_or_insecure()
            .map_err(|e| EdgeError::NoTls(e.to_string()))?;
        let addr = &config.serve.metrics_listen;
        let metrics = poz_kit::metrics::Endpoint::start(addr)
            .await
            .map_err(|source| EdgeError::Bind {
                addr: format!("metrics_listen {addr}"),
                source,
            })?;
        let mut guard = Guard::start(config)?;
        guard.metrics = metrics;
        Ok(guard)
    }

    /// An edge answering with `answerer` under `config`'s discipline, with
    /// `key` for its Noise ports, sharing this guard's gate (a proof spent
    /// on any edge of this guard is spent on all), load and replay guard.
    pub fn edge<A: Answer>(
        &self,
        config: &EdgeConfig,
        key: StaticKeypair,
        answerer: A,
    ) -> Arc<Edge<A>> {
        Edge::with_replay(
            config.discipline(),
            key,
            self.gate.sharing_replay(),
            answerer,
            self.load.clone(),
            self.replay.clone(),
        )
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.tuner.abort();
    }
}

/// Recomputes the difficulty four times a second from this process's
/// capacity and, where caps are set, the load `share` returns; logs each
/// change.
pub fn spawn_tuner<S: LoadShare>(
    meter: Arc<LoadMeter>,
    mut share: S,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut last = None;
        loop {
            tick.tick().await;
            let local = meter.local();
            let (load, targets, source) = share.tick(&local, &meter.targets).await;
            let d = (meter.set_with(&load, &targets), source);
            crate::metrics::EDGE.tuned(
                d.0,
                &load,
                &targets,
                &meter.last_pressure(),
                meter.verdict(),
                meter.policy().p99_budget_ms,
            );
            if last != Some(d) {
                tracing::info!(difficulty = d.0, source = ?d.1, "proof-of-work difficulty");
                last = Some(d);
            }
        }
    })
}

/// Drops the rate-limit state of quiet addresses every 10 s.
pub fn spawn_forgetter<A: Answer>(edge: Arc<Edge<A>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            edge.forget_quiet_addresses();
        }
    })
}

/// Serves `edge` on every listener (each with its port's contract) until
/// `shutdown` resolves, then lets each drain (up to `drain_timeout`);
/// forgets quiet addresses meanwhile. Logs the counters at the end, under
/// `name`.
pub async fn run<A: Answer>(
    name: &str,
    edge: Arc<Edge<A>>,
    listeners: Vec<(TcpListener, Port)>,
    shutdown: impl Future<Output = ()>,
) {
    let forget = spawn_forgetter(edge.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let serving: Vec<_> = listeners
        .into_iter()
        .map(|(listener, port)| {
            let mut rx = stop_rx.clone();
            let stopped = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            tokio::spawn(edge.clone().serve(listener, port, stopped))
        })
        .collect();
    poz_kit::metrics::mark_serving();
    // Readiness fails first and the listeners keep accepting for the
    // drain delay, so the load balancer stops sending new connections
    // before they close; then the ones in progress finish.
    poz_kit::serve::delayed_shutdown(shutdown, edge.discipline.drain_delay).await;
    let _ = stop_tx.send(true);
    for s in serving {
        let _ = s.await;
    }
    forget.abort();
    tracing::info!(counters = ?edge.counters, "{name} stopped");
}
