//! A whole record: its master-zone chain from genesis, key indices,
//! delegated zones and their entries (SPEC §8), and the acceptance-time
//! bound on the times it carries (SPEC §6.7).

use super::rules::{Ledger, Report, Rule, Subject};
use crate::entries::{AuthEntry, EntryBody, ServiceType};
use crate::hash::Hash32;
use crate::keys::{PublicKeyMap, Signature};
use crate::master::MasterZone;
use crate::record::Record;
use crate::threshold::{delegation_members, evaluate, unreachable_groups, Authority, Member};
use crate::zone::{EntryKind, KeyBinding, SignedEntry, ZoneType};
use std::collections::{BTreeMap, HashSet};

pub(crate) fn members(mz: &MasterZone) -> Vec<Member> {
    mz.master_keys.iter().map(Member::from).collect()
}

/// What a list of signatures signs.
#[derive(Clone, Copy)]
enum Signed<'a> {
    /// A digest, with plain Ed25519 signatures only (master zones,
    /// authority sections).
    Digest(&'a Hash32),
    /// A zone entry (issuer, zone, entry digest): plain or batch
    /// signatures (SPEC §8.9).
    Entry(&'a Hash32, ZoneType, &'a Hash32),
}

impl Signed<'_> {
    fn verify(self, k: &crate::keys::PublicKey, s: &Signature) -> bool {
        match self {
            Signed::Digest(d) => k.verify(d, s),
            Signed::Entry(issuer, zone, d) => k.verify_entry(issuer, zone, d, s),
        }
    }
}

/// Verifies `sigs` over `digest`: returns the indices that verified, and
/// records a failure for each that did not or whose key may not sign.
fn check_signatures(
    ledger: &mut Ledger,
    rule: Rule,
    what: Subject,
    keys: &PublicKeyMap,
    digest: Signed<'_>,
    sigs: &[Signature],
    allowed: &[Member],
) -> Vec<u8> {
    let mut ok = Vec::with_capacity(sigs.len());
    ledger.pass(rule);
    for s in sigs {
        if !allowed.iter().any(|m| m.key_idx == s.key_idx) {
            ledger.fail(
                rule,
                format!("{what}: key {} is not an authorizing key here", s.key_idx),
            );
            continue;
        }
        match keys.get(s.key_idx) {
            Some(k) if digest.verify(k, s) => ok.push(s.key_idx),
            Some(_) => ledger.fail(
                rule,
                format!("{what}: signature by key {} does not verify", s.key_idx),
            ),
            None => ledger.fail(
                Rule::KeyIndex,
                format!("{what}: signature key index {} out of range", s.key_idx),
            ),
        }
    }
    ok
}

fn check_master_revision(
    ledger: &mut Ledger,
    keys: &PublicKeyMap,
    mz: &MasterZone,
    authorizing: Option<&MasterZone>,
) {
    let what = Subject::Serial(mz.serial);
    let unreachable = unreachable_groups(&members(mz));
    ledger.check(Rule::MasterGroups, unreachable.is_empty(), || {
        let g: Vec<String> = unreachable
            .iter()
            .map(|(g, s)| format!("group {g} can reach only {s}"))
            .collect();
        format!("{what}: {}", g.join(", "))
    });
    for d in &mz.delegations {
        for (auth, name) in [(Authority::Grant, "grant"), (Authority::Deny, "deny")] {
            let ms = delegation_members(&d.keys, auth);
            let best = evaluate(&ms, &ms.iter().map(|m| m.key_idx).collect::<Vec<_>>());
            ledger.check(Rule::DelegationReachable, best.is_met(), || {
                format!(
                    "{what}: the {} delegation cannot reach 100 for {name}",
                    d.zone_type
                )
            });
        }
    }
    // Both scopes need every index resolved; a bad index was reported by
    // the key-index pass and leaves nothing to compare here.
    let Ok((signable, full)) = mz.digests(keys) else {
        ledger.fail(
            Rule::MasterHash,
            format!("{what}: cannot hash (a key index does not resolve)"),
        );
        return;
    };
    if !mz.is_finalized() {
        ledger.fail(
            Rule::MasterHash,
            format!("{what}: draft, current_master_hash not computed (apply it first)"),
        );
    } else {
        ledger.check(Rule::MasterHash, mz.current_master_hash == full, || {
            format!(
                "{what}: current_master_hash {} but content hashes to {}",
                mz.current_master_hash, full
            )
        });
    }
    if mz.is_genesis() {
        ledger.check(
            Rule::MasterGenesis,
            mz.previous_master_hash.is_zero(),
            || format!("{what}: genesis previous_master_hash is not zero"),
        );
        ledger.check(
            Rule::MasterGenesis,
            mz.original_timestamp == mz.timestamp,
            || {
                format!(
                    "{what}: genesis original_timestamp {} differs from timestamp {}",
                    mz.original_timestamp, mz.timestamp
                )
            },
        );
        if mz.is_finalized() {
            ledger.check(
                Rule::MasterGenesis,
                mz.original_master_hash == mz.current_master_hash,
                || format!("{what}: genesis original_master_hash is not its own current hash"),
            );
        }
    }
    let authorizer = match authorizing {
        Some(a) => Some(members(a)),
        None if mz.is_genesis() => Some(members(mz)),
        None => None,
    };
    match authorizer {
        Some(allowed) => {
            let ok = check_signatures(
                ledger,
                Rule::MasterSignatures,
                what,
                keys,
                Signed::Digest(&signable),
                &mz.signatures,
                &allowed,
            );
            let tally = evaluate(&allowed, &ok);
            ledger.check(Rule::MasterThreshold, tally.is_met(), || {
                format!("{what}: threshold not met: {}", tally.describe())
            });
        }
        None => {
            ledger.not_checked(
                Rule::MasterThreshold,
                format!(
                    "{what}: the authorizing revision {} is not in the zone history",
                    mz.serial - 1
                ),
            );
            ledger.not_checked(
                Rule::MasterSignatures,
                format!("{what}: the authorizing revision is not in the zone history"),
            );
        }
    }
}

fn check_link(ledger: &mut Ledger, prev: &MasterZone, next: &MasterZone) {
    let what = Subject::Link(prev.serial, next.serial);
    ledger.check(
        Rule::ChainSerial,
        next.serial == prev.serial.wrapping_add(1),
        || format!("{what}: serial must increase by exactly 1"),
    );
    ledger.check(
        Rule::ChainTimestamp,
        next.timestamp > prev.timestamp,
        || {
            format!(
                "{what}: timestamp {} is not after {}",
                next.timestamp, prev.timestamp
            )
        },
    );
    ledger.check(
        Rule::ChainLink,
        next.previous_master_hash == prev.current_master_hash,
        || {
            format!(
                "{what}: previous_master_hash {} is not {}",
                next.previous_master_hash, prev.current_master_hash
            )
        },
    );
    ledger.check(
        Rule::ChainOriginal,
        next.original_master_hash == prev.record_id()
            && next.original_timestamp == prev.original_timestamp,
        || format!("{what}: original_master_hash or original_timestamp changed"),
    );
}

/// Walks `revisions` (oldest first) checking every chain rule.
fn check_chain(ledger: &mut Ledger, keys: &PublicKeyMap, revisions: &[&MasterZone]) {
    let Some(first) = revisions.first() else {
        return;
    };
    if first.serial == 1 {
        ledger.pass(Rule::ChainGenesis);
    } else {
        ledger.not_checked(
            Rule::ChainGenesis,
            format!(
                "the zone history starts at serial {}; the record ID is not tied to genesis",
                first.serial
            ),
        );
        ledger.check(
            Rule::ChainOriginal,
            !first.original_master_hash.is_zero(),
            || format!("serial {}: original_master_hash is zero", first.serial),
        );
    }
    check_master_revision(ledger, keys, first, None);
    for w in revisions.windows(2) {
        check_link(ledger, w[0], w[1]);
        check_master_revision(ledger, keys, w[1], Some(w[0]));
    }
}

/// The key indices a record uses outside its master zones.
fn check_key_indices(ledger: &mut Ledger, rec: &Record, revisions: &[&MasterZone]) {
    ledger.pass(Rule::KeyIndex);
    let n = rec.keys.keys.len();
    let bad = |ledger: &mut Ledger, idx: u8, where_: String| {
        if idx as usize >= n {
            ledger.fail(
                Rule::KeyIndex,
                format!("{where_}: key index {idx} out of range (map has {n} keys)"),
            );
        }
    };
    for mz in revisions {
        for k in &mz.master_keys {
            bad(
                ledger,
                k.key_idx,
                format!("serial {} master_keys", mz.serial),
            );
        }
        for d in &mz.delegations {
            for k in &d.keys {
                bad(
                    ledger,
                    k.key_idx,
                    format!("serial {} {} delegation", mz.serial, d.zone_type),
                );
            }
        }
        for s in &mz.signatures {
            bad(
                ledger,
                s.key_idx,
                format!("serial {} signatures", mz.serial),
            );
        }
    }
    for idx in rec.key_names.keys() {
        bad(ledger, *idx, "key_names".into());
    }
}

/// What a successful verification of a provider's record yields for
/// checking its bindings quickly: the identity delegation and the set of
/// revoked entry digests.
#[derive(Clone, Debug)]
pub struct VerifiedRecord {
    pub record: Record,
    pub id: Hash32,
    /// Every rule passed, the chain from genesis included. A valid record
    /// served without its Zone History is accepted but not complete; the
    /// caller decides whether that is enough (see `Report::is_complete`).
    pub complete: bool,
    /// The chain was walked from genesis (rule `chain-genesis` passed), so
    /// the record ID is proven (SPEC §6.5). Unlike `complete`, binding
    /// copies of other providers in the Identity Zone, which are checked
    /// against their issuers' records and so "not checked" here, do not
    /// make this false: a holder's record that adopted a binding is as
    /// proven as before.
    pub from_genesis: bool,
    pub(crate) revoked: HashSet<Hash32>,
    /// The Identity Zone's bindings by handle: (issued_at, subject) of
    /// each, decoded once here rather than for every binding checked
    /// against this record (`binding-superseded`).
    pub(crate) bound: std::collections::HashMap<String, Vec<(u64, Hash32)>>,
}

impl VerifiedRecord {
    /// Whether a valid revocation in this record names `digest`.
    pub fn is_revoked(&self, digest: &Hash32) -> bool {
        self.revoked.contains(digest)
    }
}

/// Verifies every rule of a record.
pub fn verify_record(rec: &Record) -> Report {
    verify_record_inner(rec).0
}

/// Verifies a record and, if every rule holds, returns it ready for
/// binding checks.
pub fn verify_and_accept(rec: Record) -> Result<VerifiedRecord, Report> {
    let (report, revoked) = verify_record_inner(&rec);
    if !report.is_valid() {
        return Err(report);
    }
    let mut bound: std::collections::HashMap<String, Vec<(u64, Hash32)>> =
        std::collections::HashMap::new();
    for e in rec
        .zones
        .get(&ZoneType::IDENTITY)
        .into_iter()
        .flat_map(|z| &z.entries)
    {
        if e.kind != EntryKind::GRANT {
            continue;
        }
        if let Ok(EntryBody::Binding(b)) = EntryBody::decode(ZoneType::IDENTITY, e.kind, &e.body) {
            bound
                .entry(b.handle)
                .or_default()
                .push((b.issued_at, b.subject));
        }
    }
    Ok(VerifiedRecord {
        id: rec.id(),
        complete: report.is_complete(),
        from_genesis: report.outcome(crate::verify::Rule::ChainGenesis)
            == Some(&crate::verify::Outcome::Pass),
        record: rec,
        revoked,
        bound,
    })
}

fn verify_record_inner(rec: &Record) -> (Report, HashSet<Hash32>) {
    let mut ledger = Ledger::default();
    ledger.pass(Rule::Decode);
    let revisions: Vec<&MasterZone> = rec
        .history
        .iter()
        .chain(std::iter::once(&rec.master))
        .collect();
    check_key_indices(&mut ledger, rec, &revisions);
    check_chain(&mut ledger, &rec.keys, &revisions);
    let revoked = check_zones(&mut ledger, rec);
    (ledger.into_report(), revoked)
}

fn check_zones(ledger: &mut Ledger, rec: &Record) -> HashSet<Hash32> {
    let id = rec.id();
    let mut revoked = HashSet::new();
    let mut services: BTreeMap<Hash32, ServiceType> = BTreeMap::new();
    let mut refs: Vec<(Hash32, Option<ServiceType>, Subject)> = Vec::new();

    let mut zone_types: Vec<ZoneType> = rec
        .authorities
        .keys()
        .chain(rec.zones.keys())
        .copied()
        .collect();
    zone_types.sort();
    zone_types.dedup();
    for z in zone_types {
        let Some(deleg) = rec.master.delegation(z) else {
            ledger.fail(
                Rule::ZoneDelegated,
                format!("{z} zone present but the master zone does not delegate it"),
            );
            continue;
        };
        ledger.pass(Rule::ZoneDelegated);
        let grant = delegation_members(&deleg.keys, Authority::Grant);
        let deny = delegation_members(&deleg.keys, Authority::Deny);
        match rec.authorities.get(&z) {
            Some(a) => {
                let what = Subject::Authority(z);
                let ok = check_signatures(
                    ledger,
                    Rule::AuthorityThreshold,
                    what,
                    &rec.keys,
                    Signed::Digest(&a.signable_digest(&id)),
                    &a.signatures,
                    &grant,
                );
                let t = evaluate(&grant, &ok);
                ledger.check(Rule::AuthorityThreshold, t.is_met(), || {
                    format!("{what}: grant threshold not met: {}", t.describe())
                });
                if !a.service_ref.is_zero() {
                    refs.push((a.service_ref, None, what));
                }
            }
            None => {
                if rec.zones.contains_key(&z) {
                    ledger.fail(
                        Rule::ZoneAuthority,
                        format!("{z} zone has no authority section"),
                    );
                }
            }
        }
        if rec.zones.contains_key(&z) && rec.authorities.contains_key(&z) {
            ledger.pass(Rule::ZoneAuthority);
        }
        let Some(zs) = rec.zones.get(&z) else {
            continue;
        };
        let mut copies = 0usize;
        ledger.pass(Rule::EntryBody);
        for (i, e) in zs.entries.iter().enumerate() {
            let what = Subject::Entry(z, i);
            let body = match EntryBody::decode(z, e.kind, &e.body) {
                Ok(b) => b,
                Err(err) => {
                    ledger.fail(Rule::EntryBody, format!("{what}: {err}"));
                    continue;
                }
            };
            let issuer = match &body {
                EntryBody::Binding(b) => {
                    ledger.check(
                        Rule::BindingParty,
                        b.issuer == id || b.subject == id,
                        || format!("{what}: binding neither issued by nor issued to this record"),
                    );
                    b.issuer
                }
                _ => id,
            };
            if issuer != id {
                // A copy of a binding another provider issued to this
                // record: its signatures are the issuer's, checked with
                // the issuer's record (`verify_binding`).
                copies += 1;
                continue;
            }
            match &body {
                EntryBody::Inbox(ib) => refs.push((ib.mail_service, Some(ServiceType::MAIL), what)),
                EntryBody::Feed(f) => refs.push((f.feed_service, Some(ServiceType::FEED), what)),
                EntryBody::Auth(AuthEntry::RevocationService { service }) => {
                    refs.push((*service, Some(ServiceType::REVOCATION), what))
                }
                _ => {}
            }
            // Every key the body names by index (CA keys, trust-group
            // members) is bound by ID into the digest its signers signed
            // (SPEC §5.3), so a swapped key fails `entry-signatures`.
            let key_binding = match KeyBinding::resolve(&body, &rec.keys) {
                Ok(kb) => kb,
                Err(err) => {
                    ledger.fail(Rule::KeyIndex, format!("{what}: {err}"));
                    continue;
                }
            };
            let digest = e.digest(&id, z, &key_binding);
            let (members, rule) = match e.kind {
                EntryKind::REVOKE => (&deny, Rule::RevocationDeny),
                _ => (&grant, Rule::EntryGrant),
            };
            let ok = check_signatures(
                ledger,
                Rule::EntrySignatures,
                what,
                &rec.keys,
                Signed::Entry(&id, z, &digest),
                &e.signatures,
                members,
            );
            let t = evaluate(members, &ok);
            let label = if e.kind == EntryKind::REVOKE {
                "deny"
            } else {
                "grant"
            };
            ledger.check(rule, t.is_met(), || {
                format!("{what}: {label} threshold not met: {}", t.describe())
            });
            if t.is_met() {
                match &body {
                    EntryBody::Revocation(r) => {
                        revoked.insert(r.target);
                    }
                    EntryBody::Service(s) => {
                        services.insert(s.service_hash(), s.service_type);
                    }
                    _ => {}
                }
            }
        }
        if copies > 0 {
            ledger.not_checked(
                Rule::EntrySignatures,
                format!("{copies} binding copies issued by other providers: verify each with its issuer's record"),
            );
        }
    }
    for (h, want, what) in refs {
        match (services.get(&h), want) {
            (None, _) => ledger.fail(
                Rule::ServiceRef,
                format!("{what}: service {h} is not in the Service Zone"),
            ),
            (Some(t), Some(w)) if *t != w => ledger.fail(
                Rule::ServiceRef,
                format!("{what}: service {h} is {t}, expected {w}"),
            ),
            _ => ledger.pass(Rule::ServiceRef),
        }
    }
    revoked
}

/// How far ahead of the checking clock a timestamp may be: 5 minutes, in
/// ms (SPEC §6.7). Clocks of well-run hosts agree within seconds; a
/// minute-scale allowance absorbs a badly set laptop without letting a
/// record be stamped into the far future.
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// A time in a record that lies too far ahead of the accepting clock.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("{what} is {timestamp} ms, more than {skew} ms after now ({now} ms)", skew = MAX_CLOCK_SKEW_MS)]
pub struct FutureTimestamp {
    /// Which time: `master zone serial N`, `identity authority`, `identity
    /// entry 3 issued_at`, …
    pub what: String,
    pub timestamp: u64,
    pub now: u64,
}

/// The acceptance-time bound of SPEC §6.7: every time `rec` carries (each
/// revision's timestamp, each authority section's, each binding's
/// `issued_at`, each revocation's `revoked_at`) is at most `now` +
/// [`MAX_CLOCK_SKEW_MS`]. A store, a gateway or a signer calls this with
/// its own clock before accepting a record or entries; the verdict of
/// `verify_record` itself does not depend on the time.
///
/// Errors: the first [`FutureTimestamp`] found.
pub fn check_times(rec: &Record, now: u64) -> Result<(), FutureTimestamp> {
    let limit = now.saturating_add(MAX_CLOCK_SKEW_MS);
    let late = |what: String, timestamp: u64| {
        if timestamp > limit {
            Err(FutureTimestamp {
                what,
                timestamp,
                now,
            })
        } else {
            Ok(())
        }
    };
    for m in rec.history.iter().chain(std::iter::once(&rec.master)) {
        late(
            format!("master zone serial {} timestamp", m.serial),
            m.timestamp,
        )?;
    }
    for (z, a) in &rec.authorities {
        late(format!("{z} authority timestamp"), a.timestamp)?;
    }
    for (z, zs) in &rec.zones {
        check_entry_times(*z, &zs.entries, now)?;
    }
    Ok(())
}

/// [`check_times`] for entries on their own (an append of bindings or
/// revocations): each binding's `issued_at` and each revocation's
/// `revoked_at` is at most `now` + [`MAX_CLOCK_SKEW_MS`]. Entries whose
/// body does not decode are left to the verifier.
pub fn check_entry_times(
    zone: ZoneType,
    entries: &[SignedEntry],
    now: u64,
) -> Result<(), FutureTimestamp> {
    let limit = now.saturating_add(MAX_CLOCK_SKEW_MS);
    for (i, e) in entries.iter().enumerate() {
        let t = match EntryBody::decode(zone, e.kind, &e.body) {
            Ok(EntryBody::Binding(b)) => ("issued_at", b.issued_at),
            Ok(EntryBody::Revocation(r)) => ("revoked_at", r.revoked_at),
            _ => continue,
        };
        if t.1 > limit {
            return Err(FutureTimestamp {
                what: format!("{zone} entry {i} {}", t.0),
                timestamp: t.1,
                now,
            });
        }
    }
    Ok(())
}
