//! Batch signatures (SPEC §8.9): the delegation keys sign, once, the root
//! of a Merkle tree over the digests of many zone entries; each entry then
//! carries that one signature with its leaf index and audit path
//! (signature type 0x02, `ed25519-batch`).
//!
//! The tree is RFC 6962's (Certificate Transparency): leaves and nodes
//! hashed with distinct tags, and a level with an odd count promotes its
//! last node unchanged, which gives the same root as RFC 6962's "split at
//! the largest power of two" for every size, with no duplicated leaves
//! and so no second preimage by duplication.
//!
//! The root signature covers `H("POZ-v0 batch-root", issuer ‖ zone type
//! ‖ tree size ‖ Merkle root)`: a batch is bound to its issuer and zone,
//! and a verifier can cache one root signature for every entry of a
//! batch.

use crate::codec::{Codec, DecodeError, Reader};
use crate::hash::{tagged_hash, Hash32};
use crate::types::ZoneType;

/// Tags of the batch hashes (SPEC §2).
pub mod tag {
    pub const LEAF: &str = "POZ-v0 batch-leaf";
    pub const NODE: &str = "POZ-v0 batch-node";
    pub const ROOT: &str = "POZ-v0 batch-root";
}

/// At most 2³² leaves, so an audit path has at most 32 hashes.
pub const MAX_PATH: usize = 32;

/// `H(leaf tag, entry digest)`.
pub fn leaf_hash(entry_digest: &Hash32) -> Hash32 {
    tagged_hash(tag::LEAF, &[&entry_digest.0])
}

fn node_hash(left: &Hash32, right: &Hash32) -> Hash32 {
    tagged_hash(tag::NODE, &[&left.0, &right.0])
}

/// What the delegation keys sign for a batch.
pub fn root_digest(issuer: &Hash32, zone: ZoneType, tree_size: u32, root: &Hash32) -> Hash32 {
    tagged_hash(
        tag::ROOT,
        &[&issuer.0, &[zone.0], &tree_size.to_be_bytes(), &root.0],
    )
}

/// A Merkle tree over a batch's entry digests, in leaf order, with every
/// level kept so that each leaf's audit path is read off in O(log n).
#[derive(Clone, Debug)]
pub struct MerkleBatch {
    levels: Vec<Vec<Hash32>>,
}

/// Why a batch cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("a batch needs at least one entry")]
    Empty,
    #[error("a batch holds at most 2^32 - 1 entries")]
    TooLarge,
}

impl MerkleBatch {
    pub fn new(entry_digests: &[Hash32]) -> Result<Self, BatchError> {
        if entry_digests.is_empty() {
            return Err(BatchError::Empty);
        }
        if u32::try_from(entry_digests.len()).is_err() {
            return Err(BatchError::TooLarge);
        }
        let mut levels = vec![entry_digests.iter().map(leaf_hash).collect::<Vec<_>>()];
        while levels.last().map_or(0, Vec::len) > 1 {
            let below = levels.last().map(Vec::as_slice).unwrap_or_default();
            let up = below
                .chunks(2)
                .map(|p| match p {
                    [l, r] => node_hash(l, r),
                    [last] => *last,
                    _ => unreachable!("chunks(2) yields one or two"),
                })
                .collect();
            levels.push(up);
        }
        Ok(MerkleBatch { levels })
    }

    pub fn size(&self) -> u32 {
        self.levels[0].len() as u32
    }

    pub fn root(&self) -> Hash32 {
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or(Hash32::ZERO)
    }

    /// The audit path of leaf `index` (siblings from the leaf up), or
    /// `None` when out of range.
    pub fn path(&self, index: u32) -> Option<Vec<Hash32>> {
        let mut i = index as usize;
        if i >= self.levels[0].len() {
            return None;
        }
        let mut path = Vec::new();
        for level in &self.levels[..self.levels.len() - 1] {
            let sibling = i ^ 1;
            if sibling < level.len() {
                path.push(level[sibling]);
            }
            i >>= 1;
        }
        Some(path)
    }
}

/// The number of hashes in the audit path of leaf `index` in a tree of
/// `tree_size` leaves (RFC 6962 §2.1.1): one per level at which the node
/// has a sibling; a last even node promoted unchanged has none. At most
/// 32. `index` must be below `tree_size`.
pub fn audit_path_len(index: u32, tree_size: u32) -> usize {
    let (mut i, mut n, mut len) = (index as u64, tree_size as u64, 0usize);
    while n > 1 {
        if (i ^ 1) < n {
            len += 1;
        }
        i >>= 1;
        n = n.div_ceil(2);
    }
    len
}

/// The root an audit path leads to, or `None` when the path does not fit
/// the index and size exactly (too short, too long, index out of range).
pub fn root_from_path(
    leaf: &Hash32,
    index: u32,
    tree_size: u32,
    path: &[Hash32],
) -> Option<Hash32> {
    if index >= tree_size {
        return None;
    }
    let (mut i, mut size, mut cur) = (index, tree_size, *leaf);
    let mut siblings = path.iter();
    while size > 1 {
        if i % 2 == 1 {
            cur = node_hash(siblings.next()?, &cur);
        } else if i + 1 < size {
            cur = node_hash(&cur, siblings.next()?);
        }
        // else: the last node of an odd level is promoted unchanged.
        i /= 2;
        size = size.div_ceil(2);
    }
    siblings.next().is_none().then_some(cur)
}

/// The data of an `ed25519-batch` signature (SPEC §8.9):
/// `signature[64] ‖ u32 tree_size ‖ u32 leaf_index ‖ u8 path_len ‖
/// path_len × hash[32]`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BatchProof {
    /// Ed25519 over [`root_digest`].
    pub root_signature: [u8; 64],
    pub tree_size: u32,
    pub leaf_index: u32,
    pub path: Vec<Hash32>,
}

impl BatchProof {
    /// The digest the root signature must verify over, for the entry
    /// whose digest is `entry_digest`; `None` when the path does not lead
    /// to a root.
    pub fn signed_digest(
        &self,
        issuer: &Hash32,
        zone: ZoneType,
        entry_digest: &Hash32,
    ) -> Option<Hash32> {
        let root = root_from_path(
            &leaf_hash(entry_digest),
            self.leaf_index,
            self.tree_size,
            &self.path,
        )?;
        Some(root_digest(issuer, zone, self.tree_size, &root))
    }
}

impl Codec for BatchProof {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.root_signature);
        out.extend_from_slice(&self.tree_size.to_be_bytes());
        out.extend_from_slice(&self.leaf_index.to_be_bytes());
        out.push(self.path.len() as u8);
        for h in &self.path {
            out.extend_from_slice(&h.0);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let mut root_signature = [0u8; 64];
        root_signature.copy_from_slice(r.take(64, "batch_proof.signature")?);
        let tree_size = r.u32("batch_proof.tree_size")?;
        if tree_size == 0 {
            return Err(r.invalid("batch_proof.tree_size", 0));
        }
        let leaf_index = r.u32("batch_proof.leaf_index")?;
        if leaf_index >= tree_size {
            return Err(r.invalid("batch_proof.leaf_index", leaf_index as u64));
        }
        let n = r.u8("batch_proof.path_len")? as usize;
        // One encoding per proof (SPEC §1, §8.9): the path length is
        // fixed by the index and the size, so any other is refused here
        // rather than failing later as a signature that does not verify.
        if n > MAX_PATH || n != audit_path_len(leaf_index, tree_size) {
            return Err(r.invalid("batch_proof.path_len", n as u64));
        }
        let mut path = Vec::with_capacity(n);
        for _ in 0..n {
            let mut h = [0u8; 32];
            h.copy_from_slice(r.take(32, "batch_proof.path")?);
            path.push(Hash32(h));
        }
        Ok(BatchProof {
            root_signature,
            tree_size,
            leaf_index,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn digests(n: u32) -> Vec<Hash32> {
        (0..n)
            .map(|i| tagged_hash("t", &[&i.to_be_bytes()]))
            .collect()
    }

    /// RFC 6962 §2.1's recursive definition, as the reference.
    fn rfc6962_root(leaves: &[Hash32]) -> Hash32 {
        if leaves.len() == 1 {
            return leaves[0];
        }
        let k = leaves.len().next_power_of_two() / 2;
        node_hash(&rfc6962_root(&leaves[..k]), &rfc6962_root(&leaves[k..]))
    }

    #[test]
    fn every_leaf_of_every_size_proves_to_the_rfc6962_root() {
        for n in 1..=70u32 {
            let d = digests(n);
            let t = MerkleBatch::new(&d).unwrap();
            let leaves: Vec<Hash32> = d.iter().map(leaf_hash).collect();
            assert_eq!(t.root(), rfc6962_root(&leaves), "size {n}");
            for i in 0..n {
                let p = t.path(i).unwrap();
                assert_eq!(
                    root_from_path(&leaves[i as usize], i, n, &p),
                    Some(t.root())
                );
                // The wrong index, size, or a shortened or padded path fail.
                if n > 1 {
                    assert_ne!(
                        root_from_path(&leaves[i as usize], (i + 1) % n, n, &p),
                        Some(t.root())
                    );
                }
                // A path can lead to the same Merkle root under a larger
                // claimed size (a left subtree of a complete tree); the
                // signed digest commits the size, so it never verifies.
                let signed = root_digest(&Hash32::ZERO, ZoneType::IDENTITY, n, &t.root());
                if let Some(r) = root_from_path(&leaves[i as usize], i, n + 1, &p) {
                    assert_ne!(
                        root_digest(&Hash32::ZERO, ZoneType::IDENTITY, n + 1, &r),
                        signed
                    );
                }
                if !p.is_empty() {
                    assert_eq!(root_from_path(&leaves[i as usize], i, n, &p[1..]), None);
                }
                let mut longer = p.clone();
                longer.push(Hash32::ZERO);
                assert_eq!(root_from_path(&leaves[i as usize], i, n, &longer), None);
            }
            assert!(t.path(n).is_none());
        }
        assert_eq!(MerkleBatch::new(&[]).unwrap_err(), BatchError::Empty);
    }

    #[test]
    fn proof_codec_is_strict() {
        let p = BatchProof {
            root_signature: [9; 64],
            tree_size: 5,
            leaf_index: 4,
            path: vec![Hash32([1; 32])],
        };
        let b = p.to_bytes();
        assert_eq!(BatchProof::from_bytes(&b).unwrap(), p);
        let mut bad = b.clone();
        bad[64..68].copy_from_slice(&0u32.to_be_bytes());
        assert!(BatchProof::from_bytes(&bad).is_err());
        let mut bad = b.clone();
        bad[68..72].copy_from_slice(&5u32.to_be_bytes());
        assert!(BatchProof::from_bytes(&bad).is_err());
        let mut trailing = b.clone();
        trailing.push(0);
        assert!(BatchProof::from_bytes(&trailing).is_err());
        assert!(BatchProof::from_bytes(&b[..b.len() - 1]).is_err());
    }

    #[test]
    fn path_len_is_the_one_the_index_and_size_fix() {
        for n in 1..=70u32 {
            let t = MerkleBatch::new(&digests(n)).unwrap();
            for i in 0..n {
                assert_eq!(audit_path_len(i, n), t.path(i).unwrap().len(), "{i} of {n}");
            }
        }
        assert_eq!(audit_path_len(0, u32::MAX), 32);
        // Issue 12 §6: size 4, index 0, path_len 1 (the right length is 2)
        // is a decode error at signature.data, not a signature that fails
        // later.
        let proof = BatchProof {
            root_signature: [9; 64],
            tree_size: 4,
            leaf_index: 0,
            path: vec![Hash32([1; 32])],
        };
        let err = BatchProof::from_bytes(&proof.to_bytes()).unwrap_err();
        assert_eq!(err.field(), "batch_proof.path_len");
        let sig = crate::keys::Signature {
            key_idx: 1,
            sig_type: crate::types::SigType::ED25519_BATCH,
            data: proof.to_bytes(),
        };
        let err = crate::keys::Signature::from_bytes(&sig.to_bytes()).unwrap_err();
        assert_eq!(err.field(), "signature.data");
        assert_eq!(err.offset(), 4);
        assert!(err.to_string().contains("path_len"), "{err}");
        // The right length decodes.
        let ok = BatchProof {
            path: vec![Hash32([1; 32]), Hash32([2; 32])],
            ..proof
        };
        assert!(BatchProof::from_bytes(&ok.to_bytes()).is_ok());
    }
}
