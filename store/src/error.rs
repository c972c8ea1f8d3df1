//! Store failures, each mapped to one gRPC status by the service (`grpc.rs`).

use poz::Hash32;

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
    /// No replica has reached the read mark (a WAL position, bytes since
    /// `0/0`) within the wait, and reads may not fall back to the primary
    /// (`replica_fallback = "unavailable"`). UNAVAILABLE, with the retry
    /// hint in `grpc-retry-pushback-ms`.
    #[error("no read replica has reached position {mark} yet; retry in {retry_after:?}")]
    ReplicasBehind {
        mark: u64,
        retry_after: std::time::Duration,
    },
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
    ///
    /// And a unique violation of an idempotency key (issue 16): two
    /// transactions with one key (a retry racing the attempt it retries)
    /// both find the key free, and the later insert of it fails once the
    /// earlier commits. Started again, the transaction finds the key and
    /// answers as the first did.
    pub(crate) fn is_retryable_tx(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(e)) => {
                matches!(
                    e.code().as_deref(),
                    Some("40001" | "40P01" | "5" | "261" | "517" | "773")
                ) || (e.is_unique_violation() && e.message().contains("idempotency_keys"))
            }
            _ => false,
        }
    }
}
