//! Public audit of a provider's issuance (SPEC §14.8): the checks an
//! auditor outside the provider runs over what BATCHES (0x14), BATCH
//! (0x15) and HANDLE_HISTORY (0x16) return, sans I/O. Their payloads are
//! wire codecs and live in `wire` (re-exported here), so that the frame
//! decoder needs nothing from the checkers.
//!
//! Batches (SPEC §8.9) are the provider's record of what it issued: one
//! root signature per delegation key over a Merkle tree of the batch's
//! entries. The store numbers each batch it commits (1, 2, 3, … per record
//! and zone, in commit order); BATCHES pages that log, BATCH pages one
//! batch's entries, and an auditor checks that the log has no gap, that
//! every leaf 0..n of each batch is served exactly once and proves to the
//! root, and that the root signatures meet the zone's grant threshold.

use crate::codec::Codec;
use crate::hash::Hash32;
use crate::keys::PublicKeyMap;
use crate::master::MasterZone;
use crate::threshold::{delegation_members, evaluate, Authority};
use crate::types::SigType;
pub use crate::wire::{
    BatchInfo, BatchQuery, BatchesAnswer, BatchesQuery, HistoryAnswer, HistoryQuery,
    MAX_BATCH_PAGE, MAX_HISTORY_PAGE,
};
use crate::zone::{SignedEntry, ZoneType};
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// Why an audit failed: each names what the auditor saw (SPEC §14.8).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("batch log: batch {got} follows batch {after}: batches {} to {} are missing", .after + 1, .got.saturating_sub(1))]
    LogGap { after: u64, got: u64 },
    #[error("batch log: batch {seq} is listed again (or out of order) after batch {after}")]
    LogOrder { after: u64, seq: u64 },
    #[error("batch log: batch {seq} has the root digest of batch {first}")]
    LogRepeat { seq: u64, first: u64 },
    #[error("entry {digest} carries no batch signature proving to this batch's root")]
    NotInBatch { digest: Hash32 },
    #[error("entry {digest} does not decode or names a key not in the issuer's key map")]
    Undecodable { digest: Hash32 },
    #[error("entry {digest} claims a tree of {claimed} leaves, an earlier one {earlier}")]
    SizeDisagrees {
        digest: Hash32,
        claimed: u32,
        earlier: u32,
    },
    #[error("leaf {index} is served twice")]
    DuplicateLeaf { index: u32 },
    #[error("the batch has {size} leaves but {served} were served; missing leaves start at {first_missing}")]
    MissingLeaves {
        size: u32,
        served: u32,
        first_missing: u32,
    },
    #[error("the batch served no entry")]
    Empty,
    #[error("root signature by key {key_idx} does not verify (or the key is not in the issuer's key map)")]
    RootSignature { key_idx: u8 },
    #[error("key {key_idx} is not a {zone} delegation key with grant > 0")]
    NotDelegated { key_idx: u8, zone: ZoneType },
    #[error("the root signatures do not meet the grant threshold: {tally}")]
    Threshold { tally: String },
    #[error("the issuer's master zone delegates no {zone} zone")]
    NoDelegation { zone: ZoneType },
}

impl AuditError {
    /// The check's name, as SPEC §14.8 and the vectors spell it.
    pub fn code(&self) -> &'static str {
        match self {
            AuditError::LogGap { .. } => "log-gap",
            AuditError::LogOrder { .. } => "log-order",
            AuditError::LogRepeat { .. } => "log-repeat",
            AuditError::NotInBatch { .. } | AuditError::Undecodable { .. } => "not-in-batch",
            AuditError::SizeDisagrees { .. } => "size-disagrees",
            AuditError::DuplicateLeaf { .. } => "duplicate-leaf",
            AuditError::MissingLeaves { .. } | AuditError::Empty => "missing-leaves",
            AuditError::RootSignature { .. }
            | AuditError::NotDelegated { .. }
            | AuditError::Threshold { .. }
            | AuditError::NoDelegation { .. } => "threshold",
        }
    }
}

/// Follows the batch log page by page: sequence numbers must run on from
/// the one before (`after`, 0 at the start) without a gap, and no root
/// digest may be listed twice.
#[derive(Clone, Debug)]
pub struct BatchLog {
    last: u64,
    roots: BTreeMap<Hash32, u64>,
}

impl BatchLog {
    /// A log read from just after batch `after` (0: from the first).
    pub fn after(after: u64) -> Self {
        BatchLog {
            last: after,
            roots: BTreeMap::new(),
        }
    }

    /// The last batch observed (or `after` when none was).
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Takes the next listed batch.
    ///
    /// # Errors
    /// [`AuditError::LogGap`] when sequence numbers skip,
    /// [`AuditError::LogOrder`] when one repeats or goes back,
    /// [`AuditError::LogRepeat`] when a root digest is listed twice.
    pub fn observe(&mut self, b: &BatchInfo) -> Result<(), AuditError> {
        if b.seq <= self.last {
            return Err(AuditError::LogOrder {
                after: self.last,
                seq: b.seq,
            });
        }
        if b.seq != self.last + 1 {
            return Err(AuditError::LogGap {
                after: self.last,
                got: b.seq,
            });
        }
        if let Some(first) = self.roots.insert(b.root_digest, b.seq) {
            return Err(AuditError::LogRepeat { seq: b.seq, first });
        }
        self.last = b.seq;
        Ok(())
    }
}

/// What one batch's audit established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchVerdict {
    /// Leaves in the tree, every one served once and proving to the root.
    pub size: u32,
    /// The keys whose root signatures verified, ascending.
    pub signers: Vec<u8>,
    /// The survivorship group whose grant values they reach 100 in.
    pub group: u8,
}

/// Checks one batch from its entries as BATCH pages them (any order):
/// every entry proves to the batch root (SPEC §8.9), every leaf index
/// 0..n is served exactly once, all agree on n, and the root signatures
/// verify under the issuer's keys and meet the zone's grant threshold.
/// Memory grows with the entries served (one index each), never with
/// the size a tree claims.
#[derive(Clone, Debug)]
pub struct BatchAudit {
    issuer: Hash32,
    zone: ZoneType,
    root_digest: Hash32,
    size: Option<u32>,
    seen: HashSet<u32>,
    /// Every distinct root signature seen, per key.
    root_signatures: BTreeSet<(u8, [u8; 64])>,
}

impl BatchAudit {
    /// An audit of the batch of `issuer`'s `zone` whose root digest is
    /// `root_digest`.
    pub fn new(issuer: Hash32, zone: ZoneType, root_digest: Hash32) -> Self {
        BatchAudit {
            issuer,
            zone,
            root_digest,
            size: None,
            seen: HashSet::new(),
            root_signatures: BTreeSet::new(),
        }
    }

    /// Entries taken so far.
    pub fn served(&self) -> u32 {
        self.seen.len() as u32
    }

    /// Takes one served entry. `keys` is the issuer's Public Key Map (for
    /// entries that name keys, SPEC §5.3).
    ///
    /// # Errors
    /// [`AuditError::Undecodable`], [`AuditError::NotInBatch`],
    /// [`AuditError::SizeDisagrees`], [`AuditError::DuplicateLeaf`].
    pub fn add(&mut self, keys: &PublicKeyMap, e: &SignedEntry) -> Result<(), AuditError> {
        let digest =
            e.digest_in(&self.issuer, self.zone, keys)
                .map_err(|_| AuditError::Undecodable {
                    digest: e.identity_digest(&self.issuer),
                })?;
        let mut found = None;
        for s in &e.signatures {
            if s.sig_type != SigType::ED25519_BATCH {
                continue;
            }
            let Ok(p) = crate::batch::BatchProof::from_bytes(&s.data) else {
                continue;
            };
            if p.signed_digest(&self.issuer, self.zone, &digest) == Some(self.root_digest) {
                self.root_signatures.insert((s.key_idx, p.root_signature));
                found = Some((p.leaf_index, p.tree_size));
            }
        }
        let Some((index, size)) = found else {
            return Err(AuditError::NotInBatch { digest });
        };
        match self.size {
            Some(earlier) if earlier != size => {
                return Err(AuditError::SizeDisagrees {
                    digest,
                    claimed: size,
                    earlier,
                })
            }
            _ => self.size = Some(size),
        }
        if !self.seen.insert(index) {
            return Err(AuditError::DuplicateLeaf { index });
        }
        Ok(())
    }

    /// Ends the audit once the batch's last page was taken: every leaf
    /// served, then the root signatures checked against `master` (the
    /// issuer's verified master zone: its delegation of the zone) and
    /// `keys`.
    ///
    /// # Errors
    /// [`AuditError::Empty`], [`AuditError::MissingLeaves`],
    /// [`AuditError::NoDelegation`], [`AuditError::NotDelegated`],
    /// [`AuditError::RootSignature`], [`AuditError::Threshold`].
    pub fn finish(
        self,
        master: &MasterZone,
        keys: &PublicKeyMap,
    ) -> Result<BatchVerdict, AuditError> {
        let Some(size) = self.size else {
            return Err(AuditError::Empty);
        };
        // Every index taken is below the size its proof was checked
        // against, so as many indices as leaves means all of 0..n.
        if self.seen.len() as u64 != u64::from(size) {
            let first_missing = (0..size).find(|i| !self.seen.contains(i)).unwrap_or(size);
            return Err(AuditError::MissingLeaves {
                size,
                served: self.seen.len() as u32,
                first_missing,
            });
        }
        let Some(deleg) = master.delegation(self.zone) else {
            return Err(AuditError::NoDelegation { zone: self.zone });
        };
        let grant = delegation_members(&deleg.keys, Authority::Grant);
        let mut signers = Vec::new();
        for (key_idx, sig) in &self.root_signatures {
            if !grant.iter().any(|m| m.key_idx == *key_idx) {
                return Err(AuditError::NotDelegated {
                    key_idx: *key_idx,
                    zone: self.zone,
                });
            }
            let ok = keys
                .get(*key_idx)
                .and_then(|k| k.verify_key())
                .is_some_and(|k| k.verify(&self.root_digest.0, sig));
            if !ok {
                return Err(AuditError::RootSignature { key_idx: *key_idx });
            }
            if signers.last() != Some(key_idx) {
                signers.push(*key_idx);
            }
        }
        let tally = evaluate(&grant, &signers);
        match tally.authorizing_group() {
            Some(group) => Ok(BatchVerdict {
                size,
                signers,
                group,
            }),
            None => Err(AuditError::Threshold {
                tally: tally.describe(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::sample;

    /// A sample provider with a batch of `n` bindings signed by both
    /// identity delegation keys.
    fn batch(n: u32) -> (crate::Record, Vec<SignedEntry>, Hash32) {
        let p = sample::provider().unwrap();
        let k = sample::provider_keys();
        let mut entries: Vec<SignedEntry> = (0..n)
            .map(|i| {
                crate::workflow::new_binding(
                    &p,
                    crate::hash::tagged_hash("s", &[&i.to_be_bytes()]),
                    &format!("user{i}"),
                    sample::T0 + 5_000,
                    0,
                )
                .unwrap()
            })
            .collect();
        let mut root = Hash32::ZERO;
        for key in [&k.device_a, &k.device_b] {
            let (idx, tree, digest) = crate::workflow::batch_signing_target(
                &p,
                ZoneType::IDENTITY,
                &entries,
                &key.public().id(),
            )
            .unwrap();
            let sig = key.sign(idx, &digest);
            crate::workflow::attach_batch_signature(
                &mut entries,
                idx,
                &tree,
                sig.data.as_slice().try_into().unwrap(),
            );
            root = digest;
        }
        (p, entries, root)
    }

    #[test]
    fn a_whole_batch_in_any_order_checks_out() {
        let (p, mut entries, root) = batch(7);
        entries.reverse();
        let mut a = BatchAudit::new(p.id(), ZoneType::IDENTITY, root);
        for e in &entries {
            a.add(&p.keys, e).unwrap();
        }
        let v = a.finish(&p.master, &p.keys).unwrap();
        assert_eq!(v.size, 7);
        assert_eq!(v.signers.len(), 2);
    }

    #[test]
    fn a_missing_leaf_a_repeated_leaf_and_a_foreign_entry_are_caught() {
        let (p, entries, root) = batch(5);
        let mut a = BatchAudit::new(p.id(), ZoneType::IDENTITY, root);
        for e in entries
            .iter()
            .filter(|e| crate::zone::leaf_index_of(e) != 3)
        {
            a.add(&p.keys, e).unwrap();
        }
        assert!(matches!(
            a.finish(&p.master, &p.keys),
            Err(AuditError::MissingLeaves {
                size: 5,
                served: 4,
                first_missing: 3
            })
        ));
        let mut a = BatchAudit::new(p.id(), ZoneType::IDENTITY, root);
        a.add(&p.keys, &entries[0]).unwrap();
        assert!(matches!(
            a.add(&p.keys, &entries[0]),
            Err(AuditError::DuplicateLeaf { .. })
        ));
        let (_, other, _) = batch(3);
        let mut a = BatchAudit::new(p.id(), ZoneType::IDENTITY, root);
        assert!(matches!(
            a.add(&p.keys, &other[0]),
            Err(AuditError::NotInBatch { .. })
        ));
    }

    #[test]
    fn one_key_alone_does_not_meet_the_grant_threshold() {
        let (p, mut entries, root) = batch(2);
        for e in &mut entries {
            e.signatures.truncate(1);
        }
        let mut a = BatchAudit::new(p.id(), ZoneType::IDENTITY, root);
        for e in &entries {
            a.add(&p.keys, e).unwrap();
        }
        assert!(matches!(
            a.finish(&p.master, &p.keys),
            Err(AuditError::Threshold { .. })
        ));
    }

    #[test]
    fn the_log_runs_on_without_gaps() {
        let b = |seq, r: u8| BatchInfo {
            seq,
            root_digest: Hash32([r; 32]),
            stored_at: 0,
        };
        let mut log = BatchLog::after(0);
        log.observe(&b(1, 1)).unwrap();
        log.observe(&b(2, 2)).unwrap();
        assert!(matches!(
            log.observe(&b(4, 4)),
            Err(AuditError::LogGap { after: 2, got: 4 })
        ));
        assert!(matches!(
            log.observe(&b(2, 9)),
            Err(AuditError::LogOrder { .. })
        ));
        assert!(matches!(
            log.observe(&b(3, 1)),
            Err(AuditError::LogRepeat { seq: 3, first: 1 })
        ));
        let mut later = BatchLog::after(41);
        later.observe(&b(42, 7)).unwrap();
        assert_eq!(later.last(), 42);
    }

    #[test]
    fn payloads_round_trip_and_refuse_bad_limits() {
        let q = BatchesQuery {
            domain: "social.example".into(),
            zone_type: ZoneType::IDENTITY,
            after: 3,
            limit: 10,
        };
        assert_eq!(BatchesQuery::from_bytes(&q.to_bytes()).unwrap(), q);
        let mut bad = q.clone();
        bad.limit = 1001;
        assert!(BatchesQuery::from_bytes(&bad.to_bytes()).is_err());
        let h = HistoryQuery {
            domain: "social.example".into(),
            handle: "alice".into(),
            after: Hash32::ZERO,
            limit: 1,
        };
        assert_eq!(HistoryQuery::from_bytes(&h.to_bytes()).unwrap(), h);
        let mut trailing = h.to_bytes();
        trailing.push(0);
        assert!(HistoryQuery::from_bytes(&trailing).is_err());
        let a = BatchesAnswer {
            batches: vec![BatchInfo {
                seq: 1,
                root_digest: Hash32([7; 32]),
                stored_at: 9,
            }],
            next: 0,
        };
        assert_eq!(a.to_bytes().len(), 4 + 48 + 8);
        assert_eq!(BatchesAnswer::from_bytes(&a.to_bytes()).unwrap(), a);
    }
}
