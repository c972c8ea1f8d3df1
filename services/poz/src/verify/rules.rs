//! The rules ledger: every validation rule with its stable code, and the
//! report that says of each whether it held, failed or was not checked.

use crate::zone::ZoneType;
use serde::Serialize;
use std::collections::BTreeMap;

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
    /// [`MAX_CLOCK_SKEW_MS`](super::MAX_CLOCK_SKEW_MS).
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
pub(crate) struct Ledger {
    checked: BTreeMap<Rule, Vec<Outcome>>,
}

impl Ledger {
    pub(crate) fn pass(&mut self, rule: Rule) {
        self.checked.entry(rule).or_default();
    }
    pub(crate) fn fail(&mut self, rule: Rule, detail: impl Into<String>) {
        self.checked
            .entry(rule)
            .or_default()
            .push(Outcome::Fail(detail.into()));
    }
    pub(crate) fn not_checked(&mut self, rule: Rule, why: impl Into<String>) {
        self.checked
            .entry(rule)
            .or_default()
            .push(Outcome::NotChecked(why.into()));
    }
    pub(crate) fn check(&mut self, rule: Rule, ok: bool, detail: impl FnOnce() -> String) {
        if ok {
            self.pass(rule)
        } else {
            self.fail(rule, detail())
        }
    }
    pub(crate) fn into_report(self) -> Report {
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
pub(crate) enum Subject {
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
