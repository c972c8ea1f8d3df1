//! The draft / sign / apply workflow and the standard's grant/deny example.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::entries::RevocationReason;
use poz::sample::{self, key, provider_keys, T0};
use poz::verify::{detect_chain_fork, detect_fork, verify_and_accept, verify_binding, Rule};
use poz::workflow;
use poz::zone::ZoneType;
use poz::{Codec, Error, Record};

#[test]
fn tour_two_of_three_is_refused_with_the_shortfall_then_third_applies() {
    let r1 = sample::tour_record().unwrap();
    assert!(poz::verify_record(&r1).is_valid());
    let mut d = workflow::draft(&r1, T0 + 1).unwrap();
    // The draft travels as bytes between holders, each signing with only
    // their own key, in any order.
    for k in [key(2), key(1)] {
        let mut copy = Record::from_bytes(&d.to_bytes()).unwrap();
        workflow::sign_draft(&mut copy, &k).unwrap();
        d = copy;
    }
    match workflow::apply(&mut d.clone()) {
        Err(Error::ThresholdNotMet { best, tally, .. }) => {
            assert_eq!(best, 67);
            assert!(tally.contains("group 0: 67 of 100"), "{tally}");
        }
        other => panic!("expected a threshold refusal, got {other:?}"),
    }
    workflow::sign_draft(&mut d, &key(3)).unwrap();
    workflow::apply(&mut d).unwrap();
    let report = poz::verify_record(&d);
    assert!(report.is_valid(), "{report:?}");
    assert_eq!(d.history.len(), 1);
    assert_eq!(d.master.serial, 2);
    assert_eq!(d.id(), r1.id(), "the record ID is permanent");
}

#[test]
fn recovery_key_alone_authorizes() {
    let r1 = sample::tour_record().unwrap();
    let mut d = workflow::draft(&r1, T0 + 1).unwrap();
    workflow::sign_draft(&mut d, &key(4)).unwrap();
    workflow::apply(&mut d).unwrap();
    assert!(poz::verify_record(&d).is_valid());
}

#[test]
fn a_key_outside_the_authorizing_revision_cannot_sign() {
    let r1 = sample::tour_record().unwrap();
    let mut d = workflow::draft(&r1, T0 + 1).unwrap();
    // A key added by this very draft has no say over it.
    workflow::set_master_key(&mut d, key(9).public(), 0, 100).unwrap();
    assert!(matches!(
        workflow::sign_draft(&mut d, &key(9)),
        Err(Error::NotAuthorizingKey { .. })
    ));
}

#[test]
fn editing_a_draft_after_signing_invalidates_earlier_signatures() {
    let r1 = sample::tour_record().unwrap();
    let mut d = workflow::draft(&r1, T0 + 1).unwrap();
    workflow::sign_draft(&mut d, &key(4)).unwrap();
    // Tamper without going through the workflow (which clears signatures).
    d.master.master_keys[0].value = 100;
    assert!(matches!(
        workflow::apply(&mut d),
        Err(Error::ThresholdNotMet { .. })
    ));
}

#[test]
fn timestamps_must_increase() {
    let r1 = sample::tour_record().unwrap();
    assert!(matches!(
        workflow::draft(&r1, T0),
        Err(Error::TimestampNotIncreasing { .. })
    ));
}

#[test]
fn seed_example_either_device_revokes_adding_needs_both() {
    let p = sample::provider().unwrap();
    let k = provider_keys();
    let vp = verify_and_accept(p.clone()).unwrap();

    // Adding: one device is not enough...
    let one = sample::issue(
        &p,
        sample::user_id(5),
        "erin",
        T0 + 5_000,
        0,
        &[&k.device_a],
    )
    .unwrap();
    let e = verify_binding(&vp, &one, T0 + 6_000).unwrap_err();
    assert_eq!(e.rule, Rule::EntryGrant);
    assert!(matches!(
        workflow::insert_entry(&mut p.clone(), ZoneType::IDENTITY, one),
        Err(Error::ThresholdNotMet { best: 50, .. })
    ));
    // ...both are.
    let both = sample::issue(
        &p,
        sample::user_id(5),
        "erin",
        T0 + 5_000,
        0,
        &[&k.device_a, &k.device_b],
    )
    .unwrap();
    verify_binding(&vp, &both, T0 + 6_000).unwrap();

    // Revoking: either device alone.
    for dev in [&k.device_a, &k.device_b] {
        let mut p2 = p.clone();
        workflow::insert_entry(&mut p2, ZoneType::IDENTITY, both.clone()).unwrap();
        let target = both.identity_digest(&p2.id());
        let mut rev =
            workflow::new_revocation(target, T0 + 7_000, RevocationReason::KEY_COMPROMISE);
        workflow::sign_entry(&p2, ZoneType::IDENTITY, &mut rev, dev).unwrap();
        workflow::insert_entry(&mut p2, ZoneType::IDENTITY, rev).unwrap();
        let vp2 = verify_and_accept(Record::from_bytes(&p2.to_bytes()).unwrap()).unwrap();
        assert_eq!(
            verify_binding(&vp2, &both, T0 + 8_000).unwrap_err().rule,
            Rule::BindingRevoked
        );
    }
}

#[test]
fn master_key_cannot_sign_for_the_identity_zone() {
    let p = sample::provider().unwrap();
    let mut b = workflow::new_binding(&p, sample::user_id(1), "x", T0, 0).unwrap();
    assert!(matches!(
        workflow::sign_entry(&p, ZoneType::IDENTITY, &mut b, &provider_keys().master),
        Err(Error::NotAuthorizingKey { .. })
    ));
}

#[test]
fn forks_are_detected() {
    let r1 = sample::tour_record().unwrap();
    let mut a = workflow::draft(&r1, T0 + 1).unwrap();
    workflow::sign_draft(&mut a, &key(4)).unwrap();
    workflow::apply(&mut a).unwrap();
    let mut b = workflow::draft(&r1, T0 + 2).unwrap();
    workflow::sign_draft(&mut b, &key(4)).unwrap();
    workflow::apply(&mut b).unwrap();
    let f = detect_fork(&a.master, &b.master).expect("two different serial-2 revisions are a fork");
    assert_eq!(f.serial, 2);
    assert_eq!(f.record_id, r1.id());
    assert!(detect_fork(&a.master, &a.master).is_none());
    let chain_a: Vec<_> = a
        .history
        .iter()
        .cloned()
        .chain([a.master.clone()])
        .collect();
    let chain_b: Vec<_> = b
        .history
        .iter()
        .cloned()
        .chain([b.master.clone()])
        .collect();
    assert_eq!(
        detect_chain_fork(&chain_a, &chain_b).map(|f| f.serial),
        Some(2)
    );
}

#[test]
fn private_key_map_round_trips_inside_a_record() {
    let mut r = sample::tour_record().unwrap();
    let params = poz::private::KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };
    let ks = [key(1), key(2)];
    r.private_keys =
        Some(poz::private::SealedKeys::seal(&[&ks[0], &ks[1]], b"pass", params).unwrap());
    let back = Record::from_bytes(&r.to_bytes()).unwrap();
    let opened = back.private_keys.as_ref().unwrap().open(b"pass").unwrap();
    assert_eq!(
        opened.iter().map(|k| k.public()).collect::<Vec<_>>(),
        vec![ks[0].public(), ks[1].public()]
    );
    // The private key map is not part of any signed scope; the record still verifies.
    assert!(poz::verify_record(&back).is_valid());
}

#[test]
fn a_user_record_keeps_copies_of_its_own_bindings_only() {
    let p = sample::provider().unwrap();
    let k = provider_keys();
    let mut user = sample::tour_record().unwrap();
    let mut d = workflow::draft(&user, T0 + 1).unwrap();
    workflow::set_delegation_key(&mut d, ZoneType::IDENTITY, key(1).public(), 0, 100, 100).unwrap();
    for g in [key(1), key(2), key(3)] {
        workflow::sign_draft(&mut d, &g).unwrap();
    }
    workflow::apply(&mut d).unwrap();
    user = d;
    workflow::set_authority(
        &mut user,
        ZoneType::IDENTITY,
        "",
        poz::Hash32::ZERO,
        T0 + 2,
        &[&key(1)],
    )
    .unwrap();

    let mine = sample::issue(&p, user.id(), "me", T0 + 3, 0, &[&k.device_a, &k.device_b]).unwrap();
    workflow::insert_entry(&mut user, ZoneType::IDENTITY, mine.clone()).unwrap();
    let report = poz::verify_record(&user);
    assert!(report.is_valid(), "{report:?}");
    // The copy's signatures are the provider's: not checked here, and said so.
    assert!(!report.is_complete());
    // Its record ID stays proven from genesis (fingerprints, login and
    // lookups of the holder's record rely on that, not on completeness).
    let vu = verify_and_accept(user.clone()).unwrap();
    assert!(!vu.complete);
    assert!(vu.from_genesis);
    // Checked against the provider, the copy holds.
    let vp = verify_and_accept(p.clone()).unwrap();
    assert!(vp.complete);
    verify_binding(&vp, &mine, T0 + 4).unwrap();

    let someone_else = sample::issue(
        &p,
        sample::user_id(9),
        "other",
        T0 + 3,
        0,
        &[&k.device_a, &k.device_b],
    )
    .unwrap();
    assert!(matches!(
        workflow::insert_entry(&mut user, ZoneType::IDENTITY, someone_else),
        Err(Error::Invalid {
            what: "binding",
            ..
        })
    ));
}

#[test]
fn rotating_an_identity_device_in_one_revision_keeps_bindings_and_revocations() {
    let mut p = sample::provider().unwrap();
    let k = provider_keys();
    // Revoke a second binding with device A alone (deny 100).
    let bob = sample::issue(
        &p,
        sample::user_id(2),
        "bob",
        T0 + 3_000,
        0,
        &[&k.device_a, &k.device_b],
    )
    .unwrap();
    workflow::insert_entry(&mut p, ZoneType::IDENTITY, bob.clone()).unwrap();
    let mut rev = workflow::new_revocation(
        bob.identity_digest(&p.id()),
        T0 + 4_000,
        RevocationReason::KEY_COMPROMISE,
    );
    workflow::sign_entry(&p, ZoneType::IDENTITY, &mut rev, &k.device_a).unwrap();
    workflow::insert_entry(&mut p, ZoneType::IDENTITY, rev).unwrap();
    assert!(poz::verify_record(&p).is_complete());

    // Device A is lost: replace it by device C.
    let device_c = key(14);
    let a_idx = p.keys.index_of(&k.device_a.public().id()).unwrap();
    let mut d = workflow::draft(&p, T0 + 10_000).unwrap();
    workflow::remove_delegation_key(&mut d, ZoneType::IDENTITY, a_idx).unwrap();
    workflow::set_delegation_key(&mut d, ZoneType::IDENTITY, device_c.public(), 0, 50, 100)
        .unwrap();
    workflow::sign_draft(&mut d, &k.master).unwrap();
    // Without re-signing, the zone no longer verifies and apply says why.
    match workflow::apply(&mut d.clone()) {
        Err(Error::Verification(msg)) => assert!(msg.contains("zone resign"), "{msg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let r = workflow::resign_zone(&mut d, ZoneType::IDENTITY, &[&device_c, &k.device_b]).unwrap();
    assert!(r.dropped > 0 && r.added > 0);
    assert_eq!(r.short, 0);
    workflow::apply(&mut d).unwrap();
    let report = poz::verify_record(&d);
    assert!(report.is_complete(), "{report:?}");

    // alice still verifies; bob is still revoked; device A can no longer sign.
    let vp = verify_and_accept(d.clone()).unwrap();
    let alice = d.zones[&ZoneType::IDENTITY]
        .entries
        .iter()
        .find(|e| e.body.windows(5).any(|w| w == b"alice"))
        .unwrap();
    verify_binding(&vp, alice, T0 + 20_000).unwrap();
    let bob_now = d.zones[&ZoneType::IDENTITY]
        .entries
        .iter()
        .find(|e| e.body.windows(3).any(|w| w == b"bob"))
        .unwrap();
    assert_eq!(
        verify_binding(&vp, bob_now, T0 + 20_000).unwrap_err().rule,
        Rule::BindingRevoked
    );
    let mut e = workflow::new_binding(&d, sample::user_id(3), "carol", T0 + 20_000, 0).unwrap();
    assert!(matches!(
        workflow::sign_entry(&d, ZoneType::IDENTITY, &mut e, &k.device_a),
        Err(Error::NotAuthorizingKey { .. })
    ));
}

/// Batch verification gives exactly the verdicts of one-by-one
/// verification, in order, with good and bad bindings mixed: a forged
/// signature, a lone device (threshold short), an expiry, a foreign
/// issuer, a revocation.
#[test]
fn batch_binding_verdicts_match_one_by_one() {
    use poz::verify::verify_bindings;
    let k = provider_keys();
    let mut rec = sample::provider().unwrap();
    let both = [&k.device_a, &k.device_b];
    let revoked = sample::issue(&rec, sample::user_id(9), "gone", T0 + 5, 0, &both).unwrap();
    let mut rv = workflow::new_revocation(
        revoked.identity_digest(&rec.id()),
        T0 + 6,
        RevocationReason::UNSPECIFIED,
    );
    for s in both {
        workflow::sign_entry(&rec, ZoneType::IDENTITY, &mut rv, s).unwrap();
    }
    workflow::insert_entry(&mut rec, ZoneType::IDENTITY, rv).unwrap();
    let vp = verify_and_accept(rec.clone()).unwrap();

    let mut entries = Vec::new();
    for n in 0..40u8 {
        let signers = if n % 9 == 4 { &both[..1] } else { &both[..] };
        let expires = if n % 11 == 7 { T0 + 10 } else { 0 };
        let handle = format!("u{n}");
        let user = sample::user_id(n);
        let mut e = sample::issue(&rec, user, &handle, T0 + 5, expires, signers).unwrap();
        if n % 13 == 5 {
            // Claims another issuer (its signatures no longer matter).
            let mut b = poz::entries::IdentityBinding::from_bytes(&e.body).unwrap();
            b.issuer = sample::user_id(200);
            e.body = b.to_bytes();
        }
        if n % 7 == 3 {
            e.signatures[0].data[10] ^= 0x20;
        }
        entries.push(e);
    }
    entries.push(revoked);
    let now = T0 + 1_000;
    let batch = verify_bindings(&vp, &entries, now);
    let single: Vec<_> = entries
        .iter()
        .map(|e| verify_binding(&vp, e, now))
        .collect();
    assert_eq!(batch, single);
    let failed: Vec<Rule> = single
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.rule))
        .collect();
    for rule in [
        Rule::EntrySignatures,
        Rule::EntryGrant,
        Rule::BindingExpiry,
        Rule::BindingRevoked,
        Rule::BindingIssuer,
    ] {
        assert!(
            failed.contains(&rule),
            "no binding failed {rule}: {failed:?}"
        );
    }
    // Without the bad ones, the batch holds in one check.
    let good: Vec<_> = entries
        .iter()
        .zip(&single)
        .filter(|(_, r)| r.is_ok())
        .map(|(e, _)| e.clone())
        .collect();
    assert!(good.len() >= 20);
    assert!(verify_bindings(&vp, &good, now).iter().all(|r| r.is_ok()));
}

/// Batch signatures (SPEC §8.9): both identity devices sign one Merkle
/// root over 100 bindings; each binding verifies on its own, in a batch
/// check, and inside the provider's record. An altered audit path, root
/// signature, leaf index or tree size fails.
#[test]
fn batch_signed_bindings_verify_and_tampering_fails() {
    use poz::batch::BatchProof;
    use poz::keys::SigType;
    use poz::verify::verify_bindings;
    let k = provider_keys();
    let mut rec = sample::provider().unwrap();
    let mut batch = sample::bulk_bindings(&rec, 100, &[]).unwrap();
    for dev in [&k.device_a, &k.device_b] {
        workflow::sign_batch(&rec, ZoneType::IDENTITY, &mut batch, dev).unwrap();
    }
    assert!(batch.iter().all(|e| e.signatures.len() == 2
        && e.signatures
            .iter()
            .all(|s| s.sig_type == SigType::ED25519_BATCH)));
    // Re-encoding is exact.
    for e in &batch {
        assert_eq!(
            &poz::zone::SignedEntry::from_bytes(&e.to_bytes()).unwrap(),
            e
        );
    }
    let vp = verify_and_accept(rec.clone()).unwrap();
    let now = T0 + 1_000;
    for e in &batch {
        verify_binding(&vp, e, now).unwrap();
    }
    assert!(verify_bindings(&vp, &batch, now).iter().all(|r| r.is_ok()));

    let tamper = |e: &mut poz::zone::SignedEntry, f: &dyn Fn(&mut BatchProof)| {
        let mut p = BatchProof::from_bytes(&e.signatures[0].data).unwrap();
        f(&mut p);
        e.signatures[0].data = p.to_bytes();
    };
    let mut bad = batch.clone();
    tamper(&mut bad[5], &|p| p.path[0].0[0] ^= 1);
    tamper(&mut bad[6], &|p| p.root_signature[3] ^= 1);
    tamper(&mut bad[7], &|p| p.leaf_index = 8);
    tamper(&mut bad[8], &|p| p.tree_size = 128);
    // A binding carrying another binding's proof.
    bad[9].signatures[0] = batch[10].signatures[0].clone();
    let verdicts = verify_bindings(&vp, &bad, now);
    for (i, v) in verdicts.iter().enumerate() {
        let single = verify_binding(&vp, &bad[i], now);
        assert_eq!(v, &single, "binding {i}");
        if (5..=9).contains(&i) {
            assert_eq!(
                v.as_ref().unwrap_err().rule,
                Rule::EntrySignatures,
                "binding {i}"
            );
        } else {
            assert!(v.is_ok(), "binding {i}: {v:?}");
        }
    }

    // Inside the record: valid; a batch signature is refused on the
    // master zone (plain signatures only there).
    for e in batch.iter().take(3) {
        workflow::insert_entry(&mut rec, ZoneType::IDENTITY, e.clone()).unwrap();
    }
    let rec = Record::from_bytes(&rec.to_bytes()).unwrap();
    assert!(poz::verify_record(&rec).is_valid());
    let mut forged = rec.clone();
    forged.master.signatures[0].sig_type = SigType::ED25519_BATCH;
    forged.master.signatures[0].data = BatchProof {
        root_signature: forged.master.signatures[0].data.clone().try_into().unwrap(),
        tree_size: 1,
        leaf_index: 0,
        path: vec![],
    }
    .to_bytes();
    assert!(!poz::verify_record(&forged).is_valid());
}
