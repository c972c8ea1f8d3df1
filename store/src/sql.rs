//! The SQL both backends share: transactions (retried on serialization
//! failures, SQLite writers taking the lock at BEGIN), idempotency keys,
//! multi-row INSERT text, and the conversions of times, IDs and hashes to
//! and from their columns.

use crate::error::StoreError;
use crate::{Backend, Store};
use poz::Hash32;
use sqlx::{Any, Row, Transaction};
use std::time::Duration;

/// A u64 time as the database stores it (BIGINT): refused when ≥ 2^63.
pub(crate) fn db_time(field: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::TimeOutOfRange { field, value })
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn random_id() -> Vec<u8> {
    use rand_core::RngCore;
    let mut b = vec![0u8; 16];
    rand_core::OsRng.fill_bytes(&mut b);
    b
}

/// `head VALUES ($1, …, $cols), …` for `rows` rows of `cols` parameters.
pub(crate) fn multi_row_insert(head: &str, rows: usize, cols: usize) -> String {
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

pub(crate) fn to_hash(b: &[u8]) -> Result<Hash32, StoreError> {
    let a: [u8; 32] = b
        .try_into()
        .map_err(|_| StoreError::Invalid("stored hash is not 32 bytes".into()))?;
    Ok(Hash32(a))
}

impl Store {
    /// Runs `f` in a transaction, retrying serialization failures.
    pub(crate) async fn tx<T, F>(&self, mut f: F) -> Result<T, StoreError>
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
                    // 20, 40, 80 ms …, at most 1.28 s a wait.
                    tokio::time::sleep(Duration::from_millis(10 << attempt.min(7))).await;
                }
                other => return other,
            }
        }
    }

    /// A read-only transaction whose reads all see one snapshot: Postgres
    /// REPEATABLE READ (its default, READ COMMITTED, takes a new snapshot
    /// per statement); SQLite's deferred transaction already reads one
    /// snapshot in WAL mode. The caller rolls it back when done.
    pub(crate) async fn snapshot(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin().await?,
            Backend::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?
            }
        })
    }

    /// Checks an idempotency key inside a transaction: `Some(response)`
    /// if this exact request was done before.
    pub(crate) async fn idempotent(
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

    pub(crate) async fn remember(
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
}

/// The store's `statement_timeout` (for requests: 5 s by default) off for
/// this transaction, for statements over a whole table that a large one
/// makes slow by nature: ANALYZE, a count, a copy batch or a count under
/// the partition swap's lock. (Seen: ANALYZE of 16 partitions and the
/// count of a 10-million-binding zone both cancelled at 5 s.)
pub(crate) async fn no_timeout(tx: &mut Transaction<'static, Any>) -> Result<(), StoreError> {
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// ` INDEXED BY index` on SQLite, nothing on Postgres. SQLite plans
/// without statistics and can prefer walking a zone in key order to a
/// selective index plus a sort; named, the index is used or the query
/// fails to prepare (loudly) instead of scanning. Postgres plans from its
/// statistics.
pub(crate) fn indexed_by(backend: Backend, index: &str) -> String {
    match backend {
        Backend::Sqlite => format!(" INDEXED BY {index}"),
        Backend::Postgres => String::new(),
    }
}
