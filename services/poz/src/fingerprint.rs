//! Fingerprints: short digit codes of record IDs that two people can
//! compare aloud (SPEC §19), in the spirit of the safety numbers of
//! messaging protocols.
//!
//! - [`Fingerprint`]: one record's code, 30 digits read as six groups of
//!   five, derived from its record ID by [`ITERATIONS`] rounds of the
//!   tagged hash `POZ-v0 fingerprint`.
//! - [`PairFingerprint`]: two records' code, 60 digits: the two records'
//!   codes, the smaller first, so both sides get the same digits whatever
//!   order they give the records in. Each half is one record's own code,
//!   so a person in the middle must match each half on its own (a second
//!   preimage), never two codes against each other (a birthday search).
//!
//! A fingerprint names a record ID, nothing more: it means something only
//! for a record verified from genesis, whose ID is bound to its keys.
//! Nothing here can fail: every 32-byte ID has a code.

use crate::hash::{tag, tagged_hash, Hash32};
use std::fmt;

/// Rounds of the tagged hash: 2^14, so each guess at a code costs an
/// attacker 16,384 SHA3-256 calls (14 bits of work on top of the digits).
pub const ITERATIONS: u32 = 16_384;
/// Digits in one record's code.
pub const DIGITS: usize = 30;
/// Digits in a group when shown.
pub const GROUP: usize = 5;

/// One record's code: 30 ASCII digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint([u8; DIGITS]);

/// The last digest of the iteration (SPEC §19): `H(tag, id)`, then
/// `ITERATIONS - 1` times `H(tag, previous ‖ id)`.
pub fn digest(record_id: &Hash32) -> Hash32 {
    let mut d = tagged_hash(tag::FINGERPRINT, &[&record_id.0]);
    for _ in 1..ITERATIONS {
        d = tagged_hash(tag::FINGERPRINT, &[&d.0, &record_id.0]);
    }
    d
}

impl Fingerprint {
    /// The code of the record whose ID is `record_id`.
    pub fn of(record_id: &Hash32) -> Fingerprint {
        Fingerprint::from_digest(&digest(record_id))
    }

    /// Digits from the final digest: its first 30 bytes as six
    /// big-endian 40-bit numbers, each taken modulo 100,000 and written
    /// as five digits with leading zeros.
    pub fn from_digest(d: &Hash32) -> Fingerprint {
        let mut out = [b'0'; DIGITS];
        for (chunk, group) in d.0.chunks_exact(5).zip(out.chunks_exact_mut(GROUP)) {
            let mut n: u64 = 0;
            for b in chunk {
                n = (n << 8) | u64::from(*b);
            }
            let mut v = n % 100_000;
            for slot in group.iter_mut().rev() {
                // v % 10 < 10, so the digit is ASCII '0'..='9'.
                *slot = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        Fingerprint(out)
    }

    /// The 30 digits, ungrouped.
    pub fn digits(&self) -> &str {
        // Only ASCII digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The groups of five, in order.
    pub fn groups(&self) -> Vec<&str> {
        group(self.digits())
    }
}

fn group(digits: &str) -> Vec<&str> {
    // ASCII only, so every byte index is a char boundary.
    (0..digits.len())
        .step_by(GROUP)
        .filter_map(|i| digits.get(i..(i + GROUP).min(digits.len())))
        .collect()
}

/// Six groups of five digits separated by spaces.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.groups().join(" "))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.digits())
    }
}

/// Two records' code: their two codes, the smaller (as a 30-digit
/// number) first.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PairFingerprint {
    pub first: Fingerprint,
    pub second: Fingerprint,
}

impl PairFingerprint {
    /// The pair code of two records; `of(a, b) == of(b, a)`.
    pub fn of(a: &Hash32, b: &Hash32) -> PairFingerprint {
        let (x, y) = (Fingerprint::of(a), Fingerprint::of(b));
        PairFingerprint {
            first: x.min(y),
            second: x.max(y),
        }
    }

    /// The 60 digits, ungrouped.
    pub fn digits(&self) -> String {
        format!("{}{}", self.first.digits(), self.second.digits())
    }
}

/// Twelve groups of five: the first half, a space, the second half.
impl fmt::Display for PairFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.first, self.second)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn iteration_is_what_the_spec_says() {
        let id = Hash32([7; 32]);
        let mut d = tagged_hash("POZ-v0 fingerprint", &[&id.0]);
        for _ in 1..ITERATIONS {
            d = tagged_hash("POZ-v0 fingerprint", &[&d.0, &id.0]);
        }
        assert_eq!(digest(&id), d);
    }

    #[test]
    fn digits_from_digest() {
        // 0x00000186a0 = 100,000 -> 00000; 0xffffffffff = 1,099,511,627,775 -> 27775.
        let mut d = [0u8; 32];
        d[..5].copy_from_slice(&[0, 0, 1, 0x86, 0xa0]);
        d[5..10].copy_from_slice(&[0xff; 5]);
        d[10..15].copy_from_slice(&[0, 0, 0, 0, 42]);
        let f = Fingerprint::from_digest(&Hash32(d));
        assert_eq!(f.digits(), "000002777500042000000000000000");
        assert_eq!(f.to_string(), "00000 27775 00042 00000 00000 00000");
    }

    #[test]
    fn pair_is_order_independent_and_made_of_halves() {
        let (a, b) = (Hash32([1; 32]), Hash32([2; 32]));
        let p = PairFingerprint::of(&a, &b);
        assert_eq!(p, PairFingerprint::of(&b, &a));
        assert!(p.first <= p.second);
        let halves = [Fingerprint::of(&a), Fingerprint::of(&b)];
        assert!(halves.contains(&p.first) && halves.contains(&p.second));
        assert_eq!(p.digits().len(), 2 * DIGITS);
        assert_eq!(p.to_string().split(' ').count(), 12);
    }
}
