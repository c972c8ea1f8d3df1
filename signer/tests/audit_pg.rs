//! The signer's audit log on Postgres under a role that may only INSERT
//! into `signature_audit` (as docs/OPERATIONS.md tells operators to grant
//! it): it opens, writes rows the store reads back, and needs nothing
//! more. Needs the server `POZ_TEST_PG_URL` names (deploy/test.sh starts
//! one).
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::Hash32;
use poz_signer::{SignatureAudit, SignatureAuditLog};
use poz_store::{Store, StoreOptions};
use sqlx::Connection;

fn random_suffix() -> String {
    let mut r = [0u8; 6];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut r);
    r.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn the_audit_log_needs_insert_on_signature_audit_only() {
    sqlx::any::install_default_drivers();
    let admin = std::env::var("POZ_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = sqlx::AnyConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("Postgres at {admin} is not reachable ({e}); run the tests through deploy/test.sh, which starts one"));
    let suffix = random_suffix();
    let db = format!("poz_test_{}_{suffix}", std::process::id());
    let role = format!("poz_signer_{suffix}");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE ROLE {role} LOGIN"))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').unwrap().0;
    let db_url = format!("{base}/{db}");
    // The store migrates; then the signer's role gets INSERT on the one
    // table, nothing else.
    let store = Store::open(&db_url, StoreOptions::default()).await.unwrap();
    let mut owner = sqlx::AnyConnection::connect(&db_url).await.unwrap();
    sqlx::query(&format!("GRANT INSERT ON signature_audit TO {role}"))
        .execute(&mut owner)
        .await
        .unwrap();
    let host = base.split_once('@').map_or_else(
        || base.trim_start_matches("postgres://").to_string(),
        |(_, h)| h.to_string(),
    );
    let signer_url = format!("postgres://{role}@{host}/{db}");

    let log = SignatureAuditLog::open(&signer_url).await.unwrap();
    let record_id = Hash32([7; 32]);
    let rows: Vec<SignatureAudit> = (0..3u8)
        .map(|i| SignatureAudit {
            key_id: Hash32([1; 32]),
            record_id,
            zone_type: 1,
            what: "entry".into(),
            digest: Hash32([i; 32]),
            signature: vec![i; 66],
        })
        .collect();
    let ids = log.append(&rows).await.unwrap();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|id| *id < 1 << 63));
    let stored = store.signature_audit(&record_id).await.unwrap();
    let mut got: Vec<(u64, SignatureAudit)> = stored
        .into_iter()
        .map(|(id, r)| {
            (
                id,
                SignatureAudit {
                    key_id: r.key_id,
                    record_id: r.record_id,
                    zone_type: r.zone_type,
                    what: r.what,
                    digest: r.digest,
                    signature: r.signature,
                },
            )
        })
        .collect();
    got.sort_by_key(|(_, r)| r.digest.0);
    let want: Vec<(u64, SignatureAudit)> = ids.into_iter().zip(rows).collect();
    assert_eq!(got, want);

    // The role really is that narrow: it cannot read the log back.
    let mut as_signer = sqlx::AnyConnection::connect(&signer_url).await.unwrap();
    let e = sqlx::query("SELECT count(*) FROM signature_audit")
        .execute(&mut as_signer)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("permission denied"), "{e}");
    as_signer.close().await.unwrap();

    // Without the grant the log does not open, and says why.
    sqlx::query(&format!("REVOKE INSERT ON signature_audit FROM {role}"))
        .execute(&mut owner)
        .await
        .unwrap();
    let e = SignatureAuditLog::open(&signer_url).await.unwrap_err();
    assert!(e.to_string().contains("INSERT on signature_audit"), "{e}");
    owner.close().await.unwrap();
    drop(log);
    store.close().await;
    // Roles outlive databases: this one goes (it holds no grant now).
    sqlx::query(&format!("DROP ROLE {role}"))
        .execute(&mut conn)
        .await
        .unwrap();
}
