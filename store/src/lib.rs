//! The POZ store: records by ID, append-only master-zone history, current
//! heads, zone entries (identity bindings indexed by handle, revocations
//! by target), domains, mirrors, submissions and idempotency keys.
//!
//! One code path for both backends: sqlx's `Any` driver, chosen by the
//! database URL (`postgres://…` for the fleet, `sqlite://…` for the
//! embedded default), with one portable migration set. Every write is one
//! transaction; a write is acknowledged only after it committed.
//!
//! Advancing a head is a compare-and-swap: revision N+1 is stored only if
//! the head is still N and N+1 links to it. Whoever loses gets
//! `Conflict`; a *different* revision N+1 than the one stored is a fork,
//! refused and recorded as a security event.
#![forbid(unsafe_code)]

mod audit;
mod batches;
mod domains;
mod entries;
mod error;
pub mod grpc;
mod handles;
pub mod metrics;
mod partitions;
mod records;
mod replicas;
mod sql;
mod submissions;

pub use audit::SignatureAudit;
pub use batches::{LoggedBatch, StoredPair};
pub use domains::MAX_MIRRORS;
pub use entries::{BindingAnswer, StoredBinding, LOOKUPS_PER_QUERY};
pub use error::StoreError;
pub use partitions::{
    check_partitions, EntriesLayout, PartitionReport, COPY_BATCH, DEFAULT_PARTITIONS,
};
pub use replicas::{ReadFallback, ReadSource, ReplicaOptions, ReplicaState};
pub use submissions::{Submission, EXPIRY_SWEEP};

use entries::FIRST_ANALYZE;

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;
use std::time::Duration;

/// Which database is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    /// The backend a database URL names by its scheme.
    ///
    /// Errors: [`StoreError::Invalid`] for any scheme but `postgres://`,
    /// `postgresql://` and `sqlite:`.
    pub fn of_url(url: &str) -> Result<Backend, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            Err(StoreError::Invalid(format!(
                "database URL must start with postgres:// or sqlite: (got {})",
                poz_kit::shown(url)
            )))
        }
    }
}

/// Pool and timeout settings (documented in docs/OPERATIONS.md).
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Connections in the pool. Postgres: size to the server's
    /// max_connections divided among store replicas.
    pub max_connections: u32,
    /// How long a request waits for a free connection.
    pub acquire_timeout: Duration,
    /// Postgres `statement_timeout`: a runaway statement is cancelled.
    pub statement_timeout: Duration,
    /// SQLite `busy_timeout`: how long a writer waits for the lock.
    pub busy_timeout: Duration,
    /// Attempts for a transaction that failed with a serialization
    /// failure or deadlock (SQLSTATE 40001 / 40P01).
    pub retries: u32,
    /// How long a handle whose binding was revoked for reason unspecified
    /// or superseded stays reserved (SPEC §8.4.3); `None`: until an
    /// operator frees it (`free_handle`). Key-compromise, account-closed
    /// and policy revocations reserve until freed whatever this says.
    pub revoked_handle_cooldown: Option<Duration>,
    /// Pending binding requests (SUBMIT_REQUEST) one subject may have at
    /// once (SPEC §14.4).
    pub pending_per_subject: u32,
    /// A pending binding request older than this is refused as expired.
    pub pending_ttl: Duration,
    /// Whether [`Store::open`] applies pending migrations. `false` in a
    /// cluster, where a Job runs [`Store::migrate`] once before the
    /// store's pods start; the store then refuses a schema that is behind.
    pub migrate: bool,
    /// Postgres: partitions of the entries table (hash on the handle;
    /// partitions.rs) made when a fresh database is migrated; a database
    /// that already holds entries keeps one heap until `poz-store
    /// partition-entries` moves it online. 0 (the default): one heap.
    /// Partitions cost bulk issuance: 1M bindings took 170.9 s with 16
    /// against 69.2 s in one heap (docs/BENCHMARKS.md), because the
    /// look-alike check probes every partition's skeleton index.
    pub entries_partitions: u32,
}

impl StoreOptions {
    fn reservation(&self) -> poz::handle::Reservation {
        poz::handle::Reservation {
            cooldown_ms: self
                .revoked_handle_cooldown
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(5),
            retries: 3,
            revoked_handle_cooldown: None,
            pending_per_subject: 8,
            pending_ttl: Duration::from_secs(7 * 24 * 3600),
            migrate: true,
            entries_partitions: 0,
        }
    }
}

/// The store.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    options: StoreOptions,
    /// Entries this process has stored, and the count at which it next
    /// refreshes the planner's statistics (see `after_bulk_insert`).
    stored: std::sync::Arc<std::sync::atomic::AtomicU64>,
    next_analyze: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Streaming replicas StoreRead may be served from, and the read
    /// mark (replicas.rs); `None`: every read goes to `pool`.
    replicas: Option<std::sync::Arc<replicas::Replicas>>,
}

/// The migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The version of the newest migration this build carries.
pub fn latest_migration() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

impl Store {
    /// Connects (the URL picks the backend) and, with `options.migrate`,
    /// applies pending migrations ([`Store::migrate`]); without, checks
    /// that the schema is not behind this build. Errors:
    /// [`StoreError::Invalid`] (a URL of another kind; a schema behind
    /// this build, naming both versions), [`StoreError::Migration`],
    /// [`StoreError::Database`].
    pub async fn open(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        let store = Store::connect(url, options).await?;
        if store.options.migrate {
            store.apply_migrations().await?;
        } else {
            store.check_schema().await?;
        }
        Ok(store)
    }

    /// Applies every pending migration and the data fill that goes with
    /// them, then closes the connections; returns the schema version now
    /// in place. On Postgres, sqlx's migrator holds a session advisory
    /// lock (`pg_advisory_lock`, keyed by the database name) while it
    /// runs, so two runs at once (two Jobs, a Job and a store started with
    /// `migrate = true`) apply each migration once. Errors: as
    /// [`Store::open`].
    pub async fn migrate(url: &str, options: StoreOptions) -> Result<i64, StoreError> {
        let store = Store::connect(url, options).await?;
        let result = store.apply_migrations().await;
        store.close().await;
        result?;
        Ok(latest_migration())
    }

    async fn apply_migrations(&self) -> Result<(), StoreError> {
        // A schema ahead of this build (a newer release migrated it, and
        // this one is a rollback or a pod not yet replaced) is accepted:
        // this build applies what it lacks of its own and leaves the rest.
        // (Built from the static's fields, which sqlx marks hidden and
        // semver-exempt: the version is pinned by Cargo.lock.)
        let migrator = sqlx::migrate::Migrator {
            migrations: MIGRATOR.migrations.clone(),
            ignore_missing: true,
            locking: MIGRATOR.locking,
            no_tx: MIGRATOR.no_tx,
        };
        migrator.run(&self.pool).await?;
        let filled = self.fill_skeletons().await?;
        if filled > 0 {
            tracing::info!(
                filled,
                "filled the skeletons of bindings stored before 0005"
            );
        }
        self.partition_if_fresh().await
    }

    /// Refuses a database whose schema lacks a migration this build
    /// needs. A schema ahead of this build is accepted: during a rolling
    /// upgrade the new migrations (additive, docs/OPERATIONS.md) run
    /// before the old pods are replaced.
    async fn check_schema(&self) -> Result<(), StoreError> {
        let applied: Vec<i64> =
            match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
            {
                Ok(v) => v,
                // No migrations table: nothing was ever applied.
                Err(sqlx::Error::Database(_)) => Vec::new(),
                Err(e) => return Err(e.into()),
            };
        let missing: Vec<i64> = MIGRATOR
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect();
        if !missing.is_empty() {
            return Err(StoreError::Invalid(format!(
                "the database schema lacks migration(s) {missing:?} that this build needs \
                 (it has {} applied, the latest is {}): run `poz-store migrate` \
                 (migrate = false, so the store does not migrate at start)",
                applied.len(),
                latest_migration()
            )));
        }
        Ok(())
    }

    async fn connect(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let stmt_ms = options.statement_timeout.as_millis();
        let busy_ms = options.busy_timeout.as_millis();
        let mut pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite {
                options.max_connections.min(4)
            } else {
                options.max_connections
            })
            .acquire_timeout(options.acquire_timeout);
        pool = pool.after_connect(move |conn, _| {
            Box::pin(async move {
                match backend {
                    Backend::Postgres => {
                        sqlx::query(&format!("SET statement_timeout = {stmt_ms}"))
                            .execute(&mut *conn)
                            .await?;
                    }
                    Backend::Sqlite => {
                        // WAL with FULL sync: a committed write survives a
                        // crash of the process or the machine.
                        for p in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = FULL",
                            "PRAGMA foreign_keys = ON",
                        ] {
                            sqlx::query(p).execute(&mut *conn).await?;
                        }
                        sqlx::query(&format!("PRAGMA busy_timeout = {busy_ms}"))
                            .execute(&mut *conn)
                            .await?;
                    }
                }
                Ok(())
            })
        });
        let pool = pool.connect(url).await?;
        Ok(Store {
            pool,
            backend,
            options,
            stored: Default::default(),
            next_analyze: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(FIRST_ANALYZE)),
            replicas: None,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool, for a writer of another table in the same
    /// database (the in-process signer's audit log shares it).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The same database under other settings (the pool is shared).
    pub fn with_options(&self, options: StoreOptions) -> Store {
        Store {
            options,
            ..self.clone()
        }
    }

    /// Closes the pool: every connection finishes and is closed (SQLite:
    /// the WAL is checkpointed), so the files can be moved.
    pub async fn close(&self) {
        self.pool.close().await;
        self.close_replicas().await;
    }
}
