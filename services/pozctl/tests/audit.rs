//! `pozctl audit` over real sockets (SPEC §14.8): pozd bulk-issues 2,500
//! bindings through its Provider API (`pozctl identity import`, batches of
//! 1,000), and an auditor outside the provider pages the batch log on the
//! plaintext query port and checks every batch; `--since` picks up where
//! the last audit ended; `--handle` lists one handle's bindings. Then the
//! provider's store is tampered with (a batch dropped from the log, a
//! binding deleted from another batch) and the audit exits 1, naming the
//! gap and the missing leaf.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod pozd;

use std::process::{Command, Output};

fn pozctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pozctl"))
        .args(args)
        .output()
        .unwrap()
}

fn said(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `pozctl audit demo.example` against pozd's plaintext port, pinned by
/// the record ID pozd printed.
fn audit(vars: &[(String, String)], extra: &[&str]) -> Output {
    let mut args = vec![
        "audit",
        "demo.example",
        "--server",
        pozd::var(vars, "POZ_QUERY"),
        "--record-id",
        pozd::var(vars, "POZ_PROVIDER"),
    ];
    args.extend_from_slice(extra);
    pozctl(&args)
}

/// The batch count in the audit's summary line ("checked N identity
/// batch(es)").
fn checked(o: &Output) -> u64 {
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .find(|l| l.starts_with("checked "))
        .unwrap_or_else(|| panic!("no summary\n{}", said(o)));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outside_auditor_checks_every_batch_and_sees_a_tampered_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pozd-data");
    let (p, vars) = pozd::start(&data, &[]);

    // 2,500 bindings in bulk: three batches of up to 1,000.
    let csv = dir.path().join("users.csv");
    let mut text = String::from("handle,user_record_hash\n");
    for i in 0..2_500u32 {
        let h = poz::hash::tagged_hash("audit", &[&i.to_be_bytes()]);
        text.push_str(&format!("user{i},{}\n", h.to_hex()));
    }
    std::fs::write(&csv, &text).unwrap();
    let o = pozctl(&[
        "identity",
        "import",
        "--quiet",
        "--api",
        pozd::var(&vars, "POZ_API"),
        csv.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", said(&o));

    let o = audit(&vars, &[]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", said(&o));
    assert!(out.contains("verified from genesis"), "{out}");
    // The provider flushes a chunk early when the stream pauses, so the
    // batch sizes are not fixed; every leaf is.
    let leaves: u64 = out
        .lines()
        .filter(|l| l.starts_with("batch ") && l.ends_with("): OK"))
        .map(|l| {
            let (_, rest) = l.split_once(": ").unwrap();
            rest.split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert!(leaves >= 2_500, "{out}");
    let all = checked(&o);
    assert!(all >= 3, "{out}");

    // The next audit starts where this one ended: nothing new.
    let o = audit(&vars, &["--since", &all.to_string()]);
    assert!(o.status.success(), "{}", said(&o));
    assert_eq!(checked(&o), 0);
    let o = audit(&vars, &["--since", &(all - 1).to_string()]);
    assert!(o.status.success(), "{}", said(&o));
    assert_eq!(checked(&o), 1);
    // A --since the log does not reach (an auditor's last batch that the
    // provider's log no longer holds) is a gap, not "the log ends there".
    let o = audit(&vars, &["--since", &(all + 5).to_string()]);
    assert_eq!(o.status.code(), Some(1), "{}", said(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("no longer holds batch {}", all + 5)),
        "{}",
        said(&o)
    );
    // The summary agrees with the gap: the log ends where it does, and
    // the next audit starts from the first batch, not at the stale mark.
    for since in [all + 5, u64::MAX] {
        let o = audit(&vars, &["--since", &since.to_string()]);
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert_eq!(o.status.code(), Some(1), "{}", said(&o));
        assert!(
            out.contains(&format!(
                "the log ends at batch {all}, before batch {since} (next audit: from the first batch, without --since)"
            )),
            "{out}"
        );
        assert!(!out.contains("next audit: --since"), "{out}");
        assert_eq!(checked(&o), 0);
    }
    // A log with no batch at all (the Service Zone's entries are signed
    // one by one): it holds none.
    let o = audit(&vars, &["--zone", "service", "--since", "5"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(1), "{}", said(&o));
    assert!(out.contains("GAP the log no longer holds batch 5"), "{out}");
    assert!(
        out.contains("the log holds no batch (next audit: from the first batch, without --since)"),
        "{out}"
    );

    // One handle's history: its binding, live, in a batch the log lists.
    // user0 is in the first imported batch, which is never the last.
    let o = audit(&vars, &["--handle", "user0"]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", said(&o));
    assert!(out.contains("handle \"user0\": 1 binding(s)"), "{out}");
    assert!(out.contains(": live; leaf "), "{out}");
    let root = out
        .split("of batch root ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    drop(p);

    // The store tampered with: user0's batch dropped from the log, and
    // user2499's binding (in the last batch) deleted.
    {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}", data.join("store.db").display());
        let mut db = sqlx::AnyConnection::connect(&url).await.unwrap();
        let gone = sqlx::query("DELETE FROM batches WHERE root_digest = $1")
            .bind(hex::decode(&root).unwrap())
            .execute(&mut db)
            .await
            .unwrap();
        assert_eq!(gone.rows_affected(), 1);
        let gone = sqlx::query("DELETE FROM entries WHERE handle = 'user2499'")
            .execute(&mut db)
            .await
            .unwrap();
        assert_eq!(gone.rows_affected(), 1);
        db.close().await.unwrap();
    }
    let (_p, vars) = pozd::start(&data, &[]);
    let o = audit(&vars, &[]);
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert_eq!(o.status.code(), Some(1), "{}", said(&o));
    assert!(out.contains("GAP batch log:"), "{out}");
    assert!(
        out.contains(" were served; missing leaves start at "),
        "{out}"
    );
    let o = audit(&vars, &["--handle", "user0"]);
    assert_eq!(o.status.code(), Some(1), "{}", said(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("which the batch log does not list"),
        "{}",
        said(&o)
    );
}
