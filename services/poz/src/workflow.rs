//! Building and changing records: genesis, draft / sign / apply for the
//! master zone, and issue / revoke for zone entries.
//!
//! A draft is an ordinary record whose master zone is not finalized
//! (`current_master_hash` is zero). It can be written to a file, carried to
//! each key holder, signed by each with only their own key, in any order,
//! and applied once one survivorship group's threshold is met.

use crate::entries::{IdentityBinding, Revocation, RevocationReason};
use crate::hash::Hash32;
use crate::keys::{KeyId, PublicKey, SigningKey};
use crate::master::{Delegation, DelegationKey, MasterKey, MasterZone};
use crate::record::Record;
use crate::threshold::{delegation_members, evaluate, Authority, Member, Tally};
use crate::verify::Rule;
use crate::zone::{AuthoritySection, EntryKind, SignedEntry, ZoneType};
use crate::{Codec, Error, PublicKeyMap};

/// Signs POZ digests with one Ed25519 key, wherever the key lives: in
/// memory ([`SigningKey`]) or inside an HSM (the signer service's key
/// stores). Only the 32-byte tagged digests this module computes are ever
/// passed, never raw data.
pub trait DigestSigner {
    /// The key's ID.
    fn key_id(&self) -> KeyId;
    /// The Ed25519 signature of `digest`.
    fn sign_digest(&self, digest: &Hash32) -> Result<[u8; 64], Error>;
}

impl DigestSigner for SigningKey {
    fn key_id(&self) -> KeyId {
        self.public().id()
    }

    fn sign_digest(&self, digest: &Hash32) -> Result<[u8; 64], Error> {
        let sig = self.sign(0, digest);
        sig.data.as_slice().try_into().map_err(|_| Error::Signer {
            key_id: self.public().id(),
            detail: "not 64 bytes".into(),
        })
    }
}

fn signature_by(
    signer: &dyn DigestSigner,
    key_idx: u8,
    digest: &Hash32,
) -> Result<crate::keys::Signature, Error> {
    Ok(crate::keys::Signature {
        key_idx,
        sig_type: crate::keys::SigType::ED25519,
        data: signer.sign_digest(digest)?.to_vec(),
    })
}

/// A key of a new record: the public key, its group and value.
#[derive(Clone, Debug)]
pub struct GenesisKey {
    pub public: PublicKey,
    pub group: u8,
    pub value: u8,
}

/// Starts a record: a genesis draft holding `keys` as master keys.
pub fn genesis(keys: &[GenesisKey], timestamp: u64) -> Result<Record, Error> {
    let mut map = PublicKeyMap::default();
    let mut mks = Vec::with_capacity(keys.len());
    for k in keys {
        if k.value == 0 || k.value > 100 {
            return Err(Error::Invalid {
                what: "master key value",
                detail: format!("{} is not in 1..=100", k.value),
            });
        }
        let idx = map.add(k.public.clone())?;
        if mks.iter().any(|m: &MasterKey| m.key_idx == idx) {
            return Err(Error::Invalid {
                what: "master keys",
                detail: "the same key is listed twice".into(),
            });
        }
        mks.push(MasterKey {
            key_idx: idx,
            group: k.group,
            value: k.value,
        });
    }
    Ok(Record::new(map, MasterZone::genesis(timestamp, mks)))
}

/// The master zone whose keys authorize the draft: the previous revision,
/// or at genesis the draft itself.
fn authorizing(rec: &Record) -> &MasterZone {
    match rec.history.last() {
        Some(prev) if !rec.master.is_genesis() => prev,
        _ => &rec.master,
    }
}

fn master_members(mz: &MasterZone) -> Vec<Member> {
    mz.master_keys.iter().map(Member::from).collect()
}

/// Starts the next revision of a final record: the current master zone
/// moves into the zone history and a new one, serial + 1, is drafted.
/// The timestamp must be later than the current revision's.
pub fn draft(rec: &Record, timestamp: u64) -> Result<Record, Error> {
    if !rec.master.is_finalized() {
        return Err(Error::Draft);
    }
    if timestamp <= rec.master.timestamp {
        return Err(Error::TimestampNotIncreasing {
            timestamp,
            previous: rec.master.timestamp,
        });
    }
    let mut next = rec.clone();
    next.history.push(rec.master.clone());
    next.master = rec.master.draft_next(timestamp);
    Ok(next)
}

/// Adds `key` to a draft's Public Key Map (if new) and returns its index.
pub fn add_key(rec: &mut Record, key: PublicKey) -> Result<u8, Error> {
    if rec.master.is_finalized() {
        return Err(Error::NotDraft);
    }
    rec.keys.add(key)
}

/// Sets a master key of a draft (adds it, or changes its group and value).
pub fn set_master_key(rec: &mut Record, key: PublicKey, group: u8, value: u8) -> Result<u8, Error> {
    if value == 0 || value > 100 {
        return Err(Error::Invalid {
            what: "master key value",
            detail: format!("{value} is not in 1..=100"),
        });
    }
    let idx = add_key(rec, key)?;
    rec.master.master_keys.retain(|k| k.key_idx != idx);
    rec.master.master_keys.push(MasterKey {
        key_idx: idx,
        group,
        value,
    });
    rec.master.normalize();
    rec.master.signatures.clear();
    Ok(idx)
}

/// Removes a master key from a draft (the key stays in the key map so
/// older revisions keep resolving).
pub fn remove_master_key(rec: &mut Record, key_idx: u8) -> Result<(), Error> {
    if rec.master.is_finalized() {
        return Err(Error::NotDraft);
    }
    rec.master.master_keys.retain(|k| k.key_idx != key_idx);
    rec.master.signatures.clear();
    Ok(())
}

/// Delegates `zone` to `key` with grant and deny values (adds or updates).
pub fn set_delegation_key(
    rec: &mut Record,
    zone: ZoneType,
    key: PublicKey,
    group: u8,
    grant: u8,
    deny: u8,
) -> Result<u8, Error> {
    if grant > 100 || deny > 100 || (grant == 0 && deny == 0) {
        return Err(Error::Invalid {
            what: "delegation values",
            detail: format!("grant {grant} / deny {deny}: each 0..=100, not both 0"),
        });
    }
    let idx = add_key(rec, key)?;
    let dk = DelegationKey {
        key_idx: idx,
        group,
        grant,
        deny,
    };
    match rec
        .master
        .delegations
        .iter_mut()
        .find(|d| d.zone_type == zone)
    {
        Some(d) => {
            d.keys.retain(|k| k.key_idx != idx);
            d.keys.push(dk);
        }
        None => rec.master.delegations.push(Delegation {
            zone_type: zone,
            keys: vec![dk],
        }),
    }
    rec.master.normalize();
    rec.master.signatures.clear();
    Ok(idx)
}

/// Removes a delegation key (or the whole delegation when it was the last).
pub fn remove_delegation_key(rec: &mut Record, zone: ZoneType, key_idx: u8) -> Result<(), Error> {
    if rec.master.is_finalized() {
        return Err(Error::NotDraft);
    }
    for d in &mut rec.master.delegations {
        if d.zone_type == zone {
            d.keys.retain(|k| k.key_idx != key_idx);
        }
    }
    rec.master.delegations.retain(|d| !d.keys.is_empty());
    rec.master.signatures.clear();
    Ok(())
}

/// Signs a draft with one holder's key. Only a key of the authorizing
/// revision may sign; signing twice replaces the earlier signature.
pub fn sign_draft(rec: &mut Record, key: &SigningKey) -> Result<u8, Error> {
    sign_draft_with(rec, key)
}

/// [`sign_draft`] with a key wherever it lives.
pub fn sign_draft_with(rec: &mut Record, key: &dyn DigestSigner) -> Result<u8, Error> {
    let (idx, digest) = draft_signing_target(rec, &key.key_id())?;
    let sig = signature_by(key, idx, &digest)?;
    crate::keys::insert_signature(&mut rec.master.signatures, sig);
    Ok(idx)
}

/// What key `key_id` may sign on draft `rec`: its index and the draft's
/// signable digest, if it is a master key of the authorizing revision.
/// This is the whole policy of a master-zone signature, for signers whose
/// keys are not in memory (an HSM): sign the digest, then
/// [`crate::keys::insert_signature`].
pub fn draft_signing_target(rec: &Record, key_id: &KeyId) -> Result<(u8, Hash32), Error> {
    if rec.master.is_finalized() {
        return Err(Error::NotDraft);
    }
    let idx = rec
        .keys
        .index_of(key_id)
        .filter(|i| authorizing(rec).master_keys.iter().any(|k| k.key_idx == *i))
        .ok_or_else(|| Error::NotAuthorizingKey {
            what: format!("master zone serial {}", rec.master.serial),
            key_id: *key_id,
        })?;
    Ok((idx, rec.master.signable_digest(&rec.keys)?))
}

/// Tallies the signatures that are by `members` and verify over `digest`
/// (invalid or unauthorized ones simply count for nothing here; the
/// verifier reports them).
fn tally(
    keys: &PublicKeyMap,
    members: &[Member],
    verifies: impl Fn(&PublicKey, &crate::keys::Signature) -> bool,
    sigs: &[crate::keys::Signature],
) -> Tally {
    let ok: Vec<u8> = sigs
        .iter()
        .filter(|s| members.iter().any(|m| m.key_idx == s.key_idx))
        .filter(|s| keys.get(s.key_idx).is_some_and(|k| verifies(k, s)))
        .map(|s| s.key_idx)
        .collect();
    evaluate(members, &ok)
}

/// The current tally of a draft's valid signatures.
pub fn draft_tally(rec: &Record) -> Result<Tally, Error> {
    let members = master_members(authorizing(rec));
    let digest = rec.master.signable_digest(&rec.keys)?;
    Ok(tally(
        &rec.keys,
        &members,
        |k, s| k.verify(&digest, s),
        &rec.master.signatures,
    ))
}

/// Finalizes a draft once one group's threshold is met: drops nothing,
/// computes `current_master_hash`, and checks the whole record verifies.
pub fn apply(rec: &mut Record) -> Result<Hash32, Error> {
    if rec.master.is_finalized() {
        return Err(Error::NotDraft);
    }
    if let Some(prev) = rec.history.last() {
        if rec.master.timestamp <= prev.timestamp {
            return Err(Error::TimestampNotIncreasing {
                timestamp: rec.master.timestamp,
                previous: prev.timestamp,
            });
        }
    }
    let tally = draft_tally(rec)?;
    if !tally.is_met() {
        return Err(Error::ThresholdNotMet {
            what: format!("master zone serial {}", rec.master.serial),
            best: tally.best().map(|g| g.sum).unwrap_or(0),
            tally: tally.describe(),
        });
    }
    let mut candidate = rec.clone();
    let h = candidate.master.finalize(&candidate.keys)?;
    let report = crate::verify::verify_record(&candidate);
    if !report.is_valid() {
        let msgs: Vec<String> = report
            .failures()
            .map(|(r, d)| format!("{r}: {d}"))
            .collect();
        let zone_rules = [
            Rule::AuthorityThreshold,
            Rule::EntrySignatures,
            Rule::EntryGrant,
            Rule::RevocationDeny,
        ];
        let hint = if report.failed_rules().iter().all(|r| zone_rules.contains(r)) {
            " (this revision changes a delegation: re-sign the zone in the draft first, `pozctl zone resign`)"
        } else {
            ""
        };
        return Err(Error::Verification(format!("{}{hint}", msgs.join("; "))));
    }
    *rec = candidate;
    Ok(h)
}

/// Checks a signer may sign for `zone` with `authority` and returns its index.
fn delegation_index(
    rec: &Record,
    zone: ZoneType,
    authority: Authority,
    id: &KeyId,
) -> Result<u8, Error> {
    let d = rec
        .master
        .delegation(zone)
        .ok_or(Error::NotDelegated { zone })?;
    let id = *id;
    rec.keys
        .index_of(&id)
        .filter(|i| {
            delegation_members(&d.keys, authority)
                .iter()
                .any(|m| m.key_idx == *i)
        })
        .ok_or_else(|| Error::NotAuthorizingKey {
            what: format!(
                "{zone} {}",
                if authority == Authority::Grant {
                    "grant"
                } else {
                    "deny"
                }
            ),
            key_id: id,
        })
}

/// The record whose delegation keys sign an entry.
pub fn entry_issuer(rec: &Record, zone: ZoneType, entry: &SignedEntry) -> Hash32 {
    if zone == ZoneType::IDENTITY && entry.kind == EntryKind::GRANT {
        if let Ok(b) = IdentityBinding::from_bytes(&entry.body) {
            return b.issuer;
        }
    }
    rec.id()
}

fn entry_authority(entry: &SignedEntry) -> Authority {
    if entry.kind == EntryKind::REVOKE {
        Authority::Deny
    } else {
        Authority::Grant
    }
}

/// Signs a zone entry with one delegation key of `rec` (the issuer).
pub fn sign_entry(
    rec: &Record,
    zone: ZoneType,
    entry: &mut SignedEntry,
    key: &SigningKey,
) -> Result<u8, Error> {
    sign_entry_with(rec, zone, entry, key)
}

/// [`sign_entry`] with a key wherever it lives.
pub fn sign_entry_with(
    rec: &Record,
    zone: ZoneType,
    entry: &mut SignedEntry,
    key: &dyn DigestSigner,
) -> Result<u8, Error> {
    let (idx, digest) = entry_signing_target(rec, zone, entry, &key.key_id())?;
    entry.add_signature(signature_by(key, idx, &digest)?);
    Ok(idx)
}

/// What key `key_id` may sign on `entry` of `rec`'s `zone`: its index and
/// the entry digest, if it is a delegation key of that zone with grant
/// (GRANT entries) or deny (REVOKE entries) weight.
pub fn entry_signing_target(
    rec: &Record,
    zone: ZoneType,
    entry: &SignedEntry,
    key_id: &KeyId,
) -> Result<(u8, Hash32), Error> {
    require_record_id(rec)?;
    let idx = delegation_index(rec, zone, entry_authority(entry), key_id)?;
    Ok((idx, entry.digest_in(&rec.id(), zone, &rec.keys)?))
}

/// What key `key_id` signs for a batch of `entries` of `rec`'s `zone`
/// (SPEC §8.9): its index, the Merkle tree over the entry digests, and
/// the batch root digest. The key must be allowed to sign every entry
/// (grant weight for GRANT entries, deny weight for REVOKE entries).
pub fn batch_signing_target(
    rec: &Record,
    zone: ZoneType,
    entries: &[SignedEntry],
    key_id: &KeyId,
) -> Result<(u8, crate::batch::MerkleBatch, Hash32), Error> {
    require_record_id(rec)?;
    // The policy per authority (grant for GRANT entries, deny for REVOKE),
    // decided once per batch rather than once per entry.
    let mut allowed: [Option<u8>; 2] = [None, None];
    let id = rec.id();
    let mut digests = Vec::with_capacity(entries.len());
    let mut idx = None;
    for e in entries {
        let authority = entry_authority(e);
        let slot = &mut allowed[(authority == Authority::Deny) as usize];
        let i = match slot {
            Some(i) => *i,
            None => *slot.insert(delegation_index(rec, zone, authority, key_id)?),
        };
        idx = Some(i);
        digests.push(e.digest_in(&id, zone, &rec.keys)?);
    }
    let tree = crate::batch::MerkleBatch::new(&digests).map_err(|e| Error::Invalid {
        what: "batch",
        detail: e.to_string(),
    })?;
    let root = crate::batch::root_digest(&id, zone, tree.size(), &tree.root());
    let idx = idx.ok_or(Error::Invalid {
        what: "batch",
        detail: "no entries".into(),
    })?;
    Ok((idx, tree, root))
}

/// Attaches a batch root signature (made over the root digest of
/// [`batch_signing_target`]) to each entry, with its audit path.
pub fn attach_batch_signature(
    entries: &mut [SignedEntry],
    key_idx: u8,
    tree: &crate::batch::MerkleBatch,
    root_signature: [u8; 64],
) {
    for (i, e) in entries.iter_mut().enumerate() {
        let path = tree.path(i as u32).unwrap_or_default();
        let proof = crate::batch::BatchProof {
            root_signature,
            tree_size: tree.size(),
            leaf_index: i as u32,
            path,
        };
        e.add_signature(crate::keys::Signature {
            key_idx,
            sig_type: crate::keys::SigType::ED25519_BATCH,
            data: proof.to_bytes(),
        });
    }
}

/// Signs a batch of entries with one in-memory key: one signature over
/// the batch root, each entry carrying it with its audit path.
pub fn sign_batch(
    rec: &Record,
    zone: ZoneType,
    entries: &mut [SignedEntry],
    key: &SigningKey,
) -> Result<u8, Error> {
    let (idx, tree, root) = batch_signing_target(rec, zone, entries, &key.public().id())?;
    let sig: [u8; 64] = key
        .sign(idx, &root)
        .data
        .as_slice()
        .try_into()
        .map_err(|_| Error::Invalid {
            what: "signature",
            detail: "not 64 bytes".into(),
        })?;
    attach_batch_signature(entries, idx, &tree, sig);
    Ok(idx)
}

/// The tally of an entry's valid signatures against `rec`'s delegation.
pub fn entry_tally(rec: &Record, zone: ZoneType, entry: &SignedEntry) -> Result<Tally, Error> {
    let d = rec
        .master
        .delegation(zone)
        .ok_or(Error::NotDelegated { zone })?;
    let members = delegation_members(&d.keys, entry_authority(entry));
    let digest = entry.digest_in(&rec.id(), zone, &rec.keys)?;
    let id = rec.id();
    Ok(tally(
        &rec.keys,
        &members,
        |k, s| k.verify_entry(&id, zone, &digest, s),
        &entry.signatures,
    ))
}

/// Fails unless the entry's signatures meet its threshold.
pub fn require_entry_threshold(
    rec: &Record,
    zone: ZoneType,
    entry: &SignedEntry,
) -> Result<Tally, Error> {
    let t = entry_tally(rec, zone, entry)?;
    if !t.is_met() {
        let label = if entry.kind == EntryKind::REVOKE {
            "deny"
        } else {
            "grant"
        };
        return Err(Error::ThresholdNotMet {
            what: format!("{zone} entry ({label})"),
            best: t.best().map(|g| g.sum).unwrap_or(0),
            tally: t.describe(),
        });
    }
    Ok(t)
}

/// An unsigned identity binding issued by `provider`.
pub fn new_binding(
    provider: &Record,
    subject: Hash32,
    handle: &str,
    issued_at: u64,
    expires_at: u64,
) -> Result<SignedEntry, Error> {
    if provider.master.delegation(ZoneType::IDENTITY).is_none() {
        return Err(Error::NotDelegated {
            zone: ZoneType::IDENTITY,
        });
    }
    let b = IdentityBinding::new(provider.id(), subject, handle, issued_at, expires_at)?;
    Ok(SignedEntry::new(EntryKind::GRANT, b.to_bytes()))
}

/// An unsigned revocation of the entry with `target` digest in `zone`.
pub fn new_revocation(target: Hash32, revoked_at: u64, reason: RevocationReason) -> SignedEntry {
    SignedEntry::new(
        EntryKind::REVOKE,
        Revocation {
            target,
            revoked_at,
            reason,
        }
        .to_bytes(),
    )
}

/// Adds a signed entry to `rec`'s zone after checking its threshold. The
/// zone's authority section must exist (see `set_authority`).
pub fn insert_entry(rec: &mut Record, zone: ZoneType, entry: SignedEntry) -> Result<(), Error> {
    if entry_issuer(rec, zone, &entry) == rec.id() {
        require_entry_threshold(rec, zone, &entry)?;
    } else {
        // A binding issued by another provider may only be kept as a copy
        // by its subject (rule binding-party); its signatures are the
        // issuer's and are checked against the issuer's record.
        let subject = IdentityBinding::from_bytes(&entry.body)
            .map(|b| b.subject)
            .ok();
        if subject != Some(rec.id()) {
            return Err(Error::Invalid {
                what: "binding",
                detail: "neither issued by this record nor issued to it".into(),
            });
        }
    }
    if !rec.authorities.contains_key(&zone) {
        return Err(Error::Invalid {
            what: "zone",
            detail: format!("the {zone} zone has no authority section; create it first"),
        });
    }
    rec.zones.entry(zone).or_default().upsert(entry);
    Ok(())
}

/// Entry and authority digests name the record by its ID, which a genesis
/// draft does not have yet; any later draft does (it never changes), so
/// entries may be signed against a draft's delegation before it is applied.
fn require_record_id(rec: &Record) -> Result<(), Error> {
    if rec.master.is_genesis() && !rec.master.is_finalized() {
        return Err(Error::Draft);
    }
    Ok(())
}

/// What `resign_zone` changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resigned {
    /// Signatures removed because their key no longer holds that authority.
    pub dropped: usize,
    /// Signatures added.
    pub added: usize,
    /// Entries (and the authority section) that still fall short of their
    /// threshold afterwards.
    pub short: usize,
}

/// Brings a zone in line with the delegation of `rec`'s master zone (a
/// draft or a final record): drops signatures by keys that no longer hold
/// the authority they signed with, and signs the authority section and
/// every entry with each of `signers` that holds it. Entry digests do not
/// change, so revocations keep naming their targets. This is how a
/// delegation key is rotated in one revision: draft the new delegation,
/// resign the zone with the new key, sign and apply the draft.
pub fn resign_zone(
    rec: &mut Record,
    zone: ZoneType,
    signers: &[&SigningKey],
) -> Result<Resigned, Error> {
    require_record_id(rec)?;
    let d = rec
        .master
        .delegation(zone)
        .ok_or(Error::NotDelegated { zone })?
        .clone();
    let id = rec.id();
    let mut out = Resigned::default();
    let index_for = |rec: &Record, members: &[Member], k: &SigningKey| {
        rec.keys
            .index_of(&k.public().id())
            .filter(|i| members.iter().any(|m| m.key_idx == *i))
    };
    let mut fix = |rec: &Record,
                   sigs: &mut Vec<crate::keys::Signature>,
                   authority: Authority,
                   digest: Hash32| {
        let members = delegation_members(&d.keys, authority);
        let before = sigs.len();
        sigs.retain(|s| members.iter().any(|m| m.key_idx == s.key_idx));
        out.dropped += before - sigs.len();
        for k in signers {
            if let Some(idx) = index_for(rec, &members, k) {
                crate::keys::insert_signature(sigs, k.sign(idx, &digest));
                out.added += 1;
            }
        }
        let ok: Vec<u8> = sigs.iter().map(|s| s.key_idx).collect();
        if !evaluate(&members, &ok).is_met() {
            out.short += 1;
        }
    };
    let snapshot = rec.clone();
    if let Some(a) = rec.authorities.get_mut(&zone) {
        let digest = a.signable_digest(&id);
        fix(&snapshot, &mut a.signatures, Authority::Grant, digest);
    }
    if let Some(zs) = rec.zones.get_mut(&zone) {
        for e in &mut zs.entries {
            // Copies of other providers' bindings carry their issuers'
            // signatures; they are not ours to change.
            if entry_issuer(&snapshot, zone, e) != id {
                continue;
            }
            let digest = e.digest_in(&id, zone, &snapshot.keys)?;
            let authority = entry_authority(e);
            fix(&snapshot, &mut e.signatures, authority, digest);
        }
    }
    Ok(out)
}

/// Creates or replaces a zone's authority section, signed by `signers`
/// (delegation keys with grant value); fails unless the grant threshold is met.
pub fn set_authority(
    rec: &mut Record,
    zone: ZoneType,
    namespace: &str,
    service_ref: Hash32,
    timestamp: u64,
    signers: &[&SigningKey],
) -> Result<(), Error> {
    let signers: Vec<&dyn DigestSigner> = signers.iter().map(|k| *k as &dyn DigestSigner).collect();
    set_authority_with(rec, zone, namespace, service_ref, timestamp, &signers)
}

/// [`set_authority`] with keys wherever they live.
pub fn set_authority_with(
    rec: &mut Record,
    zone: ZoneType,
    namespace: &str,
    service_ref: Hash32,
    timestamp: u64,
    signers: &[&dyn DigestSigner],
) -> Result<(), Error> {
    let serial = rec
        .authorities
        .get(&zone)
        .map(|a| a.serial.saturating_add(1))
        .unwrap_or(1);
    let mut a = AuthoritySection::new(zone, serial, timestamp, namespace)?;
    a.service_ref = service_ref;
    let d = rec
        .master
        .delegation(zone)
        .ok_or(Error::NotDelegated { zone })?;
    let members = delegation_members(&d.keys, Authority::Grant);
    let digest = a.signable_digest(&rec.id());
    let mut ok = Vec::new();
    for k in signers {
        let idx = delegation_index(rec, zone, Authority::Grant, &k.key_id())?;
        a.add_signature(signature_by(*k, idx, &digest)?);
        ok.push(idx);
    }
    let t = evaluate(&members, &ok);
    if !t.is_met() {
        return Err(Error::ThresholdNotMet {
            what: format!("{zone} authority"),
            best: t.best().map(|g| g.sum).unwrap_or(0),
            tally: t.describe(),
        });
    }
    rec.authorities.insert(zone, a);
    Ok(())
}
