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

pub mod grpc;

use poz::codec::Codec;
use poz::entries::EntryBody;
use poz::serve::ServedRecord;
use poz::zone::{EntryKind, SignedEntry, ZoneSection, ZoneType};
use poz::{Hash32, MasterZone, Record};
use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;
use sqlx::{Any, Row, Transaction};
use std::time::Duration;

/// Which database is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
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
        }
    }
}

/// Store failures, each mapped to one gRPC status by the service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid: {0}")]
    Invalid(String),
    /// The head moved: the caller's expected serial is stale.
    #[error("conflict: the head of {record_id} is serial {head}, not {expected}")]
    Conflict {
        record_id: Hash32,
        head: u32,
        expected: u32,
    },
    /// A different revision with the same serial is already stored.
    #[error("fork: record {record_id} already has a different revision {serial}")]
    Fork { record_id: Hash32, serial: u32 },
    #[error("idempotency key {0:?} was used for a different request")]
    IdempotencyMismatch(String),
    // The cause is in the message and deliberately not a `source`: an
    // error chain printed with its causes would say it twice.
    #[error("database: {0}")]
    Database(sqlx::Error),
    #[error("database migration: {0}")]
    Migration(sqlx::migrate::MigrateError),
    /// A binding's handle breaks a handle rule (SPEC §8.4): its
    /// characters, or who already holds it or a look-alike
    /// (`binding-unique`, `handle-confusable`, `handle-reserved`).
    #[error(transparent)]
    Handle(#[from] poz::handle::HandleRefused),
    /// A time (ms since the epoch) that does not fit the database's
    /// signed 64-bit columns: refused, never wrapped (a wrapped time
    /// would sort before every other).
    #[error("{field}: {value} does not fit a signed 64-bit time (at most 2^63 - 1)")]
    TimeOutOfRange { field: &'static str, value: u64 },
    /// A subject has as many pending binding requests as allowed.
    #[error("subject {subject} already has {limit} pending binding requests")]
    TooManyPending { subject: Hash32, limit: u32 },
}

/// A u64 time as the database stores it (BIGINT): refused when ≥ 2^63.
fn db_time(field: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::TimeOutOfRange { field, value })
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migration(e)
    }
}

impl StoreError {
    /// Postgres: serialization failure, deadlock. SQLite: SQLITE_BUSY and
    /// its extended codes; BUSY_SNAPSHOT (517) in particular is returned
    /// at once, without waiting out busy_timeout, when a transaction that
    /// read first tries to write after another writer committed (seen with
    /// the signer's audit rows and a bulk commit writing concurrently);
    /// the whole transaction must start again.
    fn is_retryable_tx(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(e)) => matches!(
                e.code().as_deref(),
                Some("40001" | "40P01" | "5" | "261" | "517" | "773")
            ),
            _ => false,
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn random_id() -> Vec<u8> {
    use rand_core::RngCore;
    let mut b = vec![0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    b
}

/// The record at its head as MASTER serves it, minus history and entries.
fn head_shell(rec: &Record) -> Vec<u8> {
    let mut shell = Record::new(rec.keys.clone(), rec.master.clone());
    shell.authorities = rec.authorities.clone();
    shell.key_names = rec.key_names.clone();
    shell.to_bytes()
}

/// The row data of one entry.
struct EntryRow {
    digest: Hash32,
    kind: u8,
    handle: Option<String>,
    target: Option<Vec<u8>>,
    issued_at: Option<i64>,
    bytes: Vec<u8>,
    /// The batch root digest its first batch signature proves to.
    batch_root: Option<Vec<u8>>,
    /// Bindings: the handle's confusable skeleton (SPEC §8.4.2).
    skeleton: Option<String>,
    /// Bindings this record issued (not copies of other providers'
    /// bindings in a user's record): the subject and expiry, for the
    /// handle rules.
    binding: Option<(Hash32, u64)>,
}

/// `keys` is the holding record's Public Key Map: an entry that names keys
/// by index (service hosts' CA keys, trust groups) binds their key IDs
/// into its digest (SPEC §5.3). Identity Zone entries name none.
fn entry_row(
    record_id: &Hash32,
    zone: ZoneType,
    keys: &poz::keys::PublicKeyMap,
    e: &SignedEntry,
) -> Result<EntryRow, StoreError> {
    let body = EntryBody::decode(zone, e.kind, &e.body)
        .map_err(|err| StoreError::Invalid(format!("{zone} entry: {err}")))?;
    let (issuer, handle, target, issued_at) = match &body {
        EntryBody::Binding(b) => (
            b.issuer,
            Some(b.handle.clone()),
            None,
            Some(db_time("binding.issued_at", b.issued_at)?),
        ),
        EntryBody::Revocation(r) => (
            *record_id,
            None,
            Some(r.target.0.to_vec()),
            Some(db_time("revocation.revoked_at", r.revoked_at)?),
        ),
        _ => (*record_id, None, None, None),
    };
    let binding = match &body {
        EntryBody::Binding(b) => {
            // Expiry is not a column, but it is compared as a time: the
            // same bound.
            db_time("binding.expires_at", b.expires_at)?;
            (b.issuer == *record_id).then_some((b.subject, b.expires_at))
        }
        _ => None,
    };
    let key_binding = poz::zone::KeyBinding::resolve(&body, keys)
        .map_err(|err| StoreError::Invalid(format!("{zone} entry: {err}")))?;
    let digest = e.digest(&issuer, zone, &key_binding);
    Ok(EntryRow {
        skeleton: handle.as_deref().map(poz::handle::skeleton),
        binding,
        digest,
        kind: e.kind.0,
        handle,
        target,
        issued_at,
        bytes: e.to_bytes(),
        batch_root: e
            .signatures
            .iter()
            .filter(|s| s.sig_type == poz::keys::SigType::ED25519_BATCH)
            .find_map(|s| s.entry_message(&issuer, zone, &digest))
            .map(|(root, _)| root.0.to_vec()),
    })
}

/// Entries stored before the first statistics refresh; each later one
/// waits until the count has doubled.
const FIRST_ANALYZE: u64 = 10_000;

/// Handles per IN (…) lookup.
const HANDLES_PER_QUERY: usize = 500;

/// Mirrors per record at most: a MIRRORS answer counts them in one byte.
pub const MAX_MIRRORS: usize = 255;

/// (domain, handle) pairs per statement of [`Store::lookup_bindings`]:
/// three parameters each, well inside both backends' limits.
pub const LOOKUPS_PER_QUERY: usize = 256;

/// A binding and the revocation naming it, if any.
pub type BindingAnswer = (SignedEntry, Option<SignedEntry>);

/// A stored binding and revocation, decoded (the store wrote them, so a
/// failure here means the database holds what the store did not write).
fn decode_binding(entry: &[u8], revocation: Option<Vec<u8>>) -> Result<BindingAnswer, StoreError> {
    let e = SignedEntry::from_bytes(entry)
        .map_err(|e| StoreError::Invalid(format!("stored entry: {e}")))?;
    let rev = revocation
        .map(|b| SignedEntry::from_bytes(&b))
        .transpose()
        .map_err(|e| StoreError::Invalid(format!("stored revocation: {e}")))?;
    Ok((e, rev))
}

/// Stored bindings by the skeleton of their handle, and their digests.
#[derive(Default)]
struct HeldBySkeleton {
    by_skeleton: std::collections::HashMap<String, Vec<poz::handle::HeldBinding>>,
    digests: std::collections::HashSet<Vec<u8>>,
}

/// Rows per multi-row INSERT of zone entries.
const ENTRY_ROWS_PER_STATEMENT: usize = 500;
/// Audit rows per INSERT: 8 parameters each, as far below the limits.
const AUDIT_ROWS_PER_STATEMENT: usize = 500;

/// `head VALUES ($1, …, $cols), …` for `rows` rows of `cols` parameters.
fn multi_row_insert(head: &str, rows: usize, cols: usize) -> String {
    let mut sql = String::with_capacity(head.len() + rows * cols * 5);
    sql.push_str(head);
    sql.push_str(" VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for k in 1..=cols {
            if k > 1 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(i * cols + k).to_string());
        }
        sql.push(')');
    }
    sql
}

/// A submission (SUBMIT_REQUEST) and what became of it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Submission {
    pub id: [u8; 16],
    /// 0 committed, 1 pending, 2 issued, 3 refused (SPEC §14.4).
    pub state: u8,
    /// The SUBMIT_REQUEST payload as received.
    pub request: Vec<u8>,
    /// The issued entry, once issued.
    pub entry: Option<Vec<u8>>,
    pub message: String,
}

/// One row of the signer's audit log.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SignatureAudit {
    /// The key that signed.
    pub key_id: Hash32,
    /// The record the signature belongs to (the draft's record, the
    /// entry's issuer).
    pub record_id: Hash32,
    /// The zone type code (0 for a master zone).
    pub zone_type: u8,
    /// What was signed: "master-draft", "entry", "batch-root".
    pub what: String,
    /// The signed digest.
    pub digest: Hash32,
    /// The signature encoding (SPEC §5).
    pub signature: Vec<u8>,
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
}

/// The migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Store {
    /// Connects (the URL picks the backend), applies pending migrations.
    pub async fn open(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Invalid(format!(
                "database URL must start with postgres:// or sqlite: (got {url:?})"
            )));
        };
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
        MIGRATOR.run(&pool).await?;
        let store = Store {
            pool,
            backend,
            options,
            stored: Default::default(),
            next_analyze: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(FIRST_ANALYZE)),
        };
        let filled = store.fill_skeletons().await?;
        if filled > 0 {
            tracing::info!(
                filled,
                "filled the skeletons of bindings stored before 0005"
            );
        }
        Ok(store)
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

    /// Runs `f` in a transaction, retrying serialization failures.
    async fn tx<T, F>(&self, mut f: F) -> Result<T, StoreError>
    where
        F: for<'t> FnMut(
            &'t mut Transaction<'static, Any>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send + 't>,
        >,
    {
        let mut attempt = 0;
        loop {
            // SQLite: take the write lock at BEGIN. A deferred transaction
            // that reads first and then writes fails at once with
            // BUSY_SNAPSHOT when another writer committed in between
            // (no waiting in busy_timeout), and under load (an fsync slowed
            // by other I/O) three quick retries were seen to run out.
            // IMMEDIATE makes writers queue on the lock instead.
            let mut tx = match self.backend {
                Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
                Backend::Postgres => self.pool.begin().await?,
            };
            let r = f(&mut tx).await;
            let r = match r {
                Ok(v) => tx.commit().await.map(|_| v).map_err(StoreError::from),
                Err(e) => {
                    let _ = tx.rollback().await;
                    Err(e)
                }
            };
            match r {
                Err(e) if e.is_retryable_tx() && attempt + 1 < self.options.retries => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// Checks an idempotency key inside a transaction: `Some(response)`
    /// if this exact request was done before.
    async fn idempotent(
        tx: &mut Transaction<'static, Any>,
        key: &str,
        request: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        if key.is_empty() {
            return Ok(None);
        }
        let h = poz::hash::tagged_hash("POZ-v0 store idempotency", &[request])
            .0
            .to_vec();
        let row =
            sqlx::query("SELECT request_hash, response FROM idempotency_keys WHERE idem_key = $1")
                .bind(key)
                .fetch_optional(&mut **tx)
                .await?;
        match row {
            Some(r) => {
                let stored: Vec<u8> = r.get(0);
                if stored != h {
                    return Err(StoreError::IdempotencyMismatch(key.to_owned()));
                }
                Ok(Some(r.get(1)))
            }
            None => Ok(None),
        }
    }

    async fn remember(
        tx: &mut Transaction<'static, Any>,
        key: &str,
        request: &[u8],
        response: &[u8],
    ) -> Result<(), StoreError> {
        if key.is_empty() {
            return Ok(());
        }
        let h = poz::hash::tagged_hash("POZ-v0 store idempotency", &[request])
            .0
            .to_vec();
        sqlx::query("INSERT INTO idempotency_keys (idem_key, request_hash, response, created_ms) VALUES ($1, $2, $3, $4)")
            .bind(key)
            .bind(h)
            .bind(response.to_vec())
            .bind(now_ms())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Stores a record at serial 1 under `domains`. The record must verify
    /// completely. Creating the same record again is a no-op.
    pub async fn create_record(
        &self,
        bytes: &[u8],
        domains: &[String],
        idem: &str,
    ) -> Result<Hash32, StoreError> {
        let rec =
            Record::from_bytes(bytes).map_err(|e| StoreError::Invalid(format!("record: {e}")))?;
        // A time far ahead of this clock would freeze the record (its
        // timestamps must increase) or, past 2^63, lose its sign in a
        // BIGINT column (SPEC §6.7).
        poz::verify::check_times(&rec, now_ms().max(0) as u64)
            .map_err(|e| StoreError::Invalid(format!("record: {e}")))?;
        let report = poz::verify_record(&rec);
        if !report.is_complete() {
            let f: Vec<String> = report
                .failures()
                .map(|(r, d)| format!("{r}: {d}"))
                .collect();
            return Err(StoreError::Invalid(format!(
                "record does not verify completely: {}",
                f.join("; ")
            )));
        }
        if rec.master.serial != 1 || !rec.history.is_empty() {
            return Err(StoreError::Invalid(
                "create_record takes a genesis record (serial 1); advance it with advance_head"
                    .into(),
            ));
        }
        for d in domains {
            if !poz::wire::valid_domain(d) {
                return Err(StoreError::Invalid(format!(
                    "domain {d:?} is not a valid lowercase domain name"
                )));
            }
        }
        let id = rec.id();
        let bytes = bytes.to_vec();
        let domains = domains.to_vec();
        let idem = idem.to_owned();
        let reservation = self.options.reservation();
        self.tx(move |tx| {
            let (rec, bytes, domains, idem) = (rec.clone(), bytes.clone(), domains.clone(), idem.clone());
            Box::pin(async move {
                if Self::idempotent(tx, &idem, &bytes).await?.is_some() {
                    return Ok(id);
                }
                let exists = sqlx::query("SELECT head_hash FROM records WHERE record_id = $1").bind(id.0.to_vec()).fetch_optional(&mut **tx).await?;
                if exists.is_none() {
                    let now = now_ms();
                    sqlx::query("INSERT INTO records (record_id, head_serial, head_hash, head_timestamp, head_record, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $6)")
                        .bind(id.0.to_vec())
                        .bind(1i64)
                        .bind(rec.master.current_master_hash.0.to_vec())
                        .bind(db_time("master.timestamp", rec.master.timestamp)?)
                        .bind(head_shell(&rec))
                        .bind(now)
                        .execute(&mut **tx)
                        .await?;
                    sqlx::query("INSERT INTO master_revisions (record_id, serial, master_hash, master_zone, stored_ms) VALUES ($1, $2, $3, $4, $5)")
                        .bind(id.0.to_vec())
                        .bind(1i64)
                        .bind(rec.master.current_master_hash.0.to_vec())
                        .bind(rec.master.to_bytes())
                        .bind(now)
                        .execute(&mut **tx)
                        .await?;
                    for (z, zs) in &rec.zones {
                        Self::insert_entries(tx, &id, *z, &rec.keys, &zs.entries, &reservation).await?;
                    }
                }
                for d in &domains {
                    Self::bind_domain_tx(tx, d, &id).await?;
                }
                Self::remember(tx, &idem, &bytes, &id.0).await?;
                Ok(id)
            })
        })
        .await
    }

    async fn bind_domain_tx(
        tx: &mut Transaction<'static, Any>,
        domain: &str,
        id: &Hash32,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM domains WHERE domain = $1")
            .bind(domain)
            .execute(&mut **tx)
            .await?;
        sqlx::query("INSERT INTO domains (domain, record_id) VALUES ($1, $2)")
            .bind(domain)
            .bind(id.0.to_vec())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Maps a domain to a record.
    pub async fn bind_domain(&self, domain: &str, id: &Hash32) -> Result<(), StoreError> {
        if !poz::wire::valid_domain(domain) {
            return Err(StoreError::Invalid(format!(
                "domain {domain:?} is not a valid lowercase domain name"
            )));
        }
        let (d, id) = (domain.to_owned(), *id);
        self.tx(move |tx| {
            let d = d.clone();
            Box::pin(async move { Self::bind_domain_tx(tx, &d, &id).await })
        })
        .await
    }

    /// Replaces the servers known to carry a record (MIRRORS, SPEC §14.4):
    /// pool hosts as SPEC §8.7 encodes them, in the order given, at most
    /// [`MAX_MIRRORS`]. Mirrors are not signed: an operator sets them, and
    /// a client only learns where else to ask (whatever it gets there it
    /// verifies). An empty list removes them all.
    pub async fn set_mirrors(&self, id: &Hash32, hosts: &[Vec<u8>]) -> Result<(), StoreError> {
        if hosts.len() > MAX_MIRRORS {
            return Err(StoreError::Invalid(format!(
                "hosts: at most {MAX_MIRRORS} (a MIRRORS answer counts them in one byte), got {}",
                hosts.len()
            )));
        }
        for (i, h) in hosts.iter().enumerate() {
            poz::entries::PoolHost::from_bytes(h)
                .map_err(|e| StoreError::Invalid(format!("hosts[{i}]: {e}")))?;
        }
        let (id, hosts) = (*id, hosts.to_vec());
        self.tx(move |tx| {
            let hosts = hosts.clone();
            Box::pin(async move {
                let exists = sqlx::query("SELECT 1 FROM records WHERE record_id = $1")
                    .bind(id.0.to_vec())
                    .fetch_optional(&mut **tx)
                    .await?;
                if exists.is_none() {
                    return Err(StoreError::NotFound(format!("record {id}")));
                }
                sqlx::query("DELETE FROM mirrors WHERE record_id = $1")
                    .bind(id.0.to_vec())
                    .execute(&mut **tx)
                    .await?;
                for (position, host) in hosts.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO mirrors (record_id, position, host) VALUES ($1, $2, $3)",
                    )
                    .bind(id.0.to_vec())
                    .bind(position as i32)
                    .bind(host.clone())
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    /// A record's mirrors in the order they were set (NotFound: no such
    /// record).
    pub async fn mirrors(&self, id: &Hash32) -> Result<Vec<Vec<u8>>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.host FROM records h LEFT JOIN mirrors m ON m.record_id = h.record_id \
             WHERE h.record_id = $1 ORDER BY m.position",
        )
        .bind(id.0.to_vec())
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Err(StoreError::NotFound(format!("record {id}")));
        }
        Ok(rows
            .iter()
            .filter_map(|r| r.get::<Option<Vec<u8>>, _>(0))
            .collect())
    }

    /// The bindings `id` holds whose handle has one of `skeletons`, each
    /// with its revocation and whether an operator freed it, by skeleton
    /// (SPEC §8.4.3), and the digests among them.
    async fn held_by_skeleton(
        conn: &mut sqlx::AnyConnection,
        id: &Hash32,
        skeletons: &[String],
    ) -> Result<HeldBySkeleton, StoreError> {
        let mut held: HeldBySkeleton = Default::default();
        for chunk in skeletons.chunks(HANDLES_PER_QUERY) {
            let mut sql = String::from(
                "SELECT b.skeleton, b.digest, b.entry, r.entry, f.digest FROM entries b \
                 LEFT JOIN entries r ON r.record_id = b.record_id AND r.zone_type = b.zone_type AND r.target = b.digest \
                 LEFT JOIN handle_releases f ON f.record_id = b.record_id AND f.digest = b.digest \
                 WHERE b.record_id = $1 AND b.zone_type = $2 AND b.kind = $3 AND b.skeleton IN (",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", i + 4));
            }
            sql.push(')');
            let mut q = sqlx::query(&sql)
                .bind(id.0.to_vec())
                .bind(ZoneType::IDENTITY.0 as i32)
                .bind(EntryKind::GRANT.0 as i32);
            for sk in chunk {
                q = q.bind(sk.clone());
            }
            for r in q.fetch_all(&mut *conn).await? {
                let skeleton: String = r.get(0);
                let digest: Vec<u8> = r.get(1);
                let (entry, revocation) = decode_binding(&r.get::<Vec<u8>, _>(2), r.get(3))?;
                let b = match EntryBody::decode(ZoneType::IDENTITY, entry.kind, &entry.body) {
                    Ok(EntryBody::Binding(b)) => b,
                    _ => return Err(StoreError::Invalid("stored binding does not decode".into())),
                };
                let revocation = match revocation {
                    None => None,
                    Some(rev) => match EntryBody::decode(ZoneType::IDENTITY, rev.kind, &rev.body) {
                        Ok(EntryBody::Revocation(x)) => Some((x.reason, x.revoked_at)),
                        _ => {
                            return Err(StoreError::Invalid(
                                "stored revocation does not decode".into(),
                            ))
                        }
                    },
                };
                held.digests.insert(digest);
                let list = held.by_skeleton.entry(skeleton).or_default();
                // A binding with two revocations is listed twice; either
                // reserves it.
                list.push(poz::handle::HeldBinding {
                    handle: b.handle,
                    subject: b.subject,
                    expires_at: b.expires_at,
                    revocation,
                    freed: r.get::<Option<Vec<u8>>, _>(4).is_some(),
                });
            }
        }
        Ok(held)
    }

    /// Judges new bindings against what `id` holds (SPEC §8.4.1–§8.4.3):
    /// each handle's characters (the baseline every policy shares), then
    /// its skeleton against every stored binding and every earlier
    /// candidate. `candidates` are (handle, subject, digest); one verdict
    /// each, in order. A candidate already stored (same digest) is a retry
    /// and passes.
    async fn judge_bindings(
        conn: &mut sqlx::AnyConnection,
        id: &Hash32,
        candidates: &[(String, Hash32, Option<Vec<u8>>)],
        reservation: &poz::handle::Reservation,
    ) -> Result<Vec<Result<(), poz::handle::HandleRefused>>, StoreError> {
        let skeletons: Vec<String> = {
            let mut v: Vec<String> = candidates
                .iter()
                .map(|(h, _, _)| poz::handle::skeleton(h))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        let mut held = Self::held_by_skeleton(conn, id, &skeletons).await?;
        let now = u64::try_from(now_ms()).unwrap_or(0);
        let mut verdicts = Vec::with_capacity(candidates.len());
        for (handle, subject, digest) in candidates {
            if digest.as_ref().is_some_and(|d| held.digests.contains(d)) {
                verdicts.push(Ok(()));
                continue;
            }
            let verdict = poz::handle::check_baseline(handle).and_then(|()| {
                let sk = poz::handle::skeleton(handle);
                let list = held.by_skeleton.entry(sk).or_default();
                poz::handle::judge_issue(handle, subject, now, list, reservation)?;
                list.push(poz::handle::HeldBinding {
                    handle: handle.clone(),
                    subject: *subject,
                    expires_at: 0,
                    revocation: None,
                    freed: false,
                });
                Ok(())
            });
            verdicts.push(verdict);
        }
        Ok(verdicts)
    }

    /// Whether bindings of `candidates` (handle, subject) could be issued
    /// now by record `id` (SPEC §8.4): the same judgement a commit makes,
    /// without writing. The Provider API asks before it signs, so a bulk
    /// issue refuses item by item; the commit checks again.
    pub async fn check_handles(
        &self,
        id: &Hash32,
        candidates: &[(String, Hash32)],
    ) -> Result<Vec<Result<(), poz::handle::HandleRefused>>, StoreError> {
        let candidates: Vec<(String, Hash32, Option<Vec<u8>>)> = candidates
            .iter()
            .map(|(h, s)| (h.clone(), *s, None))
            .collect();
        let mut conn = self.pool.acquire().await?;
        Self::judge_bindings(&mut conn, id, &candidates, &self.options.reservation()).await
    }

    /// Frees the handle of every revoked binding of `handle` (SPEC
    /// §8.4.3): its revocations no longer reserve it. Returns how many
    /// bindings were freed; NotFound when the handle has no revoked
    /// binding not yet freed.
    pub async fn free_handle(&self, id: &Hash32, handle: &str) -> Result<u32, StoreError> {
        let (id, handle) = (*id, handle.to_owned());
        self.tx(move |tx| {
            let handle = handle.clone();
            Box::pin(async move {
                let rows = sqlx::query(
                    "SELECT DISTINCT b.digest FROM entries b \
                     JOIN entries r ON r.record_id = b.record_id AND r.zone_type = b.zone_type AND r.target = b.digest \
                     LEFT JOIN handle_releases f ON f.record_id = b.record_id AND f.digest = b.digest \
                     WHERE b.record_id = $1 AND b.zone_type = $2 AND b.kind = $3 AND b.handle = $4 \
                     AND f.digest IS NULL",
                )
                .bind(id.0.to_vec())
                .bind(ZoneType::IDENTITY.0 as i32)
                .bind(EntryKind::GRANT.0 as i32)
                .bind(handle.clone())
                .fetch_all(&mut **tx)
                .await?;
                if rows.is_empty() {
                    return Err(StoreError::NotFound(format!(
                        "no revoked binding of {handle:?} to free"
                    )));
                }
                let now = now_ms();
                for r in &rows {
                    sqlx::query(
                        "INSERT INTO handle_releases (record_id, digest, freed_ms) VALUES ($1, $2, $3)",
                    )
                    .bind(id.0.to_vec())
                    .bind(r.get::<Vec<u8>, _>(0))
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                }
                Ok(rows.len() as u32)
            })
        })
        .await
    }

    /// Fills the skeleton of bindings written before migration 0005, a
    /// thousand at a time.
    async fn fill_skeletons(&self) -> Result<u64, StoreError> {
        let mut filled = 0u64;
        loop {
            let rows = sqlx::query(
                "SELECT record_id, zone_type, digest, handle FROM entries \
                 WHERE handle IS NOT NULL AND skeleton IS NULL LIMIT 1000",
            )
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                return Ok(filled);
            }
            let rows: Vec<(Vec<u8>, i32, Vec<u8>, String)> = rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect();
            filled += rows.len() as u64;
            self.tx(move |tx| {
                let rows = rows.clone();
                Box::pin(async move {
                    for (record_id, zone, digest, handle) in rows {
                        sqlx::query(
                            "UPDATE entries SET skeleton = $1 \
                             WHERE record_id = $2 AND zone_type = $3 AND digest = $4",
                        )
                        .bind(poz::handle::skeleton(&handle))
                        .bind(record_id)
                        .bind(zone)
                        .bind(digest)
                        .execute(&mut **tx)
                        .await?;
                    }
                    Ok(())
                })
            })
            .await?;
        }
    }

    async fn insert_entries(
        tx: &mut Transaction<'static, Any>,
        id: &Hash32,
        zone: ZoneType,
        keys: &poz::keys::PublicKeyMap,
        entries: &[SignedEntry],
        reservation: &poz::handle::Reservation,
    ) -> Result<(u32, u32), StoreError> {
        let rows = entries
            .iter()
            .map(|e| entry_row(id, zone, keys, e))
            .collect::<Result<Vec<_>, _>>()?;
        // One live binding per handle, and no look-alike of another
        // subject's (SPEC §8.4): checked here, inside the transaction
        // that commits, so every path (Provider API, bulk import,
        // SUBMIT_SIGNED, a record's own zones) is held to it.
        if zone == ZoneType::IDENTITY {
            let candidates: Vec<(String, Hash32, Option<Vec<u8>>)> = rows
                .iter()
                .filter(|r| r.kind == EntryKind::GRANT.0)
                .filter_map(|r| {
                    let (subject, _) = r.binding?;
                    Some((r.handle.clone()?, subject, Some(r.digest.0.to_vec())))
                })
                .collect();
            if !candidates.is_empty() {
                let verdicts = Self::judge_bindings(tx, id, &candidates, reservation).await?;
                if let Some(Err(refused)) = verdicts.into_iter().find(|v| v.is_err()) {
                    return Err(StoreError::Handle(refused));
                }
            }
        }
        let now = now_ms();
        let mut stored = 0u32;
        // Multi-row inserts: one round trip per chunk instead of per entry
        // (a provider's bulk issue writes thousands at a time). 10 bind
        // parameters per row; 500 rows stay far below both backends'
        // parameter limits (Postgres 65,535; SQLite 32,766); 11 with the
        // skeleton.
        for chunk in rows.chunks(ENTRY_ROWS_PER_STATEMENT) {
            let mut sql = multi_row_insert(
                "INSERT INTO entries (record_id, zone_type, digest, kind, handle, target, issued_at, entry, stored_ms, batch_root, skeleton)",
                chunk.len(),
                11,
            );
            // Entries are immutable: a row with this key is this entry, so
            // "insert if absent" (portable to Postgres and SQLite) suffices.
            sql.push_str(" ON CONFLICT (record_id, zone_type, digest) DO NOTHING");
            let mut q = sqlx::query(&sql);
            for row in chunk {
                q = q
                    .bind(id.0.to_vec())
                    .bind(zone.0 as i32)
                    .bind(row.digest.0.to_vec())
                    .bind(row.kind as i32)
                    .bind(row.handle.clone())
                    .bind(row.target.clone())
                    .bind(row.issued_at)
                    .bind(row.bytes.clone())
                    .bind(now)
                    .bind(row.batch_root.clone())
                    .bind(row.skeleton.clone());
            }
            stored += q.execute(&mut **tx).await?.rows_affected() as u32;
        }
        let present = rows.len() as u32 - stored;
        Ok((stored, present))
    }

    /// Appends zone entries (already verified by the caller) to a record.
    pub async fn put_entries(
        &self,
        id: &Hash32,
        zone: ZoneType,
        entries: &[Vec<u8>],
        idem: &str,
    ) -> Result<(u32, u32), StoreError> {
        let decoded = entries
            .iter()
            .enumerate()
            .map(|(i, b)| {
                SignedEntry::from_bytes(b)
                    .map_err(|e| StoreError::Invalid(format!("entry {i}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        poz::verify::check_entry_times(zone, &decoded, now_ms().max(0) as u64)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let id = *id;
        let request: Vec<u8> = entries
            .iter()
            .flat_map(|e| e.iter().copied())
            .chain(id.0)
            .chain([zone.0])
            .collect();
        let idem = idem.to_owned();
        let reservation = self.options.reservation();
        self.tx(move |tx| {
            let (decoded, request, idem) = (decoded.clone(), request.clone(), idem.clone());
            Box::pin(async move {
                if let Some(r) = Self::idempotent(tx, &idem, &request).await? {
                    let n = u32::from_be_bytes([r[0], r[1], r[2], r[3]]);
                    return Ok((0, n));
                }
                let Some(head) =
                    sqlx::query("SELECT head_record FROM records WHERE record_id = $1")
                        .bind(id.0.to_vec())
                        .fetch_optional(&mut **tx)
                        .await?
                else {
                    return Err(StoreError::NotFound(format!("record {id}")));
                };
                // Entries outside the Identity Zone may name keys by index,
                // which their digests bind (SPEC §5.3): resolve them in the
                // head's Public Key Map. Identity entries name none, so a
                // bulk issue decodes no record.
                let keys = if zone == ZoneType::IDENTITY {
                    poz::keys::PublicKeyMap::default()
                } else {
                    let bytes: Vec<u8> = head.get(0);
                    Record::from_bytes(&bytes)
                        .map_err(|e| StoreError::Invalid(format!("stored head of {id}: {e}")))?
                        .keys
                };
                let (stored, present) =
                    Self::insert_entries(tx, &id, zone, &keys, &decoded, &reservation).await?;
                Self::remember(tx, &idem, &request, &(stored + present).to_be_bytes()).await?;
                Ok((stored, present))
            })
        })
        .await
        .inspect(|(stored, _)| self.after_bulk_insert(*stored as u64))
    }

    /// Postgres plans with statistics that autovacuum refreshes about once
    /// a minute at best; during a bulk issue the entries table grows from
    /// nothing to millions in that time, and with "empty table" statistics
    /// the planner scans the whole table by primary key for every handle
    /// lookup (seen: a bulk issue slowing to 1,100 bindings/s at 50,000).
    /// So the store refreshes them itself each time the entries it has
    /// stored doubles (10k, 20k, 40k, …): a few dozen ANALYZEs for a
    /// billion rows, each sampling 30,000 rows in the background.
    fn after_bulk_insert(&self, stored: u64) {
        use std::sync::atomic::Ordering;
        if self.backend != Backend::Postgres || stored == 0 {
            return;
        }
        let total = self.stored.fetch_add(stored, Ordering::Relaxed) + stored;
        let next = self.next_analyze.load(Ordering::Relaxed);
        if total >= next
            && self
                .next_analyze
                .compare_exchange(next, total * 2, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let pool = self.pool.clone();
            tokio::spawn(async move {
                match sqlx::query("ANALYZE entries").execute(&pool).await {
                    Ok(_) => tracing::debug!(total, "refreshed statistics of entries"),
                    Err(e) => tracing::warn!(error = %e, "ANALYZE entries failed"),
                }
            });
        }
    }

    /// Advances a record's head to the master zone of `bytes` by
    /// compare-and-swap on `expected_serial`. The new revision must verify
    /// completely with the stored chain.
    pub async fn advance_head(
        &self,
        bytes: &[u8],
        expected_serial: u32,
        idem: &str,
    ) -> Result<(u32, Hash32), StoreError> {
        let rec =
            Record::from_bytes(bytes).map_err(|e| StoreError::Invalid(format!("record: {e}")))?;
        poz::verify::check_times(&rec, now_ms().max(0) as u64)
            .map_err(|e| StoreError::Invalid(format!("update: {e}")))?;
        let id = rec.id();
        let new = rec.master.clone();
        if new.serial != expected_serial.wrapping_add(1) {
            return Err(StoreError::Invalid(format!(
                "revision {} does not follow serial {expected_serial}",
                new.serial
            )));
        }
        // Check the update against the stored chain, outside the
        // transaction (it is read-only and may be slow): the stored
        // history with the new revision must verify from genesis.
        let stored = self.history(&id, 1).await?;
        if stored.is_empty() {
            return Err(StoreError::NotFound(format!("record {id}")));
        }
        // Judge against what is stored before verifying: a fork, a retry of
        // a revision already stored, or a stale expectation.
        if let Some(existing) = stored.iter().find(|m| m.serial == new.serial) {
            if existing.current_master_hash == new.current_master_hash {
                return Ok((new.serial, new.current_master_hash));
            }
            let detail = format!(
                "a second, different revision {} was submitted (hash {})",
                new.serial, new.current_master_hash
            );
            if let Err(e) = self.security_event(Some(&id), "fork", &detail).await {
                tracing::error!(%e, "could not record a fork security event");
            }
            return Err(StoreError::Fork {
                record_id: id,
                serial: new.serial,
            });
        }
        let head = stored.last().map(|m| m.serial).unwrap_or(0);
        if head != expected_serial {
            return Err(StoreError::Conflict {
                record_id: id,
                head,
                expected: expected_serial,
            });
        }
        let mut candidate = rec.clone();
        candidate.history = stored
            .iter()
            .filter(|m| m.serial < new.serial)
            .cloned()
            .collect();
        let report = poz::verify_record(&candidate);
        if !report.is_valid() {
            let f: Vec<String> = report
                .failures()
                .map(|(r, d)| format!("{r}: {d}"))
                .collect();
            return Err(StoreError::Invalid(format!(
                "update does not verify: {}",
                f.join("; ")
            )));
        }
        use poz::verify::{Outcome, Rule};
        for rule in [Rule::ChainGenesis, Rule::MasterThreshold] {
            if report.outcome(rule) != Some(&Outcome::Pass) {
                return Err(StoreError::Invalid(format!(
                    "update: {rule} could not be checked against the stored chain"
                )));
            }
        }
        let shell = head_shell(&rec);
        let idem = idem.to_owned();
        let bytes = bytes.to_vec();
        let zones = rec.zones.clone();
        let keys = rec.keys.clone();
        let reservation = self.options.reservation();
        let result = self.tx(move |tx| {
            let (new, shell, idem, bytes, zones, keys) = (new.clone(), shell.clone(), idem.clone(), bytes.clone(), zones.clone(), keys.clone());
            Box::pin(async move {
                if let Some(r) = Self::idempotent(tx, &idem, &bytes).await? {
                    let mut h = [0u8; 32];
                    h.copy_from_slice(&r[4..36]);
                    return Ok((u32::from_be_bytes([r[0], r[1], r[2], r[3]]), Hash32(h)));
                }
                let now = now_ms();
                let upd = sqlx::query(
                    "UPDATE records SET head_serial = $1, head_hash = $2, head_timestamp = $3, head_record = $4, updated_ms = $5 \
                     WHERE record_id = $6 AND head_serial = $7 AND head_hash = $8",
                )
                .bind(i64::from(new.serial))
                .bind(new.current_master_hash.0.to_vec())
                .bind(db_time("master.timestamp", new.timestamp)?)
                .bind(shell)
                .bind(now)
                .bind(id.0.to_vec())
                .bind(i64::from(expected_serial))
                .bind(new.previous_master_hash.0.to_vec())
                .execute(&mut **tx)
                .await?;
                if upd.rows_affected() != 1 {
                    return Err(Self::why_not_advanced(tx, &id, &new, expected_serial).await);
                }
                sqlx::query("INSERT INTO master_revisions (record_id, serial, master_hash, master_zone, stored_ms) VALUES ($1, $2, $3, $4, $5)")
                    .bind(id.0.to_vec())
                    .bind(i64::from(new.serial))
                    .bind(new.current_master_hash.0.to_vec())
                    .bind(new.to_bytes())
                    .bind(now)
                    .execute(&mut **tx)
                    .await?;
                for (z, zs) in &zones {
                    Self::insert_entries(tx, &id, *z, &keys, &zs.entries, &reservation).await?;
                }
                let mut resp = new.serial.to_be_bytes().to_vec();
                resp.extend_from_slice(&new.current_master_hash.0);
                Self::remember(tx, &idem, &bytes, &resp).await?;
                Ok((new.serial, new.current_master_hash))
            })
        })
        .await;
        if let Err(StoreError::Fork { record_id, serial }) = &result {
            let detail = format!(
                "a second, different revision {serial} was submitted (hash {})",
                rec.master.current_master_hash
            );
            if let Err(e) = self.security_event(Some(record_id), "fork", &detail).await {
                tracing::error!(%e, "could not record a fork security event");
            }
            tracing::warn!(record = %record_id, serial, "fork refused");
        }
        result
    }

    /// Explains a lost compare-and-swap: the same revision already stored
    /// (fine), a different one (a fork: recorded), or a stale expectation.
    async fn why_not_advanced(
        tx: &mut Transaction<'static, Any>,
        id: &Hash32,
        new: &MasterZone,
        expected: u32,
    ) -> StoreError {
        let head = match sqlx::query("SELECT head_serial FROM records WHERE record_id = $1")
            .bind(id.0.to_vec())
            .fetch_optional(&mut **tx)
            .await
        {
            Ok(Some(r)) => r.get::<i64, _>(0) as u32,
            Ok(None) => return StoreError::NotFound(format!("record {id}")),
            Err(e) => return e.into(),
        };
        let existing = sqlx::query(
            "SELECT master_hash FROM master_revisions WHERE record_id = $1 AND serial = $2",
        )
        .bind(id.0.to_vec())
        .bind(i64::from(new.serial))
        .fetch_optional(&mut **tx)
        .await;
        if let Ok(Some(r)) = existing {
            let h: Vec<u8> = r.get(0);
            if h != new.current_master_hash.0 {
                return StoreError::Fork {
                    record_id: *id,
                    serial: new.serial,
                };
            }
        }
        StoreError::Conflict {
            record_id: *id,
            head,
            expected,
        }
    }

    /// Records a security event (forks, tampering) for operators. Written
    /// outside the failed transaction so it survives its rollback.
    pub async fn security_event(
        &self,
        record_id: Option<&Hash32>,
        kind: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO security_events (event_id, record_id, kind, detail, at_ms) VALUES ($1, $2, $3, $4, $5)")
            .bind(random_id())
            .bind(record_id.map(|h| h.0.to_vec()))
            .bind(kind)
            .bind(detail)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Appends one signature to the audit log; returns its audit ID.
    pub async fn append_signature(&self, row: &SignatureAudit) -> Result<u64, StoreError> {
        let ids = self.append_signatures(std::slice::from_ref(row)).await?;
        ids.first()
            .copied()
            .ok_or_else(|| StoreError::Invalid("no audit row written".into()))
    }

    /// Appends several audit rows in one transaction (one commit for a
    /// group of signatures), returning their IDs in order. All or none.
    pub async fn append_signatures(&self, rows: &[SignatureAudit]) -> Result<Vec<u64>, StoreError> {
        // Random 63-bit IDs: portable (no sequences) and unguessable.
        let ids: Vec<u64> = rows
            .iter()
            .map(|_| u64::from_be_bytes(random_id()[..8].try_into().unwrap_or([0; 8])) >> 1)
            .collect();
        let at = now_ms();
        let rows = rows.to_vec();
        let chunk_ids = ids.clone();
        self.tx(move |tx| {
            let (rows, ids) = (rows.clone(), chunk_ids.clone());
            Box::pin(async move {
                for (chunk, ids) in rows
                    .chunks(AUDIT_ROWS_PER_STATEMENT)
                    .zip(ids.chunks(AUDIT_ROWS_PER_STATEMENT))
                {
                    let sql = multi_row_insert(
                        "INSERT INTO signature_audit (audit_id, at_ms, key_id, record_id, zone_type, what, digest, signature)",
                        chunk.len(),
                        8,
                    );
                    let mut q = sqlx::query(&sql);
                    for (row, id) in chunk.iter().zip(ids) {
                        q = q
                            .bind(i64::try_from(*id).unwrap_or(i64::MAX))
                            .bind(at)
                            .bind(row.key_id.0.to_vec())
                            .bind(row.record_id.0.to_vec())
                            .bind(row.zone_type as i32)
                            .bind(row.what.clone())
                            .bind(row.digest.0.to_vec())
                            .bind(row.signature.clone());
                    }
                    q.execute(&mut **tx).await?;
                }
                Ok(())
            })
        })
        .await?;
        Ok(ids)
    }

    /// Records a submission, or moves it on. A new ID is inserted as
    /// given. For a known ID the request must ask the same (the same
    /// bytes, or for SUBMIT_REQUEST payloads the same domain, handle and
    /// subject whatever the proof; else IdempotencyMismatch). Issued stays
    /// issued; a pending one takes the new state; a refused one is opened
    /// again by a new pending request (the handle may have been freed).
    ///
    /// A SUBMIT_REQUEST payload counts against its subject (SPEC §14.4):
    /// a pending request older than `pending_ttl` is refused as expired,
    /// and a new pending request beyond `pending_per_subject` is
    /// TooManyPending. Returns what is stored.
    pub async fn put_submission(&self, sub: &Submission) -> Result<Submission, StoreError> {
        if sub.state > 3 {
            return Err(StoreError::Invalid(format!(
                "submission state {}",
                sub.state
            )));
        }
        let sub = sub.clone();
        let asked = poz::wire::SubmitRequest::from_bytes(&sub.request).ok();
        let limit = self.options.pending_per_subject;
        let ttl_ms = i64::try_from(self.options.pending_ttl.as_millis()).unwrap_or(i64::MAX);
        self.tx(move |tx| {
            let (sub, asked) = (sub.clone(), asked.clone());
            Box::pin(async move {
                let now = now_ms();
                let subject = asked.as_ref().map(|a| a.subject.0.to_vec());
                if let Some(subject) = &subject {
                    // Expire this subject's stale pending requests first.
                    sqlx::query(
                        "UPDATE submissions SET state = 3, message = $1, updated_ms = $2 \
                         WHERE subject = $3 AND state = 1 AND created_ms <= $4",
                    )
                    .bind("expired: the provider did not decide in time; ask again")
                    .bind(now)
                    .bind(subject.clone())
                    .bind(now.saturating_sub(ttl_ms))
                    .execute(&mut **tx)
                    .await?;
                }
                let row = sqlx::query(
                    "SELECT state, request, entry, message FROM submissions WHERE submission_id = $1",
                )
                .bind(sub.id.to_vec())
                .fetch_optional(&mut **tx)
                .await?;
                let stored = row.map(|row| Submission {
                    id: sub.id,
                    state: row.get::<i32, _>(0) as u8,
                    request: row.get(1),
                    entry: row.get(2),
                    message: row.get(3),
                });
                if let Some(stored) = &stored {
                    let same_ask = stored.request == sub.request
                        || match (&asked, poz::wire::SubmitRequest::from_bytes(&stored.request)) {
                            (Some(a), Ok(b)) => {
                                a.domain.eq_ignore_ascii_case(&b.domain)
                                    && a.handle == b.handle
                                    && a.subject == b.subject
                            }
                            _ => false,
                        };
                    if !same_ask {
                        return Err(StoreError::IdempotencyMismatch(hex::encode(sub.id)));
                    }
                    let reopen = stored.state == 3 && sub.state == 1;
                    // Pending moves on; committed and issued stay.
                    if !reopen && (stored.state != 1 || sub.state == 1) {
                        return Ok(stored.clone());
                    }
                }
                let opens = sub.state == 1 && stored.as_ref().is_none_or(|s| s.state != 1);
                if let (true, Some(subject), Some(a)) = (opens, &subject, &asked) {
                    let pending = sqlx::query(
                        "SELECT COUNT(*) FROM submissions WHERE subject = $1 AND state = 1",
                    )
                    .bind(subject.clone())
                    .fetch_one(&mut **tx)
                    .await?
                    .get::<i64, _>(0);
                    if pending >= i64::from(limit) {
                        return Err(StoreError::TooManyPending {
                            subject: a.subject,
                            limit,
                        });
                    }
                }
                if stored.is_none() {
                    sqlx::query(
                        "INSERT INTO submissions (submission_id, state, request, entry, message, updated_ms, subject, created_ms) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $6)",
                    )
                    .bind(sub.id.to_vec())
                    .bind(sub.state as i32)
                    .bind(sub.request.clone())
                    .bind(sub.entry.clone())
                    .bind(sub.message.clone())
                    .bind(now)
                    .bind(subject)
                    .execute(&mut **tx)
                    .await?;
                    return Ok(sub);
                }
                // Reopened requests start their time again.
                sqlx::query(
                    "UPDATE submissions SET state = $2, entry = $3, message = $4, updated_ms = $5, \
                     created_ms = CASE WHEN $2 = 1 THEN $5 ELSE created_ms END \
                     WHERE submission_id = $1",
                )
                .bind(sub.id.to_vec())
                .bind(sub.state as i32)
                .bind(sub.entry.clone())
                .bind(sub.message.clone())
                .bind(now)
                .execute(&mut **tx)
                .await?;
                Ok(Submission {
                    request: stored.map(|s| s.request).unwrap_or(sub.request.clone()),
                    ..sub
                })
            })
        })
        .await
    }

    /// A submission by ID.
    pub async fn submission(&self, id: &[u8; 16]) -> Result<Submission, StoreError> {
        let row = sqlx::query(
            "SELECT state, request, entry, message, created_ms FROM submissions WHERE submission_id = $1",
        )
        .bind(id.to_vec())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("submission {}", hex::encode(id))))?;
        let mut sub = Submission {
            id: *id,
            state: row.get::<i32, _>(0) as u8,
            request: row.get(1),
            entry: row.get(2),
            message: row.get(3),
        };
        // A pending request past its time reads as refused (expired) even
        // before its subject's next request rewrites the row.
        let ttl_ms = i64::try_from(self.options.pending_ttl.as_millis()).unwrap_or(i64::MAX);
        let created = row.get::<Option<i64>, _>(4);
        if sub.state == 1 && created.is_some_and(|c| c <= now_ms().saturating_sub(ttl_ms)) {
            sub.state = 3;
            sub.message = "expired: the provider did not decide in time; ask again".into();
        }
        Ok(sub)
    }

    /// The domains bound to a record, in order.
    pub async fn domains_of(&self, id: &Hash32) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT domain FROM domains WHERE record_id = $1 ORDER BY domain")
            .bind(id.0.to_vec())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| r.get::<String, _>(0)).collect())
    }

    /// Closes the pool: every connection finishes and is closed (SQLite:
    /// the WAL is checkpointed), so the files can be moved.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The audit log of one record's signatures, oldest first.
    pub async fn signature_audit(
        &self,
        record_id: &Hash32,
    ) -> Result<Vec<(u64, SignatureAudit)>, StoreError> {
        let rows = sqlx::query(
            "SELECT audit_id, key_id, record_id, zone_type, what, digest, signature FROM signature_audit \
             WHERE record_id = $1 ORDER BY at_ms, audit_id",
        )
        .bind(record_id.0.to_vec())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.get::<i64, _>(0) as u64,
                    SignatureAudit {
                        key_id: to_hash(&r.get::<Vec<u8>, _>(1))?,
                        record_id: to_hash(&r.get::<Vec<u8>, _>(2))?,
                        zone_type: r.get::<i32, _>(3) as u8,
                        what: r.get(4),
                        digest: to_hash(&r.get::<Vec<u8>, _>(5))?,
                        signature: r.get(6),
                    },
                ))
            })
            .collect()
    }

    /// Security events of a record, oldest first.
    pub async fn security_events(
        &self,
        record_id: &Hash32,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT kind, detail FROM security_events WHERE record_id = $1 ORDER BY at_ms",
        )
        .bind(record_id.0.to_vec())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The record a domain maps to.
    pub async fn resolve(&self, domain: &str) -> Result<Hash32, StoreError> {
        let r = sqlx::query("SELECT record_id FROM domains WHERE domain = $1")
            .bind(domain)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no record for domain {domain}")))?;
        let b: Vec<u8> = r.get(0);
        to_hash(&b)
    }

    /// The head: (serial, master hash, timestamp).
    pub async fn head(&self, id: &Hash32) -> Result<(u32, Hash32, u64), StoreError> {
        let r = sqlx::query(
            "SELECT head_serial, head_hash, head_timestamp FROM records WHERE record_id = $1",
        )
        .bind(id.0.to_vec())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("record {id}")))?;
        Ok((
            r.get::<i64, _>(0) as u32,
            to_hash(&r.get::<Vec<u8>, _>(1))?,
            r.get::<i64, _>(2) as u64,
        ))
    }

    /// Master-zone revisions from `from` on, oldest first.
    pub async fn history(&self, id: &Hash32, from: u32) -> Result<Vec<MasterZone>, StoreError> {
        let rows = sqlx::query("SELECT master_zone FROM master_revisions WHERE record_id = $1 AND serial >= $2 ORDER BY serial")
            .bind(id.0.to_vec())
            .bind(i64::from(from))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                MasterZone::from_bytes(&r.get::<Vec<u8>, _>(0))
                    .map_err(|e| StoreError::Invalid(format!("stored revision: {e}")))
            })
            .collect()
    }

    /// The whole record at its head: history from genesis and every entry
    /// of the zones in `zones` (all zones if empty).
    pub async fn record(&self, id: &Hash32, zones: &[ZoneType]) -> Result<Record, StoreError> {
        let row = sqlx::query("SELECT head_record FROM records WHERE record_id = $1")
            .bind(id.0.to_vec())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("record {id}")))?;
        let mut rec = Record::from_bytes(&row.get::<Vec<u8>, _>(0))
            .map_err(|e| StoreError::Invalid(format!("stored head: {e}")))?;
        let mut hist = self.history(id, 1).await?;
        hist.retain(|m| m.serial < rec.master.serial);
        rec.history = hist;
        // Only the zones asked for are read: a provider's Identity Zone can
        // hold millions of bindings, which MASTER never carries (reading
        // them all for every MASTER answer was seen to slow a bulk issue
        // from 15,000 to 5,000 bindings/s at one million).
        let mut sql = String::from("SELECT zone_type, entry FROM entries WHERE record_id = $1");
        if !zones.is_empty() {
            let list: Vec<String> = zones.iter().map(|z| z.0.to_string()).collect();
            sql.push_str(&format!(" AND zone_type IN ({})", list.join(", ")));
        }
        let rows = sqlx::query(&sql)
            .bind(id.0.to_vec())
            .fetch_all(&self.pool)
            .await?;
        for r in rows {
            let z = ZoneType(r.get::<i32, _>(0) as u8);
            let e = SignedEntry::from_bytes(&r.get::<Vec<u8>, _>(1))
                .map_err(|e| StoreError::Invalid(format!("stored entry: {e}")))?;
            rec.zones
                .entry(z)
                .or_insert_with(ZoneSection::default)
                .upsert(e);
        }
        Ok(rec)
    }

    /// The MASTER answer: the record without Identity Zone entries.
    pub async fn master_answer(&self, id: &Hash32) -> Result<Vec<u8>, StoreError> {
        let zones: Vec<ZoneType> = ZoneType::ALL
            .into_iter()
            .filter(|z| *z != ZoneType::IDENTITY)
            .collect();
        Ok(self.record(id, &zones).await?.to_bytes())
    }

    /// The latest binding for `handle` and its revocation, if any.
    pub async fn binding(
        &self,
        id: &Hash32,
        handle: &str,
    ) -> Result<(SignedEntry, Option<SignedEntry>), StoreError> {
        // One round trip: the latest binding for the handle, and a
        // revocation naming it if there is one (any one revokes it).
        let r = sqlx::query(
            "SELECT b.entry, r.entry FROM entries b \
             LEFT JOIN entries r ON r.record_id = b.record_id AND r.zone_type = b.zone_type AND r.target = b.digest \
             WHERE b.record_id = $1 AND b.zone_type = $2 AND b.handle = $3 AND b.kind = $4 \
             ORDER BY b.issued_at DESC LIMIT 1",
        )
        .bind(id.0.to_vec())
        .bind(ZoneType::IDENTITY.0 as i32)
        .bind(handle)
        .bind(EntryKind::GRANT.0 as i32)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no binding for handle {handle:?}")))?;
        decode_binding(&r.get::<Vec<u8>, _>(0), r.get(1))
    }

    /// [`Store::binding`] by domain in the same one round trip (the
    /// domain joined in): the hot path of every IDENTITY lookup. A miss
    /// costs one more query to say whether the domain or the handle is
    /// unknown.
    pub async fn binding_by_domain(
        &self,
        domain: &str,
        handle: &str,
    ) -> Result<(SignedEntry, Option<SignedEntry>), StoreError> {
        let r = sqlx::query(
            "SELECT b.entry, r.entry FROM domains d \
             JOIN entries b ON b.record_id = d.record_id AND b.zone_type = $2 AND b.handle = $3 AND b.kind = $4 \
             LEFT JOIN entries r ON r.record_id = b.record_id AND r.zone_type = b.zone_type AND r.target = b.digest \
             WHERE d.domain = $1 \
             ORDER BY b.issued_at DESC LIMIT 1",
        )
        .bind(domain)
        .bind(ZoneType::IDENTITY.0 as i32)
        .bind(handle)
        .bind(EntryKind::GRANT.0 as i32)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = r else {
            self.resolve(domain).await?;
            return Err(StoreError::NotFound(format!(
                "no binding for handle {handle:?}"
            )));
        };
        decode_binding(&r.get::<Vec<u8>, _>(0), r.get(1))
    }

    /// [`Store::binding_by_domain`] for many (domain, handle) pairs in one
    /// statement per [`LOOKUPS_PER_QUERY`]: the query gateways gather the
    /// IDENTITY lookups that arrive while earlier ones are in flight and
    /// ask for them together, so a busy gateway pays one round trip and one
    /// statement for a group instead of one per lookup. The answers come
    /// back in the order asked, each found or NotFound (naming whether the
    /// domain or the handle is unknown); a database failure fails the lot.
    pub async fn lookup_bindings(
        &self,
        asks: &[(String, String)],
    ) -> Result<Vec<Result<BindingAnswer, StoreError>>, StoreError> {
        let mut out: Vec<Result<BindingAnswer, StoreError>> = Vec::with_capacity(asks.len());
        for (n, chunk) in asks.chunks(LOOKUPS_PER_QUERY).enumerate() {
            // The pairs as a VALUES list (both backends accept it in a
            // CTE), each joined to its record by domain.
            let mut sql = String::from("WITH q(i, domain, handle) AS (VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let p = 3 + 3 * i;
                sql.push_str(&format!("(${}, ${}, ${})", p, p + 1, p + 2));
            }
            sql.push_str(match self.backend {
                // The newest binding straight from the handle index (one
                // probe and its heap row), then a revocation naming it by
                // the target index: two probes per pair.
                Backend::Postgres => {
                    ") SELECT q.i, d.record_id, b.entry, \
                       (SELECT r.entry FROM entries r WHERE r.record_id = d.record_id AND r.zone_type = $1 \
                        AND r.target = b.digest LIMIT 1) \
                     FROM q LEFT JOIN domains d ON d.domain = q.domain \
                     LEFT JOIN LATERAL (SELECT e.entry, e.digest FROM entries e \
                       WHERE e.record_id = d.record_id AND e.zone_type = $1 AND e.handle = q.handle \
                       AND e.kind = $2 ORDER BY e.issued_at DESC LIMIT 1) b ON true"
                }
                // SQLite has no LATERAL: the newest binding's digest by
                // the handle index, then the row by primary key.
                Backend::Sqlite => {
                    "), b AS (SELECT q.i, d.record_id AS rid, \
                       (SELECT e.digest FROM entries e WHERE e.record_id = d.record_id AND e.zone_type = $1 \
                        AND e.handle = q.handle AND e.kind = $2 ORDER BY e.issued_at DESC LIMIT 1) AS digest \
                       FROM q LEFT JOIN domains d ON d.domain = q.domain) \
                     SELECT b.i, b.rid, e.entry, \
                       (SELECT r.entry FROM entries r WHERE r.record_id = b.rid AND r.zone_type = $1 \
                        AND r.target = b.digest LIMIT 1) \
                     FROM b LEFT JOIN entries e ON e.record_id = b.rid AND e.zone_type = $1 AND e.digest = b.digest"
                }
            });
            let mut q = sqlx::query(&sql)
                .bind(ZoneType::IDENTITY.0 as i32)
                .bind(EntryKind::GRANT.0 as i32);
            for (i, (domain, handle)) in chunk.iter().enumerate() {
                q = q
                    .bind(i64::try_from(i).unwrap_or(i64::MAX))
                    .bind(domain.to_ascii_lowercase())
                    .bind(handle.as_str());
            }
            let rows = q.fetch_all(&self.pool).await?;
            let mut answers: Vec<Option<Result<BindingAnswer, StoreError>>> =
                (0..chunk.len()).map(|_| None).collect();
            for r in rows {
                let i = r.get::<i64, _>(0);
                let Some(slot) = usize::try_from(i).ok().and_then(|i| answers.get_mut(i)) else {
                    return Err(StoreError::Invalid(format!("lookup row for no pair ({i})")));
                };
                let (domain, handle) = &chunk[i as usize];
                let answer = match (
                    r.get::<Option<Vec<u8>>, _>(1),
                    r.get::<Option<Vec<u8>>, _>(2),
                ) {
                    (None, _) => Err(StoreError::NotFound(format!(
                        "no record for domain {domain}"
                    ))),
                    (Some(_), None) => Err(StoreError::NotFound(format!(
                        "no binding for handle {handle:?}"
                    ))),
                    (Some(_), Some(entry)) => decode_binding(&entry, r.get(3)),
                };
                *slot = Some(answer);
            }
            for (i, a) in answers.into_iter().enumerate() {
                match a {
                    Some(a) => out.push(a),
                    None => {
                        return Err(StoreError::Invalid(format!(
                            "no lookup row for pair {}",
                            n * LOOKUPS_PER_QUERY + i
                        )))
                    }
                }
            }
        }
        Ok(out)
    }

    /// The newest binding of each of `handles` (those that have one), with
    /// whether it is revoked: the Provider API's duplicate check for a
    /// bulk issue, a few hundred handles per query.
    pub async fn bindings_for_handles(
        &self,
        id: &Hash32,
        handles: &[String],
    ) -> Result<Vec<(String, SignedEntry, bool)>, StoreError> {
        let mut newest: std::collections::HashMap<String, (i64, Vec<u8>, bool)> =
            std::collections::HashMap::new();
        for chunk in handles.chunks(HANDLES_PER_QUERY) {
            let mut sql = String::from(
                "SELECT b.handle, b.issued_at, b.entry, r.digest FROM entries b \
                 LEFT JOIN entries r ON r.record_id = b.record_id AND r.zone_type = b.zone_type AND r.target = b.digest \
                 WHERE b.record_id = $1 AND b.zone_type = $2 AND b.kind = $3 AND b.handle IN (",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", i + 4));
            }
            sql.push(')');
            let mut q = sqlx::query(&sql)
                .bind(id.0.to_vec())
                .bind(ZoneType::IDENTITY.0 as i32)
                .bind(EntryKind::GRANT.0 as i32);
            for h in chunk {
                q = q.bind(h.clone());
            }
            for r in q.fetch_all(&self.pool).await? {
                let handle: String = r.get(0);
                let at: i64 = r.get::<Option<i64>, _>(1).unwrap_or(0);
                let revoked = r.get::<Option<Vec<u8>>, _>(3).is_some();
                let newer = newest.get(&handle).is_none_or(|(t, _, _)| at > *t);
                if newer {
                    newest.insert(handle, (at, r.get(2), revoked));
                }
            }
        }
        newest
            .into_iter()
            .map(|(h, (_, b, revoked))| {
                SignedEntry::from_bytes(&b)
                    .map(|e| (h, e, revoked))
                    .map_err(|e| StoreError::Invalid(format!("stored entry: {e}")))
            })
            .collect()
    }

    /// A page of a provider's bindings in handle order, after `after`.
    pub async fn list_bindings(
        &self,
        id: &Hash32,
        after: &str,
        limit: u32,
    ) -> Result<Vec<(String, SignedEntry, bool)>, StoreError> {
        let rows = sqlx::query(
            "SELECT b.handle, b.entry, r.digest FROM entries b \
             LEFT JOIN entries r ON r.record_id = b.record_id AND r.zone_type = b.zone_type AND r.target = b.digest \
             WHERE b.record_id = $1 AND b.zone_type = $2 AND b.kind = $3 \
             AND b.handle IS NOT NULL AND b.handle > $4 ORDER BY b.handle, b.issued_at DESC LIMIT $5",
        )
        .bind(id.0.to_vec())
        .bind(ZoneType::IDENTITY.0 as i32)
        .bind(EntryKind::GRANT.0 as i32)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let e = SignedEntry::from_bytes(&r.get::<Vec<u8>, _>(1))
                    .map_err(|e| StoreError::Invalid(format!("stored entry: {e}")))?;
                Ok((
                    r.get::<String, _>(0),
                    e,
                    r.get::<Option<Vec<u8>>, _>(2).is_some(),
                ))
            })
            .collect()
    }

    /// Every entry of the batch whose root digest is `root` (SPEC §8.9),
    /// in leaf order: what an auditor lists to check a batch
    /// (`poz::batch::audit_batch`).
    pub async fn batch(&self, id: &Hash32, root: &Hash32) -> Result<Vec<SignedEntry>, StoreError> {
        let rows =
            sqlx::query("SELECT entry FROM entries WHERE record_id = $1 AND batch_root = $2")
                .bind(id.0.to_vec())
                .bind(root.0.to_vec())
                .fetch_all(&self.pool)
                .await?;
        let mut entries = rows
            .iter()
            .map(|r| {
                SignedEntry::from_bytes(&r.get::<Vec<u8>, _>(0))
                    .map_err(|e| StoreError::Invalid(format!("stored entry: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        entries.sort_by_key(poz::batch::leaf_index_of);
        Ok(entries)
    }

    /// The CHAIN answer for `handle`.
    pub async fn chain(&self, id: &Hash32, handle: &str) -> Result<Vec<u8>, StoreError> {
        let (binding, revocation) = self.binding(id, handle).await?;
        // The Service Zone is read because the Identity authority may
        // name a service the answer must carry (SPEC §14.4).
        let rec = self.record(id, &[ZoneType::SERVICE]).await?;
        Ok(poz::serve::chain_record(&rec, binding, revocation).to_bytes())
    }

    /// Everything served for one record, for in-memory serving (pozd's
    /// cache, tests).
    pub async fn served(&self, id: &Hash32) -> Result<ServedRecord, StoreError> {
        Ok(ServedRecord::new(self.record(id, &[]).await?, Vec::new()))
    }

    /// One ZONE page (SPEC §14.4): entries of `zone` with digests above
    /// `after`, ascending, at most `limit`, read by primary key in the
    /// database (never the whole zone: an Identity Zone can hold
    /// millions), and the cursor for the next page if there is one.
    pub async fn zone_page(
        &self,
        id: &Hash32,
        zone: ZoneType,
        after: &Hash32,
        limit: u16,
    ) -> Result<(Vec<Vec<u8>>, Option<Hash32>), StoreError> {
        let rows = sqlx::query(
            "SELECT digest, entry FROM entries WHERE record_id = $1 AND zone_type = $2 AND digest > $3 \
             ORDER BY digest LIMIT $4",
        )
        .bind(id.0.to_vec())
        .bind(zone.0 as i32)
        .bind(after.0.to_vec())
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let more = rows.len() > limit as usize;
        let mut entries = Vec::with_capacity(rows.len().min(limit as usize));
        let mut last = None;
        for r in rows.iter().take(limit as usize) {
            last = Some(to_hash(&r.get::<Vec<u8>, _>(0))?);
            entries.push(r.get::<Vec<u8>, _>(1));
        }
        Ok((entries, if more { last } else { None }))
    }

    /// Counts identity bindings of a record (for operators and tests).
    pub async fn count_bindings(&self, id: &Hash32) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "SELECT COUNT(*) FROM entries WHERE record_id = $1 AND zone_type = $2 AND kind = $3",
        )
        .bind(id.0.to_vec())
        .bind(ZoneType::IDENTITY.0 as i32)
        .bind(EntryKind::GRANT.0 as i32)
        .fetch_one(&self.pool)
        .await?;
        Ok(r.get::<i64, _>(0) as u64)
    }
}

fn to_hash(b: &[u8]) -> Result<Hash32, StoreError> {
    let a: [u8; 32] = b
        .try_into()
        .map_err(|_| StoreError::Invalid("stored hash is not 32 bytes".into()))?;
    Ok(Hash32(a))
}
