//! Reads from streaming replicas (docs/OPERATIONS.md, "Read replicas"),
//! on a real primary and real hot standbys of its own
//! (common/cluster.rs: initdb, `pg_basebackup -R`, throwaway ports and
//! directories): a commit on the primary shows through a replica; a
//! replica whose replay is paused, or that is stopped, never makes a
//! reader see an older serial than it already served; a promoted standby
//! takes writes after failover with every acknowledged write there.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod common;

use common::cluster::{Cluster, Which};
use poz::codec::Codec;
use poz::sample::{self, key};
use poz::{workflow, Record};
use poz_proto::v1 as pb;
use poz_proto::v1::store_read_server::StoreRead;
use poz_proto::v1::store_write_server::StoreWrite;
use poz_store::grpc::{StoreReader, StoreWriter, READ_AFTER, READ_MARK, RETRY_PUSHBACK};
use poz_store::{ReadFallback, ReplicaOptions, Store, StoreOptions};
use std::time::Duration;
use tonic::{Code, Request};

const DOMAIN: &str = "me.example";

/// The tour record's genesis and revisions 2..=n, each signed.
fn revisions(n: u32) -> Vec<Record> {
    let r1 = sample::tour_record().unwrap();
    let mut out = vec![r1.clone()];
    let mut head = r1;
    for _ in 2..=n {
        let mut d = workflow::draft(&head, head.master.timestamp + 1).unwrap();
        workflow::sign_draft(&mut d, &key(4)).unwrap();
        workflow::apply(&mut d).unwrap();
        out.push(d.clone());
        head = d;
    }
    out
}

async fn reader_store(primary: &str, replica: &str, fallback: ReadFallback) -> Store {
    Store::open(primary, StoreOptions::default())
        .await
        .unwrap()
        .with_replicas(ReplicaOptions {
            urls: vec![replica.to_string()],
            wait: Duration::from_millis(50),
            fallback,
            ..ReplicaOptions::default()
        })
        .unwrap()
}

fn head_request(after: Option<u64>) -> Request<pb::GetHeadRequest> {
    let mut r = Request::new(pb::GetHeadRequest {
        record: Some(pb::RecordRef {
            by: Some(pb::record_ref::By::Domain(DOMAIN.into())),
        }),
    });
    if let Some(a) = after {
        r.metadata_mut().insert(READ_AFTER, a.into());
    }
    r
}

/// The head serial a reader serves, and the read mark it answered with.
async fn serial(reader: &StoreReader, after: Option<u64>) -> Result<(u32, u64), tonic::Status> {
    let resp = reader.get_head(head_request(after)).await?;
    let mark = resp
        .metadata()
        .get(READ_MARK)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap();
    Ok((resp.get_ref().serial, mark))
}

/// Reads until the reader serves `want` (or fails the test after 30 s),
/// checking on the way that no read went back in serial.
async fn until_serial(reader: &StoreReader, want: u32, floor: &mut u32) {
    for _ in 0..3000 {
        match serial(reader, None).await {
            Ok((s, _)) => {
                assert!(s >= *floor, "went back from serial {floor} to {s}");
                *floor = s;
                if s == want {
                    return;
                }
            }
            // A standby that has not replayed the schema yet fails the
            // read and is marked down; the binary's probe (every second)
            // brings it back, here the test's.
            Err(_) => reader.store.probe_replicas().await,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the reader never served serial {want}");
}

async fn advance(w: &Store, rev: &Record) {
    w.advance_head(&rev.to_bytes(), rev.master.serial - 1, "")
        .await
        .unwrap();
}

async fn on_standby(url: &str, sql: &str) {
    use sqlx::Connection;
    let mut c = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::query(sql).execute(&mut c).await.unwrap();
}

/// Pauses replay on the standby and waits until it has paused:
/// `pg_wal_replay_pause()` only asks, and WAL that arrives before the
/// startup process takes the request is still replayed (seen in CI: a
/// serial written just after the call was served from the standby).
async fn pause_replay(url: &str) {
    use sqlx::Connection;
    let mut c = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&mut c)
        .await
        .unwrap();
    for _ in 0..1000 {
        let state: String = sqlx::query_scalar("SELECT pg_get_wal_replay_pause_state()::text")
            .fetch_one(&mut c)
            .await
            .unwrap();
        if state == "paused" {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("replay on {url} did not pause within 10 s");
}

/// Waits until the standby has replayed the primary's WAL as of now.
async fn replayed_to_primary(primary: &str, standby: &str) {
    use sqlx::Connection;
    let mut p = sqlx::AnyConnection::connect(primary).await.unwrap();
    let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&mut p)
        .await
        .unwrap();
    let mut s = sqlx::AnyConnection::connect(standby).await.unwrap();
    for _ in 0..1000 {
        let behind: i64 = sqlx::query_scalar(&format!(
            "SELECT pg_wal_lsn_diff('{lsn}', pg_last_wal_replay_lsn())::bigint"
        ))
        .fetch_one(&mut s)
        .await
        .unwrap();
        if behind <= 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the standby did not replay to {lsn} within 10 s");
}

/// A primary with one asynchronous standby, a store writing to the
/// primary only, revisions 1..=`n` of the tour record and revision 1
/// stored: (cluster, primary URL, standby URL, writer, revisions).
async fn started(n: u32) -> (Cluster, String, String, Store, Vec<Record>) {
    let cluster = Cluster::start_new(1, false);
    let (primary, standby) = (
        cluster.primary.url("postgres"),
        cluster.standbys[0].url("postgres"),
    );
    let revs = revisions(n);
    let writer = Store::open(&primary, StoreOptions::default())
        .await
        .unwrap();
    writer
        .create_record(&revs[0].to_bytes(), &[DOMAIN.into()], "")
        .await
        .unwrap();
    (cluster, primary, standby, writer, revs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_on_the_primary_shows_through_the_replica() {
    // `_cluster`, not `_`: the servers live until the end of the test.
    let (_cluster, primary, standby, writer, revs) = started(3).await;
    let store = reader_store(&primary, &standby, ReadFallback::Unavailable).await;
    let reader = StoreReader {
        store: store.clone(),
    };
    // With no fallback to the primary, every answer below came from the
    // standby.
    let mut floor = 0;
    until_serial(&reader, 1, &mut floor).await;
    advance(&writer, &revs[1]).await;
    until_serial(&reader, 2, &mut floor).await;
    advance(&writer, &revs[2]).await;
    until_serial(&reader, 3, &mut floor).await;
    let [replica, primary_reads, _, _] = store.read_counts();
    assert!(replica >= 3, "{:?}", store.read_counts());
    assert_eq!(primary_reads, 0);
    // The lag is measured (bytes; 0 or more once probed).
    store.probe_replicas().await;
    let states = store.replica_states();
    assert!(states[0].up && states[0].lag_bytes.is_some(), "{states:?}");
    assert!(!states[0].label.contains('@'));
    // And exported (the names docs/OPERATIONS.md lists).
    poz_store::metrics::export_replicas(&store);
    let text = poz_kit::metrics::encode();
    for name in [
        "poz_db_replica_lag_bytes{replica=\"127.0.0.1:",
        "poz_db_replica_up{replica=\"127.0.0.1:",
        "poz_store_reads_total{source=\"replica\"}",
        "poz_store_reads_waited_total",
        "poz_store_read_mark_bytes",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    writer.close().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_or_stopped_replica_never_serves_an_older_serial() {
    let (mut cluster, primary, standby, writer, revs) = started(5).await;
    // Two store processes reading from the same standby: one falls back
    // to the primary, one refuses.
    let a = reader_store(&primary, &standby, ReadFallback::Primary).await;
    let b = reader_store(&primary, &standby, ReadFallback::Unavailable).await;
    let (ra, rb) = (
        StoreReader { store: a.clone() },
        StoreReader { store: b.clone() },
    );
    let mut floor_a = 0;
    let mut floor_b = 0;
    until_serial(&ra, 1, &mut floor_a).await;
    until_serial(&rb, 1, &mut floor_b).await;

    // Replay paused once the standby has everything the primary had
    // after those reads (a read the primary answered left a mark at the
    // primary's position, which a standby paused short of it could not
    // serve): the standby stays at serial 1, at or past both marks.
    replayed_to_primary(&primary, &standby).await;
    pause_replay(&standby).await;
    advance(&writer, &revs[1]).await;
    // A has seen nothing newer, so serial 1 from the standby is no step
    // back: it serves it.
    let (s, _) = serial(&ra, None).await.unwrap();
    assert_eq!(s, 1);
    // A write through A (StoreWrite of the same store) raises its mark
    // past the standby: A's next read waits, then reads the primary.
    let wa = StoreWriter { store: a.clone() };
    wa.advance_head(Request::new(pb::AdvanceHeadRequest {
        record: revs[2].to_bytes(),
        expected_serial: 2,
        idempotency_key: String::new(),
    }))
    .await
    .unwrap();
    let before = a.read_counts();
    let (s, mark) = serial(&ra, None).await.unwrap();
    assert_eq!(s, 3);
    assert_eq!(a.read_counts()[1], before[1] + 1, "served by the primary");
    // B, handed A's mark (a gateway that read through A), will not serve
    // the paused standby's serial 1: UNAVAILABLE with a retry hint.
    let e = serial(&rb, Some(mark)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.metadata().get(RETRY_PUSHBACK).is_some(), "{e:?}");
    // A stays at serial 3 or later however often it reads.
    for _ in 0..20 {
        let (s, _) = serial(&ra, None).await.unwrap();
        assert_eq!(s, 3);
    }

    // Replay resumed: the standby catches up and serves again.
    on_standby(&standby, "SELECT pg_wal_replay_resume()").await;
    let replica_before = a.read_counts()[0];
    until_serial(&ra, 3, &mut floor_a).await;
    until_serial(&rb, 3, &mut floor_b).await;
    for _ in 0..3000 {
        if a.read_counts()[0] > replica_before {
            break;
        }
        assert_eq!(serial(&ra, None).await.unwrap().0, 3);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(a.read_counts()[0] > replica_before, "{:?}", a.read_counts());

    // The standby stopped: A reads the primary (the standby is marked
    // down after its failed read); B refuses; nobody goes back.
    cluster.stop(Which::Standby(0), "fast");
    advance(&writer, &revs[3]).await;
    let (s, _) = serial(&ra, None).await.unwrap();
    assert_eq!(s, 4);
    assert!(!a.replica_states()[0].up);
    let e = serial(&rb, None).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    advance(&writer, &revs[4]).await;
    assert_eq!(serial(&ra, None).await.unwrap().0, 5);

    // Started again: a probe finds it up, and it serves once it has
    // replayed what A saw.
    cluster.restart(Which::Standby(0));
    a.probe_replicas().await;
    b.probe_replicas().await;
    assert!(b.replica_states()[0].up);
    until_serial(&rb, 5, &mut floor_b).await;
    for s in [&a, &b] {
        s.close().await;
    }
    writer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_standby_takes_writes_with_nothing_acknowledged_lost() {
    // Synchronous replication: a commit returns once the standby has it.
    let mut cluster = Cluster::start_new(1, true);
    let (primary, standby) = (
        cluster.primary.url("postgres"),
        cluster.standbys[0].url("postgres"),
    );
    let revs = revisions(21);
    let w = StoreWriter {
        store: Store::open(&primary, StoreOptions::default())
            .await
            .unwrap(),
    };
    w.create_record(Request::new(pb::CreateRecordRequest {
        record: revs[0].to_bytes(),
        domains: vec![DOMAIN.into()],
        idempotency_key: String::new(),
    }))
    .await
    .unwrap();
    let mut acknowledged = Vec::new();
    for rev in &revs[1..20] {
        let r = w
            .advance_head(Request::new(pb::AdvanceHeadRequest {
                record: rev.to_bytes(),
                expected_serial: rev.master.serial - 1,
                idempotency_key: String::new(),
            }))
            .await
            .unwrap();
        acknowledged.push((r.get_ref().serial, rev.master.current_master_hash));
    }
    // The primary dies (no clean shutdown); the standby is promoted.
    cluster.stop(Which::Primary, "immediate");
    cluster.promote(0);
    let promoted = Store::open(&standby, StoreOptions::default())
        .await
        .unwrap();
    let id = promoted.resolve(DOMAIN).await.unwrap();
    let history = promoted.history(&id, 1).await.unwrap();
    for (serial, hash) in &acknowledged {
        let m = &history[(*serial - 1) as usize];
        assert_eq!((m.serial, m.current_master_hash), (*serial, *hash));
    }
    assert_eq!(promoted.head(&id).await.unwrap().0, 20);
    // It takes writes: serial 21.
    promoted
        .advance_head(&revs[20].to_bytes(), 20, "")
        .await
        .unwrap();
    assert_eq!(promoted.head(&id).await.unwrap().0, 21);
    promoted.close().await;
    w.store.close().await;
}
