//! The committed test vectors (`services/poz/vectors/`): every valid and
//! invalid case is rebuilt here from fixed seeds and compared byte for byte
//! with the committed files, and each is verified: a valid vector passes
//! every rule; an invalid one fails exactly the one rule it is named for.
//!
//! Regenerate after a deliberate format change with
//! `POZ_REGEN_VECTORS=1 cargo test -p poz --test vectors`.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::entries::{Inbox, RevocationReason};
use poz::hash::{tagged_hash, Hash32};
use poz::record::section;
use poz::sample::{self, key, provider_keys, T0};
use poz::verify::{verify_and_accept, verify_binding, Rule};
use poz::workflow;
use poz::zone::{AuthoritySection, EntryKind, SignedEntry, ZoneSection, ZoneType};
use poz::{Codec, MasterZone, Record, SigningKey};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;

struct Vector {
    name: &'static str,
    description: &'static str,
    bytes: Vec<u8>,
    /// None for a valid vector.
    breaks: Option<Rule>,
    /// For binding vectors: the binding entry and the verification time.
    binding: Option<(Vec<u8>, u64)>,
    /// Rules that fail only because `breaks` does (a threshold whose
    /// every signature is the broken one): listed, never implied.
    also_fails: Vec<Rule>,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

/// Re-signs the current master zone with `signers` and finalizes it.
fn resign(rec: &mut Record, signers: &[&SigningKey]) {
    rec.master.current_master_hash = Hash32::ZERO;
    rec.master.signatures.clear();
    if rec.master.is_genesis() {
        rec.master.original_master_hash = Hash32::ZERO;
    }
    let digest = rec.master.signable_digest(&rec.keys).unwrap();
    for s in signers {
        let idx = rec.keys.index_of(&s.public().id()).unwrap();
        poz::keys::insert_signature(&mut rec.master.signatures, s.sign(idx, &digest));
    }
    rec.master.finalize(&rec.keys).unwrap();
}

fn tour_group0() -> [SigningKey; 3] {
    [key(1), key(2), key(3)]
}

/// The tour record at serial 2, signed by all of group 0.
fn tour_rev2() -> Record {
    let r1 = sample::tour_record().unwrap();
    let mut r2 = workflow::draft(&r1, T0 + 60_000).unwrap();
    for k in &tour_group0() {
        workflow::sign_draft(&mut r2, k).unwrap();
    }
    workflow::apply(&mut r2).unwrap();
    r2
}

/// A draft of serial 2 that a mutation edits before it is signed.
fn tour_rev2_with(edit: impl FnOnce(&mut MasterZone)) -> Record {
    let r1 = sample::tour_record().unwrap();
    let mut r2 = workflow::draft(&r1, T0 + 60_000).unwrap();
    edit(&mut r2.master);
    let g = tour_group0();
    resign(&mut r2, &[&g[0], &g[1], &g[2]]);
    r2
}

fn entry_signed(
    rec: &Record,
    zone: ZoneType,
    kind: EntryKind,
    body: Vec<u8>,
    signers: &[&SigningKey],
) -> SignedEntry {
    let mut e = SignedEntry::new(kind, body);
    // Some invalid vectors sign a body that does not decode: it names no
    // key, so its digest binds none.
    let digest = e
        .digest_in(&rec.id(), zone, &rec.keys)
        .unwrap_or_else(|_| e.digest(&rec.id(), zone, &poz::zone::KeyBinding::NONE));
    for s in signers {
        let idx = rec.keys.index_of(&s.public().id()).unwrap();
        e.add_signature(s.sign(idx, &digest));
    }
    e
}

fn build() -> Vec<Vector> {
    let mut v = Vec::new();
    let mut push = |name, description, rec: &Record, breaks| {
        v.push(Vector {
            name,
            description,
            bytes: rec.to_bytes(),
            breaks,
            binding: None,
            also_fails: Vec::new(),
        })
    };
    let pk = provider_keys();
    let tour = sample::tour_record().unwrap();
    let provider = sample::provider().unwrap();

    // ---- valid records
    push("valid-genesis-34-33-33-recovery", "Genesis with keys 34/33/33 in group 0 and a recovery key of 100 in group 1, signed by group 0.", &tour, None);
    push("valid-chain-1-2", "The same record at serial 2, authorized by group 0 of serial 1; serial 1 is in the Zone History.", &tour_rev2(), None);
    {
        let mut r3 = workflow::draft(&tour_rev2(), T0 + 120_000).unwrap();
        workflow::sign_draft(&mut r3, &key(4)).unwrap();
        workflow::apply(&mut r3).unwrap();
        push(
            "valid-chain-recovery-key",
            "Serial 3 authorized by the recovery key alone (group 1).",
            &r3,
            None,
        );
    }
    push("valid-provider-all-zones", "A provider with identity (two devices grant 50 / deny 100), service, email, auth and feed zones and one binding.", &provider, None);
    {
        let mut p = provider.clone();
        let alice = &p.zones[&ZoneType::IDENTITY].entries[0];
        let target = alice.identity_digest(&p.id());
        let mut rev =
            workflow::new_revocation(target, T0 + 3_000, RevocationReason::ACCOUNT_CLOSED);
        workflow::sign_entry(&p, ZoneType::IDENTITY, &mut rev, &pk.device_b).unwrap();
        workflow::insert_entry(&mut p, ZoneType::IDENTITY, rev).unwrap();
        push(
            "valid-provider-revocation-one-device",
            "The provider after one device alone (deny 100) revoked alice's binding.",
            &p,
            None,
        );
    }
    {
        let mut p = tour_rev2();
        p.history.clear();
        push("valid-partial-history", "Serial 2 without its Zone History: every rule holds that can be checked; chain-genesis and the threshold are reported as not checked.", &p, None);
    }

    // ---- one rule broken each
    {
        let mut p = tour.clone();
        p.key_names.insert(9, "nobody".into());
        push(
            "invalid-key-index",
            "Key Names name key index 9; the key map has 4 keys.",
            &p,
            Some(Rule::KeyIndex),
        );
    }
    {
        let mut p = tour.clone();
        p.master.previous_master_hash = tagged_hash("x", &[]);
        let g = tour_group0();
        resign(&mut p, &[&g[0], &g[1], &g[2]]);
        push(
            "invalid-mz-genesis-previous",
            "Genesis with a non-zero previous_master_hash (signed and hashed over it).",
            &p,
            Some(Rule::MasterGenesis),
        );
    }
    {
        let mut p = tour_rev2();
        p.master.current_master_hash.0[0] ^= 0x01;
        push(
            "invalid-mz-hash",
            "Serial 2 whose current_master_hash has one bit flipped.",
            &p,
            Some(Rule::MasterHash),
        );
    }
    {
        let mut p = tour.clone();
        p.master.master_keys.retain(|k| k.group != 1);
        p.master.master_keys.push(poz::MasterKey {
            key_idx: 3,
            group: 2,
            value: 60,
        });
        let g = tour_group0();
        resign(&mut p, &[&g[0], &g[1], &g[2]]);
        push(
            "invalid-mz-groups",
            "Group 2 has a single key of value 60: it can never reach 100.",
            &p,
            Some(Rule::MasterGroups),
        );
    }
    {
        let mut p = tour.clone();
        let g = tour_group0();
        resign(&mut p, &[&g[0], &g[1], &g[2], &key(4)]);
        let s = p
            .master
            .signatures
            .iter_mut()
            .find(|s| s.key_idx == 3)
            .unwrap();
        s.data[5] ^= 0x10;
        p.master.finalize(&p.keys.clone()).unwrap();
        push(
            "invalid-mz-signatures",
            "Group 0 signs validly (threshold met) but the recovery key's signature is corrupt.",
            &p,
            Some(Rule::MasterSignatures),
        );
    }
    {
        let mut p = tour.clone();
        let g = tour_group0();
        resign(&mut p, &[&g[0], &g[1]]);
        push(
            "invalid-mz-threshold",
            "Genesis signed by keys of 34 and 33 only: 67 of 100.",
            &p,
            Some(Rule::MasterThreshold),
        );
    }
    push(
        "invalid-chain-serial",
        "Serial 1 followed by serial 3.",
        &tour_rev2_with(|m| m.serial = 3),
        Some(Rule::ChainSerial),
    );
    push(
        "invalid-chain-timestamp",
        "Serial 2 with the same timestamp as serial 1.",
        &tour_rev2_with(|m| m.timestamp = T0),
        Some(Rule::ChainTimestamp),
    );
    push(
        "invalid-chain-link",
        "Serial 2 whose previous_master_hash is not serial 1's hash.",
        &tour_rev2_with(|m| m.previous_master_hash = tagged_hash("x", &[])),
        Some(Rule::ChainLink),
    );
    push(
        "invalid-chain-original",
        "Serial 2 whose original_timestamp differs from genesis.",
        &tour_rev2_with(|m| m.original_timestamp = T0 - 1),
        Some(Rule::ChainOriginal),
    );
    {
        let r = tour_rev2_with(|m| {
            m.delegations.push(poz::Delegation {
                zone_type: ZoneType::IDENTITY,
                keys: vec![poz::DelegationKey {
                    key_idx: 0,
                    group: 0,
                    grant: 50,
                    deny: 100,
                }],
            })
        });
        push(
            "invalid-delegation-reachable",
            "An identity delegation whose only key has grant 50: nothing can ever be granted.",
            &r,
            Some(Rule::DelegationReachable),
        );
    }
    {
        let mut p = provider.clone();
        p.master
            .delegations
            .retain(|d| d.zone_type != ZoneType::FEED);
        p.zones.remove(&ZoneType::FEED);
        let mut a = AuthoritySection::new(ZoneType::FEED, 1, T0, "").unwrap();
        a.add_signature(pk.zones.sign(0, &a.signable_digest(&p.id())));
        p.authorities.insert(ZoneType::FEED, a);
        resign(&mut p, &[&pk.master]);
        push("invalid-zone-delegated", "A Feed authority section in a record whose master zone does not delegate the feed zone.", &p, Some(Rule::ZoneDelegated));
    }
    {
        let mut p = provider.clone();
        p.authorities.remove(&ZoneType::FEED);
        push(
            "invalid-zone-authority",
            "A Feed zone section without its authority section.",
            &p,
            Some(Rule::ZoneAuthority),
        );
    }
    {
        let mut p = provider.clone();
        workflow::set_authority(
            &mut p,
            ZoneType::IDENTITY,
            "social.example",
            Hash32::ZERO,
            T0 + 5_000,
            &[&pk.device_a, &pk.device_b],
        )
        .unwrap();
        let a = p.authorities.get_mut(&ZoneType::IDENTITY).unwrap();
        a.signatures.retain(|s| s.key_idx != 2);
        push(
            "invalid-authority-threshold",
            "The identity authority signed by one device: grant 50 of 100.",
            &p,
            Some(Rule::AuthorityThreshold),
        );
    }
    {
        let mut p = provider.clone();
        let e = entry_signed(
            &p,
            ZoneType::IDENTITY,
            EntryKind::GRANT,
            vec![0xde, 0xad],
            &[&pk.device_a, &pk.device_b],
        );
        p.zones.get_mut(&ZoneType::IDENTITY).unwrap().upsert(e);
        push(
            "invalid-entry-body",
            "An identity entry whose body is two bytes, not a binding.",
            &p,
            Some(Rule::EntryBody),
        );
    }
    {
        let mut p = provider.clone();
        let mut e = sample::issue(
            &p,
            sample::user_id(2),
            "bob",
            T0 + 3_000,
            0,
            &[&pk.device_a, &pk.device_b],
        )
        .unwrap();
        let d = e.identity_digest(&p.id());
        e.add_signature(pk.master.sign(0, &d));
        p.zones.get_mut(&ZoneType::IDENTITY).unwrap().upsert(e);
        push("invalid-entry-signatures", "A binding signed by both devices and also by the master key, which is not an identity delegation key.", &p, Some(Rule::EntrySignatures));
    }
    {
        let mut p = provider.clone();
        let e = sample::issue(
            &p,
            sample::user_id(2),
            "bob",
            T0 + 3_000,
            0,
            &[&pk.device_a],
        )
        .unwrap();
        p.zones.get_mut(&ZoneType::IDENTITY).unwrap().upsert(e);
        push(
            "invalid-entry-grant",
            "A binding signed by one device only: grant 50 of 100 (adding needs both).",
            &p,
            Some(Rule::EntryGrant),
        );
    }
    {
        let mut p = provider.clone();
        let rev =
            workflow::new_revocation(tagged_hash("x", &[]), T0 + 3_000, RevocationReason::POLICY);
        p.zones.get_mut(&ZoneType::IDENTITY).unwrap().upsert(rev);
        push(
            "invalid-revocation-deny",
            "A revocation with no signatures: deny 0 of 100.",
            &p,
            Some(Rule::RevocationDeny),
        );
    }
    {
        let mut p = provider.clone();
        let b = poz::entries::IdentityBinding::new(
            sample::user_id(7),
            sample::user_id(8),
            "mallory",
            T0,
            0,
        )
        .unwrap();
        p.zones
            .get_mut(&ZoneType::IDENTITY)
            .unwrap()
            .upsert(SignedEntry::new(EntryKind::GRANT, b.to_bytes()));
        push(
            "invalid-binding-party",
            "A binding neither issued by this record nor issued to it.",
            &p,
            Some(Rule::BindingParty),
        );
    }
    {
        let mut p = provider.clone();
        let ib = Inbox {
            guid: [0x11; 16],
            name: "Lost".into(),
            mail_service: tagged_hash("nowhere", &[]),
        };
        let e = entry_signed(
            &p,
            ZoneType::EMAIL,
            EntryKind::GRANT,
            ib.to_bytes(),
            &[&pk.zones],
        );
        p.zones.get_mut(&ZoneType::EMAIL).unwrap().upsert(e);
        push(
            "invalid-service-ref",
            "An inbox whose mail_service is not in the Service Zone.",
            &p,
            Some(Rule::ServiceRef),
        );
    }

    // ---- decode failures: each a structural rule the codec enforces
    let good = tour.to_bytes();
    let mut decode = |name, description, bytes: Vec<u8>| {
        v.push(Vector {
            name,
            description,
            bytes,
            breaks: Some(Rule::Decode),
            binding: None,
            also_fails: Vec::new(),
        })
    };
    let mut b = good.clone();
    b[0] = b'Q';
    decode("decode-magic", "The first byte is not 'P'.", b);
    let mut b = good.clone();
    b[3] = 1;
    decode("decode-version", "Version byte 1.", b);
    let mut b = good.clone();
    b.push(0);
    decode(
        "decode-length-trailing",
        "One byte after the length the header gives.",
        b,
    );
    decode(
        "decode-truncated",
        "The last byte is missing.",
        good[..good.len() - 1].to_vec(),
    );
    {
        let mut b = good.clone();
        // TOC entry 1 (master zone) offset + 1: a gap / overlap.
        let off = 8 + 2 + 10 + 2;
        let o = u32::from_be_bytes(b[off..off + 4].try_into().unwrap()) + 1;
        b[off..off + 4].copy_from_slice(&o.to_be_bytes());
        decode(
            "decode-toc-offset",
            "The master zone's TOC offset is one past where the key map ends.",
            b,
        );
    }
    {
        let mut p = tour.clone();
        p.unknown_optional.insert(0x8010, vec![1, 2, 3]);
        let mut b = p.to_bytes();
        // Turn optional type 0x8010 into required 0x0010 (identity authority):
        // still ordered? No: put it at 0x7001, an unknown required type.
        let toc_last = 8 + 2 + 10 * 2;
        b[toc_last..toc_last + 2].copy_from_slice(&0x7001u16.to_be_bytes());
        decode(
            "decode-unknown-required-section",
            "A section of type 0x7001: unknown and not optional.",
            b,
        );
    }
    {
        let mut b = good.clone();
        // Swap the two TOC types: not ascending.
        b[10..12].copy_from_slice(&section::MASTER_ZONE.to_be_bytes());
        b[20..22].copy_from_slice(&section::PUBLIC_KEY_MAP.to_be_bytes());
        decode("decode-toc-order", "The TOC lists 0x0001 before 0x0000.", b);
    }
    {
        let mut p = provider.clone();
        let zs = p.zones.get_mut(&ZoneType::SERVICE).unwrap();
        zs.entries.reverse();
        decode(
            "decode-entry-order",
            "Service Zone entries out of canonical order.",
            p.to_bytes(),
        );
    }
    {
        let mut p = tour.clone();
        p.master.master_keys[0].value = 101;
        decode(
            "decode-key-value",
            "A master key of value 101.",
            p.to_bytes(),
        );
    }
    let _ = ZoneSection::default();

    // ---- bindings verified against the provider record
    let mut bind = |name, description, entry: &SignedEntry, rec: &Record, now, breaks| {
        v.push(Vector {
            name,
            description,
            bytes: rec.to_bytes(),
            breaks,
            binding: Some((entry.to_bytes(), now)),
            also_fails: Vec::new(),
        })
    };
    let alice = provider.zones[&ZoneType::IDENTITY].entries[0].clone();
    bind(
        "binding-valid",
        "alice's binding verified against the provider at T0 + 10 s.",
        &alice,
        &provider,
        T0 + 10_000,
        None,
    );
    let short = sample::issue(
        &provider,
        sample::user_id(3),
        "carol",
        T0,
        T0 + 5_000,
        &[&pk.device_a, &pk.device_b],
    )
    .unwrap();
    bind(
        "binding-expired",
        "A binding that expired at T0 + 5 s, verified at T0 + 10 s.",
        &short,
        &provider,
        T0 + 10_000,
        Some(Rule::BindingExpiry),
    );
    {
        let mut p = provider.clone();
        let target = alice.identity_digest(&p.id());
        let mut rev =
            workflow::new_revocation(target, T0 + 3_000, RevocationReason::KEY_COMPROMISE);
        workflow::sign_entry(&p, ZoneType::IDENTITY, &mut rev, &pk.device_a).unwrap();
        workflow::insert_entry(&mut p, ZoneType::IDENTITY, rev).unwrap();
        bind(
            "binding-revoked",
            "alice's binding against a provider record that revokes it (one device, deny 100).",
            &alice,
            &p,
            T0 + 10_000,
            Some(Rule::BindingRevoked),
        );
    }
    {
        // SPEC §8.4.3: the provider's zone also carries a later binding of
        // the same handle to another subject, so the earlier one is void
        // (its revocation need not be served).
        let mut p = provider.clone();
        let signers = [&pk.device_a, &pk.device_b];
        let first = sample::issue(&p, sample::user_id(5), "erin", T0 + 100, 0, &signers).unwrap();
        let later = sample::issue(&p, sample::user_id(6), "erin", T0 + 200, 0, &signers).unwrap();
        workflow::insert_entry(&mut p, ZoneType::IDENTITY, first.clone()).unwrap();
        workflow::insert_entry(&mut p, ZoneType::IDENTITY, later).unwrap();
        bind(
            "binding-superseded",
            "erin's binding to user 5 (T0 + 100 ms) against a provider record whose Identity Zone also binds erin to user 6 at T0 + 200 ms.",
            &first,
            &p,
            T0 + 10_000,
            Some(Rule::BindingSuperseded),
        );
    }
    bind(
        "binding-wrong-issuer",
        "alice's binding checked against another record (the tour record).",
        &alice,
        &tour,
        T0 + 10_000,
        Some(Rule::BindingIssuer),
    );
    let one = sample::issue(
        &provider,
        sample::user_id(4),
        "dave",
        T0,
        0,
        &[&pk.device_a],
    )
    .unwrap();
    bind(
        "binding-grant-short",
        "A binding signed by one device: grant 50 of 100.",
        &one,
        &provider,
        T0 + 10_000,
        Some(Rule::EntryGrant),
    );
    // SPEC §6.7: a binding stamped further ahead of the verifier's clock
    // than the allowed skew (5 minutes) is refused.
    let early = sample::issue(
        &provider,
        sample::user_id(5),
        "erin",
        T0 + 10_000 + poz::verify::MAX_CLOCK_SKEW_MS + 1,
        0,
        &[&pk.device_a, &pk.device_b],
    )
    .unwrap();
    bind(
        "binding-issued-in-future",
        "A binding issued 5 minutes and 1 ms after the verification time (now_ms): later than the allowed clock skew.",
        &early,
        &provider,
        T0 + 10_000,
        Some(Rule::BindingTime),
    );
    // Batch signatures (SPEC §8.9): five bindings, each device signing the
    // batch root once.
    let mut batch = sample::bulk_bindings(&provider, 5, &[]).unwrap();
    workflow::sign_batch(&provider, ZoneType::IDENTITY, &mut batch, &pk.device_a).unwrap();
    workflow::sign_batch(&provider, ZoneType::IDENTITY, &mut batch, &pk.device_b).unwrap();
    bind(
        "binding-batch-valid",
        "Leaf 3 of a batch of 5 bindings (user3): both devices signed the batch root once; each signature is type 0x02 with tree size 5, leaf index 3 and an audit path of 3 hashes (leaf 2, the node over leaves 0-1, leaf 4).",
        &batch[3],
        &provider,
        T0 + 10_000,
        None,
    );
    let mut altered = batch[3].clone();
    // The first byte of the first audit-path hash of device a's signature
    // (after root signature 64, size 4, index 4, path length 1).
    altered.signatures[0].data[73] ^= 0x01;
    bind(
        "binding-batch-path-altered",
        "binding-batch-valid with one bit of device a's audit path flipped: that signature no longer proves to a signed root, so it does not verify.",
        &altered,
        &provider,
        T0 + 10_000,
        Some(Rule::EntrySignatures),
    );
    key_binding_vectors(&provider, &mut v);
    {
        // SPEC §8.4.1: a handle with a bidi override displays as another
        // ("\u{202E}ecila" shows as "alice"); no binding may carry one,
        // even one its provider signed.
        let mut p = provider.clone();
        let raw = poz::entries::IdentityBinding {
            issuer: p.id(),
            subject: sample::user_id(6),
            handle: "\u{202E}ecila".into(),
            issued_at: T0 + 3_000,
            expires_at: 0,
        };
        let e = entry_signed(
            &p,
            ZoneType::IDENTITY,
            EntryKind::GRANT,
            raw.to_bytes(),
            &[&pk.device_a, &pk.device_b],
        );
        p.zones.get_mut(&ZoneType::IDENTITY).unwrap().upsert(e);
        v.push(Vector {
            name: "invalid-binding-handle-bidi",
            description: "A binding, signed by both devices, whose handle is U+202E followed by \"ecila\" (it displays as \"alice\"): the body does not decode (handle-bidi, SPEC §8.4.1).",
            bytes: p.to_bytes(),
            breaks: Some(Rule::EntryBody),
            binding: None,
            also_fails: Vec::new(),
        });
    }
    {
        // SPEC §8.9: path_len is fixed by (leaf_index, tree_size); a proof
        // of leaf 0 of 4 with one hash (the right length is 2) does not
        // decode.
        let mut p = provider.clone();
        let mut e = sample::issue(&p, sample::user_id(6), "frank", T0 + 3_000, 0, &[]).unwrap();
        let proof = poz::batch::BatchProof {
            root_signature: [7; 64],
            tree_size: 4,
            leaf_index: 0,
            path: vec![tagged_hash("sibling", &[])],
        };
        e.signatures.push(poz::keys::Signature {
            key_idx: 1,
            sig_type: poz::keys::SigType::ED25519_BATCH,
            data: proof.to_bytes(),
        });
        p.zones.get_mut(&ZoneType::IDENTITY).unwrap().upsert(e);
        v.push(Vector {
            name: "invalid-batch-path-len",
            description: "An identity entry with a batch signature for leaf 0 of 4 whose path_len is 1 (the audit path of that leaf has 2 hashes): a decode error at signature.data.",
            bytes: p.to_bytes(),
            breaks: Some(Rule::Decode),
            binding: None,
            also_fails: Vec::new(),
        });
    }
    v
}

/// SPEC §5.3: an entry that names a key by index binds that key's ID into
/// its digest. A valid record whose HTTPS service host names a CA key and
/// whose trust group names a member key, both keys appended to the Public
/// Key Map after the delegations were signed; then the same records with
/// only those 32 key bytes replaced. The record ID does not change, the
/// entry's signature no longer verifies, and so its grant falls short.
fn key_binding_vectors(provider: &Record, v: &mut Vec<Vector>) {
    use poz::entries::{
        AuthEntry, Encryption, PoolHost, ServiceEntry, ServiceType, Transport, TrustMember,
    };
    let pk = provider_keys();
    let mut with_ca = provider.clone();
    let ca = with_ca.keys.add(key(60).public()).unwrap();
    let https = ServiceEntry {
        service_type: ServiceType::HTTPS,
        name: "login".into(),
        pool: vec![PoolHost {
            hostname: "login.social.example".into(),
            port: 443,
            transport: Transport::TCP,
            encryption: Encryption::TLS,
            server_key: None,
            ca_key_idx: ca,
            priority: 10,
            weight: 100,
        }],
    };
    let e = entry_signed(
        &with_ca,
        ZoneType::SERVICE,
        EntryKind::GRANT,
        https.to_bytes(),
        &[&pk.zones],
    );
    workflow::insert_entry(&mut with_ca, ZoneType::SERVICE, e).unwrap();
    let member = with_ca.keys.add(key(61).public()).unwrap();
    let group = AuthEntry::TrustGroup {
        group_id: 2,
        name: "staff".into(),
        members: vec![TrustMember {
            key_idx: member,
            value: 100,
        }],
    };
    let e = entry_signed(
        &with_ca,
        ZoneType::AUTH,
        EntryKind::GRANT,
        group.to_bytes(),
        &[&pk.zones],
    );
    workflow::insert_entry(&mut with_ca, ZoneType::AUTH, e).unwrap();
    let vector = |name, description, rec: &Record, breaks: Option<Rule>| Vector {
        name,
        description,
        bytes: rec.to_bytes(),
        breaks,
        binding: None,
        also_fails: if breaks.is_some() {
            vec![Rule::EntryGrant]
        } else {
            Vec::new()
        },
    };
    v.push(vector(
        "valid-keys-named-by-entries",
        "The provider with two keys appended to its Public Key Map (indices 4 and 5): an HTTPS service host whose ca_key_idx is 4 and a trust group whose one member is key 5, each entry signed by the zones key over a digest that binds the key ID it names (SPEC §5.3).",
        &with_ca,
        None,
    ));
    let mut swapped = with_ca.clone();
    swapped.keys.keys[ca as usize] = key(62).public();
    v.push(vector(
        "invalid-ca-key-swapped",
        "valid-keys-named-by-entries with only the 32 bytes of key 4 (the HTTPS host's CA key) replaced: same record ID, but the service entry's signature covers the old key's ID and fails; its grant is then 0 of 100 (also_fails).",
        &swapped,
        Some(Rule::EntrySignatures),
    ));
    let mut swapped = with_ca.clone();
    swapped.keys.keys[member as usize] = key(62).public();
    v.push(vector(
        "invalid-trust-member-key-swapped",
        "valid-keys-named-by-entries with only the 32 bytes of key 5 (the trust group's member) replaced: the trust group entry's signature fails; its grant is then 0 of 100 (also_fails).",
        &swapped,
        Some(Rule::EntrySignatures),
    ));
}

fn describe(v: &Vector) -> Value {
    let mut j = json!({
        "name": v.name,
        "description": v.description,
        "file": format!("{}.poz", v.name),
        "sha3_256": tagged_hash_plain(&v.bytes),
        "valid": v.breaks.is_none(),
        "breaks": v.breaks.map(|r| r.code()),
    });
    if !v.also_fails.is_empty() {
        j["also_fails"] = json!(v.also_fails.iter().map(|r| r.code()).collect::<Vec<_>>());
    }
    if let Ok(rec) = Record::from_bytes(&v.bytes) {
        j["record_id"] = json!(rec.id().to_hex());
        j["serial"] = json!(rec.master.serial);
    } else if let Err(e) = Record::from_bytes(&v.bytes) {
        j["decode_error"] = json!(e.to_string());
        j["decode_field"] = json!(e.field());
        j["decode_offset"] = json!(e.offset());
    }
    if let Some((b, now)) = &v.binding {
        j["kind"] = json!("binding");
        j["binding_file"] = json!(format!("{}.entry", v.name));
        j["provider_file"] = json!(format!("{}.poz", v.name));
        j["now_ms"] = json!(now);
        if let Ok(e) = SignedEntry::from_bytes(b) {
            if let Ok(poz::entries::EntryBody::Binding(bd)) =
                poz::entries::EntryBody::decode(ZoneType::IDENTITY, e.kind, &e.body)
            {
                j["handle"] = json!(bd.handle);
            }
        }
    } else {
        j["kind"] = json!("record");
    }
    j
}

fn tagged_hash_plain(b: &[u8]) -> String {
    use sha3::Digest;
    hex::encode(sha3::Sha3_256::digest(b))
}

/// Verifies one vector and returns the rules that failed.
fn failed_rules(v: &Vector) -> BTreeSet<Rule> {
    let rec = match Record::from_bytes(&v.bytes) {
        Ok(r) => r,
        Err(_) => return [Rule::Decode].into(),
    };
    // Canonical: re-encoding reproduces the bytes exactly.
    assert_eq!(rec.to_bytes(), v.bytes, "{}: re-encoding differs", v.name);
    match &v.binding {
        None => poz::verify_record(&rec)
            .failed_rules()
            .into_iter()
            .collect(),
        Some((b, now)) => {
            let vr = verify_and_accept(rec)
                .unwrap_or_else(|r| panic!("{}: provider invalid: {r:?}", v.name));
            let e = SignedEntry::from_bytes(b).unwrap();
            match verify_binding(&vr, &e, *now) {
                Ok(_) => BTreeSet::new(),
                Err(err) => [err.rule].into(),
            }
        }
    }
}

#[test]
fn vectors_are_committed_and_each_breaks_exactly_its_rule() {
    let vectors = build();
    let regen = std::env::var_os("POZ_REGEN_VECTORS").is_some();
    let d = dir();
    if regen {
        // Only the record vectors' own files go: other vectors (such as
        // fingerprint.json) share the directory.
        if let Ok(b) = std::fs::read(d.join("index.json")) {
            let old: Vec<Value> = serde_json::from_slice(&b).unwrap();
            for v in old {
                if let Some(n) = v["name"].as_str() {
                    for ext in ["poz", "entry", "json"] {
                        let _ = std::fs::remove_file(d.join(format!("{n}.{ext}")));
                    }
                }
            }
        }
        std::fs::create_dir_all(&d).unwrap();
    }
    let mut index = Vec::new();
    let mut names = BTreeSet::new();
    for v in &vectors {
        assert!(names.insert(v.name), "duplicate vector name {}", v.name);
        let want: BTreeSet<Rule> = v
            .breaks
            .into_iter()
            .chain(v.also_fails.iter().copied())
            .collect();
        assert_eq!(failed_rules(v), want, "vector {}", v.name);
        let desc = describe(v);
        let path = d.join(format!("{}.poz", v.name));
        if regen {
            std::fs::write(&path, &v.bytes).unwrap();
            if let Some((b, _)) = &v.binding {
                std::fs::write(d.join(format!("{}.entry", v.name)), b).unwrap();
            }
            std::fs::write(
                d.join(format!("{}.json", v.name)),
                serde_json::to_string_pretty(&desc).unwrap() + "\n",
            )
            .unwrap();
        } else {
            let committed = std::fs::read(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (regenerate with POZ_REGEN_VECTORS=1)",
                    path.display()
                )
            });
            assert!(
                committed == v.bytes,
                "{} differs from what the library builds now",
                path.display()
            );
            let committed_desc: Value =
                serde_json::from_slice(&std::fs::read(d.join(format!("{}.json", v.name))).unwrap())
                    .unwrap();
            assert_eq!(committed_desc, desc, "{}.json is stale", v.name);
            if let Some((b, _)) = &v.binding {
                assert!(std::fs::read(d.join(format!("{}.entry", v.name))).unwrap() == *b);
            }
        }
        index.push(desc);
    }
    if regen {
        std::fs::write(
            d.join("index.json"),
            serde_json::to_string_pretty(&index).unwrap() + "\n",
        )
        .unwrap();
    }
}

/// Every rule that can fail has a vector that breaks exactly it.
#[test]
fn every_rule_has_a_breaking_vector() {
    let broken: BTreeSet<Rule> = build().iter().filter_map(|v| v.breaks).collect();
    for r in Rule::ALL {
        // chain-genesis is never a failure: a record served without its
        // history is reported "not checked" (see valid-partial-history).
        if r == Rule::ChainGenesis {
            continue;
        }
        assert!(broken.contains(&r), "no vector breaks rule {r}");
    }
}
