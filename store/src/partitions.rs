//! The entries table hash-partitioned on `handle` (Postgres only; issue
//! 17), reached from today's single heap online.
//!
//! Layout: `PARTITION BY HASH (handle)` into N partitions
//! `entries_p0 … entries_p{N-1}`. An identity binding's partition follows
//! from its handle, so a lookup by handle reads one partition's handle
//! index; rows without a handle (revocations, other zones' entries) hash
//! to the partition of remainder 0, where the revocation lookups (which
//! say `handle IS NULL`) find them by target. A unique index on a
//! partitioned table must hold the partition key, so the key becomes
//! `(record_id, zone_type, digest, handle) NULLS NOT DISTINCT` (Postgres
//! ≥ 15): as unique as today's primary key, because the digest covers the
//! handle. The store's inserts say `ON CONFLICT DO NOTHING`, which both
//! layouts (and SQLite) accept.
//!
//! The online path ([`Store::partition_entries`]), since Postgres cannot
//! partition a table in place:
//! 1. `entries_new` is created partitioned, with its indexes, empty;
//! 2. a trigger on `entries` repeats every insert, update and delete into
//!    it (each in the writer's own transaction);
//! 3. the existing rows are copied in key order, a batch per short
//!    transaction (`ON CONFLICT DO NOTHING`: rows the trigger copied
//!    first stay as they are);
//! 4. in one short transaction that locks `entries` against writers, the
//!    counts are compared and the tables (and their indexes) swap names;
//!    the trigger goes with the old table;
//! 5. the old table is dropped.
//!
//! Only step 4 blocks writers (for the time of a count and four renames).
//! The copy writes one table's worth of WAL, which replicas receive.
//! Runs of the path are serialised by an advisory lock; a run that died
//! half-way is taken up by the next (step 1 finds `entries_new` and
//! starts again from an empty one).

use crate::sql::no_timeout;
use crate::{Backend, Store, StoreError};
use sqlx::Row;
use std::time::{Duration, Instant};

/// The default of `poz-store partition-entries` (a fresh database is one
/// heap unless `entries_partitions` says otherwise).
pub const DEFAULT_PARTITIONS: u32 = 16;

/// Refuses a partition count outside 1..=1024 (what `poz-store
/// partition-entries --partitions` and [`Store::partition_entries`] take).
///
/// Errors: [`StoreError::Invalid`].
pub fn check_partitions(partitions: u32) -> Result<(), StoreError> {
    if (1..=1024).contains(&partitions) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "partitions: {partitions} is not in 1..=1024"
        )))
    }
}

/// Rows per copy transaction of the online path.
pub const COPY_BATCH: i64 = 10_000;

/// The advisory lock key held while the path runs ("pozpartn").
const LOCK_KEY: i64 = 0x706f_7a70_6172_746e;

/// How the entries table is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntriesLayout {
    /// One heap (SQLite always; Postgres before partitioning).
    OneHeap,
    /// Hash-partitioned on `handle` into this many partitions.
    Partitioned(u32),
}

/// What one run of the online path did.
#[derive(Clone, Debug)]
pub struct PartitionReport {
    /// Partitions of the table now (those it already had, when it was
    /// partitioned before the run).
    pub partitions: u32,
    /// Rows copied by the batches (rows the trigger copied not counted).
    pub copied: u64,
    /// Rows in the table when it swapped.
    pub rows: u64,
    /// Time of the whole run, and of the swap (writers blocked).
    pub took: Duration,
    pub swap: Duration,
}

impl Store {
    /// After the migrations: a Postgres entries table that is one heap
    /// and empty is partitioned at once ([`StoreOptions::entries_partitions`](crate::StoreOptions));
    /// one that holds rows is left for `poz-store partition-entries`
    /// (said in the log). A table already partitioned gets its batch index
    /// repaired if it is the first release's.
    pub(crate) async fn partition_if_fresh(&self) -> Result<(), StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        if let EntriesLayout::Partitioned(_) = self.entries_layout().await? {
            return self.repair_batch_index().await;
        }
        let parts = self.options.entries_partitions;
        if parts == 0 {
            return Ok(());
        }
        let any: Option<i32> = sqlx::query_scalar("SELECT 1 FROM entries LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        if any.is_some() {
            tracing::info!(
                "the entries table is one heap; `poz-store partition-entries` partitions it online"
            );
            return Ok(());
        }
        self.partition_entries(parts, COPY_BATCH, |_| {}).await?;
        Ok(())
    }

    /// A table partitioned by the first release of the partitioned layout
    /// got `entries_by_batch` on `(record_id, batch_root)`, without the
    /// `digest` that migration 0008 added so that BATCH pages are read in
    /// order: it is rebuilt with it (once; the index build holds a lock
    /// that blocks writes to entries while it runs, seconds per million
    /// batch-signed bindings). Serialised by a transaction advisory lock.
    async fn repair_batch_index(&self) -> Result<(), StoreError> {
        const OLD: &str = "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() \
             AND tablename = 'entries' AND indexname = 'entries_by_batch' \
             AND indexdef NOT LIKE '%digest%'";
        // Looked at before the lock: a start does not wait for a
        // partition-entries run that holds it, unless there is work.
        let old: i64 = sqlx::query_scalar(OLD).fetch_one(&self.pool).await?;
        if old == 0 {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        no_timeout(&mut tx).await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *tx)
            .await?;
        let old: i64 = sqlx::query_scalar(OLD).fetch_one(&mut *tx).await?;
        if old > 0 {
            tracing::info!("rebuilding entries_by_batch with digest (as migration 0008 has it)");
            for sql in [
                "DROP INDEX entries_by_batch",
                "CREATE INDEX entries_by_batch ON entries (record_id, batch_root, digest) WHERE batch_root IS NOT NULL",
            ] {
                sqlx::query(sql).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The entries table's layout.
    ///
    /// Errors: [`StoreError::Database`].
    pub async fn entries_layout(&self) -> Result<EntriesLayout, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(EntriesLayout::OneHeap);
        }
        let parts: Option<i64> = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = c.oid) \
             FROM pg_class c WHERE c.relname = 'entries' AND c.relkind = 'p' \
             AND c.relnamespace = current_schema()::regnamespace",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(match parts {
            Some(n) => EntriesLayout::Partitioned(n as u32),
            None => EntriesLayout::OneHeap,
        })
    }

    /// Partitions the entries table online into `partitions` hash
    /// partitions on `handle` (the module docs give the steps), while the
    /// store keeps serving and writing. Postgres only; a table already
    /// partitioned is left as it is, whatever `partitions` says (the
    /// report gives its partitions and 0 rows copied).
    /// `batch` rows per copy transaction ([`COPY_BATCH`] is the tool's);
    /// `progress` is called after each copy batch with the rows copied
    /// so far (the trigger is in place by then).
    ///
    /// Errors: [`StoreError::Invalid`] on SQLite, with `partitions` not
    /// in 1..=1024 or `batch` below 1, or when the counts differ at the
    /// swap (nothing is swapped; a rerun starts over);
    /// [`StoreError::Database`].
    pub async fn partition_entries(
        &self,
        partitions: u32,
        batch: i64,
        mut progress: impl FnMut(u64),
    ) -> Result<PartitionReport, StoreError> {
        let began = Instant::now();
        if self.backend != Backend::Postgres {
            return Err(StoreError::Invalid(
                "partitioned entries are a Postgres layout; SQLite keeps one table".into(),
            ));
        }
        check_partitions(partitions)?;
        if batch < 1 {
            return Err(StoreError::Invalid(format!(
                "copy batch: {batch} rows is not at least 1"
            )));
        }
        // One connection holds the advisory lock for the whole run (a
        // session lock: it goes when the connection does).
        let mut lock = self.pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *lock)
            .await?;
        let result = self
            .partition_locked(partitions, batch, &mut progress)
            .await;
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *lock)
            .await;
        let (partitions, copied, rows, swap) = result?;
        Ok(PartitionReport {
            partitions,
            copied,
            rows,
            took: began.elapsed(),
            swap,
        })
    }

    async fn partition_locked(
        &self,
        partitions: u32,
        batch_rows: i64,
        progress: &mut impl FnMut(u64),
    ) -> Result<(u32, u64, u64, Duration), StoreError> {
        if let EntriesLayout::Partitioned(existing) = self.entries_layout().await? {
            let mut tx = self.pool.begin().await?;
            no_timeout(&mut tx).await?;
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM entries")
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok((existing, 0, rows as u64, Duration::ZERO));
        }
        // 1 and 2: the new table, its indexes and the trigger, in one
        // transaction (a run that died half-way left them: start again).
        let mut tx = self.pool.begin().await?;
        for sql in new_table_sql(partitions) {
            sqlx::query(&sql).execute(&mut *tx).await?;
        }
        tx.commit().await?;

        // 3: the rows already there, in key order, a batch at a time.
        let mut copied = 0u64;
        let mut last: Option<(Vec<u8>, i32, Vec<u8>)> = None;
        loop {
            let mut tx = self.pool.begin().await?;
            no_timeout(&mut tx).await?;
            let batch = match &last {
                None => sqlx::query(
                    "WITH b AS (SELECT * FROM entries ORDER BY record_id, zone_type, digest LIMIT $1), \
                     i AS (INSERT INTO entries_new SELECT * FROM b ON CONFLICT DO NOTHING) \
                     SELECT count(*), (SELECT record_id FROM b ORDER BY record_id DESC, zone_type DESC, digest DESC LIMIT 1), \
                     (SELECT zone_type FROM b ORDER BY record_id DESC, zone_type DESC, digest DESC LIMIT 1), \
                     (SELECT digest FROM b ORDER BY record_id DESC, zone_type DESC, digest DESC LIMIT 1) FROM b",
                )
                .bind(batch_rows),
                Some((r, z, d)) => sqlx::query(
                    "WITH b AS (SELECT * FROM entries WHERE (record_id, zone_type, digest) > ($2, $3, $4) \
                     ORDER BY record_id, zone_type, digest LIMIT $1), \
                     i AS (INSERT INTO entries_new SELECT * FROM b ON CONFLICT DO NOTHING) \
                     SELECT count(*), (SELECT record_id FROM b ORDER BY record_id DESC, zone_type DESC, digest DESC LIMIT 1), \
                     (SELECT zone_type FROM b ORDER BY record_id DESC, zone_type DESC, digest DESC LIMIT 1), \
                     (SELECT digest FROM b ORDER BY record_id DESC, zone_type DESC, digest DESC LIMIT 1) FROM b",
                )
                .bind(batch_rows)
                .bind(r.clone())
                .bind(*z)
                .bind(d.clone()),
            }
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            let n: i64 = batch.try_get(0)?;
            if n == 0 {
                break;
            }
            copied += n as u64;
            progress(copied);
            last = Some((batch.try_get(1)?, batch.try_get(2)?, batch.try_get(3)?));
            if n < batch_rows {
                break;
            }
        }

        // 4: the swap, writers held off by the lock for its length.
        let swap_began = Instant::now();
        let mut tx = self.pool.begin().await?;
        no_timeout(&mut tx).await?;
        sqlx::query("LOCK TABLE entries IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let old: i64 = sqlx::query_scalar("SELECT count(*) FROM entries")
            .fetch_one(&mut *tx)
            .await?;
        let new: i64 = sqlx::query_scalar("SELECT count(*) FROM entries_new")
            .fetch_one(&mut *tx)
            .await?;
        if old != new {
            tx.rollback().await?;
            return Err(StoreError::Invalid(format!(
                "entries has {old} rows and its partitioned copy {new}: nothing swapped; run again"
            )));
        }
        for sql in swap_sql() {
            sqlx::query(&sql).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        let swap = swap_began.elapsed();

        // 5: the old table, and the planner's statistics of the new.
        let mut tx = self.pool.begin().await?;
        no_timeout(&mut tx).await?;
        sqlx::query("DROP TABLE entries_old")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DROP FUNCTION IF EXISTS poz_entries_to_new()")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.analyze_entries().await?;
        Ok((partitions, copied, old as u64, swap))
    }
}

/// The partitioned table `entries_new` with its indexes (named
/// `entries_new_*` until the swap) and its partitions `entries_p{i}`, and the trigger that repeats
/// writes to `entries` into it. Idempotent over a run that died.
fn new_table_sql(partitions: u32) -> Vec<String> {
    let mut sql = vec![
        "DROP TRIGGER IF EXISTS poz_entries_to_new ON entries".to_string(),
        "DROP TABLE IF EXISTS entries_new".to_string(),
        // Same columns in the same order (the trigger and the copy move
        // whole rows), NOT NULLs and defaults included.
        "CREATE TABLE entries_new (LIKE entries INCLUDING DEFAULTS) PARTITION BY HASH (handle)"
            .to_string(),
    ];
    for i in 0..partitions {
        sql.push(format!(
            "CREATE TABLE entries_p{i} PARTITION OF entries_new \
             FOR VALUES WITH (MODULUS {partitions}, REMAINDER {i})"
        ));
    }
    sql.extend(
        [
            "CREATE UNIQUE INDEX entries_new_key ON entries_new (record_id, zone_type, digest, handle) NULLS NOT DISTINCT",
            "CREATE INDEX entries_new_by_handle ON entries_new (record_id, zone_type, handle, issued_at DESC) WHERE handle IS NOT NULL",
            "CREATE INDEX entries_new_by_target ON entries_new (record_id, zone_type, target) WHERE target IS NOT NULL",
            "CREATE INDEX entries_new_by_batch ON entries_new (record_id, batch_root, digest) WHERE batch_root IS NOT NULL",
            "CREATE INDEX entries_new_by_skeleton ON entries_new (record_id, zone_type, skeleton) WHERE skeleton IS NOT NULL",
            "CREATE INDEX entries_new_without_skeleton ON entries_new (record_id) WHERE handle IS NOT NULL AND skeleton IS NULL",
            // An update (the skeleton fill; nothing else updates an
            // entry) replaces the copied row: the delete and the upsert
            // leave the new version whichever of the copy and the writer
            // came first.
            "CREATE OR REPLACE FUNCTION poz_entries_to_new() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN \
               IF TG_OP IN ('UPDATE', 'DELETE') THEN \
                 DELETE FROM entries_new WHERE record_id = OLD.record_id \
                   AND zone_type = OLD.zone_type AND digest = OLD.digest; \
               END IF; \
               IF TG_OP = 'INSERT' THEN \
                 INSERT INTO entries_new SELECT NEW.* ON CONFLICT DO NOTHING; \
               ELSIF TG_OP = 'UPDATE' THEN \
                 INSERT INTO entries_new SELECT NEW.* \
                   ON CONFLICT (record_id, zone_type, digest, handle) \
                   DO UPDATE SET skeleton = EXCLUDED.skeleton, batch_root = EXCLUDED.batch_root; \
               END IF; \
               RETURN NULL; \
             END $$",
            "CREATE TRIGGER poz_entries_to_new AFTER INSERT OR UPDATE OR DELETE ON entries \
             FOR EACH ROW EXECUTE FUNCTION poz_entries_to_new()",
        ]
        .map(str::to_string),
    );
    sql
}

/// The swap: the old table and its indexes take `_old` names, the new
/// table and its indexes take today's names (so later migrations name
/// them as before). The partitions had their final names from the
/// start (the one heap has no partitions whose names they could take),
/// and so have the indexes Postgres made on them.
fn swap_sql() -> Vec<String> {
    [
        "DROP TRIGGER poz_entries_to_new ON entries",
        "ALTER TABLE entries RENAME TO entries_old",
        "ALTER INDEX entries_pkey RENAME TO entries_old_pkey",
        "ALTER INDEX entries_by_handle RENAME TO entries_old_by_handle",
        "ALTER INDEX entries_by_target RENAME TO entries_old_by_target",
        "ALTER INDEX entries_by_batch RENAME TO entries_old_by_batch",
        "ALTER INDEX entries_by_skeleton RENAME TO entries_old_by_skeleton",
        "ALTER INDEX entries_without_skeleton RENAME TO entries_old_without_skeleton",
        "ALTER TABLE entries_new RENAME TO entries",
        "ALTER INDEX entries_new_key RENAME TO entries_key",
        "ALTER INDEX entries_new_by_handle RENAME TO entries_by_handle",
        "ALTER INDEX entries_new_by_target RENAME TO entries_by_target",
        "ALTER INDEX entries_new_by_batch RENAME TO entries_by_batch",
        "ALTER INDEX entries_new_by_skeleton RENAME TO entries_by_skeleton",
        "ALTER INDEX entries_new_without_skeleton RENAME TO entries_without_skeleton",
    ]
    .map(str::to_string)
    .to_vec()
}
