//! Hosting records over 7076 (SUBMIT_SIGNED kind 3, SPEC §14.5): the
//! fleet in process behind a submit gateway that hosts records, and one
//! that does not. A new record verified from genesis is stored and named
//! by its record name; the same record again costs nothing; the gate asks
//! the publish difficulty even without load; an address's quota, the
//! size cap, a record that does not verify and a provider that hosts none
//! each get their documented status.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod support;

use poz::gate::{Gate, Port};
use poz::noise::StaticKeypair;
use poz::pow::{Challenger, LoadTargets, PowConfig, Secrets};
use poz::sample;
use poz::wire::{Status, SubmissionState, SubmitSigned};
use poz::{Codec, Record};
use poz_client::{Client, ClientConfig, ClientError, Endpoint, Security};
use poz_edge::{Discipline, Edge, LoadMeter};
use poz_submit_gw::{AddressQuota, Hosting, SignedSubmissions, Submissions};
use std::sync::Arc;

fn refusal<T: std::fmt::Debug>(r: Result<T, ClientError>) -> Status {
    match r {
        Err(ClientError::Status { status, .. }) => status,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn publish(rec: &Record) -> SubmitSigned {
    SubmitSigned::NewRecord {
        record: rec.to_bytes(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_records_are_hosted_within_their_bounds() {
    let support::Published {
        store,
        provider_id,
        dir: _dir,
        ..
    } = support::published().await;
    let k = sample::provider_keys();
    let keys = poz_signer::SoftwareKeyStore::new(vec![("device-a".into(), k.device_a)]);
    let fleet = poz_provider::inprocess::start(store.clone(), Arc::new(keys), provider_id, 100)
        .await
        .unwrap();
    let ch = |u: &str| poz_kit::Channels::default().lazy(u).unwrap();
    let small = sample::sole_owner_genesis(&sample::key(92)).unwrap();
    let cap = small.to_bytes().len() + 64;
    let key = StaticKeypair::generate();
    let mut eps = Vec::new();
    // Hosting, no hosting, and hosting with room for a record past
    // genesis (stored revision by revision from its Zone History).
    for (hosts, cap, quota) in [(true, cap, 2), (false, cap, 2), (true, 65_000, 10)] {
        let pow = PowConfig::default();
        let hosting = hosts.then(|| {
            Hosting::new(
                ch(&fleet.store),
                ch(&fleet.verifier),
                cap,
                AddressQuota::new(quota, 3_600_000, 100),
            )
        });
        let edge = Edge::new(
            Discipline::default(),
            key.clone(),
            Gate::new(Challenger::new(pow, Secrets(vec![[2; 32]])), 1_000)
                .with_publish_difficulty(6),
            Submissions {
                signed: SignedSubmissions::new(ch(&fleet.store), ch(&fleet.verifier)),
                requests: None,
                hosting,
            },
            Arc::new(LoadMeter::new(pow, LoadTargets::default())),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        eps.push(Endpoint {
            addr: l.local_addr().unwrap(),
            security: Security::Noise(key.public),
        });
        tokio::spawn(edge.serve(l, Port::NoiseSubmit, std::future::pending()));
    }
    let (hosting, not_hosting, roomy) = ([eps[0]], [eps[1]], [eps[2]]);
    let c = Client::new(ClientConfig {
        attempts: 1,
        ..ClientConfig::default()
    });

    // No proof at all: the floor holds without load.
    let lazy = Client::new(ClientConfig {
        attempts: 1,
        max_pow_difficulty: 0,
        ..ClientConfig::default()
    });
    assert!(matches!(
        lazy.submit_signed(&hosting, &publish(&small)).await,
        Err(ClientError::PowTooHard { .. })
    ));

    // Hosted, and named by its record name from then on.
    let t = c.submit_signed(&hosting, &publish(&small)).await.unwrap();
    assert_eq!(t.state, SubmissionState::COMMITTED);
    let name = poz::wire::record_name(&small.id());
    assert_eq!(store.resolve(&name).await.unwrap(), small.id());
    // Again: the same ticket, no quota spent.
    let again = c.submit_signed(&hosting, &publish(&small)).await.unwrap();
    assert_eq!(again, t);

    // A provider that hosts none.
    let other = sample::sole_owner_genesis(&sample::key(93)).unwrap();
    assert_eq!(
        refusal(c.submit_signed(&not_hosting, &publish(&other)).await),
        Status::UNAUTHORIZED
    );
    // Over the size cap.
    let big = sample::tour_record().unwrap();
    assert!(big.to_bytes().len() > cap);
    assert_eq!(
        refusal(c.submit_signed(&hosting, &publish(&big)).await),
        Status::TOO_LARGE
    );
    // Does not verify: a master-zone signature altered.
    let mut forged = sample::sole_owner_genesis(&sample::key(94)).unwrap();
    forged.master.signatures[0].data[0] ^= 1;
    assert_eq!(
        refusal(c.submit_signed(&hosting, &publish(&forged)).await),
        Status::UNAUTHORIZED
    );
    // The quota: a second new record, then no third.
    c.submit_signed(&hosting, &publish(&other)).await.unwrap();
    let third = sample::sole_owner_genesis(&sample::key(95)).unwrap();
    assert_eq!(
        refusal(c.submit_signed(&hosting, &publish(&third)).await),
        Status::RATE_LIMITED
    );
    assert!(store
        .resolve(&poz::wire::record_name(&third.id()))
        .await
        .is_err());

    // A new record at serial 3 with its history: stored from genesis on,
    // revision by revision, its head the submitted revision.
    let owner = sample::key(96);
    let mut chain = sample::sole_owner_genesis(&owner).unwrap();
    for _ in 0..2 {
        let mut next = poz::workflow::draft(&chain, chain.master.timestamp + 1_000).unwrap();
        poz::workflow::sign_draft(&mut next, &owner).unwrap();
        poz::workflow::apply(&mut next).unwrap();
        chain = next;
    }
    assert_eq!((chain.master.serial, chain.history.len()), (3, 2));
    assert!(store.head(&chain.id()).await.is_err(), "not held before");
    c.submit_signed(&roomy, &publish(&chain)).await.unwrap();
    let (serial, hash, _) = store.head(&chain.id()).await.unwrap();
    assert_eq!((serial, hash), (3, chain.master.current_master_hash));
    assert_eq!(store.history(&chain.id(), 1).await.unwrap().len(), 3);
}
