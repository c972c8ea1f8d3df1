//! Survivorship groups: a set of signers authorizes when the values of the
//! signers in one group sum to at least 100. Groups never pool their values:
//! a recovery group and a daily group must not share a failure.

use crate::master::{DelegationKey, MasterKey, THRESHOLD};
use serde::Serialize;
use std::collections::BTreeMap;

/// Which value of a delegation key counts.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Authority {
    /// Adding or modifying entries.
    Grant,
    /// Revoking or removing entries.
    Deny,
}

/// One member of a survivorship group as the evaluator sees it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Member {
    pub key_idx: u8,
    pub group: u8,
    pub value: u8,
}

impl From<&MasterKey> for Member {
    fn from(k: &MasterKey) -> Self {
        Member {
            key_idx: k.key_idx,
            group: k.group,
            value: k.value,
        }
    }
}

/// Members of a delegation for the given authority; keys whose value for it
/// is zero are not members at all.
pub fn delegation_members(keys: &[DelegationKey], authority: Authority) -> Vec<Member> {
    keys.iter()
        .filter_map(|k| {
            let value = match authority {
                Authority::Grant => k.grant,
                Authority::Deny => k.deny,
            };
            (value > 0).then_some(Member {
                key_idx: k.key_idx,
                group: k.group,
                value,
            })
        })
        .collect()
}

/// What one group reached.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct GroupTally {
    pub group: u8,
    pub sum: u32,
    /// What the group's members could reach if all of them signed.
    pub possible: u32,
    pub signers: Vec<u8>,
}

/// The outcome of a threshold evaluation.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Tally {
    pub groups: Vec<GroupTally>,
}

impl Tally {
    /// The group that authorizes, if any.
    pub fn authorizing_group(&self) -> Option<u8> {
        self.groups
            .iter()
            .find(|g| g.sum >= THRESHOLD)
            .map(|g| g.group)
    }

    pub fn is_met(&self) -> bool {
        self.authorizing_group().is_some()
    }

    /// The group closest to the threshold (for messages about shortfall).
    pub fn best(&self) -> Option<&GroupTally> {
        self.groups
            .iter()
            .max_by_key(|g| (g.sum, std::cmp::Reverse(g.group)))
    }

    /// "group 0: 67 of 100 (keys 0, 1); group 1: 0 of 100".
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .groups
            .iter()
            .map(|g| {
                let keys: Vec<String> = g.signers.iter().map(|k| k.to_string()).collect();
                if keys.is_empty() {
                    format!("group {}: {} of {}", g.group, g.sum, THRESHOLD)
                } else {
                    format!(
                        "group {}: {} of {} (keys {})",
                        g.group,
                        g.sum,
                        THRESHOLD,
                        keys.join(", ")
                    )
                }
            })
            .collect();
        parts.join("; ")
    }
}

/// Sums the values of `signers` (key indices with a valid signature) within
/// each group of `members`. A signer that is not a member counts for nothing.
pub fn evaluate(members: &[Member], signers: &[u8]) -> Tally {
    let mut groups: BTreeMap<u8, GroupTally> = BTreeMap::new();
    for m in members {
        let g = groups.entry(m.group).or_insert_with(|| GroupTally {
            group: m.group,
            sum: 0,
            possible: 0,
            signers: Vec::new(),
        });
        g.possible += m.value as u32;
        if signers.contains(&m.key_idx) && !g.signers.contains(&m.key_idx) {
            g.sum += m.value as u32;
            g.signers.push(m.key_idx);
        }
    }
    Tally {
        groups: groups.into_values().collect(),
    }
}

/// Groups whose members together cannot reach the threshold: such a group
/// is dead weight and most likely a mistake, so records refuse it.
pub fn unreachable_groups(members: &[Member]) -> Vec<(u8, u32)> {
    evaluate(members, &[])
        .groups
        .into_iter()
        .filter(|g| g.possible < THRESHOLD)
        .map(|g| (g.group, g.possible))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(key_idx: u8, group: u8, value: u8) -> Member {
        Member {
            key_idx,
            group,
            value,
        }
    }

    #[test]
    fn three_of_three_and_recovery() {
        let ms = [m(0, 0, 34), m(1, 0, 33), m(2, 0, 33), m(3, 1, 100)];
        let t = evaluate(&ms, &[0, 1]);
        assert!(!t.is_met());
        assert_eq!(t.best().unwrap().sum, 67);
        assert_eq!(
            t.describe(),
            "group 0: 67 of 100 (keys 0, 1); group 1: 0 of 100"
        );
        assert_eq!(evaluate(&ms, &[0, 1, 2]).authorizing_group(), Some(0));
        assert_eq!(evaluate(&ms, &[3]).authorizing_group(), Some(1));
    }

    #[test]
    fn groups_do_not_pool() {
        let ms = [m(0, 0, 50), m(1, 1, 50), m(2, 0, 50), m(3, 1, 50)];
        assert!(!evaluate(&ms, &[0, 1]).is_met());
        assert!(evaluate(&ms, &[0, 2]).is_met());
    }

    #[test]
    fn grant_and_deny_are_separate() {
        let keys = [
            DelegationKey {
                key_idx: 0,
                group: 0,
                grant: 50,
                deny: 100,
            },
            DelegationKey {
                key_idx: 1,
                group: 0,
                grant: 50,
                deny: 100,
            },
        ];
        let grant = delegation_members(&keys, Authority::Grant);
        let deny = delegation_members(&keys, Authority::Deny);
        assert!(!evaluate(&grant, &[0]).is_met());
        assert!(evaluate(&grant, &[0, 1]).is_met());
        assert!(evaluate(&deny, &[0]).is_met());
        assert!(evaluate(&deny, &[1]).is_met());
    }

    #[test]
    fn unreachable_group_reported() {
        assert_eq!(
            unreachable_groups(&[m(0, 0, 60), m(1, 2, 100)]),
            vec![(0, 60)]
        );
    }
}
