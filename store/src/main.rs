//! `poz-store`: the store as a gRPC service. Settings:
//! docs/OPERATIONS.md ("The store" and "Every service").
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use poz_kit::allow::identity;
use poz_kit::{Allowlist, GrpcRoutes, GrpcServer, ServeSettings, ServiceConfig};
use poz_proto::v1::{store_read_server::StoreReadServer, store_write_server::StoreWriteServer};
use poz_store::grpc::{StoreReader, StoreWriter};
use poz_store::{ReadFallback, ReplicaOptions, Store, StoreOptions};
use serde::{Deserialize, Serialize};
use std::time::Duration;

const NAME: &str = "poz-store";
/// The Lease (in the pod's namespace) whose holder runs the store's
/// singleton work.
const LEASE: &str = "poz-store";

/// Every setting, with its default.
#[derive(Serialize, Deserialize, Debug)]
#[serde(default)]
struct Config {
    /// gRPC address.
    listen: String,
    /// postgres://… for the fleet, sqlite:PATH?mode=rwc for one machine.
    database_url: String,
    /// postgres://… URLs of streaming replicas (hot standbys) of the
    /// primary that StoreRead may be served from; empty: every read goes
    /// to database_url.
    replica_urls: Vec<String>,
    /// How long a read waits for a replica to reach the read mark, ms.
    replica_wait_ms: u64,
    /// What a read does when no replica reached the read mark in time:
    /// "primary" (read there) or "unavailable" (refuse with a retry hint).
    replica_fallback: ReadFallback,
    /// Connections in the pool.
    max_connections: u32,
    /// How long a request waits for a pooled connection, ms.
    acquire_timeout_ms: u64,
    /// Postgres statement_timeout, ms.
    statement_timeout_ms: u64,
    /// SQLite busy_timeout, ms.
    busy_timeout_ms: u64,
    /// Attempts for a transaction that hit a serialization failure.
    retries: u32,
    /// How long a handle revoked for reason unspecified or superseded
    /// stays reserved, ms; 0: until an operator frees it (SPEC §8.4.3).
    revoked_handle_cooldown_ms: u64,
    /// Pending binding requests one subject may have at once.
    pending_per_subject: u32,
    /// A pending binding request older than this is refused, ms.
    pending_ttl_ms: u64,
    /// Apply pending migrations at start. `false` in a cluster, where a
    /// Job runs `poz-store migrate` first; the store then refuses a
    /// schema that is behind.
    migrate: bool,
    /// Postgres: hash partitions of the entries table made when a fresh
    /// database is migrated (a database holding entries is partitioned
    /// online by `poz-store partition-entries`); 0, the default: one heap.
    entries_partitions: u32,
    #[serde(flatten)]
    serve: ServeSettings,
}

impl Default for Config {
    fn default() -> Self {
        let o = StoreOptions::default();
        let r = ReplicaOptions::default();
        Config {
            listen: "127.0.0.1:50051".into(),
            database_url: String::new(),
            replica_urls: Vec::new(),
            replica_wait_ms: u64::try_from(r.wait.as_millis()).unwrap_or(u64::MAX),
            replica_fallback: r.fallback,
            max_connections: o.max_connections,
            acquire_timeout_ms: o.acquire_timeout.as_millis() as u64,
            statement_timeout_ms: o.statement_timeout.as_millis() as u64,
            busy_timeout_ms: o.busy_timeout.as_millis() as u64,
            retries: o.retries,
            revoked_handle_cooldown_ms: 0,
            pending_per_subject: o.pending_per_subject,
            pending_ttl_ms: u64::try_from(o.pending_ttl.as_millis()).unwrap_or(u64::MAX),
            migrate: o.migrate,
            entries_partitions: o.entries_partitions,
            serve: ServeSettings::default(),
        }
    }
}

impl ServiceConfig for Config {
    fn validate(&self) -> Result<(), String> {
        poz_kit::check_listen("listen", &self.listen)?;
        let url = self.database_url.as_str();
        if !(url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.starts_with("sqlite:"))
        {
            // Quoted only as `poz_kit::shown` allows: a libpq key=value
            // string such as "host=db password=…" lands here, password
            // and all.
            return Err(format!(
                "database_url must be postgres://… or sqlite:… (got {})",
                if url.is_empty() {
                    "nothing".to_string()
                } else {
                    poz_kit::shown(url)
                }
            ));
        }
        // Bounds that keep a typo from aborting the process (a pool of
        // 4 billion connections is allocated up front) or looping on a
        // setting Postgres refuses (statement_timeout is a 32-bit count
        // of ms).
        if self.entries_partitions > 1024 {
            return Err(format!(
                "entries_partitions: {} is more than 1024",
                self.entries_partitions
            ));
        }
        if !(1..=10_000).contains(&self.max_connections) {
            return Err("max_connections must be 1..=10000".into());
        }
        if !(1..=10).contains(&self.retries) {
            return Err("retries must be 1..=10 (attempts of a transaction)".into());
        }
        poz_kit::check_postgres_url("database_url", url)?;
        if !self.replica_urls.is_empty() && url.starts_with("sqlite:") {
            return Err("replica_urls need a Postgres database_url".into());
        }
        for (i, r) in self.replica_urls.iter().enumerate() {
            if !(r.starts_with("postgres://") || r.starts_with("postgresql://")) {
                return Err(format!(
                    "replica_urls[{i}] must be postgres://… (got {})",
                    poz_kit::shown(r)
                ));
            }
            poz_kit::check_postgres_url(&format!("replica_urls[{i}]"), r)?;
        }
        if self.replica_wait_ms > 60_000 {
            return Err("replica_wait_ms must be at most 60000".into());
        }
        if self.pending_per_subject == 0 {
            return Err("pending_per_subject must be at least 1".into());
        }
        for (name, v) in [
            ("acquire_timeout_ms", self.acquire_timeout_ms),
            ("statement_timeout_ms", self.statement_timeout_ms),
            ("busy_timeout_ms", self.busy_timeout_ms),
            ("pending_ttl_ms", self.pending_ttl_ms),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
            if name != "pending_ttl_ms" && v > i32::MAX as u64 {
                return Err(format!(
                    "{name} must be at most {} (about 24 days)",
                    i32::MAX
                ));
            }
        }
        self.serve.validate()
    }
}

/// Flags: each overrides the file and the environment.
#[derive(Parser, Serialize, Debug)]
#[command(
    name = NAME,
    version,
    about = "The POZ store: gRPC over Postgres (or SQLite)"
)]
struct Args {
    #[command(subcommand)]
    #[serde(skip)]
    command: Option<Command>,
    #[command(flatten)]
    #[serde(flatten)]
    common: poz_kit::GrpcArgs,
    /// postgres://… (the fleet) or sqlite:PATH?mode=rwc (one machine).
    /// Before or after a subcommand (`poz-store migrate --database-url …`).
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Connections in the pool (1..=10000).
    #[arg(long, global = true)]
    max_connections: Option<u32>,
    /// Postgres statement_timeout, ms.
    #[arg(long, global = true)]
    statement_timeout_ms: Option<u64>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Apply the pending migrations (under a Postgres advisory lock, so
    /// concurrent runs apply each once), print the schema version, exit.
    /// The same configuration as the store; serves nothing.
    Migrate,
    /// Store a provider ceremony's record (`record.poz`) under its
    /// domains, as its genesis and then its head (idempotent: a rerun
    /// changes nothing); print the record ID and exit. The same
    /// configuration as the store (it writes the store's database);
    /// serves nothing. `-` reads the record from standard input
    /// (`kubectl exec -i … < record.poz`).
    ImportRecord {
        /// The record file, or `-` for standard input.
        #[arg(value_name = "FILE")]
        record: std::path::PathBuf,
        /// A domain the record answers for (lowercase). Repeat.
        #[arg(long = "domain", value_name = "DOMAIN", required = true)]
        domains: Vec<String>,
    },
    /// Postgres: partition the entries table online (hash on the handle;
    /// docs/OPERATIONS.md "Partitioned entries") while stores keep
    /// serving and writing: a partitioned copy filled by a trigger and by
    /// batches of 10,000 rows, then swapped in one short transaction.
    /// Prints progress and what it did; a table already partitioned is
    /// left as it is. The same configuration as the store; serves
    /// nothing.
    PartitionEntries {
        /// Hash partitions (1 to 1024).
        #[arg(long, default_value_t = poz_store::DEFAULT_PARTITIONS)]
        partitions: u32,
    },
}

/// Who may call what, by certificate SAN (docs/OPERATIONS.md): the
/// writers write; the gateways and the Provider API read; mirrors are set
/// by an operator (`pozctl mirrors`).
fn default_allow() -> Allowlist {
    Allowlist::of(&[
        (
            "poz.v1.StoreRead",
            &[
                identity::QUERY_GW,
                identity::SUBMIT_GW,
                identity::PROVIDER_API,
                identity::OPERATOR,
            ],
        ),
        (
            "poz.v1.StoreWrite",
            &[identity::PROVIDER_API, identity::SUBMIT_GW],
        ),
        ("poz.v1.StoreWrite/SetMirrors", &[identity::OPERATOR]),
    ])
}

/// The store's options from the configuration (milliseconds to
/// durations; a cooldown of 0 is none).
fn options(c: &Config) -> StoreOptions {
    StoreOptions {
        max_connections: c.max_connections,
        acquire_timeout: Duration::from_millis(c.acquire_timeout_ms),
        statement_timeout: Duration::from_millis(c.statement_timeout_ms),
        busy_timeout: Duration::from_millis(c.busy_timeout_ms),
        retries: c.retries,
        revoked_handle_cooldown: (c.revoked_handle_cooldown_ms > 0)
            .then(|| Duration::from_millis(c.revoked_handle_cooldown_ms)),
        pending_per_subject: c.pending_per_subject,
        pending_ttl: Duration::from_millis(c.pending_ttl_ms),
        migrate: c.migrate,
        entries_partitions: c.entries_partitions,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let Some(c) = poz_kit::start::<Config>("POZ_STORE_", &args.common.config, &args)? else {
        return Ok(());
    };
    let _telemetry = poz_kit::telemetry::init(NAME, c.serve.log_json)?;
    let options = options(&c);
    match &args.command {
        Some(Command::Migrate) => {
            let version = Store::migrate(&c.database_url, options).await?;
            println!("schema at migration {version}");
            return Ok(());
        }
        Some(Command::PartitionEntries { partitions }) => {
            // Refused before anything is opened: opening migrates (a
            // SQLite file would be created) and would partition an empty
            // one-heap table into the configured count, not the one asked.
            poz_store::check_partitions(*partitions)?;
            anyhow::ensure!(
                poz_store::Backend::of_url(&c.database_url)? == poz_store::Backend::Postgres,
                "partition-entries needs a postgres:// database_url: SQLite keeps one table"
            );
            let options = poz_store::StoreOptions {
                entries_partitions: 0,
                ..options
            };
            let store = Store::open(&c.database_url, options).await?;
            let began = std::time::Instant::now();
            let mut shown = 0u64;
            let report = store
                .partition_entries(*partitions, poz_store::COPY_BATCH, |copied| {
                    // A line per 100,000 rows (or every batch at first).
                    if copied >= shown + 100_000 || shown == 0 {
                        shown = copied;
                        println!(
                            "copied {copied} rows ({:.0} s)",
                            began.elapsed().as_secs_f64()
                        );
                    }
                })
                .await;
            store.close().await;
            let r = report?;
            println!(
                "entries: {} rows in {} hash partitions ({} copied by batches) in {:.1} s; writers waited {} ms at the swap",
                r.rows,
                r.partitions,
                r.copied,
                r.took.as_secs_f64(),
                r.swap.as_millis()
            );
            return Ok(());
        }
        Some(Command::ImportRecord {
            record: file,
            domains,
        }) => {
            let bytes = if file.as_os_str() == "-" {
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut b)
                    .context("reading the record from standard input")?;
                b
            } else {
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?
            };
            let store = Store::open(&c.database_url, options).await?;
            let imported = store.import_record(&bytes, domains).await;
            store.close().await;
            let (id, serial) = imported?;
            println!(
                "record {} at serial {serial} for {}",
                id.to_hex(),
                domains.join(", ")
            );
            return Ok(());
        }
        None => {}
    }
    // Refused before the database is opened (or migrated) when it would
    // serve without TLS, with TLS files that do not load, or with an
    // allowlist for another service.
    c.serve.preflight(default_allow())?;
    let store = Store::open(&c.database_url, options)
        .await?
        .with_replicas(ReplicaOptions {
            urls: c.replica_urls.clone(),
            wait: Duration::from_millis(c.replica_wait_ms),
            fallback: c.replica_fallback,
            ..ReplicaOptions::default()
        })?;
    poz_store::metrics::export_pool(&store);
    poz_store::metrics::export_replicas(&store);
    // The replicas' positions and lag, every second (a replica marked
    // down comes back here).
    let prober = store.has_replicas().then(|| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                store.probe_replicas().await;
            }
        })
    });
    // Singleton work, under the Lease `poz-store` in Kubernetes (always
    // run outside it): sweep expired pending binding requests.
    let elector = poz_cluster::Elector::from_env(LEASE).await?;
    let sweeper = {
        let store = store.clone();
        tokio::spawn(poz_cluster::every_while_leader(
            elector.subscribe(),
            poz_store::EXPIRY_SWEEP,
            move || {
                let store = store.clone();
                async move {
                    match store.expire_pending().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(expired = n, "expired pending binding requests"),
                        Err(e) => {
                            tracing::warn!(error = %e, "sweeping expired pending requests failed")
                        }
                    }
                }
            },
        ))
    };
    let server = GrpcServer::bind(NAME, &c.listen, &c.serve, default_allow()).await?;
    tracing::info!(backend = ?store.backend(), "serving the store");
    let m = poz_kit::MAX_GRPC_MESSAGE;
    let read = StoreReadServer::new(StoreReader {
        store: store.clone(),
    })
    .max_decoding_message_size(m)
    .max_encoding_message_size(m);
    let write = StoreWriteServer::new(StoreWriter { store })
        .max_decoding_message_size(m)
        .max_encoding_message_size(m);
    let served = server
        .serve(GrpcRoutes::new().service(read).service(write))
        .await;
    // Drained: stop sweeping and hand the lease over at once.
    sweeper.abort();
    if let Some(p) = prober {
        p.abort();
    }
    elector.shutdown().await;
    served?;
    Ok(())
}
