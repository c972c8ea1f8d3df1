//! Deterministic sample records, built from fixed key seeds and fixed
//! times, so that test vectors, tests, benchmarks and the docs all see the
//! same bytes. Nothing here is secret: the seeds are public by design.

use crate::entries::{
    AuthEntry, Encryption, FeedEntry, Inbox, PoolHost, ServiceEntry, ServiceType, Transport,
    TrustMember, NO_CA_KEY,
};
use crate::hash::Hash32;
use crate::keys::SigningKey;
use crate::record::Record;
use crate::workflow::{self, GenesisKey};
use crate::zone::{EntryKind, SignedEntry, ZoneType};
use crate::{Codec, Error};

/// 2026-01-01T00:00:00Z in milliseconds: the sample records' genesis time.
pub const T0: u64 = 1_767_225_600_000;

/// The sample key with seed `[n; 32]`.
pub fn key(n: u8) -> SigningKey {
    SigningKey::from_seed(&[n; 32])
}

/// The README tour's record: keys 1, 2, 3 (34/33/33) in group 0 and a
/// recovery key 4 (100) in group 1, genesis signed by all three of group 0.
pub fn tour_record() -> Result<Record, Error> {
    let ks = [key(1), key(2), key(3), key(4)];
    let spec = [(0u8, 34u8), (0, 33), (0, 33), (1, 100)];
    let gk: Vec<GenesisKey> = ks
        .iter()
        .zip(spec)
        .map(|(k, (group, value))| GenesisKey {
            public: k.public(),
            group,
            value,
        })
        .collect();
    let mut rec = workflow::genesis(&gk, T0)?;
    for k in &ks[..3] {
        workflow::sign_draft(&mut rec, k)?;
    }
    workflow::apply(&mut rec)?;
    Ok(rec)
}

/// The keys of `provider()`: master key 10 (100, group 0); identity
/// devices 11 and 12 (grant 50, deny 100 each); key 13 for the other zones
/// (grant 100, deny 100).
pub struct ProviderKeys {
    pub master: SigningKey,
    pub device_a: SigningKey,
    pub device_b: SigningKey,
    pub zones: SigningKey,
}

pub fn provider_keys() -> ProviderKeys {
    ProviderKeys {
        master: key(10),
        device_a: key(11),
        device_b: key(12),
        zones: key(13),
    }
}

/// A genesis record owned by one key of value 100, applied at `T0`.
pub fn sole_owner_genesis(owner: &SigningKey) -> Result<Record, Error> {
    let mut rec = workflow::genesis(
        &[GenesisKey {
            public: owner.public(),
            group: 0,
            value: 100,
        }],
        T0,
    )?;
    workflow::sign_draft(&mut rec, owner)?;
    workflow::apply(&mut rec)?;
    Ok(rec)
}

/// A provider record with every zone populated: identity (namespace
/// "social.example", two devices with grant 50 / deny 100 — the standard's
/// own example), service (query and mail), email, auth and feed.
pub fn provider() -> Result<Record, Error> {
    let k = provider_keys();
    let rec = sole_owner_genesis(&k.master)?;

    let mut rec = workflow::draft(&rec, T0 + 1_000)?;
    workflow::set_delegation_key(
        &mut rec,
        ZoneType::IDENTITY,
        k.device_a.public(),
        0,
        50,
        100,
    )?;
    workflow::set_delegation_key(
        &mut rec,
        ZoneType::IDENTITY,
        k.device_b.public(),
        0,
        50,
        100,
    )?;
    for z in [
        ZoneType::FEED,
        ZoneType::EMAIL,
        ZoneType::AUTH,
        ZoneType::SERVICE,
    ] {
        workflow::set_delegation_key(&mut rec, z, k.zones.public(), 0, 100, 100)?;
    }
    workflow::sign_draft(&mut rec, &k.master)?;
    workflow::apply(&mut rec)?;

    let t = T0 + 2_000;
    let query = ServiceEntry {
        service_type: ServiceType::POZ_QUERY,
        name: "lookup".into(),
        pool: vec![
            PoolHost {
                hostname: "q1.social.example".into(),
                port: 7075,
                transport: Transport::TCP,
                encryption: Encryption::NOISE_NK,
                server_key: Some([0x42; 32]),
                ca_key_idx: NO_CA_KEY,
                priority: 10,
                weight: 60,
            },
            PoolHost {
                hostname: "q2.social.example".into(),
                port: 7074,
                transport: Transport::TCP,
                encryption: Encryption::NONE,
                server_key: None,
                ca_key_idx: NO_CA_KEY,
                priority: 20,
                weight: 40,
            },
        ],
    };
    let mail = ServiceEntry {
        service_type: ServiceType::MAIL,
        name: "primary".into(),
        pool: vec![PoolHost {
            hostname: "mx.social.example".into(),
            port: 25,
            transport: Transport::TCP,
            encryption: Encryption::TLS,
            server_key: None,
            ca_key_idx: 0,
            priority: 10,
            weight: 50,
        }],
    };
    let feed = ServiceEntry {
        service_type: ServiceType::FEED,
        name: "publish".into(),
        pool: vec![PoolHost {
            hostname: "feed.social.example".into(),
            port: 443,
            transport: Transport::TCP,
            encryption: Encryption::NOISE_NK,
            server_key: Some([0x43; 32]),
            ca_key_idx: NO_CA_KEY,
            priority: 10,
            weight: 100,
        }],
    };
    let revocation = ServiceEntry {
        service_type: ServiceType::REVOCATION,
        name: "live".into(),
        pool: vec![PoolHost {
            hostname: "revoke.social.example".into(),
            port: 443,
            transport: Transport::TCP,
            encryption: Encryption::TLS,
            server_key: None,
            ca_key_idx: 0,
            priority: 10,
            weight: 100,
        }],
    };
    let (mail_h, feed_h, rev_h) = (
        mail.service_hash(),
        feed.service_hash(),
        revocation.service_hash(),
    );

    workflow::set_authority(
        &mut rec,
        ZoneType::IDENTITY,
        "social.example",
        Hash32::ZERO,
        t,
        &[&k.device_a, &k.device_b],
    )?;
    workflow::set_authority(
        &mut rec,
        ZoneType::SERVICE,
        "",
        Hash32::ZERO,
        t,
        &[&k.zones],
    )?;
    workflow::set_authority(&mut rec, ZoneType::EMAIL, "", mail_h, t, &[&k.zones])?;
    workflow::set_authority(&mut rec, ZoneType::AUTH, "", rev_h, t, &[&k.zones])?;
    workflow::set_authority(&mut rec, ZoneType::FEED, "", Hash32::ZERO, t, &[&k.zones])?;

    for s in [query, mail, feed, revocation] {
        add_signed(&mut rec, ZoneType::SERVICE, s.to_bytes(), &[&k.zones])?;
    }
    let inbox = Inbox {
        guid: [0x5A; 16],
        name: "Main".into(),
        mail_service: mail_h,
    };
    add_signed(&mut rec, ZoneType::EMAIL, inbox.to_bytes(), &[&k.zones])?;
    let group = AuthEntry::TrustGroup {
        group_id: 1,
        name: "login".into(),
        members: vec![TrustMember {
            key_idx: 0,
            value: 100,
        }],
    };
    add_signed(&mut rec, ZoneType::AUTH, group.to_bytes(), &[&k.zones])?;
    add_signed(
        &mut rec,
        ZoneType::AUTH,
        AuthEntry::RevocationService { service: rev_h }.to_bytes(),
        &[&k.zones],
    )?;
    let f = FeedEntry {
        name: "main".into(),
        feed_service: feed_h,
    };
    add_signed(&mut rec, ZoneType::FEED, f.to_bytes(), &[&k.zones])?;

    let alice = issue(&rec, user_id(1), "alice", t, 0, &[&k.device_a, &k.device_b])?;
    workflow::insert_entry(&mut rec, ZoneType::IDENTITY, alice)?;
    Ok(rec)
}

/// A stand-in user record ID (the subject of sample bindings).
pub fn user_id(n: u8) -> Hash32 {
    crate::hash::tagged_hash("sample user", &[&[n]])
}

/// `count` bindings "user0", "user1", … to distinct subjects, issued by
/// `provider` at `T0 + 5` and signed by `signers`: the shape of a
/// provider's bulk issue, for batch verification and bulk-load benchmarks.
pub fn bulk_bindings(
    provider: &Record,
    count: u64,
    signers: &[&SigningKey],
) -> Result<Vec<SignedEntry>, Error> {
    (0..count)
        .map(|i| {
            let subject = crate::hash::tagged_hash("sample bulk user", &[&i.to_be_bytes()]);
            issue(provider, subject, &format!("user{i}"), T0 + 5, 0, signers)
        })
        .collect()
}

fn add_signed(
    rec: &mut Record,
    zone: ZoneType,
    body: Vec<u8>,
    signers: &[&SigningKey],
) -> Result<(), Error> {
    let mut e = SignedEntry::new(EntryKind::GRANT, body);
    for s in signers {
        workflow::sign_entry(rec, zone, &mut e, s)?;
    }
    workflow::insert_entry(rec, zone, e)
}

/// A binding issued by `provider` and signed by `signers`.
pub fn issue(
    provider: &Record,
    subject: Hash32,
    handle: &str,
    issued_at: u64,
    expires_at: u64,
    signers: &[&SigningKey],
) -> Result<SignedEntry, Error> {
    let mut e = workflow::new_binding(provider, subject, handle, issued_at, expires_at)?;
    for s in signers {
        workflow::sign_entry(provider, ZoneType::IDENTITY, &mut e, s)?;
    }
    Ok(e)
}

/// The smallest provider whose CHAIN answer is realistic: master key 10
/// (100) through genesis and serial 2, identity delegated to device 11
/// (grant 100, deny 100), the identity authority, and one binding "alice"
/// signed by that device. Four signatures in all: the benchmark's case.
pub fn chain_provider() -> Result<(Record, SignedEntry), Error> {
    let k = provider_keys();
    let rec = sole_owner_genesis(&k.master)?;
    let mut rec = workflow::draft(&rec, T0 + 1)?;
    workflow::set_delegation_key(
        &mut rec,
        ZoneType::IDENTITY,
        k.device_a.public(),
        0,
        100,
        100,
    )?;
    workflow::sign_draft(&mut rec, &k.master)?;
    workflow::apply(&mut rec)?;
    workflow::set_authority(
        &mut rec,
        ZoneType::IDENTITY,
        "social.example",
        Hash32::ZERO,
        T0 + 2,
        &[&k.device_a],
    )?;
    let b = issue(&rec, user_id(1), "alice", T0 + 3, 0, &[&k.device_a])?;
    Ok((rec, b))
}

/// A provider whose IDENTITY zone is delegated to `identity_key` (an
/// HSM's key, say) and to device A, grant 100 each so that either signs a
/// binding alone, its authority section naming `domain`: `(genesis, the
/// record at serial 2)`. For benchmarks and tests that sign bindings
/// inside a token.
pub fn provider_with_identity_key(
    identity_key: &crate::keys::PublicKey,
    domain: &str,
) -> Result<(Record, Record), Error> {
    let k = provider_keys();
    let genesis = sole_owner_genesis(&k.master)?;
    let mut rec = workflow::draft(&genesis, T0 + 1)?;
    workflow::set_delegation_key(
        &mut rec,
        ZoneType::IDENTITY,
        identity_key.clone(),
        0,
        100,
        100,
    )?;
    workflow::set_delegation_key(
        &mut rec,
        ZoneType::IDENTITY,
        k.device_a.public(),
        0,
        100,
        100,
    )?;
    workflow::sign_draft(&mut rec, &k.master)?;
    workflow::apply(&mut rec)?;
    workflow::set_authority(
        &mut rec,
        ZoneType::IDENTITY,
        domain,
        Hash32::ZERO,
        T0 + 2,
        &[&k.device_a],
    )?;
    Ok((genesis, rec))
}

/// The keys of `auth_holder()`'s trust groups: group 2 "devices" holds
/// keys 70 (50), 71 (50) and 72 (40); group 3 "laptop" holds key 73
/// (100). Key 72 is revoked in the Auth Zone.
pub fn auth_keys() -> [SigningKey; 4] {
    [key(70), key(71), key(72), key(73)]
}

/// The provider record (`provider()`, same record ID) with two more
/// trust groups in its Auth Zone and one of their keys revoked: the
/// record of the login vectors (SPEC §20). Keys 70–73 are appended to
/// the Public Key Map (indices 4–7); group 2 "devices" is keys 4 (50),
/// 5 (50), 6 (40); group 3 "laptop" is key 7 (100); an Auth Zone
/// revocation whose target is key 6's key ID revokes it for login. The
/// Auth Zone already names the "live" REVOCATION service.
pub fn auth_holder() -> Result<Record, Error> {
    use crate::entries::RevocationReason;
    let k = provider_keys();
    let mut rec = provider()?;
    let ks = auth_keys();
    let mut idx = [0u8; 4];
    for (i, key) in ks.iter().enumerate() {
        idx[i] = rec.keys.add(key.public())?;
    }
    let devices = AuthEntry::TrustGroup {
        group_id: 2,
        name: "devices".into(),
        members: vec![
            TrustMember {
                key_idx: idx[0],
                value: 50,
            },
            TrustMember {
                key_idx: idx[1],
                value: 50,
            },
            TrustMember {
                key_idx: idx[2],
                value: 40,
            },
        ],
    };
    add_signed(&mut rec, ZoneType::AUTH, devices.to_bytes(), &[&k.zones])?;
    let laptop = AuthEntry::TrustGroup {
        group_id: 3,
        name: "laptop".into(),
        members: vec![TrustMember {
            key_idx: idx[3],
            value: 100,
        }],
    };
    add_signed(&mut rec, ZoneType::AUTH, laptop.to_bytes(), &[&k.zones])?;
    let mut revoke = workflow::new_revocation(
        ks[2].public().id(),
        T0 + 3_000,
        RevocationReason::KEY_COMPROMISE,
    );
    workflow::sign_entry(&rec, ZoneType::AUTH, &mut revoke, &k.zones)?;
    workflow::insert_entry(&mut rec, ZoneType::AUTH, revoke)?;
    Ok(rec)
}
