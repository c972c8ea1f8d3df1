//! Shared by the store's test files: a fresh Postgres database per test
//! on the server `POZ_TEST_PG_URL` names (deploy/test.sh starts a
//! throwaway cluster and sets it).
#![allow(dead_code, clippy::unwrap_used)]

pub mod cluster;

/// The URL of a new, uniquely named database.
pub async fn fresh_pg_url() -> String {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let admin = std::env::var("POZ_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = sqlx::AnyConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("Postgres at {admin} is not reachable ({e}); run the tests through deploy/test.sh, which starts one"));
    let mut r = [0u8; 6];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut r);
    let name = format!("poz_test_{}_{}", std::process::id(), hex::encode(r));
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
}
