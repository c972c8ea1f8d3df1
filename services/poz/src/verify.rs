//! Validation of a decoded record: every rule of SPEC §8, each reported on
//! its own so a user sees which hold and which fail.

use crate::entries::{AuthEntry, EntryBody, ServiceType};
use crate::hash::Hash32;
use crate::keys::{PublicKeyMap, Signature};
use crate::master::MasterZone;
use crate::record::Record;
use crate::threshold::{delegation_members, evaluate, unreachable_groups, Authority, Member};
use crate::zone::{EntryKind, KeyBinding, SignedEntry, ZoneType};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

/// The validation rules. Codes are stable: test vectors name them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Rule {
    /// The bytes decode as a canonical record (SPEC §3–§7).
    Decode,
    /// Every key index resolves in the Public Key Map.
    KeyIndex,
    /// Genesis: previous hash zero, original timestamp = timestamp,
    /// original hash = current hash.
    MasterGenesis,
    /// `current_master_hash` is the hash of the full hash content.
    MasterHash,
    /// Every survivorship group can reach 100.
    MasterGroups,
    /// Every master-zone signature verifies and comes from an authorizing key.
    MasterSignatures,
    /// The signers meet the threshold in one group of the authorizing keys
    /// (the previous revision's; at genesis, its own).
    MasterThreshold,
    /// The chain starts at genesis, so the record ID is proven.
    ChainGenesis,
    /// Each serial is the previous + 1.
    ChainSerial,
    /// Each timestamp is strictly later than the previous.
    ChainTimestamp,
    /// Each previous_master_hash is the prior current_master_hash.
    ChainLink,
    /// original_master_hash and original_timestamp never change.
    ChainOriginal,
    /// Each delegation can reach 100 for both grant and deny.
    DelegationReachable,
    /// A zone or authority section exists only for a delegated zone type.
    ZoneDelegated,
    /// A zone section has its authority section.
    ZoneAuthority,
    /// The authority section is signed to the grant threshold.
    AuthorityThreshold,
    /// Every entry body decodes as its zone type says.
    EntryBody,
    /// Every entry signature verifies and comes from a delegation key.
    EntrySignatures,
    /// GRANT entries meet the grant threshold.
    EntryGrant,
    /// REVOKE entries meet the deny threshold.
    RevocationDeny,
    /// A binding in an identity zone was issued by this record or to it.
    BindingParty,
    /// References to services resolve to a service of the right type.
    ServiceRef,
    /// (bindings) Not expired at the time of verification.
    BindingExpiry,
    /// (bindings) Not revoked by the issuer.
    BindingRevoked,
    /// (bindings) No later binding of the same handle to another subject
    /// in the provider's Identity Zone (SPEC §8.4, `binding-unique`).
    BindingSuperseded,
    /// (bindings) Issued by the provider record it is verified against.
    BindingIssuer,
    /// (bindings) Issued no later than the verification time plus
    /// [`MAX_CLOCK_SKEW_MS`].
    BindingTime,
}

impl Rule {
    /// The stable code of the rule, as reports and test vectors print it.
    pub fn code(self) -> &'static str {
        match self {
            Rule::Decode => "decode",
            Rule::KeyIndex => "key-index",
            Rule::MasterGenesis => "mz-genesis",
            Rule::MasterHash => "mz-hash",
            Rule::MasterGroups => "mz-groups",
            Rule::MasterSignatures => "mz-signatures",
            Rule::MasterThreshold => "mz-threshold",
            Rule::ChainGenesis => "chain-genesis",
            Rule::ChainSerial => "chain-serial",
            Rule::ChainTimestamp => "chain-timestamp",
            Rule::ChainLink => "chain-link",
            Rule::ChainOriginal => "chain-original",
            Rule::DelegationReachable => "delegation-reachable",
            Rule::ZoneDelegated => "zone-delegated",
            Rule::ZoneAuthority => "zone-authority",
            Rule::AuthorityThreshold => "authority-threshold",
            Rule::EntryBody => "entry-body",
            Rule::EntrySignatures => "entry-signatures",
            Rule::EntryGrant => "entry-grant",
            Rule::RevocationDeny => "revocation-deny",
            Rule::BindingParty => "binding-party",
            Rule::ServiceRef => "service-ref",
            Rule::BindingExpiry => "binding-expiry",
            Rule::BindingRevoked => "binding-revoked",
            Rule::BindingSuperseded => "binding-superseded",
            Rule::BindingIssuer => "binding-issuer",
            Rule::BindingTime => "binding-time",
        }
    }

    pub const ALL: [Rule; 27] = [
        Rule::Decode,
        Rule::KeyIndex,
        Rule::MasterGenesis,
        Rule::MasterHash,
        Rule::MasterGroups,
        Rule::MasterSignatures,
        Rule::MasterThreshold,
        Rule::ChainGenesis,
        Rule::ChainSerial,
        Rule::ChainTimestamp,
        Rule::ChainLink,
        Rule::ChainOriginal,
        Rule::DelegationReachable,
        Rule::ZoneDelegated,
        Rule::ZoneAuthority,
        Rule::AuthorityThreshold,
        Rule::EntryBody,
        Rule::EntrySignatures,
        Rule::EntryGrant,
        Rule::RevocationDeny,
        Rule::BindingParty,
        Rule::ServiceRef,
        Rule::BindingExpiry,
        Rule::BindingRevoked,
        Rule::BindingSuperseded,
        Rule::BindingIssuer,
        Rule::BindingTime,
    ];

    pub fn from_code(s: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.code() == s)
    }
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// What became of one rule.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail(String),
    /// Could not be checked here, and why (for example, a binding copy
    /// whose issuer's record was not supplied).
    NotChecked(String),
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Check {
    pub rule: Rule,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Every rule that was looked at, in rule order, with all failures.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    pub fn is_valid(&self) -> bool {
        !self
            .checks
            .iter()
            .any(|c| matches!(c.outcome, Outcome::Fail(_)))
    }

    /// Valid, and every rule could be checked: the record proves itself
    /// from genesis. A record served without its Zone History is valid
    /// but not complete.
    pub fn is_complete(&self) -> bool {
        self.checks.iter().all(|c| c.outcome == Outcome::Pass)
    }

    pub fn failures(&self) -> impl Iterator<Item = (&Rule, &str)> {
        self.checks.iter().filter_map(|c| match &c.outcome {
            Outcome::Fail(d) => Some((&c.rule, d.as_str())),
            _ => None,
        })
    }

    pub fn failed_rules(&self) -> Vec<Rule> {
        let mut v: Vec<Rule> = self.failures().map(|(r, _)| *r).collect();
        v.dedup();
        v
    }

    pub fn outcome(&self, rule: Rule) -> Option<&Outcome> {
        self.checks
            .iter()
            .find(|c| c.rule == rule)
            .map(|c| &c.outcome)
    }
}

/// Collects outcomes: a rule passes if it was checked and never failed.
#[derive(Default)]
struct Ledger {
    checked: BTreeMap<Rule, Vec<Outcome>>,
}

impl Ledger {
    fn pass(&mut self, rule: Rule) {
        self.checked.entry(rule).or_default();
    }
    fn fail(&mut self, rule: Rule, detail: impl Into<String>) {
        self.checked
            .entry(rule)
            .or_default()
            .push(Outcome::Fail(detail.into()));
    }
    fn not_checked(&mut self, rule: Rule, why: impl Into<String>) {
        self.checked
            .entry(rule)
            .or_default()
            .push(Outcome::NotChecked(why.into()));
    }
    fn check(&mut self, rule: Rule, ok: bool, detail: impl FnOnce() -> String) {
        if ok {
            self.pass(rule)
        } else {
            self.fail(rule, detail())
        }
    }
    fn into_report(self) -> Report {
        let mut checks = Vec::new();
        for (rule, outs) in self.checked {
            let fails: Vec<Outcome> = outs
                .iter()
                .filter(|o| matches!(o, Outcome::Fail(_)))
                .cloned()
                .collect();
            if !fails.is_empty() {
                checks.extend(fails.into_iter().map(|o| Check { rule, outcome: o }));
            } else if let Some(nc) = outs.into_iter().next() {
                checks.push(Check { rule, outcome: nc });
            } else {
                checks.push(Check {
                    rule,
                    outcome: Outcome::Pass,
                });
            }
        }
        Report { checks }
    }
}

/// What a check is about, for messages; formatted only when something
/// fails, so the passing path allocates nothing for it.
#[derive(Clone, Copy)]
enum Subject {
    Serial(u32),
    Link(u32, u32),
    Authority(ZoneType),
    Entry(ZoneType, usize),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Serial(s) => write!(f, "serial {s}"),
            Subject::Link(a, b) => write!(f, "serial {a} -> {b}"),
            Subject::Authority(z) => write!(f, "{z} authority"),
            Subject::Entry(z, i) => write!(f, "{z} entry {i}"),
        }
    }
}

fn members(mz: &MasterZone) -> Vec<Member> {
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
    revoked: HashSet<Hash32>,
    /// The Identity Zone's bindings by handle: (issued_at, subject) of
    /// each, decoded once here rather than for every binding checked
    /// against this record (`binding-superseded`).
    bound: std::collections::HashMap<String, Vec<(u64, Hash32)>>,
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

/// Why a binding does not hold.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("{rule}: {detail}")]
pub struct BindingError {
    pub rule: Rule,
    pub detail: String,
}

/// A binding that verified against its provider's record.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct VerifiedBinding {
    pub binding: crate::entries::IdentityBinding,
    pub digest: Hash32,
    pub namespace: String,
    pub authorizing_group: u8,
}

/// Verifies one binding against an already verified provider record at
/// time `now` (ms). This is the hot path of every IDENTITY lookup.
pub fn verify_binding(
    provider: &VerifiedRecord,
    entry: &SignedEntry,
    now: u64,
) -> Result<VerifiedBinding, BindingError> {
    let pending = PendingBinding::check(provider, entry)?;
    pending.verify_each(entry)?;
    pending.conclude(provider, entry, now)
}

/// Verifies many bindings against one provider record with a single
/// Ed25519 batch check (SPEC §5.2): the same verdicts as calling
/// [`verify_binding`] on each, in order. When the batch fails, the
/// signatures are checked one by one to name the culprits, so a batch
/// with a forged binding costs about twice an unbatched run.
pub fn verify_bindings(
    provider: &VerifiedRecord,
    entries: &[SignedEntry],
    now: u64,
) -> Vec<Result<VerifiedBinding, BindingError>> {
    let pending: Vec<_> = entries
        .iter()
        .map(|e| PendingBinding::check(provider, e))
        .collect();
    let mut batch = crate::ed25519::Batch::new();
    // Entries of one signed batch share their root signature: check it
    // once (SPEC §8.9).
    let mut queued = HashSet::new();
    for p in pending.iter().flatten() {
        for (key, msg, sig) in &p.checks {
            if queued.insert((*key.as_bytes(), msg.0, *sig)) {
                batch.push(key, &msg.0, sig);
            }
        }
    }
    let all_signatures_hold = batch.verify();
    pending
        .into_iter()
        .zip(entries)
        .map(|(p, e)| {
            let p = p?;
            if !all_signatures_hold {
                p.verify_each(e)?;
            }
            p.conclude(provider, e, now)
        })
        .collect()
}

/// A binding whose structure, issuer and signers have been checked; its
/// signatures are next.
struct PendingBinding<'a> {
    binding: crate::entries::IdentityBinding,
    digest: Hash32,
    grant: Vec<Member>,
    /// Per signature: the key, what it signs (the entry digest, or a
    /// batch root digest) and the Ed25519 signature.
    checks: Vec<(&'a crate::ed25519::VerifyKey, Hash32, [u8; 64])>,
}

impl<'a> PendingBinding<'a> {
    fn check(provider: &'a VerifiedRecord, entry: &SignedEntry) -> Result<Self, BindingError> {
        let err = |rule, detail: String| BindingError { rule, detail };
        if entry.kind != EntryKind::GRANT {
            return Err(err(
                Rule::EntryBody,
                "not a binding (entry kind is revoke)".into(),
            ));
        }
        let binding = match EntryBody::decode(ZoneType::IDENTITY, entry.kind, &entry.body) {
            Ok(EntryBody::Binding(b)) => b,
            Ok(_) => return Err(err(Rule::EntryBody, "not an identity binding".into())),
            Err(e) => return Err(err(Rule::EntryBody, e.to_string())),
        };
        if binding.issuer != provider.id {
            return Err(err(
                Rule::BindingIssuer,
                format!(
                    "issued by {}, not by the provider record {}",
                    binding.issuer, provider.id
                ),
            ));
        }
        let rec = &provider.record;
        let Some(deleg) = rec.master.delegation(ZoneType::IDENTITY) else {
            return Err(err(
                Rule::ZoneDelegated,
                "the provider's master zone delegates no identity zone".into(),
            ));
        };
        let grant = delegation_members(&deleg.keys, Authority::Grant);
        let digest = entry.identity_digest(&provider.id);
        let mut checks = Vec::with_capacity(entry.signatures.len());
        for s in &entry.signatures {
            if !grant.iter().any(|m| m.key_idx == s.key_idx) {
                return Err(err(
                    Rule::EntrySignatures,
                    format!("key {} is not an identity delegation key", s.key_idx),
                ));
            }
            let key = rec.keys.get(s.key_idx).and_then(|k| k.verify_key());
            let message = s.entry_message(&provider.id, ZoneType::IDENTITY, &digest);
            match (key, message) {
                (Some(k), Some((msg, sig))) => checks.push((k, msg, sig)),
                _ => return Err(not_verified(s.key_idx)),
            }
        }
        Ok(PendingBinding {
            binding,
            digest,
            grant,
            checks,
        })
    }

    fn verify_each(&self, entry: &SignedEntry) -> Result<(), BindingError> {
        for ((key, msg, sig), s) in self.checks.iter().zip(&entry.signatures) {
            if !key.verify(&msg.0, sig) {
                return Err(not_verified(s.key_idx));
            }
        }
        Ok(())
    }

    /// Threshold, expiry and revocation, once every signature holds.
    fn conclude(
        self,
        provider: &VerifiedRecord,
        entry: &SignedEntry,
        now: u64,
    ) -> Result<VerifiedBinding, BindingError> {
        let err = |rule, detail: String| BindingError { rule, detail };
        let signers: Vec<u8> = entry.signatures.iter().map(|s| s.key_idx).collect();
        let t = evaluate(&self.grant, &signers);
        let Some(group) = t.authorizing_group() else {
            return Err(err(
                Rule::EntryGrant,
                format!("grant threshold not met: {}", t.describe()),
            ));
        };
        let (binding, digest) = (self.binding, self.digest);
        if binding.issued_at > now.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(err(
                Rule::BindingTime,
                format!(
                    "issued at {} ms, more than {} ms after now ({} ms)",
                    binding.issued_at, MAX_CLOCK_SKEW_MS, now
                ),
            ));
        }
        if binding.is_expired(now) {
            return Err(err(
                Rule::BindingExpiry,
                format!("expired at {} (now {})", binding.expires_at, now),
            ));
        }
        if provider.is_revoked(&digest) {
            return Err(err(
                Rule::BindingRevoked,
                format!("revoked by the provider (binding {digest})"),
            ));
        }
        if let Some(later) = superseded_by(provider, &binding) {
            return Err(err(
                Rule::BindingSuperseded,
                format!(
                    "the provider's Identity Zone binds {:?} to {} since {} (this binding: {} since {})",
                    binding.handle, later.1, later.0, binding.subject, binding.issued_at
                ),
            ));
        }
        let namespace = provider
            .record
            .authorities
            .get(&ZoneType::IDENTITY)
            .map(|a| a.namespace.clone())
            .unwrap_or_default();
        Ok(VerifiedBinding {
            binding,
            digest,
            namespace,
            authorizing_group: group,
        })
    }
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

/// A later binding of the same handle to another subject in the
/// provider's Identity Zone as this verifier has it (SPEC §8.4,
/// `binding-unique`): a handle's binding is replaced only after the old
/// one is revoked, so such a binding shows that this one was revoked
/// even when its revocation was not served. A server that omits the later
/// binding cannot be caught here; only the provider's revocation can.
/// Returns the later binding's (issued_at, subject).
fn superseded_by(
    provider: &VerifiedRecord,
    binding: &crate::entries::IdentityBinding,
) -> Option<(u64, Hash32)> {
    provider
        .bound
        .get(&binding.handle)?
        .iter()
        .find(|(issued_at, subject)| *subject != binding.subject && *issued_at > binding.issued_at)
        .copied()
}

fn not_verified(key_idx: u8) -> BindingError {
    BindingError {
        rule: Rule::EntrySignatures,
        detail: format!("signature by key {key_idx} does not verify"),
    }
}

/// Two revisions of one record that claim the same serial but differ: a
/// fork, and so a security event.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Fork {
    pub record_id: Hash32,
    pub serial: u32,
    pub first: Hash32,
    pub second: Hash32,
}

/// Compares two revisions of the same record.
pub fn detect_fork(a: &MasterZone, b: &MasterZone) -> Option<Fork> {
    (a.record_id() == b.record_id()
        && a.serial == b.serial
        && a.current_master_hash != b.current_master_hash)
        .then(|| Fork {
            record_id: a.record_id(),
            serial: a.serial,
            first: a.current_master_hash,
            second: b.current_master_hash,
        })
}

/// Compares two chains of the same record (oldest first) and reports the
/// first serial at which they diverge.
pub fn detect_chain_fork(a: &[MasterZone], b: &[MasterZone]) -> Option<Fork> {
    a.iter().find_map(|x| {
        b.iter()
            .find(|y| y.serial == x.serial)
            .and_then(|y| detect_fork(x, y))
    })
}

/// Why [`VerifiedRecordCache::accept`] refused a record's bytes.
#[derive(Debug, thiserror::Error)]
pub enum RecordRefused {
    #[error(transparent)]
    Decode(#[from] crate::codec::DecodeError),
    #[error("the record does not verify")]
    Invalid(Report),
}

/// Verified records, by the SHA3-256 of their exact bytes.
///
/// Whether a record verifies does not depend on the time (expiry is a
/// property of bindings, checked per lookup), so an entry never goes
/// stale: the same bytes always give the same verdict. The services that
/// check many entries against one issuer (the signer, the verifier) would
/// otherwise verify the issuer's whole chain on every call, several times
/// the cost of the entry itself. Bounded by count; the least recently
/// used entry goes first. Refusals are not cached.
pub struct VerifiedRecordCache {
    capacity: usize,
    /// Most recently used last. Small (a provider fleet serves a handful
    /// of issuer records), so a linear scan beats hashing.
    entries: std::sync::Mutex<Vec<(Hash32, std::sync::Arc<VerifiedRecord>)>>,
}

impl VerifiedRecordCache {
    pub fn new(capacity: usize) -> Self {
        VerifiedRecordCache {
            capacity: capacity.max(1),
            entries: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn key(bytes: &[u8]) -> Hash32 {
        use sha3::Digest;
        Hash32(sha3::Sha3_256::digest(bytes).into())
    }

    /// The cached verification of exactly these bytes, if any.
    pub fn get(&self, bytes: &[u8]) -> Option<std::sync::Arc<VerifiedRecord>> {
        let key = Self::key(bytes);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let i = entries.iter().position(|(k, _)| *k == key)?;
        let hit = entries.remove(i);
        let record = hit.1.clone();
        entries.push(hit);
        Some(record)
    }

    /// Decodes and verifies `bytes` unless these exact bytes verified
    /// before. CPU-bound on a miss: async callers run it on a blocking
    /// thread.
    pub fn accept(&self, bytes: &[u8]) -> Result<std::sync::Arc<VerifiedRecord>, RecordRefused> {
        if let Some(hit) = self.get(bytes) {
            return Ok(hit);
        }
        let record = <Record as crate::Codec>::from_bytes(bytes)?;
        let verified =
            std::sync::Arc::new(verify_and_accept(record).map_err(RecordRefused::Invalid)?);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let key = Self::key(bytes);
        if !entries.iter().any(|(k, _)| *k == key) {
            if entries.len() == self.capacity {
                entries.remove(0);
            }
            entries.push((key, verified.clone()));
        }
        Ok(verified)
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;
    use crate::Codec;

    #[test]
    fn cache_returns_the_same_verification_for_the_same_bytes_only() {
        let rec = crate::sample::provider().expect("sample provider");
        let bytes = rec.to_bytes();
        let cache = VerifiedRecordCache::new(2);
        assert!(cache.get(&bytes).is_none());
        let first = cache.accept(&bytes).expect("valid record");
        let again = cache.accept(&bytes).expect("valid record");
        assert!(
            std::sync::Arc::ptr_eq(&first, &again),
            "second call is a hit"
        );
        assert_eq!(first.id, rec.id());

        // One flipped signature byte: refused, and the refusal is not cached
        // under the good record's entry.
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        assert!(cache.accept(&bad).is_err());
        assert!(cache.get(&bad).is_none());
        assert!(cache.get(&bytes).is_some());

        // Truncated bytes are a decode refusal.
        assert!(matches!(
            cache.accept(&bytes[..bytes.len() - 3]),
            Err(RecordRefused::Decode(_))
        ));
    }

    #[test]
    fn cache_evicts_the_least_recently_used() {
        let a = crate::sample::provider().expect("provider").to_bytes();
        let b = crate::sample::tour_record().expect("tour").to_bytes();
        let c = crate::sample::sole_owner_genesis(&crate::sample::key(9))
            .expect("genesis")
            .to_bytes();
        let cache = VerifiedRecordCache::new(2);
        cache.accept(&a).expect("a");
        cache.accept(&b).expect("b");
        cache.get(&a).expect("a still held"); // a is now the most recent
        cache.accept(&c).expect("c");
        assert!(cache.get(&b).is_none(), "b was least recently used");
        assert!(cache.get(&a).is_some() && cache.get(&c).is_some());
    }
}

/// Why a SUBMIT_REQUEST's proof does not hold (SPEC §14.4).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitRequestRefused {
    #[error("the request is for record {asked}, not the record given ({given})")]
    WrongSubject { asked: Hash32, given: Hash32 },
    #[error("the subject's master keys do not meet their threshold: {0}")]
    ThresholdNotMet(String),
    /// A proof signature by a key index that is not one of the subject's
    /// master keys.
    #[error("proof signature {position}: key {key_idx} is not a master key of the subject")]
    NotMember { position: usize, key_idx: u8 },
    /// A proof signature that does not verify.
    #[error("proof signature {position}: the signature by key {key_idx} does not verify")]
    BadSignature { position: usize, key_idx: u8 },
    /// Two proof signatures by the same key.
    #[error("proof signature {position}: key {key_idx} signed twice")]
    DuplicateSigner { position: usize, key_idx: u8 },
}

/// Checks a SUBMIT_REQUEST (SPEC §14.4): its proof must be signatures by
/// the subject record's current master keys over the request's digest,
/// meeting the threshold of one survivorship group, as a revision of that
/// record would need. So only the holders of a record can ask a provider
/// to bind a handle to it. Every signature of the proof must be by a
/// master key, verify, and name a key no other signature names: anything
/// else is refused, never ignored (a request padded with junk signatures
/// is not another request).
pub fn verify_submit_request(
    subject: &VerifiedRecord,
    req: &crate::wire::SubmitRequest,
) -> Result<(), SubmitRequestRefused> {
    if req.subject != subject.id {
        return Err(SubmitRequestRefused::WrongSubject {
            asked: req.subject,
            given: subject.id,
        });
    }
    let digest = req.digest();
    let members: Vec<Member> = subject
        .record
        .master
        .master_keys
        .iter()
        .map(Member::from)
        .collect();
    let mut ok: Vec<u8> = Vec::new();
    for (position, s) in req.proof.iter().enumerate() {
        let key_idx = s.key_idx;
        if !members.iter().any(|m| m.key_idx == key_idx) {
            return Err(SubmitRequestRefused::NotMember { position, key_idx });
        }
        if ok.contains(&key_idx) {
            return Err(SubmitRequestRefused::DuplicateSigner { position, key_idx });
        }
        let verifies = subject
            .record
            .keys
            .get(key_idx)
            .is_some_and(|k| k.verify(&digest, s));
        if !verifies {
            return Err(SubmitRequestRefused::BadSignature { position, key_idx });
        }
        ok.push(key_idx);
    }
    let tally = evaluate(&members, &ok);
    if tally.is_met() {
        Ok(())
    } else {
        Err(SubmitRequestRefused::ThresholdNotMet(tally.describe()))
    }
}

#[cfg(test)]
mod submit_request_tests {
    use super::*;
    use crate::wire::SubmitRequest;

    #[test]
    fn only_the_subjects_master_keys_to_threshold_may_ask() {
        // The tour record: alice, bob, carol 34/33/33 in group 0, and a
        // recovery key of 100 in group 1.
        let rec = crate::sample::tour_record().expect("tour record");
        let vr = verify_and_accept(rec.clone()).expect("valid");
        let mut req = SubmitRequest {
            domain: "social.example".into(),
            handle: "alice".into(),
            subject: vr.id,
            proof: Vec::new(),
        };
        let digest = req.digest();
        let sign = |k: &crate::keys::SigningKey| {
            let idx = rec
                .keys
                .index_of(&k.public().id())
                .expect("key in the record");
            k.sign(idx, &digest)
        };
        let keys = [1u8, 2, 3, 4].map(crate::sample::key);
        assert!(verify_submit_request(&vr, &req).is_err(), "no proof");
        req.proof = vec![sign(&keys[0]), sign(&keys[1])];
        assert!(matches!(
            verify_submit_request(&vr, &req),
            Err(SubmitRequestRefused::ThresholdNotMet(_))
        ));
        req.proof.push(sign(&keys[2]));
        assert_eq!(verify_submit_request(&vr, &req), Ok(()));
        // The recovery key alone meets its own group.
        req.proof = vec![sign(&keys[3])];
        assert_eq!(verify_submit_request(&vr, &req), Ok(()));
        // A signature by a key outside the record does not verify.
        req.proof = vec![crate::sample::key(200).sign(3, &digest)];
        assert!(verify_submit_request(&vr, &req).is_err());
        // Issue 12: a valid proof with a junk signature appended (a key
        // index that is no master key) is refused, not padded through.
        for junk in [200u8, 249] {
            req.proof = vec![sign(&keys[3]), crate::sample::key(9).sign(junk, &digest)];
            assert_eq!(
                verify_submit_request(&vr, &req),
                Err(SubmitRequestRefused::NotMember {
                    position: 1,
                    key_idx: junk
                })
            );
        }
        // The same key twice.
        req.proof = vec![sign(&keys[3]), sign(&keys[3])];
        assert!(matches!(
            verify_submit_request(&vr, &req),
            Err(SubmitRequestRefused::DuplicateSigner { position: 1, .. })
        ));
        // A master key's signature over something else.
        let mut other = req.clone();
        other.handle = "someone".into();
        let idx3 = rec.keys.index_of(&keys[2].public().id()).expect("carol");
        req.proof = vec![sign(&keys[3]), keys[2].sign(idx3, &other.digest())];
        assert!(matches!(
            verify_submit_request(&vr, &req),
            Err(SubmitRequestRefused::BadSignature { position: 1, .. })
        ));
        // The same proof for another handle does not verify.
        req.proof = vec![sign(&keys[3])];
        req.handle = "mallory".into();
        assert!(verify_submit_request(&vr, &req).is_err());
        // Another subject.
        req.subject = Hash32([1; 32]);
        assert!(matches!(
            verify_submit_request(&vr, &req),
            Err(SubmitRequestRefused::WrongSubject { .. })
        ));
    }
}

#[cfg(test)]
mod superseded_tests {
    use super::*;
    use crate::sample::{self, T0};

    /// Issue 12 §2: a second binding of `alice` to another subject, in the
    /// provider's zone as served, voids the first even without its
    /// revocation in sight (SPEC §8.4 `binding-unique`).
    #[test]
    fn a_later_binding_to_another_subject_supersedes() {
        let k = sample::provider_keys();
        let mut p = sample::provider().expect("provider");
        let signers = [&k.device_a, &k.device_b];
        let first =
            sample::issue(&p, sample::user_id(7), "dora", T0 + 10, 0, &signers).expect("first");
        let later =
            sample::issue(&p, sample::user_id(8), "dora", T0 + 20, 0, &signers).expect("later");
        let renewal =
            sample::issue(&p, sample::user_id(7), "dora", T0 + 15, 0, &signers).expect("renewal");
        crate::workflow::insert_entry(&mut p, ZoneType::IDENTITY, first.clone()).expect("insert");
        let vp = verify_and_accept(p.clone()).expect("valid");
        verify_binding(&vp, &first, T0 + 100).expect("alone, the first holds");
        crate::workflow::insert_entry(&mut p, ZoneType::IDENTITY, renewal.clone()).expect("renew");
        let vp = verify_and_accept(p.clone()).expect("valid");
        verify_binding(&vp, &first, T0 + 100).expect("a renewal to the same subject");
        crate::workflow::insert_entry(&mut p, ZoneType::IDENTITY, later.clone()).expect("insert");
        let vp = verify_and_accept(p).expect("valid");
        let e = verify_binding(&vp, &first, T0 + 100).expect_err("superseded");
        assert_eq!(e.rule, Rule::BindingSuperseded);
        assert_eq!(e.rule.code(), "binding-superseded");
        verify_binding(&vp, &later, T0 + 100).expect("the later one holds");
    }
}
