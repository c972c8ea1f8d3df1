//! The sample provider's fleet in the test process: store (SQLite in
//! `dir`), verifier, signer (the provider's software identity key) and
//! Provider API on plain loopback gRPC (`poz_provider::inprocess`).
#![allow(dead_code, clippy::unwrap_used)]

use poz::sample;
use poz::Codec;
use std::sync::Arc;

/// The running fleet: its store, the provider's record ID, and the
/// services' `http://` addresses.
pub async fn sample_fleet(
    dir: &std::path::Path,
) -> (
    poz_store::Store,
    poz::Hash32,
    poz_provider::inprocess::LocalFleet,
) {
    let (provider, _) = sample::chain_provider().unwrap();
    fleet_of(
        dir,
        &provider,
        vec![("device-a".into(), sample::provider_keys().device_a)],
    )
    .await
}

/// The fleet for `provider` (domain `social.example`), its signer
/// holding `keys`.
pub async fn fleet_of(
    dir: &std::path::Path,
    provider: &poz::Record,
    keys: Vec<(String, poz::SigningKey)>,
) -> (
    poz_store::Store,
    poz::Hash32,
    poz_provider::inprocess::LocalFleet,
) {
    let url = format!("sqlite://{}?mode=rwc", dir.join("s.db").display());
    let store = poz_store::Store::open(&url, poz_store::StoreOptions::default())
        .await
        .unwrap();
    let (id, _) = store
        .import_record(&provider.to_bytes(), &["social.example".into()])
        .await
        .unwrap();
    let keys = poz_signer::SoftwareKeyStore::new(keys);
    let fleet = poz_provider::inprocess::start(store.clone(), Arc::new(keys), id, 64)
        .await
        .unwrap();
    (store, id, fleet)
}
