//! The Provider API's test fleet, shared by the test files.
#![allow(dead_code, clippy::unwrap_used)]

use poz::sample;
use poz::{Codec, Record};
use poz_proto::v1 as pb;
use std::sync::Arc;
use tonic::transport::Channel;

async fn channel(addr: &str) -> Channel {
    Channel::from_shared(addr.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub struct Fleet {
    pub store: poz_store::Store,
    pub provider: Record,
    pub api: pb::provider_api_client::ProviderApiClient<Channel>,
    _dir: tempfile::TempDir,
}

/// Store, verifier, signer (holding the provider's identity device key)
/// and the Provider API, each a gRPC server on loopback.
pub async fn fleet(batch_size: usize) -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
    let store = poz_store::Store::open(&url, poz_store::StoreOptions::default())
        .await
        .unwrap();
    let (provider, _) = sample::chain_provider().unwrap();
    let genesis = Record::new(provider.keys.clone(), provider.history[0].clone());
    let id = store
        .create_record(&genesis.to_bytes(), &["social.example".into()], "")
        .await
        .unwrap();
    store
        .advance_head(&provider.to_bytes(), 1, "")
        .await
        .unwrap();

    let keys = poz_signer::SoftwareKeyStore::new(vec![(
        "device-a".into(),
        sample::provider_keys().device_a,
    )]);
    let local = poz_provider::inprocess::start(store.clone(), Arc::new(keys), id, batch_size)
        .await
        .unwrap();
    Fleet {
        store,
        provider,
        api: pb::provider_api_client::ProviderApiClient::new(channel(&local.provider_api).await),
        _dir: dir,
    }
}
