//! The entries table hash-partitioned on the handle's confusable
//! skeleton (Postgres only; issue 17), reached from today's single heap
//! online.
//!
//! Layout: `PARTITION BY HASH (skeleton)` into N partitions
//! `entries_s0 … entries_s{N-1}`. The skeleton (SPEC §8.4.2) is a function
//! of the handle, so a binding's partition follows from its handle: a
//! lookup by handle says `skeleton = skeleton(handle)` as well and reads
//! one partition's handle index, and the look-alike check of an issue,
//! which asks by skeleton, reads one partition's skeleton index too (a
//! first release partitioned on the handle, and its look-alike check
//! probed every partition: 1M bindings issued at 5,850/s against one
//! heap's 14,444/s). Rows without a skeleton (revocations, other zones'
//! entries) hash to the partition of remainder 0, where the revocation
//! lookups (which say `handle IS NULL AND skeleton IS NULL`) find them by
//! target. A unique index on a partitioned table must hold the partition
//! key, so the key becomes `(record_id, zone_type, digest, skeleton)
//! NULLS NOT DISTINCT` (Postgres ≥ 15): as unique as today's primary key,
//! because the digest covers the handle and so its skeleton. The store's
//! inserts say `ON CONFLICT DO NOTHING`, which both layouts (and SQLite)
//! accept. Every binding must have its skeleton before the copy (a store
//! start fills those stored before migration 0005): a binding without
//! one would sit in partition 0 where a lookup by its skeleton does not
//! look.
//!
//! The online path ([`Store::partition_entries`]), since Postgres cannot
//! partition a table in place (from one heap, or from the first release's
//! partitions on the handle):
//! 1. `entries_new` is created partitioned, with its indexes, empty;
//! 2. a trigger on `entries` repeats every insert, update and delete into
//!    it (each in the writer's own transaction);
//! 3. the existing rows are copied in key order, a batch per short
//!    transaction (`ON CONFLICT DO NOTHING`: rows the trigger copied
//!    first stay as they are);
//! 4. in one short transaction that locks `entries` against writers, the
//!    counts are compared, no binding may lack its skeleton, and the
//!    tables (and their indexes) swap names; the trigger goes with the
//!    old table;
//! 5. the old table is dropped.
//!
//! Only step 4 blocks writers (for the time of two counts and the
//! renames). The copy writes one table's worth of WAL, which replicas
//! receive. Runs of the path are serialised by an advisory lock; a run
//! that died half-way is taken up by the next (step 1 finds `entries_new`
//! and starts again from an empty one). A store learns the layout when it
//! opens: stores started before a swap keep asking without the skeleton,
//! which is right on either layout but reads every partition, until they
//! restart (docs/OPERATIONS.md).

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
    /// Hash-partitioned on `skeleton` into this many partitions.
    Partitioned(u32),
    /// Hash-partitioned on `handle` into this many partitions, as the
    /// first release of the layout made it: served correctly, but the
    /// look-alike check reads every partition; `poz-store
    /// partition-entries` moves it to [`EntriesLayout::Partitioned`].
    PartitionedByHandle(u32),
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
    pub(crate) fn set_skeleton_pruning(&self, on: bool) {
        self.skeleton_pruning
            .store(on, std::sync::atomic::Ordering::Release);
    }

    /// Whether queries by handle say the skeleton too (the entries table
    /// is partitioned on it, as this store last learnt).
    pub(crate) fn skeleton_pruning(&self) -> bool {
        self.skeleton_pruning
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// After the migrations: a Postgres entries table that is one heap
    /// and empty is partitioned at once ([`StoreOptions::entries_partitions`](crate::StoreOptions));
    /// one that holds rows is left for `poz-store partition-entries`
    /// (said in the log). A table already partitioned gets its batch index
    /// repaired if it is the first release's.
    pub(crate) async fn partition_if_fresh(&self) -> Result<(), StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        match self.entries_layout().await? {
            EntriesLayout::Partitioned(_) => return self.repair_batch_index().await,
            EntriesLayout::PartitionedByHandle(_) => {
                tracing::info!(
                    "the entries table is partitioned on the handle (an earlier release); \
                     `poz-store partition-entries` partitions it on the skeleton online"
                );
                return self.repair_batch_index().await;
            }
            EntriesLayout::OneHeap => {}
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
        let parts: Option<(i64, String)> = sqlx::query_as(
            "SELECT (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = c.oid), \
             pg_get_partkeydef(c.oid) \
             FROM pg_class c WHERE c.relname = 'entries' AND c.relkind = 'p' \
             AND c.relnamespace = current_schema()::regnamespace",
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some((n, key)) = parts else {
            return Ok(EntriesLayout::OneHeap);
        };
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        match key.as_str() {
            "HASH (skeleton)" => Ok(EntriesLayout::Partitioned(n)),
            "HASH (handle)" => Ok(EntriesLayout::PartitionedByHandle(n)),
            other => Err(StoreError::Invalid(format!(
                "the entries table is partitioned by {other}, which this build does not know"
            ))),
        }
    }

    /// Partitions the entries table online into `partitions` hash
    /// partitions on `skeleton` (the module docs give the steps), while
    /// the store keeps serving and writing; from one heap or from the
    /// first release's partitions on the handle. Postgres only; a table
    /// already partitioned on the skeleton is left as it is, whatever
    /// `partitions` says (the report gives its partitions and 0 rows
    /// copied). This store asks by skeleton from the swap on; other
    /// stores on the database do once they restart.
    /// `batch` rows per copy transaction ([`COPY_BATCH`] is the tool's);
    /// `progress` is called after each copy batch with the rows copied
    /// so far (the trigger is in place by then).
    ///
    /// Errors: [`StoreError::Invalid`] on SQLite, with `partitions` not
    /// in 1..=1024 or `batch` below 1, when a stored binding has no
    /// skeleton yet (before the copy, or at the swap: a store of a release
    /// before migration 0005 still writing), or when the counts differ at
    /// the swap (nothing is swapped; a rerun starts over);
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
        self.set_skeleton_pruning(true);
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
        let unfilled =
            bindings_without_skeleton(&mut *self.pool.acquire().await?, "entries").await?;
        if unfilled > 0 {
            return Err(StoreError::Invalid(format!(
                "{unfilled} stored binding(s) have no skeleton yet (stored before migration 0005): \
                 start poz-store on this database once (it fills them), then run again"
            )));
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
        // A store of a release before 0005 wrote bindings without a
        // skeleton during the copy: they would sit where no lookup looks.
        let unfilled = bindings_without_skeleton(&mut tx, "entries_new").await?;
        let refused = if old != new {
            Some(format!(
                "entries has {old} rows and its partitioned copy {new}: nothing swapped; run again"
            ))
        } else if unfilled > 0 {
            Some(format!(
                "{unfilled} binding(s) written during the copy have no skeleton \
                 (a store of a release before migration 0005 is writing): nothing swapped; \
                 replace it and run again"
            ))
        } else {
            None
        };
        if let Some(refused) = refused {
            tx.rollback().await?;
            // The trigger would keep doubling every write until a rerun.
            let mut tx = self.pool.begin().await?;
            for sql in [
                "DROP TRIGGER IF EXISTS poz_entries_to_new ON entries",
                "DROP TABLE IF EXISTS entries_new",
            ] {
                sqlx::query(sql).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            return Err(StoreError::Invalid(refused));
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

/// Bindings of `table` (`entries` or `entries_new`) without a skeleton:
/// by the partial index made for the fill, so a count of none is one probe.
async fn bindings_without_skeleton(
    conn: &mut sqlx::AnyConnection,
    table: &str,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {table} WHERE handle IS NOT NULL AND skeleton IS NULL"
    ))
    .fetch_one(conn)
    .await?)
}

/// The partitioned table `entries_new` with its indexes (named
/// `entries_new_*` until the swap) and its partitions `entries_s{i}`, and
/// the trigger that repeats writes to `entries` into it. Idempotent over
/// a run that died.
fn new_table_sql(partitions: u32) -> Vec<String> {
    let mut sql = vec![
        "DROP TRIGGER IF EXISTS poz_entries_to_new ON entries".to_string(),
        "DROP TABLE IF EXISTS entries_new".to_string(),
        // Same columns in the same order (the trigger and the copy move
        // whole rows), NOT NULLs and defaults included.
        "CREATE TABLE entries_new (LIKE entries INCLUDING DEFAULTS) PARTITION BY HASH (skeleton)"
            .to_string(),
    ];
    // `entries_s{i}`: the first release's partitions on the handle are
    // `entries_p{i}` and still exist (under `entries`) while these are made.
    for i in 0..partitions {
        sql.push(format!(
            "CREATE TABLE entries_s{i} PARTITION OF entries_new \
             FOR VALUES WITH (MODULUS {partitions}, REMAINDER {i})"
        ));
    }
    sql.extend(
        [
            "CREATE UNIQUE INDEX entries_new_key ON entries_new (record_id, zone_type, digest, skeleton) NULLS NOT DISTINCT",
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
                   ON CONFLICT (record_id, zone_type, digest, skeleton) \
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
/// them as before). The old key is `entries_pkey` on one heap and
/// `entries_key` on the first release's partitions. The partitions had
/// their final names from the start (no old partition has such a name),
/// and so have the indexes Postgres made on them.
fn swap_sql() -> Vec<String> {
    [
        "DROP TRIGGER poz_entries_to_new ON entries",
        "ALTER TABLE entries RENAME TO entries_old",
        "ALTER INDEX IF EXISTS entries_pkey RENAME TO entries_old_pkey",
        "ALTER INDEX IF EXISTS entries_key RENAME TO entries_old_key",
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace
mod pruned_plans {
    //! On a table partitioned on the skeleton, the store's own queries by
    //! handle and by skeleton read one partition per handle asked: each
    //! query's EXPLAIN ANALYZE, with the partition scans that ran counted.
    //! Postgres at `POZ_TEST_PG_URL` (deploy/test.sh starts one).
    use crate::entries::{binding_by_domain_sql, bindings_for_handles_sql, lookup_bindings_sql};
    use crate::handles::held_by_skeleton_sql;
    use crate::{Backend, EntriesLayout, Store, StoreOptions};
    use poz::codec::Codec;
    use poz::sample;
    use poz::zone::{EntryKind, ZoneType};

    async fn fresh_pg_url() -> String {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let admin = std::env::var("POZ_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let mut conn = sqlx::AnyConnection::connect(&admin).await.unwrap();
        let mut r = [0u8; 6];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut r);
        let name = format!("poz_test_{}_{}", std::process::id(), hex::encode(r));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
    }

    /// The partition scans of `alias` that ran in an EXPLAIN ANALYZE text
    /// plan: (partition, loops) per scan node ("… on entries_s2 b (actual
    /// rows=1 loops=3)", or "b_3" where Postgres numbers the partitions'
    /// aliases); a node that never ran is left out.
    fn scans(plan: &str, alias: &str) -> Vec<(String, u64)> {
        plan.lines()
            .filter_map(|l| {
                let (_, rest) = l.split_once(" on entries_s")?;
                let (part, rest) = rest.split_once(' ')?;
                let (name, rest) = rest.split_once(' ')?;
                let numbered = name
                    .strip_prefix(alias)?
                    .strip_prefix('_')
                    .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()));
                if name != alias && !numbered {
                    return None;
                }
                let loops = rest.split_once("loops=")?.1;
                let loops: u64 = loops.trim_end_matches(')').parse().ok()?;
                Some((format!("entries_s{part}"), loops))
            })
            .collect()
    }

    async fn explain(store: &Store, sql: &str, binds: Vec<Bind>) -> String {
        let sql = format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {sql}");
        let mut q = sqlx::query_scalar::<_, String>(&sql);
        for b in binds {
            q = match b {
                Bind::Text(t) => q.bind(t),
                Bind::Int4(i) => q.bind(i),
                Bind::Int8(i) => q.bind(i),
                Bind::Bytes(v) => q.bind(v),
            };
        }
        q.fetch_all(store.pool()).await.unwrap().join("\n")
    }

    enum Bind {
        Text(String),
        Int4(i32),
        Int8(i64),
        Bytes(Vec<u8>),
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queries_by_handle_and_by_skeleton_read_one_partition_each() {
        let url = fresh_pg_url().await;
        let options = StoreOptions {
            entries_partitions: 4,
            ..StoreOptions::default()
        };
        let s = Store::open(&url, options).await.unwrap();
        assert_eq!(
            s.entries_layout().await.unwrap(),
            EntriesLayout::Partitioned(4)
        );
        assert!(s.skeleton_pruning());
        let (rec, _) = sample::chain_provider().unwrap();
        let (id, _) = s
            .import_record(&rec.to_bytes(), &["social.example".into()])
            .await
            .unwrap();
        let k = sample::provider_keys();
        let handles: Vec<String> = (0..8).map(|i| format!("user{i}")).collect();
        let signed: Vec<Vec<u8>> = handles
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let subject = poz::hash::tagged_hash("pruned plans", &[&(i as u64).to_be_bytes()]);
                sample::issue(&rec, subject, h, sample::T0 + 5, 0, &[&k.device_a])
                    .unwrap()
                    .to_bytes()
            })
            .collect();
        s.put_entries(&id, ZoneType::IDENTITY, &signed, "")
            .await
            .unwrap();
        // Enough rows that Postgres plans as it would for a real zone
        // (index probes, not a scan of small partitions), with statistics.
        sqlx::query(
            "INSERT INTO entries (record_id, zone_type, digest, kind, handle, skeleton, entry, stored_ms) \
             SELECT $1, $2, sha256(int4send(i)), $3, 'filler' || i, 'filler' || i, '\\x00', 0 \
             FROM generate_series(1, 40000) AS i",
        )
        .bind(id.0.to_vec())
        .bind(ZoneType::IDENTITY.0 as i32)
        .bind(EntryKind::GRANT.0 as i32)
        .execute(s.pool())
        .await
        .unwrap();
        s.analyze_entries().await.unwrap();
        // As the store binds them.
        let (zone, kind) = (ZoneType::IDENTITY.0 as i32, EntryKind::GRANT.0 as i32);
        let asked = &handles[..4];
        let skeletons: Vec<String> = asked.iter().map(|h| poz::handle::skeleton(h)).collect();
        let parts = |s: &[(String, u64)]| {
            let mut p: Vec<&String> = s.iter().map(|(p, _)| p).collect();
            p.sort();
            p.dedup();
            p.len()
        };
        let loops = |s: &[(String, u64)]| s.iter().map(|(_, l)| l).sum::<u64>();

        // One lookup: the binding in one partition, the revocation probe
        // in the partition of rows without a skeleton.
        let plan = explain(
            &s,
            &binding_by_domain_sql(true),
            vec![
                Bind::Text("social.example".into()),
                Bind::Int4(zone),
                Bind::Text(asked[1].clone()),
                Bind::Int4(kind),
                Bind::Text(skeletons[1].clone()),
            ],
        )
        .await;
        assert_eq!(loops(&scans(&plan, "b")), 1, "{plan}");
        assert!(loops(&scans(&plan, "r")) <= 1, "{plan}");

        // A gateway's group of lookups: one partition probe per pair.
        let mut binds = vec![Bind::Int4(zone), Bind::Int4(kind)];
        for (i, h) in asked.iter().enumerate() {
            binds.extend([
                Bind::Int8(i as i64),
                Bind::Text("social.example".into()),
                Bind::Text(h.clone()),
                Bind::Text(skeletons[i].clone()),
            ]);
        }
        let plan = explain(&s, &lookup_bindings_sql(Backend::Postgres, true, 4), binds).await;
        let e = scans(&plan, "e");
        assert_eq!(loops(&e), 4, "{plan}");
        assert!(
            parts(&e) >= 2,
            "the four handles hash to one partition: {plan}"
        );
        assert_eq!(parts(&scans(&plan, "r")), 1, "{plan}");
        // Without the skeleton the same group reads every partition per
        // pair (what the count above would show if pruning were lost).
        let mut binds = vec![Bind::Int4(zone), Bind::Int4(kind)];
        for (i, h) in asked.iter().enumerate() {
            binds.extend([
                Bind::Int8(i as i64),
                Bind::Text("social.example".into()),
                Bind::Text(h.clone()),
            ]);
        }
        let plan = explain(&s, &lookup_bindings_sql(Backend::Postgres, false, 4), binds).await;
        assert_eq!(loops(&scans(&plan, "e")), 16, "{plan}");

        // The issue's checks: the duplicate check by handle and the
        // look-alike check by skeleton, one partition probe per handle.
        let head = || {
            vec![
                Bind::Bytes(id.0.to_vec()),
                Bind::Int4(zone),
                Bind::Int4(kind),
            ]
        };
        let mut binds = head();
        for (h, sk) in asked.iter().zip(&skeletons) {
            binds.extend([Bind::Text(h.clone()), Bind::Text(sk.clone())]);
        }
        let plan = explain(&s, &bindings_for_handles_sql(true, 4), binds).await;
        assert_eq!(loops(&scans(&plan, "b")), 4, "{plan}");
        let mut binds = head();
        binds.extend(skeletons.iter().map(|sk| Bind::Text(sk.clone())));
        let plan = explain(&s, &held_by_skeleton_sql(true, 4), binds).await;
        assert_eq!(loops(&scans(&plan, "b")), 4, "{plan}");
        assert_eq!(parts(&scans(&plan, "r")), 1, "{plan}");

        // And the answers are the store's: every binding found by handle.
        for h in &handles {
            assert!(
                s.binding_by_domain("social.example", h).await.is_ok(),
                "{h}"
            );
        }
        let found = s.bindings_for_handles(&id, &handles).await.unwrap();
        assert_eq!(found.len(), handles.len());
        let verdicts = s
            .check_handles(&id, &[("user1".into(), poz::Hash32([9; 32]))])
            .await
            .unwrap();
        assert!(verdicts[0].is_err(), "user1 is held by another subject");
        s.close().await;
    }
}
