//! Load shared by the fleet's gateways through Redis ([`RedisLoad`], a
//! [`crate::LoadShare`]), so that they raise
//! (and lower) the proof-of-work difficulty together: an attacker who
//! spreads a flood over many gateways meets the difficulty the whole
//! flood deserves, not the fraction one gateway sees.
//!
//! Each gateway writes its load of the last second to
//! `poz:load:<gateway id>` with a TTL (a gateway that dies drops out by
//! itself), and reads every such key back. The fleet's load is the sum of
//! new connections per second and lookups in flight and the highest p99
//! latency; its targets are the per-gateway targets times the number of
//! gateways reporting. So the overload `L` the difficulty function sees
//! is the fleet's average overload (or its worst latency).
//!
//! If Redis cannot be reached within `timeout`, the gateway uses its own
//! load: neither an outage of Redis nor a gateway left without
//! protection.
//!
//! The same Redis holds the fleet's spent proofs of work
//! ([`SharedReplay`]), so a proof is good once per fleet, not once per
//! gateway; without Redis, once per gateway.

use poz::pow::{Load, LoadTargets};
use redis::aio::ConnectionManager;
use std::time::Duration;

/// Where the fleet's load comes from this tick.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Source {
    /// The fleet's aggregate, from `gateways` gateways (this one included).
    Fleet { gateways: usize },
    /// This gateway's own (Redis unreachable or not configured).
    Local,
}

/// One gateway's link to the shared load.
pub struct RedisLoad {
    client: redis::Client,
    conn: Option<ConnectionManager>,
    gateway_id: String,
    ttl: Duration,
    timeout: Duration,
    last: Option<Source>,
}

/// The key prefix of every gateway's load.
pub const KEY_PREFIX: &str = "poz:load:";

fn encode(l: &Load) -> String {
    format!(
        "{:.3} {:.3} {:.3}",
        l.new_connections_per_s, l.in_flight, l.p99_latency_ms
    )
}

fn decode(s: &str) -> Option<Load> {
    let mut it = s
        .split(' ')
        .map(|v| v.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0));
    let load = Load {
        new_connections_per_s: it.next()??,
        in_flight: it.next()??,
        p99_latency_ms: it.next()??,
    };
    it.next().is_none().then_some(load)
}

/// The fleet's load and targets from every gateway's report.
pub fn aggregate(reports: &[Load], per_gateway: &LoadTargets) -> (Load, LoadTargets) {
    let n = reports.len().max(1) as f64;
    let load = Load {
        new_connections_per_s: reports.iter().map(|l| l.new_connections_per_s).sum(),
        in_flight: reports.iter().map(|l| l.in_flight).sum(),
        p99_latency_ms: reports.iter().map(|l| l.p99_latency_ms).fold(0.0, f64::max),
    };
    let targets = LoadTargets {
        new_connections_per_s: per_gateway.new_connections_per_s * n,
        in_flight: per_gateway.in_flight * n,
        p99_latency_ms: per_gateway.p99_latency_ms,
    };
    (load, targets)
}

impl RedisLoad {
    pub fn new(
        url: &str,
        gateway_id: String,
        ttl: Duration,
        timeout: Duration,
    ) -> Result<Self, redis::RedisError> {
        Ok(RedisLoad {
            client: redis::Client::open(url)?,
            conn: None,
            gateway_id,
            ttl,
            timeout,
            last: None,
        })
    }

    async fn exchange(&mut self, mine: &Load) -> Result<Vec<Load>, redis::RedisError> {
        if self.conn.is_none() {
            self.conn = Some(self.client.get_connection_manager().await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Vec::new());
        };
        redis::cmd("SET")
            .arg(format!("{KEY_PREFIX}{}", self.gateway_id))
            .arg(encode(mine))
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .query_async::<()>(conn)
            .await?;
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{KEY_PREFIX}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await?;
            keys.extend(batch);
            if next == 0 || keys.len() > 10_000 {
                break;
            }
            cursor = next;
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
        Ok(values.iter().flatten().filter_map(|v| decode(v)).collect())
    }
}

impl crate::LoadShare for RedisLoad {
    /// Publishes `mine` and returns the load and targets to set the
    /// difficulty from: the fleet's, or `mine` when Redis fails.
    async fn tick(
        &mut self,
        mine: &Load,
        per_gateway: &LoadTargets,
    ) -> (Load, LoadTargets, Source) {
        let reports = match tokio::time::timeout(self.timeout, self.exchange(mine)).await {
            Ok(Ok(r)) if !r.is_empty() => Some(r),
            Ok(Ok(_)) => None,
            Ok(Err(e)) => {
                if self.last != Some(Source::Local) {
                    tracing::warn!(error = %e, "shared load unavailable; using this gateway's own");
                }
                None
            }
            Err(_) => {
                if self.last != Some(Source::Local) {
                    tracing::warn!("shared load timed out; using this gateway's own");
                }
                // A connection that hangs is dropped and made anew.
                self.conn = None;
                None
            }
        };
        let (load, targets, source) = match reports {
            Some(r) => {
                let (l, t) = aggregate(&r, per_gateway);
                (l, t, Source::Fleet { gateways: r.len() })
            }
            None => (*mine, *per_gateway, Source::Local),
        };
        if self.last.is_some_and(|s| s == Source::Local) && source != Source::Local {
            tracing::info!(?source, "shared load available again");
        }
        self.last = Some(source);
        (load, targets, source)
    }
}

/// The key prefix of every spent proof of work (SPEC §15, "Replay").
pub const REPLAY_KEY_PREFIX: &str = "poz:pow:";

/// After Redis failed or timed out, the replay guard is local only for
/// this long before Redis is tried again, so an outage costs one timeout
/// per this interval, not one per request.
pub const REPLAY_RETRY: Duration = Duration::from_secs(1);

/// What the fleet-wide replay guard says of a proof.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spend {
    /// Recorded now: no gateway had spent it.
    Fresh,
    /// Another request (here or at another gateway) spent it first.
    Replayed,
    /// Redis did not answer in time: only this process's guard decided.
    Local,
}

/// The replay guard shared by the fleet's gateways through Redis: a
/// spent proof is the key `poz:pow:<replay key, hex>`, set with `SET NX
/// PX ttl`, one atomic operation, so of two gateways racing on one proof
/// exactly one admits it; the key expires when no gateway would accept
/// the proof any more. When Redis is unreachable, each gateway's own guard
/// (in `poz::gate::Gate`) still refuses a replay at that gateway.
pub struct SharedReplay {
    client: redis::Client,
    conn: tokio::sync::OnceCell<ConnectionManager>,
    timeout: Duration,
    /// Redis is not asked before this (after a failure).
    pause_until: std::sync::Mutex<Option<std::time::Instant>>,
    down: std::sync::atomic::AtomicBool,
}

impl SharedReplay {
    /// `url` is the fleet's Redis; a request to it slower than `timeout`
    /// counts as a failure.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, redis::RedisError> {
        Ok(SharedReplay {
            client: redis::Client::open(url)?,
            conn: tokio::sync::OnceCell::new(),
            timeout,
            pause_until: std::sync::Mutex::new(None),
            down: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The Redis key of a spent proof.
    pub fn key(replay_key: &[u8; 32]) -> String {
        format!("{REPLAY_KEY_PREFIX}{}", hex::encode(replay_key))
    }

    async fn set_nx(&self, key: &str, ttl_ms: u64) -> Result<bool, redis::RedisError> {
        let conn = self
            .conn
            .get_or_try_init(|| self.client.get_connection_manager())
            .await?;
        let mut conn = conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(1u8)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms.max(1))
            .query_async(&mut conn)
            .await?;
        Ok(set.is_some())
    }

    /// Records a proof as spent for `ttl_ms`, unless some gateway already
    /// did (`Replayed`). `Local` when Redis failed, timed out, or is in
    /// its retry pause after a failure.
    pub async fn spend(&self, replay_key: &[u8; 32], ttl_ms: u64) -> Spend {
        use std::sync::atomic::Ordering;
        let now = std::time::Instant::now();
        {
            let pause = self.pause_until.lock().unwrap_or_else(|p| p.into_inner());
            if pause.is_some_and(|t| now < t) {
                return Spend::Local;
            }
        }
        let key = Self::key(replay_key);
        let failed = match tokio::time::timeout(self.timeout, self.set_nx(&key, ttl_ms)).await {
            Ok(Ok(fresh)) => {
                if self.down.swap(false, Ordering::AcqRel) {
                    tracing::info!("shared proof-of-work replay guard available again");
                }
                return if fresh { Spend::Fresh } else { Spend::Replayed };
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_string(),
        };
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                error = %failed,
                "shared proof-of-work replay guard unavailable; each gateway refuses replays on its own"
            );
        }
        *self.pause_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(now + REPLAY_RETRY);
        Spend::Local
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_and_garbage_is_ignored() {
        let l = Load {
            new_connections_per_s: 12.5,
            in_flight: 3.0,
            p99_latency_ms: 40.25,
        };
        assert_eq!(decode(&encode(&l)), Some(l));
        for bad in [
            "", "1 2", "1 2 3 4", "a b c", "1 -2 3", "NaN 1 1", "inf 1 1",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_fleet_sums_rates_and_scales_targets_by_its_size() {
        let per = LoadTargets {
            new_connections_per_s: 100.0,
            in_flight: 10.0,
            p99_latency_ms: 50.0,
        };
        let busy = Load {
            new_connections_per_s: 400.0,
            in_flight: 2.0,
            p99_latency_ms: 20.0,
        };
        let idle = Load::default();
        let (l, t) = aggregate(&[busy, idle], &per);
        assert_eq!(l.new_connections_per_s, 400.0);
        assert_eq!(t.new_connections_per_s, 200.0);
        assert_eq!(l.p99_latency_ms, 20.0);
        assert_eq!(t.p99_latency_ms, 50.0);
        // Both gateways get the fleet's overload, 2: one doubling.
        let cfg = poz::pow::PowConfig::default();
        assert_eq!(poz::pow::difficulty_for(&cfg, &l, &t), cfg.base + cfg.step);
    }
}
