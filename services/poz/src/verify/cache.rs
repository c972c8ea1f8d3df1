//! Verified records kept by the hash of their exact bytes.

use super::record::{verify_and_accept, VerifiedRecord};
use super::rules::Report;
use crate::hash::Hash32;
use crate::record::Record;

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
