//! What the submit gateway's request tests share: a store on SQLite in a
//! temporary directory holding the sample provider at its head
//! (`social.example`), a person's record (`me.example`, the tour record)
//! and a second person's (`other.example`, sole key: sample key 91).
#![allow(clippy::unwrap_used, dead_code)] // test support; each test file uses part of it

use poz::codec::Codec;
use poz::sample;
use poz::{Hash32, Record};

pub struct Published {
    pub store: poz_store::Store,
    pub provider: Record,
    pub provider_id: Hash32,
    pub subject: Record,
    pub other: Record,
    pub dir: tempfile::TempDir,
}

pub async fn published() -> Published {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
    let store = poz_store::Store::open(&url, poz_store::StoreOptions::default())
        .await
        .unwrap();
    let (provider, _) = sample::chain_provider().unwrap();
    let genesis = Record::new(provider.keys.clone(), provider.history[0].clone());
    let provider_id = store
        .create_record(&genesis.to_bytes(), &["social.example".into()], "")
        .await
        .unwrap();
    store
        .advance_head(&provider.to_bytes(), 1, "")
        .await
        .unwrap();
    let subject = sample::tour_record().unwrap();
    store
        .create_record(&subject.to_bytes(), &["me.example".into()], "")
        .await
        .unwrap();
    let other = sample::sole_owner_genesis(&sample::key(91)).unwrap();
    store
        .create_record(&other.to_bytes(), &["other.example".into()], "")
        .await
        .unwrap();
    Published {
        store,
        provider,
        provider_id,
        subject,
        other,
        dir,
    }
}
