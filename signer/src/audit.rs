//! The signer's audit log: one row per signature in the store's
//! `signature_audit` table, written before the signature leaves the signer.
//!
//! The signer only ever appends, so it neither links the store nor runs its
//! migrations: its database role needs INSERT on `signature_audit` and
//! nothing else, and the store must have migrated the database first (the
//! table is checked, by an INSERT rolled back, when the log opens).
//!
//! Both backends the store accepts go through sqlx's `Any` driver, chosen
//! by the URL: `postgres://…` (or `postgresql://…`) and `sqlite:…`.

use poz::Hash32;
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Transaction};
use std::time::Duration;

/// One row of the audit log (the columns of `signature_audit` but its ID
/// and time, which the log assigns).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SignatureAudit {
    /// The key that signed.
    pub key_id: Hash32,
    /// The record the signature belongs to (the draft's record, the
    /// entry's issuer).
    pub record_id: Hash32,
    /// The zone type code (0 for a master zone).
    pub zone_type: u8,
    /// What was signed: "master-draft", "entry", "batch-root",
    /// "ceremony-…".
    pub what: String,
    /// The signed digest.
    pub digest: Hash32,
    /// The signature encoding (SPEC §5).
    pub signature: Vec<u8>,
}

/// Which database is behind the pool: SQLite writers take the lock at
/// BEGIN (see [`SignatureAuditLog::append`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditBackend {
    Postgres,
    Sqlite,
}

/// Why the audit log could not be opened or written. A signature whose
/// row was not written is withheld.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The URL names neither backend.
    #[error("audit database URL must start with postgres:// or sqlite:")]
    Url,
    // The cause is in the message and deliberately not a `source`: an
    // error chain printed with its causes would say it twice.
    #[error("audit database: {0}")]
    Database(sqlx::Error),
    /// The table is missing or not writable by this role at open.
    #[error(
        "cannot write to signature_audit ({0}); the store must have migrated this \
         database, and the signer's role needs INSERT on signature_audit"
    )]
    NotWritable(sqlx::Error),
}

impl From<sqlx::Error> for AuditError {
    fn from(e: sqlx::Error) -> Self {
        AuditError::Database(e)
    }
}

impl AuditError {
    /// Postgres: serialization failure, deadlock. SQLite: SQLITE_BUSY and
    /// its extended codes (the same set the store retries).
    fn is_retryable(&self) -> bool {
        match self {
            AuditError::Database(sqlx::Error::Database(e)) => matches!(
                e.code().as_deref(),
                Some("40001" | "40P01" | "5" | "261" | "517" | "773")
            ),
            _ => false,
        }
    }
}

/// Audit rows per INSERT: 8 parameters each, far below both backends'
/// limits on bound parameters.
const ROWS_PER_STATEMENT: usize = 500;
/// Attempts for a transaction that failed with a retryable error.
const RETRIES: u32 = 3;

const INSERT_HEAD: &str = "INSERT INTO signature_audit \
     (audit_id, at_ms, key_id, record_id, zone_type, what, digest, signature)";

/// The append-only audit log of the signer.
#[derive(Clone, Debug)]
pub struct SignatureAuditLog {
    pool: AnyPool,
    backend: AuditBackend,
}

impl SignatureAuditLog {
    /// Connects to `url` and checks that a row can be inserted (inside a
    /// transaction rolled back: nothing is written). Runs no migrations.
    ///
    /// Errors: [`AuditError::Url`] for another scheme,
    /// [`AuditError::Database`] when the database cannot be reached,
    /// [`AuditError::NotWritable`] when the table is missing or the role
    /// may not insert into it.
    pub async fn open(url: &str) -> Result<SignatureAuditLog, AuditError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            AuditBackend::Postgres
        } else if url.starts_with("sqlite:") {
            AuditBackend::Sqlite
        } else {
            return Err(AuditError::Url);
        };
        let pool = AnyPoolOptions::new()
            // Few connections: audit writes are one short transaction per
            // group of signatures.
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    match backend {
                        AuditBackend::Postgres => {
                            sqlx::query("SET statement_timeout = 5000")
                                .execute(&mut *conn)
                                .await?;
                        }
                        AuditBackend::Sqlite => {
                            // As the store: WAL with FULL sync, so a row
                            // written survives a crash, and writers wait
                            // for the lock rather than fail.
                            for p in [
                                "PRAGMA journal_mode = WAL",
                                "PRAGMA synchronous = FULL",
                                "PRAGMA busy_timeout = 5000",
                            ] {
                                sqlx::query(p).execute(&mut *conn).await?;
                            }
                        }
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        let log = SignatureAuditLog { pool, backend };
        log.check_writable().await?;
        Ok(log)
    }

    /// A log over a pool already open on a migrated database (the
    /// in-process fleet shares the store's pool). No check is made.
    pub fn with_pool(pool: AnyPool, backend: AuditBackend) -> SignatureAuditLog {
        SignatureAuditLog { pool, backend }
    }

    /// Inserts one probe row and rolls it back: only INSERT is needed.
    async fn check_writable(&self) -> Result<(), AuditError> {
        let probe = SignatureAudit {
            key_id: Hash32([0; 32]),
            record_id: Hash32([0; 32]),
            zone_type: 0,
            what: "open-check".into(),
            digest: Hash32([0; 32]),
            signature: Vec::new(),
        };
        let mut tx = self.begin().await?;
        let r = insert(&mut tx, std::slice::from_ref(&probe), &[0], 0).await;
        let _ = tx.rollback().await;
        r.map_err(AuditError::NotWritable)
    }

    async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        // SQLite: take the write lock at BEGIN, so writers queue on it
        // (busy_timeout) instead of failing at once with BUSY_SNAPSHOT.
        match self.backend {
            AuditBackend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            AuditBackend::Postgres => self.pool.begin().await,
        }
    }

    /// Appends `rows` in one transaction (one commit for a group of
    /// signatures), returning their audit IDs (random, below 2^63) in
    /// order. All or none: on an error nothing is written and the caller
    /// must withhold the signatures.
    pub async fn append(&self, rows: &[SignatureAudit]) -> Result<Vec<u64>, AuditError> {
        // Random 63-bit IDs: portable (no sequences) and unguessable.
        let ids: Vec<u64> = rows.iter().map(|_| random_id()).collect();
        let at = now_ms();
        let mut attempt = 0;
        loop {
            let r = self.append_once(rows, &ids, at).await;
            match r {
                Err(e) if e.is_retryable() && attempt + 1 < RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
                }
                Err(e) => return Err(e),
                Ok(()) => return Ok(ids),
            }
        }
    }

    async fn append_once(
        &self,
        rows: &[SignatureAudit],
        ids: &[u64],
        at: i64,
    ) -> Result<(), AuditError> {
        let mut tx = self.begin().await?;
        for (chunk, ids) in rows
            .chunks(ROWS_PER_STATEMENT)
            .zip(ids.chunks(ROWS_PER_STATEMENT))
        {
            if let Err(e) = insert(&mut tx, chunk, ids, at).await {
                let _ = tx.rollback().await;
                return Err(e.into());
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

/// One multi-row INSERT of `rows` with their `ids`, at `at` (ms).
async fn insert(
    tx: &mut Transaction<'static, Any>,
    rows: &[SignatureAudit],
    ids: &[u64],
    at: i64,
) -> Result<(), sqlx::Error> {
    let sql = multi_row_insert(INSERT_HEAD, rows.len(), 8);
    let mut q = sqlx::query(&sql);
    for (row, id) in rows.iter().zip(ids) {
        q = q
            .bind(i64::try_from(*id).unwrap_or(i64::MAX))
            .bind(at)
            .bind(row.key_id.0.to_vec())
            .bind(row.record_id.0.to_vec())
            .bind(i32::from(row.zone_type))
            .bind(row.what.clone())
            .bind(row.digest.0.to_vec())
            .bind(row.signature.clone());
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

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

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A random ID below 2^63 (the column is a signed BIGINT).
fn random_id() -> u64 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u64() >> 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_row_insert_numbers_parameters_row_by_row() {
        assert_eq!(
            multi_row_insert("INSERT INTO t (a, b)", 2, 2),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"
        );
    }
}
