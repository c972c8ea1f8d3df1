//! One conformance suite, run against both backends: SQLite (a temporary
//! file) and Postgres (a fresh database on the server that
//! `POZ_TEST_PG_URL` names; deploy/test.sh finds or starts one).
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod common;

use poz::codec::Codec;
use poz::sample::{self, key, T0};
use poz::verify::{verify_and_accept, verify_binding};
use poz::workflow;
use poz::zone::ZoneType;
use poz::Record;
use poz_store::{Store, StoreError, StoreOptions};
use std::sync::Arc;

async fn pg_store(entries_partitions: u32) -> Store {
    let options = StoreOptions {
        entries_partitions,
        ..StoreOptions::default()
    };
    Store::open(&common::fresh_pg_url().await, options)
        .await
        .unwrap()
}

async fn sqlite_store(dir: &tempfile::TempDir) -> Store {
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("poz.db").display());
    Store::open(&url, StoreOptions::default()).await.unwrap()
}

/// Runs `f` against both backends, Postgres in both layouts of the
/// entries table (one heap, the default, and hash partitions).
macro_rules! both {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let dir = tempfile::tempdir().unwrap();
                let s = sqlite_store(&dir).await;
                ($body)(s).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let s = pg_store(0).await;
                ($body)(s).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_partitioned() {
                let s = pg_store(poz_store::DEFAULT_PARTITIONS).await;
                ($body)(s).await;
            }
        }
    };
}

/// The provider's genesis (serial 1) and the serial-2 record that adds
/// its zones, as a provider would store them.
fn provider_genesis_and_rest() -> (Record, Record) {
    let p = sample::provider().unwrap();
    let g = Record::new(p.keys.clone(), p.history[0].clone());
    (g, p)
}

both!(store_and_look_up, |s: Store| async move {
    let (g, p) = provider_genesis_and_rest();
    let id = s
        .create_record(&g.to_bytes(), &["social.example".into()], "create-1")
        .await
        .unwrap();
    assert_eq!(id, p.id());
    // The same create again (same key) is a no-op.
    assert_eq!(
        s.create_record(&g.to_bytes(), &["social.example".into()], "create-1")
            .await
            .unwrap(),
        id
    );
    assert_eq!(
        s.advance_head(&p.to_bytes(), 1, "adv-2").await.unwrap(),
        (2, p.master.current_master_hash)
    );
    assert_eq!(s.resolve("social.example").await.unwrap(), id);
    assert_eq!(s.head(&id).await.unwrap().0, 2);

    // MASTER: verifies from genesis, no identity entries.
    let m = Record::from_bytes(&s.master_answer(&id).await.unwrap()).unwrap();
    assert!(poz::verify_record(&m).is_complete());
    assert!(!m.zones.contains_key(&ZoneType::IDENTITY));
    assert_eq!(m.zones[&ZoneType::SERVICE].entries.len(), 4);

    // CHAIN for alice verifies on its own, binding included.
    let c = Record::from_bytes(&s.chain(&id, "alice").await.unwrap()).unwrap();
    let vr = verify_and_accept(c).unwrap();
    assert!(vr.complete);
    let b = &vr.record.zones[&ZoneType::IDENTITY].entries[0];
    assert_eq!(
        verify_binding(&vr, b, T0 + 10_000).unwrap().binding.handle,
        "alice"
    );
    assert!(matches!(
        s.chain(&id, "nobody").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.resolve("nowhere.example").await,
        Err(StoreError::NotFound(_))
    ));

    // New bindings and a revocation through put_entries; idempotent.
    let k = sample::provider_keys();
    let bob = sample::issue(
        &p,
        sample::user_id(2),
        "bob",
        T0 + 5_000,
        0,
        &[&k.device_a, &k.device_b],
    )
    .unwrap();
    assert_eq!(
        s.put_entries(&id, ZoneType::IDENTITY, &[bob.to_bytes()], "bob-1")
            .await
            .unwrap(),
        (1, 0)
    );
    assert_eq!(
        s.put_entries(&id, ZoneType::IDENTITY, &[bob.to_bytes()], "bob-1")
            .await
            .unwrap(),
        (0, 1)
    );
    assert!(matches!(
        s.put_entries(
            &id,
            ZoneType::IDENTITY,
            &[bob.to_bytes(), bob.to_bytes()],
            "bob-1"
        )
        .await,
        Err(StoreError::IdempotencyMismatch(_))
    ));
    let mut rev = workflow::new_revocation(
        bob.identity_digest(&id),
        T0 + 6_000,
        poz::entries::RevocationReason::ACCOUNT_CLOSED,
    );
    workflow::sign_entry(&p, ZoneType::IDENTITY, &mut rev, &k.device_a).unwrap();
    s.put_entries(&id, ZoneType::IDENTITY, &[rev.to_bytes()], "")
        .await
        .unwrap();
    let (_, revocation) = s.binding(&id, "bob").await.unwrap();
    assert!(revocation.is_some());
    assert_eq!(s.count_bindings(&id).await.unwrap(), 2);

    // A bulk put spanning several multi-row statements, overlapping an
    // earlier put and repeating entries within itself: every entry is
    // counted once, as stored or as already present.
    let bulk: Vec<Vec<u8>> = sample::bulk_bindings(&p, 1_203, &[&k.device_a, &k.device_b])
        .unwrap()
        .iter()
        .map(|e| e.to_bytes())
        .collect();
    assert_eq!(
        s.put_entries(&id, ZoneType::IDENTITY, &bulk[..300], "")
            .await
            .unwrap(),
        (300, 0)
    );
    let mut again = bulk.clone();
    again.extend_from_slice(&bulk[1_000..1_010]);
    assert_eq!(
        s.put_entries(&id, ZoneType::IDENTITY, &again, "bulk-2")
            .await
            .unwrap(),
        (903, 310)
    );
    assert_eq!(s.count_bindings(&id).await.unwrap(), 2 + 1_203);
    let (b, none) = s.binding(&id, "user1202").await.unwrap();
    assert_eq!(b.to_bytes(), bulk[1_202]);
    assert!(none.is_none());

    // Many handles at once (the Provider API's duplicate check), with
    // revocation state; absent handles are left out.
    let mut asked: Vec<String> = (0..1_203).map(|i| format!("user{i}")).collect();
    asked.extend(["nobody".to_string(), "bob".to_string()]);
    let found = s.bindings_for_handles(&id, &asked).await.unwrap();
    assert_eq!(found.len(), 1_204);
    for (h, e, revoked) in &found {
        assert_eq!(*revoked, h == "bob", "{h}");
        if let Some(i) = h.strip_prefix("user") {
            assert_eq!(e.to_bytes(), bulk[i.parse::<usize>().unwrap()]);
        }
    }
    // Gathered lookups by domain (the gateways' IDENTITY path): answered
    // in the order asked across statements, each exactly what the single
    // lookup answers: found, revoked, unknown handle, unknown domain, a
    // domain in capitals, the same pair twice.
    let mut asks: Vec<(String, String)> = Vec::new();
    for i in (0..1_203).rev().step_by(3) {
        asks.push(("social.example".into(), format!("user{i}")));
        match i % 4 {
            0 => asks.push(("social.example".into(), "bob".into())),
            1 => asks.push(("social.example".into(), format!("nobody{i}"))),
            2 => asks.push(("nowhere.example".into(), "alice".into())),
            _ => asks.push(("Social.Example".into(), format!("user{i}"))),
        }
    }
    assert!(asks.len() > 2 * poz_store::LOOKUPS_PER_QUERY);
    let answers = s.lookup_bindings(&asks).await.unwrap();
    assert_eq!(answers.len(), asks.len());
    let (mut found, mut missing) = (0, 0);
    for ((domain, handle), got) in asks.iter().zip(&answers) {
        let want = s
            .binding_by_domain(&domain.to_ascii_lowercase(), handle)
            .await;
        match (got, want) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a, &b, "{domain} {handle}");
                assert_eq!(a.revocation.is_some(), handle == "bob", "{handle}");
                found += 1;
            }
            (Err(StoreError::NotFound(a)), Err(StoreError::NotFound(b))) => {
                assert_eq!(a, &b, "{domain} {handle}");
                missing += 1;
            }
            (a, b) => panic!("{domain} {handle}: {a:?} vs {b:?}"),
        }
    }
    assert_eq!((found, missing), (401 + 100 + 100, 100 + 101));
    assert!(s.lookup_bindings(&[]).await.unwrap().is_empty());

    // Pages in handle order.
    let page = s.list_bindings(&id, "user1199", 5).await.unwrap();
    let handles: Vec<&str> = page.iter().map(|(h, _, _)| h.as_str()).collect();
    assert_eq!(
        handles,
        ["user12", "user120", "user1200", "user1201", "user1202"]
    );
    let first = s.list_bindings(&id, "", 2).await.unwrap();
    assert_eq!(first[0].0, "alice");
    assert_eq!((first[1].0.as_str(), first[1].2), ("bob", true));

    // Garbage is refused with a reason, never stored.
    assert!(matches!(
        s.put_entries(&id, ZoneType::IDENTITY, &[vec![1, 2, 3]], "")
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.create_record(b"not a record", &[], "").await,
        Err(StoreError::Invalid(_))
    ));
});

both!(a_second_revision_n_is_a_fork, |s: Store| async move {
    let r1 = sample::tour_record().unwrap();
    let id = s
        .create_record(&r1.to_bytes(), &["me.example".into()], "")
        .await
        .unwrap();
    let mut a = workflow::draft(&r1, T0 + 1).unwrap();
    workflow::sign_draft(&mut a, &key(4)).unwrap();
    workflow::apply(&mut a).unwrap();
    let mut b = workflow::draft(&r1, T0 + 2).unwrap();
    workflow::sign_draft(&mut b, &key(4)).unwrap();
    workflow::apply(&mut b).unwrap();
    s.advance_head(&a.to_bytes(), 1, "").await.unwrap();
    assert!(matches!(
        s.advance_head(&b.to_bytes(), 1, "").await,
        Err(StoreError::Fork { serial: 2, .. })
    ));
    let events = s.security_events(&id).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "fork");
    // An update that does not verify (signed by 67 of 100) is refused.
    let mut c = workflow::draft(&a, T0 + 3).unwrap();
    workflow::sign_draft(&mut c, &key(1)).unwrap();
    workflow::sign_draft(&mut c, &key(2)).unwrap();
    c.master.finalize(&c.keys.clone()).unwrap();
    assert!(matches!(
        s.advance_head(&c.to_bytes(), 2, "").await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(s.head(&id).await.unwrap().0, 2);
});

both!(
    eight_writers_race_one_wins_each_serial,
    |s: Store| async move {
        let r1 = sample::tour_record().unwrap();
        let id = s.create_record(&r1.to_bytes(), &[], "").await.unwrap();
        let s = Arc::new(s);
        let mut head = r1;
        for serial in 1..=5u32 {
            let mut tasks = Vec::new();
            for w in 0..8u64 {
                let s = s.clone();
                let mut d = workflow::draft(&head, head.master.timestamp + 1 + w).unwrap();
                workflow::sign_draft(&mut d, &key(4)).unwrap();
                workflow::apply(&mut d).unwrap();
                tasks.push(tokio::spawn(async move {
                    let r = s.advance_head(&d.to_bytes(), serial, "").await;
                    (r.map(|_| d), w)
                }));
            }
            let mut winners = Vec::new();
            for t in tasks {
                match t.await.unwrap() {
                    (Ok(d), _) => winners.push(d),
                    (Err(StoreError::Conflict { .. } | StoreError::Fork { .. }), _) => {}
                    (Err(e), w) => panic!("writer {w}: unexpected {e}"),
                }
            }
            assert_eq!(winners.len(), 1, "serial {serial}: exactly one writer wins");
            head = winners.pop().unwrap();
            assert_eq!(
                s.head(&id).await.unwrap(),
                (
                    serial + 1,
                    head.master.current_master_hash,
                    head.master.timestamp
                )
            );
        }
        // The stored chain verifies from genesis.
        let stored = s.record(&id, &[]).await.unwrap();
        assert_eq!(stored.master.serial, 6);
        assert_eq!(stored.history.len(), 5);
        assert!(poz::verify_record(&stored).is_complete());
    }
);

both!(
    a_revision_sent_again_while_it_commits_is_acknowledged_not_refused,
    |s: Store| async move {
        // Issue 16: a client whose first SUBMIT_SIGNED timed out behind a
        // partition sends the same revision again; when the link heals
        // both reach the store together. The one that loses the
        // compare-and-swap finds its own revision stored: success, with
        // the same serial and hash, never CONFLICT.
        let r1 = sample::tour_record().unwrap();
        let id = s.create_record(&r1.to_bytes(), &[], "").await.unwrap();
        let s = Arc::new(s);
        let mut head = r1;
        for serial in 1..=5u32 {
            let mut d = workflow::draft(&head, head.master.timestamp + 1).unwrap();
            workflow::sign_draft(&mut d, &key(4)).unwrap();
            workflow::apply(&mut d).unwrap();
            let bytes = d.to_bytes();
            let start = Arc::new(tokio::sync::Barrier::new(8));
            let mut tasks = Vec::new();
            for _ in 0..8 {
                let (s, bytes, start) = (s.clone(), bytes.clone(), start.clone());
                tasks.push(tokio::spawn(async move {
                    start.wait().await;
                    s.advance_head(&bytes, serial, "").await
                }));
            }
            for t in tasks {
                assert_eq!(
                    t.await.unwrap().unwrap(),
                    (serial + 1, d.master.current_master_hash),
                    "serial {}",
                    serial + 1
                );
            }
            head = d;
        }
        assert_eq!(s.head(&id).await.unwrap().0, 6);
    }
);

both!(
    entries_sent_again_with_their_key_while_they_commit_are_acknowledged,
    |s: Store| async move {
        // Issue 16, the same race for an idempotency key: a retry that
        // reaches the store while the attempt it retries commits gets the
        // acknowledgement, not the key's unique violation, and the
        // binding is stored once.
        let (p, id) = provider_stored(&s).await;
        let k = sample::provider_keys();
        let s = Arc::new(s);
        for n in 0..5u8 {
            let handle = format!("race{n}");
            let b = sample::issue(
                &p,
                sample::user_id(20 + n),
                &handle,
                T0 + 5_000,
                0,
                &[&k.device_a, &k.device_b],
            )
            .unwrap()
            .to_bytes();
            let start = Arc::new(tokio::sync::Barrier::new(8));
            let mut tasks = Vec::new();
            for _ in 0..8 {
                let (s, b, start, key) = (s.clone(), b.clone(), start.clone(), format!("key-{n}"));
                tasks.push(tokio::spawn(async move {
                    start.wait().await;
                    s.put_entries(&id, ZoneType::IDENTITY, &[b], &key).await
                }));
            }
            for t in tasks {
                t.await.unwrap().unwrap();
            }
            let (stored, _) = s
                .handle_bindings(&id, &handle, &poz::Hash32([0; 32]), 10)
                .await
                .unwrap();
            assert_eq!(stored.len(), 1, "{handle}");
        }
    }
);

both!(
    submissions_are_idempotent_and_final_states_stay,
    |s: Store| async move {
        use poz_store::Submission;
        let pending = Submission {
            id: [1; 16],
            state: 1,
            request: vec![1, 2, 3],
            entry: None,
            message: String::new(),
        };
        assert!(matches!(
            s.submission(&[1; 16]).await,
            Err(poz_store::StoreError::NotFound(_))
        ));
        assert_eq!(s.put_submission(&pending).await.unwrap(), pending);
        // The same request again changes nothing.
        assert_eq!(s.put_submission(&pending).await.unwrap(), pending);
        // Another request under the same ID is refused.
        let other = Submission {
            request: vec![9],
            ..pending.clone()
        };
        assert!(matches!(
            s.put_submission(&other).await,
            Err(poz_store::StoreError::IdempotencyMismatch(_))
        ));
        // Pending moves on to issued, which then stays.
        let issued = Submission {
            state: 2,
            entry: Some(vec![7; 10]),
            ..pending.clone()
        };
        assert_eq!(s.put_submission(&issued).await.unwrap(), issued);
        let refused = Submission {
            state: 3,
            message: "late".into(),
            ..pending.clone()
        };
        assert_eq!(s.put_submission(&refused).await.unwrap(), issued);
        assert_eq!(s.submission(&[1; 16]).await.unwrap(), issued);
        assert!(matches!(
            s.put_submission(&Submission {
                state: 9,
                ..pending
            })
            .await,
            Err(poz_store::StoreError::Invalid(_))
        ));
    }
);

both!(
    zone_pages_walk_the_zone_in_digest_order_once,
    |s: Store| async move {
        let (g, p) = provider_genesis_and_rest();
        let id = s
            .create_record(&g.to_bytes(), &["social.example".into()], "")
            .await
            .unwrap();
        s.advance_head(&p.to_bytes(), 1, "").await.unwrap();
        let k = sample::provider_keys();
        let bulk = sample::bulk_bindings(&p, 100, &[&k.device_a, &k.device_b]).unwrap();
        let bytes: Vec<Vec<u8>> = bulk.iter().map(|e| e.to_bytes()).collect();
        s.put_entries(&id, ZoneType::IDENTITY, &bytes, "")
            .await
            .unwrap();
        // The reference: the whole record served in memory, paged the same way.
        let served = s.served(&id).await.unwrap();
        for zone in [ZoneType::IDENTITY, ZoneType::SERVICE] {
            let mut after = poz::Hash32::ZERO;
            let mut pages = 0;
            loop {
                let (got, next) = s.zone_page(&id, zone, &after, 7).await.unwrap();
                let want = served
                    .zone_answer(&poz::wire::ZoneQuery {
                        domain: "social.example".into(),
                        zone_type: zone,
                        after,
                        limit: 7,
                    })
                    .unwrap();
                let want_bytes: Vec<Vec<u8>> = want.entries.iter().map(|e| e.to_bytes()).collect();
                assert_eq!(got, want_bytes, "{zone} page {pages}");
                assert_eq!(
                    next.unwrap_or(poz::Hash32::ZERO),
                    want.next,
                    "{zone} page {pages}"
                );
                pages += 1;
                match next {
                    Some(n) => after = n,
                    None => break,
                }
            }
            if zone == ZoneType::IDENTITY {
                assert_eq!(pages, 101usize.div_ceil(7), "101 bindings in pages of 7");
            }
        }
        // A zone the record does not have: an empty first page.
        let (none, next) = s
            .zone_page(&id, ZoneType(9), &poz::Hash32::ZERO, 10)
            .await
            .unwrap();
        assert!(none.is_empty() && next.is_none());
    }
);

both!(
    binding_by_domain_equals_binding_by_record,
    |s: Store| async move {
        let (g, p) = provider_genesis_and_rest();
        let id = s
            .create_record(&g.to_bytes(), &["social.example".into()], "")
            .await
            .unwrap();
        s.advance_head(&p.to_bytes(), 1, "").await.unwrap();
        let by_id = s.binding(&id, "alice").await.unwrap();
        assert_eq!(
            s.binding_by_domain("social.example", "alice")
                .await
                .unwrap()
                .decode()
                .unwrap(),
            by_id
        );
        for (domain, handle, says) in [
            ("social.example", "nobody", "no binding"),
            ("nobody.example", "alice", "no record for domain"),
        ] {
            match s.binding_by_domain(domain, handle).await {
                Err(StoreError::NotFound(m)) => assert!(m.contains(says), "{m}"),
                other => panic!("{domain} {handle}: {other:?}"),
            }
        }
    }
);

both!(
    mirrors_are_set_replaced_and_cleared,
    |s: Store| async move {
        use poz::entries::{Encryption, PoolHost, Transport, NO_CA_KEY};
        let (g, _) = provider_genesis_and_rest();
        let id = s
            .create_record(&g.to_bytes(), &["social.example".into()], "")
            .await
            .unwrap();
        let host = |name: &str, noise: bool| {
            PoolHost {
                hostname: name.into(),
                port: if noise { 7075 } else { 7074 },
                transport: Transport::TCP,
                encryption: if noise {
                    Encryption::NOISE_NK
                } else {
                    Encryption::NONE
                },
                server_key: noise.then_some([9; 32]),
                ca_key_idx: NO_CA_KEY,
                priority: 10,
                weight: 1,
            }
            .to_bytes()
        };
        // None until set; then in the order given; replaced whole; cleared.
        assert!(s.mirrors(&id).await.unwrap().is_empty());
        let two = vec![host("m2.example", true), host("m1.example", false)];
        s.set_mirrors(&id, &two).await.unwrap();
        assert_eq!(s.mirrors(&id).await.unwrap(), two);
        s.set_mirrors(&id, &two[1..]).await.unwrap();
        assert_eq!(s.mirrors(&id).await.unwrap(), &two[1..]);
        s.set_mirrors(&id, &[]).await.unwrap();
        assert!(s.mirrors(&id).await.unwrap().is_empty());
        // Refused, with nothing changed: an unknown record, a host that does
        // not decode, more than a MIRRORS answer can count.
        s.set_mirrors(&id, &two).await.unwrap();
        let unknown = poz::Hash32([3; 32]);
        assert!(matches!(
            s.set_mirrors(&unknown, &two).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.mirrors(&unknown).await,
            Err(StoreError::NotFound(_))
        ));
        let mut bad = two.clone();
        bad.push(vec![0xFF; 3]);
        match s.set_mirrors(&id, &bad).await {
            Err(StoreError::Invalid(m)) => assert!(m.contains("hosts[2]"), "{m}"),
            other => panic!("{other:?}"),
        }
        let many = vec![host("m.example", false); poz_store::MAX_MIRRORS + 1];
        assert!(matches!(
            s.set_mirrors(&id, &many).await,
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(s.mirrors(&id).await.unwrap(), two);
        // The most a MIRRORS answer carries.
        let most = vec![host("m.example", false); poz_store::MAX_MIRRORS];
        s.set_mirrors(&id, &most).await.unwrap();
        assert_eq!(s.mirrors(&id).await.unwrap().len(), poz_store::MAX_MIRRORS);
    }
);

// Issue 12 §9: a revision stamped near u64::MAX would freeze the record
// (timestamps must increase) and a time of 2^63 or more loses its sign in
// a BIGINT column. The store refuses any time more than 5 minutes ahead of
// its clock (SPEC §6.7), and the record can still advance afterwards.
both!(times_from_the_future_are_refused, |s: Store| async move {
    let (g, p) = provider_genesis_and_rest();
    let id = s
        .create_record(&g.to_bytes(), &["social.example".into()], "")
        .await
        .unwrap();
    s.advance_head(&p.to_bytes(), 1, "").await.unwrap();
    let pk = sample::provider_keys();
    for far in [u64::MAX - 1, 1 << 63, T0 + 50 * 365 * 86_400_000] {
        let mut d = workflow::draft(&p, far).unwrap();
        workflow::sign_draft(&mut d, &pk.master).unwrap();
        workflow::apply(&mut d).unwrap();
        match s.advance_head(&d.to_bytes(), 2, "").await {
            Err(StoreError::Invalid(m)) => {
                assert!(m.contains("more than 300000 ms after now"), "{m}")
            }
            other => panic!("{far}: {other:?}"),
        }
        assert_eq!(s.head(&id).await.unwrap().0, 2);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut d = workflow::draft(&p, now).unwrap();
    workflow::sign_draft(&mut d, &pk.master).unwrap();
    workflow::apply(&mut d).unwrap();
    assert_eq!(s.advance_head(&d.to_bytes(), 2, "").await.unwrap().0, 3);

    // Bindings: issued an hour ahead is refused; issued now is stored.
    let ahead = sample::issue(
        &p,
        sample::user_id(9),
        "zed",
        now + 3_600_000,
        0,
        &[&pk.device_a, &pk.device_b],
    )
    .unwrap();
    let err = s
        .put_entries(&id, ZoneType::IDENTITY, &[ahead.to_bytes()], "")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid(m) if m.contains("issued_at")),
        "{err:?}"
    );
    let on_time = sample::issue(
        &p,
        sample::user_id(9),
        "zed",
        now,
        0,
        &[&pk.device_a, &pk.device_b],
    )
    .unwrap();
    assert_eq!(
        s.put_entries(&id, ZoneType::IDENTITY, &[on_time.to_bytes()], "")
            .await
            .unwrap(),
        (1, 0)
    );
});

/// A provider stored at its head (with `alice` bound to user 1), and its
/// record ID.
async fn provider_stored(s: &Store) -> (Record, poz::Hash32) {
    let (g, p) = provider_genesis_and_rest();
    let id = s
        .create_record(&g.to_bytes(), &["social.example".into()], "")
        .await
        .unwrap();
    s.advance_head(&p.to_bytes(), 1, "").await.unwrap();
    (p, id)
}

fn bind(p: &Record, subject: u8, handle: &str, at: u64) -> Vec<u8> {
    let k = sample::provider_keys();
    sample::issue(
        p,
        sample::user_id(subject),
        handle,
        at,
        0,
        &[&k.device_a, &k.device_b],
    )
    .unwrap()
    .to_bytes()
}

fn handle_rule(r: Result<(u32, u32), StoreError>) -> Option<poz::handle::HandleRule> {
    match r {
        Err(StoreError::Handle(h)) => Some(h.rule),
        Ok(_) => None,
        Err(e) => panic!("not a handle refusal: {e}"),
    }
}

both!(
    one_live_binding_per_handle_and_no_look_alikes,
    |s: Store| async move {
        use poz::handle::HandleRule;
        let (p, id) = provider_stored(&s).await;
        let put = |b: Vec<u8>| {
            let s = s.clone();
            async move { s.put_entries(&id, ZoneType::IDENTITY, &[b], "").await }
        };
        // Issue 12 §2: a second binding of alice to another subject (the
        // SUBMIT_SIGNED kind 2 path reaches the store like this).
        assert_eq!(
            handle_rule(put(bind(&p, 9, "alice", T0 + 50_000)).await),
            Some(HandleRule::BindingUnique)
        );
        // Issue 12 §3: the five look-alikes, each to another subject.
        for (handle, rule) in [
            ("Alice", HandleRule::Confusable),
            ("\u{430}lice", HandleRule::Confusable),
            ("al\u{131}ce", HandleRule::Confusable),
        ] {
            assert_eq!(
                handle_rule(put(bind(&p, 9, handle, T0 + 50_000)).await),
                Some(rule),
                "{handle:?}"
            );
        }
        // The other two cannot even be made into a binding (SPEC §8.4.1:
        // the format refuses them); bytes built by hand do not decode, and
        // the refusal names the rule.
        for (handle, rule) in [
            ("alice\u{200B}", "handle-format"),
            ("\u{202E}ecila", "handle-bidi"),
        ] {
            let raw = poz::entries::IdentityBinding {
                issuer: id,
                subject: sample::user_id(9),
                handle: handle.into(),
                issued_at: T0 + 50_000,
                expires_at: 0,
            };
            let e = poz::SignedEntry::new(poz::EntryKind::GRANT, raw.to_bytes());
            match put(e.to_bytes()).await {
                Err(StoreError::Invalid(m)) => assert!(m.contains(rule), "{handle:?}: {m}"),
                other => panic!("{handle:?}: {other:?}"),
            }
        }
        // The holder may be re-issued its handle (a retry, a renewal).
        assert_eq!(
            put(bind(&p, 1, "alice", T0 + 60_000)).await.unwrap(),
            (1, 0)
        );
        // Look-alikes in one put, to two subjects: refused together.
        let both = vec![bind(&p, 3, "dave", T0 + 1), bind(&p, 4, "Dave", T0 + 1)];
        assert!(matches!(
            s.put_entries(&id, ZoneType::IDENTITY, &both, "").await,
            Err(StoreError::Handle(_))
        ));
        assert!(s.binding(&id, "dave").await.is_err(), "nothing stored");
        // CheckHandles judges the same way, in order, without writing.
        let verdicts = s
            .check_handles(
                &id,
                &[
                    ("alice".into(), sample::user_id(1)),
                    ("alice".into(), sample::user_id(9)),
                    ("\u{430}lice".into(), sample::user_id(9)),
                    ("erin".into(), sample::user_id(5)),
                    ("erln".into(), sample::user_id(6)),
                    ("frank".into(), sample::user_id(6)),
                ],
            )
            .await
            .unwrap();
        let rules: Vec<Option<HandleRule>> = verdicts
            .into_iter()
            .map(|v| v.err().map(|e| e.rule))
            .collect();
        assert_eq!(
            rules,
            [
                None,
                Some(HandleRule::BindingUnique),
                Some(HandleRule::Confusable),
                None,
                None,
                None
            ]
        );
        assert!(s.binding(&id, "erin").await.is_err(), "nothing written");
    }
);

both!(
    a_revoked_handle_stays_reserved_until_freed,
    |s: Store| async move {
        use poz::handle::HandleRule;
        let (p, id) = provider_stored(&s).await;
        let k = sample::provider_keys();
        let carol = bind(&p, 3, "carol", T0 + 5_000);
        s.put_entries(&id, ZoneType::IDENTITY, std::slice::from_ref(&carol), "")
            .await
            .unwrap();
        let target = poz::zone::SignedEntry::from_bytes(&carol)
            .unwrap()
            .identity_digest(&id);
        let mut rev = workflow::new_revocation(
            target,
            T0 + 6_000,
            poz::entries::RevocationReason::ACCOUNT_CLOSED,
        );
        workflow::sign_entry(&p, ZoneType::IDENTITY, &mut rev, &k.device_a).unwrap();
        s.put_entries(&id, ZoneType::IDENTITY, &[rev.to_bytes()], "")
            .await
            .unwrap();
        // Issue 12 §9: another holder's request for carol, and the old
        // holder's, are both refused; so is a look-alike.
        for (subject, handle) in [(9, "carol"), (3, "carol"), (9, "caro1")] {
            let r = s
                .put_entries(
                    &id,
                    ZoneType::IDENTITY,
                    &[bind(&p, subject, handle, T0 + 7_000)],
                    "",
                )
                .await;
            assert_eq!(
                handle_rule(r),
                Some(HandleRule::Reserved),
                "{subject} {handle}"
            );
        }
        // A cooldown does not lapse an account-closed revocation.
        let cooled = s.with_options(StoreOptions {
            revoked_handle_cooldown: Some(std::time::Duration::ZERO),
            ..StoreOptions::default()
        });
        assert_eq!(
            handle_rule(
                cooled
                    .put_entries(
                        &id,
                        ZoneType::IDENTITY,
                        &[bind(&p, 9, "carol", T0 + 7_000)],
                        ""
                    )
                    .await
            ),
            Some(HandleRule::Reserved)
        );
        // The operator frees it; then anyone may have it.
        assert!(matches!(
            s.free_handle(&id, "nobody").await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(s.free_handle(&id, "carol").await.unwrap(), 1);
        assert!(matches!(
            s.free_handle(&id, "carol").await,
            Err(StoreError::NotFound(_))
        ));
        let dora = bind(&p, 9, "carol", T0 + 8_000);
        s.put_entries(&id, ZoneType::IDENTITY, std::slice::from_ref(&dora), "")
            .await
            .unwrap();
        assert_eq!(s.binding(&id, "carol").await.unwrap().0.to_bytes(), dora);
        // A revocation for reason superseded: the holder may take the
        // handle back; others wait for the cooldown, when one is set.
        let target = poz::zone::SignedEntry::from_bytes(&dora)
            .unwrap()
            .identity_digest(&id);
        let mut rev = workflow::new_revocation(
            target,
            T0 + 9_000,
            poz::entries::RevocationReason::SUPERSEDED,
        );
        workflow::sign_entry(&p, ZoneType::IDENTITY, &mut rev, &k.device_a).unwrap();
        s.put_entries(&id, ZoneType::IDENTITY, &[rev.to_bytes()], "")
            .await
            .unwrap();
        let other = bind(&p, 4, "carol", T0 + 10_000);
        assert_eq!(
            handle_rule(
                s.put_entries(&id, ZoneType::IDENTITY, std::slice::from_ref(&other), "")
                    .await
            ),
            Some(HandleRule::Reserved)
        );
        assert_eq!(
            cooled
                .put_entries(&id, ZoneType::IDENTITY, &[other], "")
                .await
                .unwrap(),
            (1, 0)
        );
    }
);

both!(
    times_that_do_not_fit_i64_are_refused_not_wrapped,
    |s: Store| async move {
        let (p, id) = provider_stored(&s).await;
        // Issue 12 §9: a binding stamped 2^63 would be stored negative and
        // sort as the oldest. Issue times that far ahead are refused by the
        // clock bound first (SPEC §6.7); nothing is stored.
        for at in [1u64 << 63, u64::MAX - 1] {
            let r = s
                .put_entries(&id, ZoneType::IDENTITY, &[bind(&p, 7, "gina", at)], "")
                .await;
            assert!(
                matches!(&r, Err(StoreError::Invalid(m)) if m.contains("issued_at")),
                "{r:?}"
            );
        }
        assert!(s.binding(&id, "gina").await.is_err());
        // An expiry is any future time, so only the column's range bounds
        // it: 2^63 and more is refused, never wrapped; the largest that
        // fits is stored as is.
        let k = sample::provider_keys();
        let expiring = |expires_at: u64| {
            sample::issue(
                &p,
                sample::user_id(7),
                "gina",
                T0 + 1,
                expires_at,
                &[&k.device_a, &k.device_b],
            )
            .unwrap()
            .to_bytes()
        };
        for at in [1u64 << 63, u64::MAX] {
            let r = s
                .put_entries(&id, ZoneType::IDENTITY, &[expiring(at)], "")
                .await;
            assert!(
                matches!(r, Err(StoreError::TimeOutOfRange { value, .. }) if value == at),
                "{r:?}"
            );
        }
        assert!(s.binding(&id, "gina").await.is_err());
        let last = expiring((1u64 << 63) - 1);
        s.put_entries(&id, ZoneType::IDENTITY, std::slice::from_ref(&last), "")
            .await
            .unwrap();
        assert_eq!(s.binding(&id, "gina").await.unwrap().0.to_bytes(), last);
    }
);

both!(
    binding_requests_are_one_per_ask_capped_and_expire,
    |s: Store| async move {
        use poz_store::Submission;
        let ask =
            |handle: &str, subject: u8, proof: Vec<poz::Signature>| poz::wire::SubmitRequest {
                domain: "social.example".into(),
                handle: handle.into(),
                subject: sample::user_id(subject),
                proof,
            };
        let pending = |r: &poz::wire::SubmitRequest| Submission {
            id: r.submission_id(),
            state: 1,
            request: r.to_bytes(),
            entry: None,
            message: String::new(),
        };
        let first = ask("h0", 1, vec![key(1).sign(0, &poz::Hash32([1; 32]))]);
        s.put_submission(&pending(&first)).await.unwrap();
        // The same ask with another proof (a junk signature appended) is
        // the same submission: no second row, no mismatch.
        let mut padded = first.clone();
        padded.proof.push(key(2).sign(200, &poz::Hash32([2; 32])));
        assert_eq!(padded.submission_id(), first.submission_id());
        let again = s.put_submission(&pending(&padded)).await.unwrap();
        assert_eq!(again.request, first.to_bytes());
        // At most pending_per_subject (8) pending per subject.
        for i in 1..8 {
            s.put_submission(&pending(&ask(&format!("h{i}"), 1, vec![])))
                .await
                .unwrap();
        }
        assert!(matches!(
            s.put_submission(&pending(&ask("h8", 1, vec![]))).await,
            Err(StoreError::TooManyPending { limit: 8, .. })
        ));
        // Another subject is not held back.
        s.put_submission(&pending(&ask("h8", 2, vec![])))
            .await
            .unwrap();
        // Expired requests read as refused and free their places.
        let quick = s.with_options(StoreOptions {
            pending_ttl: std::time::Duration::ZERO,
            ..StoreOptions::default()
        });
        let old = quick.submission(&first.submission_id()).await.unwrap();
        assert_eq!(old.state, 3);
        assert!(old.message.starts_with("expired"), "{}", old.message);
        // The provider's queue leaves expired requests out, even before
        // the sweep rewrites them.
        assert_eq!(s.pending_submissions(None, 1000).await.unwrap().len(), 9);
        assert!(quick
            .pending_submissions(None, 1000)
            .await
            .unwrap()
            .is_empty());
        // The sweep the leading store runs (under its Lease) rewrites
        // every expired row: refused now even for a reader whose TTL is
        // longer; a second sweep finds nothing.
        assert_eq!(quick.expire_pending().await.unwrap(), 9);
        let swept = s.submission(&first.submission_id()).await.unwrap();
        assert_eq!(swept.state, 3);
        assert!(swept.message.starts_with("expired"), "{}", swept.message);
        assert_eq!(quick.expire_pending().await.unwrap(), 0);
        quick
            .put_submission(&pending(&ask("h9", 1, vec![])))
            .await
            .unwrap();
        // A refused request asked again is pending again.
        let reopened = s.put_submission(&pending(&first)).await.unwrap();
        assert_eq!(reopened.state, 1);
    }
);

both!(
    a_record_name_names_a_held_record_and_no_domain_takes_it,
    |s: Store| async move {
        let (g, _) = provider_genesis_and_rest();
        // A record without a domain (a person's, hosted).
        let id = s.create_record(&g.to_bytes(), &[], "").await.unwrap();
        let name = poz::wire::record_name(&id);
        assert_eq!(s.resolve(&name).await.unwrap(), id);
        // Another ID is not held: NotFound, never a domain lookup.
        let other = poz::wire::record_name(&poz::Hash32([7; 32]));
        assert!(matches!(
            s.resolve(&other).await,
            Err(poz_store::StoreError::NotFound(_))
        ));
        // A record name cannot be bound as a domain, to any record.
        for d in [&name, &other] {
            assert!(matches!(
                s.bind_domain(d, &id).await,
                Err(poz_store::StoreError::Invalid(_))
            ));
        }
        assert!(matches!(
            s.create_record(&g.to_bytes(), std::slice::from_ref(&other), "")
                .await,
            Err(poz_store::StoreError::Invalid(_))
        ));
    }
);

both!(
    the_pending_queue_lists_open_requests_in_id_order,
    |s: Store| async move {
        use poz_store::Submission;
        let ask = |handle: &str, subject: u8| poz::wire::SubmitRequest {
            domain: "social.example".into(),
            handle: handle.into(),
            subject: poz::Hash32([subject; 32]),
            proof: Vec::new(),
        };
        let mut ids = Vec::new();
        for (i, h) in ["a", "b", "c"].iter().enumerate() {
            let a = ask(h, i as u8);
            let sub = Submission {
                id: a.submission_id(),
                state: 1,
                request: a.to_bytes(),
                entry: None,
                message: String::new(),
            };
            s.put_submission(&sub).await.unwrap();
            ids.push(sub.id);
        }
        ids.sort();
        let all = s.pending_submissions(None, 10).await.unwrap();
        let listed: Vec<[u8; 16]> = all.iter().map(|(x, _)| x.id).collect();
        assert_eq!(listed, ids);
        assert!(all.iter().all(|(x, at)| x.state == 1 && *at > 0));
        let page = s.pending_submissions(Some(ids[0]), 1).await.unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].0.id, ids[1]);
        // Decided requests leave the queue.
        let mut done = all[2].0.clone();
        done.state = 3;
        done.message = "refused: no".into();
        s.put_submission(&done).await.unwrap();
        assert_eq!(s.pending_submissions(None, 10).await.unwrap().len(), 2);
        assert!(matches!(
            s.pending_submissions(None, 0).await,
            Err(poz_store::StoreError::Invalid(_))
        ));
    }
);

/// Batch-signed bindings: `n` new ones of handles `prefix0…`, signed by
/// both identity devices with one root signature each (SPEC §8.9), and
/// the batch root digest.
fn batch_of(p: &Record, prefix: &str, n: u8, at: u64) -> (Vec<Vec<u8>>, poz::Hash32) {
    let k = sample::provider_keys();
    let mut entries: Vec<poz::SignedEntry> = (0..n)
        .map(|i| {
            workflow::new_binding(p, sample::user_id(100 + i), &format!("{prefix}{i}"), at, 0)
                .unwrap()
        })
        .collect();
    for key in [&k.device_a, &k.device_b] {
        workflow::sign_batch(p, ZoneType::IDENTITY, &mut entries, key).unwrap();
    }
    let (_, _, root) =
        workflow::batch_signing_target(p, ZoneType::IDENTITY, &entries, &k.device_a.public().id())
            .unwrap();
    (entries.iter().map(|e| e.to_bytes()).collect(), root)
}

// The batch log (SPEC §14.8): batches numbered 1, 2, 3 in commit order,
// once each however often their entries are written again or however a
// batch is split over writes; pages of the log and of one batch; a
// handle's bindings.
both!(
    the_batch_log_numbers_batches_once_in_commit_order,
    |s: Store| async move {
        let (p, id) = provider_stored(&s).await;
        let (a, root_a) = batch_of(&p, "a", 3, T0 + 20_000);
        let (b, root_b) = batch_of(&p, "b", 2, T0 + 21_000);
        let (c, root_c) = batch_of(&p, "c", 3, T0 + 22_000);
        s.put_entries(&id, ZoneType::IDENTITY, &a, "")
            .await
            .unwrap();
        s.put_entries(&id, ZoneType::IDENTITY, &b, "")
            .await
            .unwrap();
        s.put_entries(&id, ZoneType::IDENTITY, &a, "")
            .await
            .unwrap();
        s.put_entries(&id, ZoneType::IDENTITY, &c[..1], "")
            .await
            .unwrap();
        s.put_entries(&id, ZoneType::IDENTITY, &c[1..], "")
            .await
            .unwrap();

        let (page, more) = s.batch_log(&id, ZoneType::IDENTITY, 0, 2).await.unwrap();
        assert!(more);
        assert_eq!(
            page.iter().map(|b| (b.0, b.1)).collect::<Vec<_>>(),
            vec![(1, root_a), (2, root_b)]
        );
        let (page, more) = s.batch_log(&id, ZoneType::IDENTITY, 2, 2).await.unwrap();
        assert!(!more);
        assert_eq!(
            page.iter().map(|b| (b.0, b.1)).collect::<Vec<_>>(),
            vec![(3, root_c)]
        );
        assert!(s.has_batch(&id, ZoneType::IDENTITY, &root_b).await.unwrap());
        assert!(!s
            .has_batch(&id, ZoneType::IDENTITY, &poz::Hash32([7; 32]))
            .await
            .unwrap());

        // Batch c, one entry a page, audited as an outsider would.
        let mut audit = poz::audit::BatchAudit::new(id, ZoneType::IDENTITY, root_c);
        let mut after = poz::Hash32::ZERO;
        loop {
            let (entries, next) = s
                .batch_page(&id, ZoneType::IDENTITY, &root_c, &after, 1)
                .await
                .unwrap();
            for e in &entries {
                audit
                    .add(&p.keys, &poz::SignedEntry::from_bytes(e).unwrap())
                    .unwrap();
            }
            match next {
                Some(n) => after = n,
                None => break,
            }
        }
        assert_eq!(audit.finish(&p.master, &p.keys).unwrap().size, 3);

        let (items, next) = s
            .handle_bindings(&id, "b1", &poz::Hash32::ZERO, 10)
            .await
            .unwrap();
        assert_eq!((items.len(), next), (1, None));
        assert!(items[0].1.is_none());
    }
);

// HANDLE_HISTORY (SPEC §14.8) lists the bindings the record itself
// issued: a copy of another provider's binding kept in the record's
// Identity Zone (its subject's copy, §8.4) is not issuance, however many
// there are and wherever they fall among the pages.
both!(
    handle_history_lists_own_bindings_not_copies,
    |s: Store| async move {
        let (p, id) = provider_stored(&s).await;
        // p's own bindings of "erin" (stored first: the handle rules of a
        // commit count the copies too).
        let own = [
            bind(&p, 7, "erin", T0 + 31_000),
            bind(&p, 7, "erin", T0 + 32_000),
        ];
        s.put_entries(&id, ZoneType::IDENTITY, &own, "")
            .await
            .unwrap();
        // Copies of "dana" and "erin" that another provider issued to p
        // (the store checks no signature; the issuer is what counts).
        let other = poz::Hash32([42; 32]);
        let copies: Vec<Vec<u8>> = (0..6u64)
            .map(|i| {
                let handle = if i % 2 == 0 { "dana" } else { "erin" };
                let b = poz::entries::IdentityBinding::new(other, id, handle, T0 + 30_000 + i, 0)
                    .unwrap();
                poz::SignedEntry::new(poz::zone::EntryKind::GRANT, b.to_bytes()).to_bytes()
            })
            .collect();
        s.put_entries(&id, ZoneType::IDENTITY, &copies, "")
            .await
            .unwrap();
        // A record holding only copies of "dana" lists none.
        let (items, next) = s
            .handle_bindings(&id, "dana", &poz::Hash32::ZERO, 10)
            .await
            .unwrap();
        assert_eq!((items.len(), next), (0, None));
        // p's two among the copies, listed one a page, and nothing after
        // them.
        let mut listed = Vec::new();
        let mut after = poz::Hash32::ZERO;
        loop {
            let (items, next) = s.handle_bindings(&id, "erin", &after, 1).await.unwrap();
            listed.extend(items);
            match next {
                Some(n) => after = n,
                None => break,
            }
        }
        assert_eq!(listed.len(), 2);
        for (entry, _) in &listed {
            assert!(own.contains(entry));
        }
        let (items, next) = s
            .handle_bindings(&id, "erin", &poz::Hash32::ZERO, 10)
            .await
            .unwrap();
        assert_eq!((items.len(), next), (2, None));
    }
);
