//! The `poz-store` binary over real gRPC: health, the documented status of
//! each kind of bad input, and durability: a store killed with SIGKILL in
//! the middle of a write load loses no write it had acknowledged.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use pb::store_read_client::StoreReadClient;
use pb::store_write_client::StoreWriteClient;
mod common;

use common::fresh_pg_url;
use poz::codec::Codec;
use poz::sample::{self, key};
use poz::workflow;
use poz::Record;
use poz_proto::v1 as pb;
use poz_testkit::ServiceProcess;
use std::process::Command;
use tonic::Code;

/// A running `poz-store` over `db_url` (tied to this process, SIGKILLed
/// on drop: see `poz_testkit::ServiceProcess`).
fn start_store(db_url: &str) -> ServiceProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_poz-store"));
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--insecure",
        "--database-url",
        db_url,
    ]);
    ServiceProcess::spawn(cmd)
}

fn domain_ref(d: &str) -> Option<pb::RecordRef> {
    Some(pb::RecordRef {
        by: Some(pb::record_ref::By::Domain(d.into())),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_documented_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_store(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("s.db").display()
    ));
    let channel = tonic::transport::Channel::from_shared(s.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "poz.v1.StoreWrite".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        h.get_ref().status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let mut w = StoreWriteClient::connect(s.url()).await.unwrap();
    let mut r = StoreReadClient::connect(s.url()).await.unwrap();

    // Unknown record.
    let e = r
        .get_master(pb::GetMasterRequest {
            record: domain_ref("nowhere.example"),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    // Malformed record bytes: the message names the field.
    let e = w
        .create_record(pb::CreateRecordRequest {
            record: vec![b'P', b'O', b'Z', 0, 0, 0, 0, 99, 1],
            domains: vec![],
            idempotency_key: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("header.length"), "{}", e.message());
    // A record whose hash is wrong.
    let mut bad = sample::tour_record().unwrap();
    bad.master.current_master_hash.0[0] ^= 1;
    let e = w
        .create_record(pb::CreateRecordRequest {
            record: bad.to_bytes(),
            domains: vec![],
            idempotency_key: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("mz-hash"), "{}", e.message());
    // A hash of the wrong length.
    let e = w
        .put_entries(pb::PutEntriesRequest {
            record_id: Some(pb::Hash { value: vec![1; 5] }),
            zone_type: 1,
            entries: vec![],
            idempotency_key: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // A stale compare-and-swap: ABORTED; a different revision of the same serial: ALREADY_EXISTS.
    let r1 = sample::tour_record().unwrap();
    w.create_record(pb::CreateRecordRequest {
        record: r1.to_bytes(),
        domains: vec!["me.example".into()],
        idempotency_key: String::new(),
    })
    .await
    .unwrap();
    let mut a = workflow::draft(&r1, r1.master.timestamp + 1).unwrap();
    workflow::sign_draft(&mut a, &key(4)).unwrap();
    workflow::apply(&mut a).unwrap();
    let mut b = workflow::draft(&r1, r1.master.timestamp + 2).unwrap();
    workflow::sign_draft(&mut b, &key(4)).unwrap();
    workflow::apply(&mut b).unwrap();
    w.advance_head(pb::AdvanceHeadRequest {
        record: a.to_bytes(),
        expected_serial: 1,
        idempotency_key: String::new(),
    })
    .await
    .unwrap();
    let e = w
        .advance_head(pb::AdvanceHeadRequest {
            record: b.to_bytes(),
            expected_serial: 1,
            idempotency_key: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e}");
    let mut c = workflow::draft(&a, a.master.timestamp + 1).unwrap();
    workflow::sign_draft(&mut c, &key(4)).unwrap();
    workflow::apply(&mut c).unwrap();
    let mut d = workflow::draft(&c, c.master.timestamp + 1).unwrap();
    workflow::sign_draft(&mut d, &key(4)).unwrap();
    workflow::apply(&mut d).unwrap();
    let e = w
        .advance_head(pb::AdvanceHeadRequest {
            record: d.to_bytes(),
            expected_serial: 3,
            idempotency_key: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e}");
    // Oversized: refused before it is read (tonic's code for it is OUT_OF_RANGE).
    let e = w
        .create_record(pb::CreateRecordRequest {
            record: vec![0; 40 * 1024 * 1024],
            domains: vec![],
            idempotency_key: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e}");
    // The store is still up and consistent.
    let head = r
        .get_head(pb::GetHeadRequest {
            record: domain_ref("me.example"),
        })
        .await
        .unwrap();
    assert_eq!(head.get_ref().serial, 2);
}

async fn kill_mid_load(db_url: String) {
    let mut s = start_store(&db_url);
    let r1 = sample::tour_record().unwrap();
    let mut w = StoreWriteClient::connect(s.url()).await.unwrap();
    w.create_record(pb::CreateRecordRequest {
        record: r1.to_bytes(),
        domains: vec!["me.example".into()],
        idempotency_key: String::new(),
    })
    .await
    .unwrap();

    // Precompute revisions 2..=60 so the writer does nothing but write.
    let mut revs: Vec<Record> = Vec::new();
    let mut head = r1.clone();
    for _ in 2..=60 {
        let mut d = workflow::draft(&head, head.master.timestamp + 1).unwrap();
        workflow::sign_draft(&mut d, &key(4)).unwrap();
        workflow::apply(&mut d).unwrap();
        revs.push(d.clone());
        head = d;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let url = s.url();
    let writer = tokio::spawn(async move {
        let mut w = StoreWriteClient::connect(url).await.unwrap();
        for rev in revs {
            let expected = rev.master.serial - 1;
            match w
                .advance_head(pb::AdvanceHeadRequest {
                    record: rev.to_bytes(),
                    expected_serial: expected,
                    idempotency_key: String::new(),
                })
                .await
            {
                Ok(resp) => {
                    let _ = tx.send((resp.get_ref().serial, rev.master.current_master_hash));
                }
                Err(_) => return, // the process died mid-call
            }
        }
    });
    // Let some writes be acknowledged, then kill the store mid-load.
    let mut acked = Vec::new();
    while acked.len() < 15 {
        acked.push(rx.recv().await.unwrap());
    }
    s.kill();
    let _ = writer.await;
    while let Ok(a) = rx.try_recv() {
        acked.push(a);
    }
    assert!(acked.len() >= 15);

    // Restart on the same database: every acknowledged revision is there.
    let s2 = start_store(&db_url);
    let mut r = StoreReadClient::connect(s2.url()).await.unwrap();
    let hist = r
        .get_history(pb::GetHistoryRequest {
            record: domain_ref("me.example"),
            from_serial: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .revisions;
    for (serial, hash) in &acked {
        let m = poz::MasterZone::from_bytes(&hist[*serial as usize - 1]).unwrap();
        assert_eq!(
            (m.serial, m.current_master_hash),
            (*serial, *hash),
            "acknowledged serial {serial} lost"
        );
    }
    let head = r
        .get_head(pb::GetHeadRequest {
            record: domain_ref("me.example"),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(head.serial >= acked.last().unwrap().0);
    assert_eq!(hist.len() as u32, head.serial);
    // And the stored chain verifies from genesis.
    let master = r
        .get_master(pb::GetMasterRequest {
            record: domain_ref("me.example"),
        })
        .await
        .unwrap()
        .into_inner()
        .record;
    assert!(poz::verify_record(&Record::from_bytes(&master).unwrap()).is_complete());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_no_acknowledged_write_postgres() {
    kill_mid_load(fresh_pg_url().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_no_acknowledged_write_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    kill_mid_load(format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("k.db").display()
    ))
    .await;
}

/// Configuration comes from a TOML file, then `POZ_STORE_*`, then flags;
/// a bad setting stops the store before it listens, naming the setting.
#[test]
fn configuration_file_environment_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("c.db").display());
    let file = dir.path().join("store.toml");
    std::fs::write(
        &file,
        format!("listen = \"127.0.0.1:0\"\ninsecure = true\ndatabase_url = \"{db}\"\nmax_connections = 3\n"),
    )
    .unwrap();
    let run = |env: &[(&str, &str)], args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_poz-store"));
        c.env_remove("RUST_BACKTRACE")
            .env("POZ_STORE_CONFIG", &file);
        for (k, v) in env {
            c.env(k, v);
        }
        c.args(args).output().unwrap()
    };
    let out = run(
        &[("POZ_STORE_RETRIES", "5")],
        &["--print-config", "--max-connections", "2"],
    );
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    for want in [
        "listen = \"127.0.0.1:0\"",
        &format!("database_url = \"{db}\""),
        "max_connections = 2",
        "retries = 5",
        "statement_timeout_ms = 5000",
    ] {
        assert!(printed.contains(want), "{want} not in\n{printed}");
    }
    for (env, why) in [
        (
            ("POZ_STORE_MAX_CONNECTIONS", "0"),
            "max_connections must be 1..=10000",
        ),
        // Review of issue 13: these aborted the process (a pool of 4
        // billion) or looped on a value Postgres refuses.
        (
            ("POZ_STORE_MAX_CONNECTIONS", "4294967295"),
            "max_connections must be 1..=10000",
        ),
        (
            ("POZ_STORE_STATEMENT_TIMEOUT_MS", "9223372036854775807"),
            "statement_timeout_ms must be at most 2147483647",
        ),
        // A libpq key=value string is not echoed: it holds the password.
        (
            (
                "POZ_STORE_DATABASE_URL",
                "host=db user=poz password=s3cretQ dbname=poz",
            ),
            "not shown: it may hold a secret",
        ),
        (
            ("POZ_STORE_LISTEN", "localhost:1"),
            "listen \"localhost:1\" is not an IP:port",
        ),
        (
            ("POZ_STORE_DATABASE_URL", "mysql://x"),
            "database_url must be postgres://",
        ),
        (
            ("POZ_STORE_STATEMENT_TIMOUT_MS", "1"),
            "unknown setting `statement_timout_ms`",
        ),
        // Read replicas (issue 17): Postgres only, as postgres:// URLs,
        // the password never echoed, a known fallback.
        (
            ("POZ_STORE_REPLICA_URLS", "[\"postgres://r1/poz\"]"),
            "replica_urls need a Postgres database_url",
        ),
        (("POZ_STORE_REPLICA_FALLBACK", "sometimes"), "sometimes"),
        (
            ("POZ_STORE_REPLICA_WAIT_MS", "60001"),
            "replica_wait_ms must be at most 60000",
        ),
    ] {
        let out = run(&[env], &[]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{env:?}: {err}");
        assert!(!err.contains("s3cretQ"), "{err}");
        assert!(out.stdout.is_empty(), "it must not start listening");
    }
    // A replica URL that is not postgres://, against a Postgres primary,
    // is refused without its password.
    let out = run(
        &[
            ("POZ_STORE_DATABASE_URL", "postgres://poz@db/poz"),
            ("POZ_STORE_REPLICA_URLS", "[\"mysql://poz:s3cretQ@r1/poz\"]"),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("replica_urls[0] must be postgres://"), "{err}");
    assert!(!err.contains("s3cretQ"), "{err}");
    // And the file alone starts a working store.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_poz-store"));
    cmd.env("POZ_STORE_CONFIG", &file);
    let s = ServiceProcess::spawn(cmd);
    assert!(s.addr().starts_with("127.0.0.1:"), "{}", s.addr());
}

/// Issue 14: in a cluster a Job runs `poz-store migrate` before the
/// store's pods start, and they run with `migrate = false`. A store with
/// `migrate = false` refuses a schema that is behind (naming the
/// command), two `migrate` runs at once both succeed (sqlx's advisory
/// lock makes them apply each migration once), and the store then
/// serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_as_their_own_step_when_the_store_does_not_migrate() {
    let db = fresh_pg_url().await;
    let store = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_poz-store"));
        c.env_remove("RUST_BACKTRACE")
            .env("POZ_STORE_DATABASE_URL", &db)
            .env("POZ_STORE_MIGRATE", "false")
            .args(args);
        c
    };
    let out = store(&["--listen", "127.0.0.1:0", "--insecure"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("run `poz-store migrate`"), "{err}");
    assert!(out.stdout.is_empty(), "it must not start listening");

    let latest = poz_store::latest_migration();
    let runs: Vec<_> = (0..2)
        .map(|_| store(&["migrate"]).spawn().unwrap())
        .collect();
    for mut run in runs {
        let status = run.wait().unwrap();
        assert!(status.success(), "a concurrent migrate failed: {status}");
    }
    let out = store(&["migrate"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("schema at migration {latest}")
    );
    // Each migration is recorded once.
    use sqlx::Connection;
    let mut conn = sqlx::AnyConnection::connect(&db).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, poz_store::MIGRATOR.iter().count() as i64);

    let s = ServiceProcess::spawn(store(&["--listen", "127.0.0.1:0", "--insecure"]));
    let mut r = StoreReadClient::connect(s.url()).await.unwrap();
    let e = r
        .get_master(pb::GetMasterRequest {
            record: domain_ref("nowhere.example"),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
}

/// Issue 14: a provider ceremony's record (`record.poz`, serial 2 with
/// its genesis) goes into a split fleet's store with `poz-store
/// import-record`, from a file or standard input (`kubectl exec -i`);
/// a rerun changes nothing; the store then serves it under its domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ceremony_record_is_imported_once_and_then_served() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("i.db").display());
    let record = sample::provider().unwrap();
    let file = dir.path().join("record.poz");
    std::fs::write(&file, record.to_bytes()).unwrap();
    let import = |input: Option<&[u8]>, args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_poz-store"));
        c.env_remove("RUST_BACKTRACE")
            .env("POZ_STORE_DATABASE_URL", &db)
            .arg("import-record")
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .stdin(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            if let Some(bytes) = input {
                stdin.write_all(bytes).unwrap();
            }
        }
        child.wait_with_output().unwrap()
    };
    let want = format!(
        "record {} at serial 2 for social.example",
        record.id().to_hex()
    );
    let path = file.to_str().unwrap();
    let out = import(None, &["--domain", "social.example", path]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want);
    // Again, from standard input: the same answer, nothing added.
    let bytes = record.to_bytes();
    let out = import(Some(&bytes), &["--domain", "social.example", "-"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want);
    // Not a record; no domain (usage, exit 2).
    let out = import(Some(b"not a record"), &["--domain", "social.example", "-"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("record:"),
        "{out:?}"
    );
    let out = import(None, &[path]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    let s = start_store(&db);
    let mut r = StoreReadClient::connect(s.url()).await.unwrap();
    let head = r
        .get_head(pb::GetHeadRequest {
            record: domain_ref("social.example"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(head.record_id.unwrap().value, record.id().0.to_vec());
    assert_eq!(head.serial, 2);
}

/// Review of issue 14: the store could not speak TLS to Postgres at all
/// (sqlx was built without it), so `sslmode=prefer` fell back to cleartext
/// in silence. Against the test command's Postgres (TLS on, a throwaway
/// CA in POZ_TEST_PG_CA): `sslmode=verify-full` with that CA connects and
/// the session is encrypted; with another CA it is refused. Also here:
/// `--config` after the subcommand (the chart's Job writes it so), a
/// schema ahead of this build, and an import naming a second domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_verified_tls_and_the_cluster_steps() {
    let ca = std::env::var("POZ_TEST_PG_CA")
        .expect("POZ_TEST_PG_CA: run through deploy/test.sh, whose Postgres has TLS on");
    let db = fresh_pg_url().await;
    let tls_url = format!("{db}?sslmode=verify-full&sslrootcert={ca}");
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&tls_url).await.unwrap();
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(ssl, "the session is not encrypted");
    // Another CA: refused, not downgraded.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other-ca.pem");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-days", "1", "-subj", "/CN=other", "-keyout"])
        .arg(dir.path().join("other.key"))
        .arg("-out")
        .arg(&other)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let wrong = format!("{db}?sslmode=verify-full&sslrootcert={}", other.display());
    assert!(sqlx::AnyConnection::connect(&wrong).await.is_err());

    // The Job's command as the chart writes it: subcommand, then --config.
    let file = dir.path().join("store.toml");
    std::fs::write(&file, "migrate = false\n").unwrap();
    let store = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_poz-store"));
        c.env_remove("RUST_BACKTRACE")
            .env("POZ_STORE_DATABASE_URL", &tls_url)
            .args(args);
        c
    };
    let path = file.to_str().unwrap();
    let out = store(&["migrate", "--config", path]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // A schema ahead of this build (a newer release migrated it): migrate
    // and a store still start; each applies what it lacks of its own.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from a newer release', true, '\\x00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let out = store(&["migrate", "--config", path]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    for migrate in ["true", "false"] {
        let mut cmd = store(&["--config", path, "--listen", "127.0.0.1:0", "--insecure"]);
        cmd.env("POZ_STORE_MIGRATE", migrate);
        let s = ServiceProcess::spawn(cmd);
        assert!(s.addr().starts_with("127.0.0.1:"), "{}", s.addr());
    }

    // An import naming a second domain binds it (the rerun's key matched
    // the genesis only, and the domain was skipped).
    let record = sample::provider().unwrap();
    let rec_file = dir.path().join("record.poz");
    std::fs::write(&rec_file, record.to_bytes()).unwrap();
    let rec_path = rec_file.to_str().unwrap();
    for domain in ["a.example", "b.example"] {
        let out = store(&[
            "import-record",
            "--config",
            path,
            "--domain",
            domain,
            rec_path,
        ])
        .output()
        .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let s = ServiceProcess::spawn(store(&[
        "--config",
        path,
        "--listen",
        "127.0.0.1:0",
        "--insecure",
    ]));
    let mut r = StoreReadClient::connect(s.url()).await.unwrap();
    for domain in ["a.example", "b.example"] {
        let head = r
            .get_head(pb::GetHeadRequest {
                record: domain_ref(domain),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(head.serial, 2, "{domain}");
    }
}

/// `poz-store partition-entries` refuses a bad count or a SQLite URL
/// before it opens anything (opening migrates, and an empty one-heap
/// table would be partitioned into the configured count), partitions an
/// empty one-heap table into the count asked, and reports the partitions
/// a partitioned table has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_entries_refuses_before_it_touches_the_database() {
    let db = fresh_pg_url().await;
    let store = |url: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_poz-store"))
            .env_remove("RUST_BACKTRACE")
            .env("POZ_STORE_DATABASE_URL", url)
            .env("POZ_STORE_ENTRIES_PARTITIONS", "0")
            .args(args)
            .output()
            .unwrap()
    };
    let tables = || async {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(&db).await.unwrap();
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'entries%' AND relkind IN ('r', 'p')",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap()
    };
    for bad in ["0", "1025", "5000"] {
        let out = store(&db, &["partition-entries", "--partitions", bad]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is not in 1..=1024"), "{err}");
        assert_eq!(tables().await, 0, "--partitions {bad} touched the database");
    }
    let dir = tempfile::tempdir().unwrap();
    let lite = format!("sqlite:{}?mode=rwc", dir.path().join("s.db").display());
    let out = store(&lite, &["partition-entries"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("SQLite keeps one table"));
    assert!(
        !dir.path().join("s.db").exists(),
        "the SQLite file was created"
    );

    assert!(store(&db, &["migrate"]).status.success());
    assert_eq!(tables().await, 1, "entries_partitions = 0 keeps one heap");
    let out = store(&db, &["partition-entries", "--partitions", "4"]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("entries: 0 rows in 4 hash partitions"),
        "{said}"
    );
    assert_eq!(
        tables().await,
        1 + 4,
        "the partitioned table and its 4 partitions"
    );
    let out = store(&db, &["partition-entries", "--partitions", "8"]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("entries: 0 rows in 4 hash partitions (0 copied"),
        "{said}"
    );
    // The database flags go after the subcommand as well as before it.
    let out = Command::new(env!("CARGO_BIN_EXE_poz-store"))
        .env_remove("RUST_BACKTRACE")
        .args(["migrate", "--database-url", &db, "--max-connections", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}
