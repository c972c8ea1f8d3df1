//! The entries table partitioned on Postgres (issue 17): a fresh
//! database is partitioned when migrated with `entries_partitions` set
//! (one heap is the default); a database that holds entries
//! is partitioned online while bindings keep being written, losing none;
//! a lookup by handle reads one partition's index.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod common;

use poz::codec::Codec;
use poz::sample;
use poz::zone::ZoneType;
use poz::{Hash32, Record};
use poz_store::{EntriesLayout, Store, StoreOptions};

/// The provider (serial 2, identity delegated to device A) stored in
/// `s`, and its ID.
async fn provider(s: &Store) -> (Hash32, Record) {
    let (rec, _) = sample::chain_provider().unwrap();
    let (id, _) = s
        .import_record(&rec.to_bytes(), &["social.example".into()])
        .await
        .unwrap();
    (id, rec)
}

/// Bindings `user{from}` … `user{from + n - 1}`, signed by device A.
fn bindings(rec: &Record, from: u64, n: u64) -> Vec<Vec<u8>> {
    let k = sample::provider_keys();
    (from..from + n)
        .map(|i| {
            let subject = poz::hash::tagged_hash("partition test", &[&i.to_be_bytes()]);
            sample::issue(
                rec,
                subject,
                &format!("user{i}"),
                sample::T0 + 5,
                0,
                &[&k.device_a],
            )
            .unwrap()
            .to_bytes()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_postgres_database_is_partitioned_when_asked_and_sqlite_keeps_one_table() {
    let heap = Store::open(&common::fresh_pg_url().await, StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(
        heap.entries_layout().await.unwrap(),
        EntriesLayout::OneHeap,
        "one heap is the default"
    );
    heap.close().await;
    let parted = StoreOptions {
        entries_partitions: poz_store::DEFAULT_PARTITIONS,
        ..StoreOptions::default()
    };
    let s = Store::open(&common::fresh_pg_url().await, parted)
        .await
        .unwrap();
    assert_eq!(
        s.entries_layout().await.unwrap(),
        EntriesLayout::Partitioned(poz_store::DEFAULT_PARTITIONS)
    );
    let (id, rec) = provider(&s).await;
    s.put_entries(&id, ZoneType::IDENTITY, &bindings(&rec, 0, 3), "")
        .await
        .unwrap();
    assert!(s.binding(&id, "user2").await.is_ok());

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("poz.db").display());
    let lite = Store::open(&url, StoreOptions::default()).await.unwrap();
    assert_eq!(lite.entries_layout().await.unwrap(), EntriesLayout::OneHeap);
    assert!(lite.partition_entries(4, 100, |_| {}).await.is_err());
}

/// The online path with writers: 1,000 bindings in one heap, copied 100
/// at a time; after every batch a writer on its own thread and its own
/// connections stores one more binding (through the trigger) and waits
/// for the next batch. Every binding stored before, during and after is
/// served from the partitioned table, the count matches, and a lookup by
/// handle plans one partition's index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_are_partitioned_online_while_bindings_are_written() {
    let url = common::fresh_pg_url().await;
    let one_heap = StoreOptions {
        entries_partitions: 0,
        ..StoreOptions::default()
    };
    let s = Store::open(&url, one_heap.clone()).await.unwrap();
    assert_eq!(s.entries_layout().await.unwrap(), EntriesLayout::OneHeap);
    let (id, rec) = provider(&s).await;
    for chunk in bindings(&rec, 0, 1000).chunks(250) {
        s.put_entries(&id, ZoneType::IDENTITY, chunk, "")
            .await
            .unwrap();
    }
    // Reopening with partitions asked for leaves a table with rows alone.
    let again = Store::open(&url, StoreOptions::default()).await.unwrap();
    assert_eq!(
        again.entries_layout().await.unwrap(),
        EntriesLayout::OneHeap
    );
    again.close().await;

    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let writer = {
        let (url, rec, opts) = (url.clone(), rec.clone(), one_heap.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let w = Store::open(&url, opts).await.unwrap();
                let mut next = 1000;
                while go_rx.recv().is_ok() {
                    w.put_entries(&id, ZoneType::IDENTITY, &bindings(&rec, next, 1), "")
                        .await
                        .unwrap();
                    next += 1;
                    done_tx.send(()).unwrap();
                }
                next
            })
        })
    };
    let mut batches = 0;
    let report = s
        .partition_entries(4, 100, |_| {
            batches += 1;
            go_tx.send(()).unwrap();
            done_rx.recv().unwrap();
        })
        .await
        .unwrap();
    drop(go_tx);
    let end = writer.join().unwrap();
    // One binding written after the swap as well.
    s.put_entries(&id, ZoneType::IDENTITY, &bindings(&rec, end, 1), "")
        .await
        .unwrap();
    let total = end + 1;

    assert_eq!(
        s.entries_layout().await.unwrap(),
        EntriesLayout::Partitioned(4)
    );
    assert!(batches >= 10, "{batches} copy batches");
    assert_eq!(end, 1000 + batches, "a binding written after each batch");
    assert_eq!(report.rows, end, "rows at the swap");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM entries")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(rows as u64, total);
    for i in 0..total {
        let (b, rev) = s.binding(&id, &format!("user{i}")).await.unwrap();
        assert!(rev.is_none());
        assert_eq!(b.to_bytes(), bindings(&rec, i, 1)[0], "user{i}");
    }
    // A stored binding stored again is "already present", not an error.
    let (stored, present) = s
        .put_entries(&id, ZoneType::IDENTITY, &bindings(&rec, 7, 1), "")
        .await
        .unwrap();
    assert_eq!((stored, present), (0, 1));

    // The lookup by handle plans one partition, by its handle index.
    let plan: Vec<String> = sqlx::query_scalar(&format!(
        "EXPLAIN SELECT entry FROM entries WHERE record_id = '\\x{}' AND zone_type = 3 \
         AND handle = 'user5' ORDER BY issued_at DESC LIMIT 1",
        id.to_hex()
    ))
    .fetch_all(s.pool())
    .await
    .unwrap();
    let plan = plan.join("\n");
    // Each scanned partition appears as "… on entries_pN entries".
    assert_eq!(plan.matches(" on entries_p").count(), 1, "{plan}");
    assert!(plan.contains("Index Scan"), "{plan}");
    // No leftovers of the path.
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class WHERE relname LIKE 'entries_new%' OR relname LIKE 'entries_old%'",
    )
    .fetch_one(s.pool())
    .await
    .unwrap();
    assert_eq!(left, 0);
    // A second run leaves the partitioned table as it is.
    let rerun = s.partition_entries(8, 100, |_| {}).await.unwrap();
    assert_eq!((rerun.copied, rerun.rows), (0, total));
    assert_eq!(
        s.entries_layout().await.unwrap(),
        EntriesLayout::Partitioned(4)
    );
}

/// Statements over a whole table (ANALYZE, a count of a zone) are not
/// held to the request statement timeout: at ten million bindings both
/// were cancelled at 5 s. Here the timeout is 10 ms and the zone a million
/// rows, which no count reads in 10 ms (a plain count is shown to be
/// cancelled first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_table_statements_outlive_the_request_timeout() {
    let url = common::fresh_pg_url().await;
    let s = Store::open(&url, StoreOptions::default()).await.unwrap();
    let (id, _) = provider(&s).await;
    let mut tx = s.pool().begin().await.unwrap();
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO entries (record_id, zone_type, digest, kind, handle, skeleton, entry, stored_ms) \
         SELECT $1, 1, sha256(int4send(i)), 1, 'filler' || i, 'filler' || i, '\\x00', 0 \
         FROM generate_series(1, 1000000) AS i",
    )
    .bind(id.0.to_vec())
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    s.close().await;
    let options = StoreOptions {
        statement_timeout: std::time::Duration::from_millis(10),
        ..StoreOptions::default()
    };
    let s = Store::open(&url, options).await.unwrap();
    let plain = sqlx::query("SELECT count(*) FROM entries WHERE handle IS NOT NULL")
        .execute(s.pool())
        .await;
    assert!(
        plain.is_err_and(|e| e.to_string().contains("statement timeout")),
        "a plain count of a million rows was not cancelled at 10 ms: the test shows nothing"
    );
    assert_eq!(s.count_bindings(&id).await.unwrap(), 1_000_000);
    s.analyze_entries().await.unwrap();
    s.close().await;
}

/// The indexes of `entries` on `url` as `name: columns and predicate`
/// (the key left out: partitioning changes it, by design).
async fn entries_indexes(url: &str) -> Vec<String> {
    use sqlx::Connection;
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let defs: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = 'public' \
         AND tablename = 'entries' AND indexname NOT IN ('entries_pkey', 'entries_key') \
         ORDER BY indexname",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    defs.into_iter()
        .map(|(name, def)| {
            let cols = def.split_once(" USING ").map(|(_, c)| c.to_string());
            format!("{name}: {}", cols.unwrap_or(def))
        })
        .collect()
}

/// The partitioned layout has the one heap's indexes, column for column
/// (the first release of it had lost migration 0008's `digest` in the
/// batch index, so BATCH pages walked the zone); a database partitioned
/// with that index gets it rebuilt when migrated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partitioned_layout_keeps_every_index_of_the_one_heap() {
    let heap = common::fresh_pg_url().await;
    let one_heap = StoreOptions {
        entries_partitions: 0,
        ..StoreOptions::default()
    };
    Store::migrate(&heap, one_heap).await.unwrap();
    let parted = common::fresh_pg_url().await;
    let sixteen = StoreOptions {
        entries_partitions: 16,
        ..StoreOptions::default()
    };
    Store::migrate(&parted, sixteen.clone()).await.unwrap();
    let (h, p) = (entries_indexes(&heap).await, entries_indexes(&parted).await);
    assert_eq!(h.len(), 5, "{h:?}");
    assert_eq!(h, p, "one heap vs partitioned");

    // The first release's batch index, then a migrate (a store start).
    {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(&parted).await.unwrap();
        for sql in [
            "DROP INDEX entries_by_batch",
            "CREATE INDEX entries_by_batch ON entries (record_id, batch_root) WHERE batch_root IS NOT NULL",
        ] {
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
    }
    assert_ne!(entries_indexes(&parted).await, h);
    Store::migrate(&parted, sixteen).await.unwrap();
    assert_eq!(entries_indexes(&parted).await, h);
}
