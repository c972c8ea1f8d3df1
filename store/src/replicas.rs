//! Reads from Postgres streaming replicas, never going back in time
//! (docs/OPERATIONS.md, "Read replicas").
//!
//! StoreRead may be served by one or more hot standbys while every write
//! goes to the primary. Which source answers a read is decided against a
//! *read mark*: a WAL position (a Postgres LSN, as bytes since `0/0`) that
//! is at least as new as everything this store has served or written.
//!
//! - Before a read, a replica qualifies when its replay position
//!   (`pg_last_wal_replay_lsn()`) has reached the mark: every commit the
//!   store already showed (or made) is then visible on it.
//! - After a read, the mark rises to the serving source's position, read
//!   *after* the answer was produced (an upper bound of what the answer
//!   saw): a replica's replay position, the primary's insert position.
//! - After a write through this store, the mark rises to the primary's
//!   insert position, so a read after an acknowledged write sees it.
//!
//! A replica behind the mark is waited for (at most `wait`, polling its
//! position); then the read goes to the primary, or is refused with
//! UNAVAILABLE and a retry hint ([`ReadFallback`]). A caller that reads
//! through several store processes carries the mark itself: the store
//! answers with it (`poz-read-lsn`) and honours one sent back
//! (`poz-read-after`), see `grpc.rs`.
//!
//! Failover: LSNs keep growing across a promotion (a new timeline starts
//! where the old one ended), so marks stay comparable.

use crate::error::StoreError;
use crate::Store;
use sqlx::any::AnyPoolOptions;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The WAL position a server has made visible, as bytes since `0/0`: on a
/// standby the replay position, on a primary (or a promoted standby) the
/// insert position. One statement, so it serves both.
const POSITION_SQL: &str = "SELECT (CASE WHEN pg_is_in_recovery() \
     THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END \
     - '0/0'::pg_lsn)::BIGINT";

/// What a read does when no replica has reached the read mark in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadFallback {
    /// Read from the primary (the default: the caller never notices).
    Primary,
    /// Refuse with UNAVAILABLE and a retry hint, keeping every read off
    /// the primary.
    Unavailable,
}

/// Replica settings (docs/OPERATIONS.md).
#[derive(Clone, Debug)]
pub struct ReplicaOptions {
    /// `postgres://…` URLs of hot standbys of the primary.
    pub urls: Vec<String>,
    /// How long a read waits for a replica to reach the read mark.
    pub wait: Duration,
    /// What a read does after that.
    pub fallback: ReadFallback,
    /// How long a read waits for a replica connection (and a position
    /// probe for its answer); a replica that does not answer in time is
    /// marked down until the next successful probe.
    pub connect_timeout: Duration,
}

impl Default for ReplicaOptions {
    fn default() -> Self {
        ReplicaOptions {
            urls: Vec::new(),
            wait: Duration::from_millis(200),
            fallback: ReadFallback::Primary,
            connect_timeout: Duration::from_secs(1),
        }
    }
}

/// One standby.
#[derive(Debug)]
struct Replica {
    /// `host:port/db` of its URL (no credentials): the metrics label.
    label: String,
    /// The store over the replica's own pool (reads only).
    store: Store,
    /// A replay position the replica is known to have reached (a lower
    /// bound of its current one; positions only grow).
    known: AtomicU64,
    /// False after a failed read or probe, until a probe succeeds.
    up: AtomicBool,
    /// Bytes of WAL the primary has and the replica has not replayed, at
    /// the last probe; -1 unknown.
    lag_bytes: AtomicI64,
}

/// The replicas of a store and its read mark.
#[derive(Debug)]
pub(crate) struct Replicas {
    list: Vec<Replica>,
    mark: AtomicU64,
    next: AtomicUsize,
    options: ReplicaOptions,
    pub(crate) counts: ReadCounts,
}

/// Reads by where they were served (Prometheus counters).
#[derive(Debug, Default)]
pub struct ReadCounts {
    pub replica: AtomicU64,
    pub primary: AtomicU64,
    /// Refused: no replica reached the mark and the fallback is
    /// `unavailable`.
    pub refused: AtomicU64,
    /// Reads that waited for a replica to reach the mark.
    pub waited: AtomicU64,
}

/// Where one read is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadSource {
    Primary,
    /// The replica's index in the configured list.
    Replica(usize),
}

/// One replica's state, for tests and operators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaState {
    pub label: String,
    pub up: bool,
    pub known_position: u64,
    pub lag_bytes: Option<u64>,
}

/// `host:port/db` of a URL, without scheme, credentials or parameters.
fn label(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['?', '#'])
        .next()
        .unwrap_or_default()
        .to_string()
}

async fn position(store: &Store) -> Result<u64, StoreError> {
    let p: i64 = sqlx::query_scalar(POSITION_SQL)
        .fetch_one(store.pool())
        .await?;
    Ok(u64::try_from(p).unwrap_or(0))
}

impl Store {
    /// This store, with StoreRead served from the replicas `options`
    /// names (Postgres only). Replica pools connect lazily: a replica
    /// that is down at start is skipped until a probe
    /// ([`Store::probe_replicas`]) finds it up. Errors:
    /// [`StoreError::Invalid`] for a URL that is not `postgres://…` or a
    /// store that is not on Postgres.
    pub fn with_replicas(mut self, options: ReplicaOptions) -> Result<Store, StoreError> {
        if options.urls.is_empty() {
            self.replicas = None;
            return Ok(self);
        }
        if self.backend != crate::Backend::Postgres {
            return Err(StoreError::Invalid(
                "read replicas need a Postgres primary".into(),
            ));
        }
        let mut list = Vec::with_capacity(options.urls.len());
        for url in &options.urls {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(StoreError::Invalid(format!(
                    "a replica URL must start with postgres:// (got {})",
                    poz_kit::shown(url)
                )));
            }
            let stmt_ms = self.options.statement_timeout.as_millis();
            let pool = AnyPoolOptions::new()
                .max_connections(self.options.max_connections)
                .acquire_timeout(options.connect_timeout)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        sqlx::query(&format!("SET statement_timeout = {stmt_ms}"))
                            .execute(&mut *conn)
                            .await?;
                        Ok(())
                    })
                })
                .connect_lazy(url)?;
            list.push(Replica {
                label: label(url),
                store: Store {
                    pool,
                    replicas: None,
                    ..self.clone()
                },
                known: AtomicU64::new(0),
                // Up until shown otherwise: the first read finds out.
                up: AtomicBool::new(true),
                lag_bytes: AtomicI64::new(-1),
            });
        }
        self.replicas = Some(Arc::new(Replicas {
            list,
            mark: AtomicU64::new(0),
            next: AtomicUsize::new(0),
            options,
            counts: ReadCounts::default(),
        }));
        Ok(self)
    }

    /// Whether reads may be served by replicas.
    pub fn has_replicas(&self) -> bool {
        self.replicas.is_some()
    }

    /// The read mark: a WAL position at least as new as everything this
    /// store has served or written (0 without replicas).
    pub fn read_mark(&self) -> u64 {
        self.replicas
            .as_ref()
            .map_or(0, |r| r.mark.load(Ordering::Acquire))
    }

    /// Reads served so far, by source (zeros without replicas).
    pub fn read_counts(&self) -> [u64; 4] {
        self.replicas.as_ref().map_or([0; 4], |r| {
            let c = &r.counts;
            [
                c.replica.load(Ordering::Relaxed),
                c.primary.load(Ordering::Relaxed),
                c.refused.load(Ordering::Relaxed),
                c.waited.load(Ordering::Relaxed),
            ]
        })
    }

    /// Each replica's state at the last probe or read.
    pub fn replica_states(&self) -> Vec<ReplicaState> {
        self.replicas.as_ref().map_or_else(Vec::new, |r| {
            r.list
                .iter()
                .map(|x| ReplicaState {
                    label: x.label.clone(),
                    up: x.up.load(Ordering::Acquire),
                    known_position: x.known.load(Ordering::Acquire),
                    lag_bytes: u64::try_from(x.lag_bytes.load(Ordering::Acquire)).ok(),
                })
                .collect()
        })
    }

    fn raise_mark(r: &Replicas, to: u64) -> u64 {
        r.mark.fetch_max(to, Ordering::AcqRel).max(to)
    }

    /// Picks where a read is served: a replica that has reached
    /// `max(read mark, after)`, waiting for one at most the configured
    /// time, else the fallback. Returns the store to read through and
    /// the source, to hand to [`Store::read_done`] after the read. Errors:
    /// [`StoreError::ReplicasBehind`] (fallback `unavailable`).
    pub async fn read_source(&self, after: u64) -> Result<(Store, ReadSource), StoreError> {
        let Some(r) = &self.replicas else {
            return Ok((self.clone(), ReadSource::Primary));
        };
        let need = r.mark.load(Ordering::Acquire).max(after);
        let n = r.list.len();
        let start = r.next.fetch_add(1, Ordering::Relaxed);
        let order: Vec<usize> = (0..n).map(|i| (start + i) % n).collect();
        // Known to be there already: no round trip.
        for &i in &order {
            let x = &r.list[i];
            if x.up.load(Ordering::Acquire) && x.known.load(Ordering::Acquire) >= need {
                r.counts.replica.fetch_add(1, Ordering::Relaxed);
                return Ok((x.store.clone(), ReadSource::Replica(i)));
            }
        }
        // Ask the replicas that are up, then again with backoff until the
        // wait runs out: 1, 2, 4 … 16 ms between rounds.
        let deadline = tokio::time::Instant::now() + r.options.wait;
        let mut pause = Duration::from_millis(1);
        let mut waited = false;
        loop {
            let mut any_up = false;
            for &i in &order {
                let x = &r.list[i];
                if !x.up.load(Ordering::Acquire) {
                    continue;
                }
                match self.probe(x).await {
                    Ok(p) if p >= need => {
                        if waited {
                            r.counts.waited.fetch_add(1, Ordering::Relaxed);
                        }
                        r.counts.replica.fetch_add(1, Ordering::Relaxed);
                        return Ok((x.store.clone(), ReadSource::Replica(i)));
                    }
                    Ok(_) => any_up = true,
                    Err(_) => {}
                }
            }
            if !any_up || tokio::time::Instant::now() + pause > deadline {
                break;
            }
            waited = true;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(16));
        }
        self.fallback(r, need)
    }

    /// The fallback's source (the primary), or its refusal at `need`.
    fn fallback(&self, r: &Replicas, need: u64) -> Result<(Store, ReadSource), StoreError> {
        match r.options.fallback {
            ReadFallback::Primary => {
                r.counts.primary.fetch_add(1, Ordering::Relaxed);
                Ok((self.primary_view(), ReadSource::Primary))
            }
            ReadFallback::Unavailable => {
                r.counts.refused.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::ReplicasBehind {
                    mark: need,
                    retry_after: r.options.wait.max(Duration::from_millis(100)),
                })
            }
        }
    }

    /// The store over the primary's pool only (no replica routing).
    fn primary_view(&self) -> Store {
        Store {
            replicas: None,
            ..self.clone()
        }
    }

    /// A read served by `source` failed as a database error: the replica
    /// is marked down (until a probe finds it up) and the read may run
    /// again on what [`Store::retry_source`] gives.
    pub fn replica_failed(&self, source: ReadSource) {
        if let (Some(r), ReadSource::Replica(i)) = (&self.replicas, source) {
            if let Some(x) = r.list.get(i) {
                x.up.store(false, Ordering::Release);
                tracing::warn!(replica = %x.label, "a read from the replica failed: marked down");
            }
        }
    }

    /// Where a read runs again after its replica failed: the primary, if
    /// the fallback allows. Errors: [`StoreError::ReplicasBehind`].
    pub fn retry_source(&self) -> Result<(Store, ReadSource), StoreError> {
        let Some(r) = &self.replicas else {
            return Ok((self.clone(), ReadSource::Primary));
        };
        self.fallback(r, r.mark.load(Ordering::Acquire))
    }

    /// After a read from `source`: raises the read mark to the source's
    /// position read now (an upper bound of what the read saw) and
    /// returns the mark. When that position cannot be read (the replica
    /// went away), the primary's insert position serves (a standby is
    /// never ahead of its primary). Errors: [`StoreError::Database`] when
    /// neither can be read: the answer must not be given, as the mark
    /// could not cover it.
    pub async fn read_done(&self, source: ReadSource) -> Result<u64, StoreError> {
        let Some(r) = &self.replicas else {
            return Ok(0);
        };
        let p = match source {
            ReadSource::Replica(i) => match r.list.get(i) {
                Some(x) => match self.probe(x).await {
                    Ok(p) => Ok(p),
                    Err(_) => position(self).await,
                },
                None => position(self).await,
            },
            ReadSource::Primary => position(self).await,
        }?;
        Ok(Self::raise_mark(r, p))
    }

    /// After a write through this store committed: the mark rises to the
    /// primary's insert position, so later reads see the write. Errors:
    /// [`StoreError::Database`] (the write stands; the caller logs).
    pub async fn wrote(&self) -> Result<u64, StoreError> {
        let Some(r) = &self.replicas else {
            return Ok(0);
        };
        let p = position(self).await?;
        Ok(Self::raise_mark(r, p))
    }

    /// Reads a replica's position (bounded by the connect timeout),
    /// recording it and whether the replica answered.
    async fn probe(&self, x: &Replica) -> Result<u64, StoreError> {
        let timeout = self
            .replicas
            .as_ref()
            .map_or(Duration::from_secs(1), |r| r.options.connect_timeout);
        let got = match tokio::time::timeout(timeout, position(&x.store)).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Invalid(format!(
                "replica {} did not answer within {timeout:?}",
                x.label
            ))),
        };
        match got {
            Ok(p) => {
                x.known.fetch_max(p, Ordering::AcqRel);
                x.up.store(true, Ordering::Release);
                Ok(p)
            }
            Err(e) => {
                if x.up.swap(false, Ordering::AcqRel) {
                    tracing::warn!(replica = %x.label, error = %e, "replica down");
                }
                Err(e)
            }
        }
    }

    /// Closes the replicas' pools.
    pub(crate) async fn close_replicas(&self) {
        if let Some(r) = &self.replicas {
            for x in &r.list {
                x.store.pool().close().await;
            }
        }
    }

    /// Probes every replica (including those marked down) and the
    /// primary: updates each replica's known position, whether it is up,
    /// and its lag in bytes behind the primary. The store's binary runs
    /// this every second; the lag is exported as
    /// `poz_db_replica_lag_bytes`.
    pub async fn probe_replicas(&self) {
        let Some(r) = &self.replicas else {
            return;
        };
        let primary = position(self).await.ok();
        for x in &r.list {
            let lag = match (self.probe(x).await, primary) {
                (Ok(p), Some(q)) => i64::try_from(q.saturating_sub(p)).unwrap_or(i64::MAX),
                _ => -1,
            };
            x.lag_bytes.store(lag, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn labels_carry_no_credentials() {
        assert_eq!(
            label("postgres://poz:secret@db-r1:5432/poz?sslmode=verify-full"),
            "db-r1:5432/poz"
        );
        assert_eq!(label("postgresql://db-r2/poz"), "db-r2/poz");
    }
}
