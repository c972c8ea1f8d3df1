//! The POZ Ed25519 verification rule, single and batched (SPEC §5.2).
//!
//! Why not `ed25519_dalek::VerifyingKey::verify_strict` and
//! `ed25519_dalek::verify_batch`: the two accept different sets of
//! signatures. `verify_strict` checks the cofactorless equation
//! `[s]B = R + [k]A`; the batch check is a random linear combination of
//! those equations, which a signer can satisfy with probability 1/8 by
//! hiding a small-order component in `R`. A fleet where one verifier
//! batches and another does not would then disagree about the same
//! binding. POZ therefore fixes the **cofactored** equation
//! `[8]([s]B − R − [k]A) = 0` (RFC 8032 §5.1.7 allows it; ZIP-215 chose it
//! for the same reason), which single and batch verification decide
//! identically, plus these encoding rules, checked the same way by both:
//!
//! - `s` is canonical (`s < ℓ`), so nobody but the signer can make a
//!   second signature from the first;
//! - `R` and `A` are canonical encodings (`y < p`) of points that are not
//!   of small order.
//!
//! `k = SHA-512(R ‖ A ‖ M) mod ℓ` as in RFC 8032; `M` is always a 32-byte
//! tagged digest in POZ.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use sha2::{Digest, Sha512};
use sha3::digest::{ExtendableOutput, Update, XofReader};

/// A public key ready for verification: its canonical bytes and its
/// decompressed point, which is not of small order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerifyKey {
    bytes: [u8; 32],
    point: EdwardsPoint,
}

impl VerifyKey {
    /// `None` for bytes that are not a canonical encoding of a curve point
    /// outside the small-order subgroup: such a key verifies nothing.
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<Self> {
        let point = decompress_canonical(bytes)?;
        (!point.is_small_order()).then_some(VerifyKey {
            bytes: *bytes,
            point,
        })
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// Checks one signature over `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        let Some(p) = Prepared::new(self, msg, sig) else {
            return false;
        };
        // [s]B − [k]A − R, times the cofactor.
        let minus_a = -self.point;
        let sb_minus_ka = EdwardsPoint::vartime_double_scalar_mul_basepoint(&p.k, &minus_a, &p.s);
        (sb_minus_ka - p.r).mul_by_cofactor().is_identity()
    }
}

/// `y < p`, then decompression. Only 19 values of `y` (and the sign bit
/// set on `x = 0`, which gives small-order points, refused separately)
/// have a second encoding.
fn decompress_canonical(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    let top = bytes[31] & 0x7f;
    let non_canonical = top == 0x7f && bytes[1..31].iter().all(|b| *b == 0xff) && bytes[0] >= 0xed;
    if non_canonical {
        return None;
    }
    CompressedEdwardsY(*bytes).decompress()
}

/// One signature with its encoding rules checked and its challenge
/// scalar computed.
#[derive(Clone, Copy, Debug)]
struct Prepared {
    r: EdwardsPoint,
    r_bytes: [u8; 32],
    s: Scalar,
    k: Scalar,
}

impl Prepared {
    fn new(key: &VerifyKey, msg: &[u8], sig: &[u8; 64]) -> Option<Prepared> {
        let mut r_bytes = [0u8; 32];
        r_bytes.copy_from_slice(&sig[..32]);
        let mut s_bytes = [0u8; 32];
        s_bytes.copy_from_slice(&sig[32..]);
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))?;
        let r = decompress_canonical(&r_bytes)?;
        if r.is_small_order() {
            return None;
        }
        let mut h = Sha512::new();
        Digest::update(&mut h, r_bytes);
        Digest::update(&mut h, key.bytes);
        Digest::update(&mut h, msg);
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        Some(Prepared { r, r_bytes, s, k })
    }
}

/// Signatures collected for one batch check.
///
/// A batch holds `n` signatures by `m` distinct keys (a provider signs
/// millions of bindings with a handful of delegation keys), so the
/// multiscalar multiplication has `n + m + 1` terms rather than the
/// `2n + 1` of a batch that treats every key as new.
#[derive(Debug, Default)]
pub struct Batch {
    keys: Vec<VerifyKey>,
    items: Vec<(usize, Prepared)>,
    malformed: bool,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Queues one signature. A signature that breaks an encoding rule
    /// makes the whole batch fail; callers that need to know which one
    /// verify one by one after a failed batch.
    pub fn push(&mut self, key: &VerifyKey, msg: &[u8], sig: &[u8; 64]) {
        let Some(p) = Prepared::new(key, msg, sig) else {
            self.malformed = true;
            return;
        };
        // Providers have few keys: a linear scan beats hashing here.
        let ki = match self.keys.iter().position(|k| k.bytes == key.bytes) {
            Some(i) => i,
            None => {
                self.keys.push(*key);
                self.keys.len() - 1
            }
        };
        self.items.push((ki, p));
    }

    /// True when every queued signature verifies (false with probability
    /// at most 2⁻¹²⁸ when one does not). An empty batch verifies.
    pub fn verify(&self) -> bool {
        if self.malformed {
            return false;
        }
        if self.items.is_empty() {
            return true;
        }
        // The coefficients z_i are derived from every input (Fiat-Shamir),
        // so they are fixed only once the signatures are: no randomness
        // source is needed and the result is reproducible.
        let mut transcript = sha3::Shake256::default();
        transcript.update(b"POZ-ed25519-batch\0");
        for k in &self.keys {
            transcript.update(&k.bytes);
        }
        for (ki, p) in &self.items {
            transcript.update(&(*ki as u32).to_le_bytes());
            transcript.update(&p.r_bytes);
            transcript.update(p.s.as_bytes());
            transcript.update(p.k.as_bytes());
        }
        let mut xof = transcript.finalize_xof();

        let mut b_coefficient = Scalar::ZERO;
        let mut key_coefficients = vec![Scalar::ZERO; self.keys.len()];
        let mut scalars = Vec::with_capacity(1 + self.keys.len() + self.items.len());
        let mut points = Vec::with_capacity(scalars.capacity());
        scalars.push(Scalar::ZERO); // B's coefficient, filled in below
        points.push(ED25519_BASEPOINT_POINT);
        for (ki, p) in &self.items {
            let mut zb = [0u8; 32];
            xof.read(&mut zb[..16]);
            let z = Scalar::from_bytes_mod_order(zb);
            b_coefficient += z * p.s;
            key_coefficients[*ki] -= z * p.k;
            scalars.push(-z);
            points.push(p.r);
        }
        scalars[0] = b_coefficient;
        // Σ z_i([s_i]B − R_i − [k_i]A_i), grouped by key, must be a
        // small-order point.
        scalars.extend(key_coefficients);
        points.extend(self.keys.iter().map(|k| k.point));
        EdwardsPoint::vartime_multiscalar_mul(scalars, points)
            .mul_by_cofactor()
            .is_identity()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use curve25519_dalek::constants::EIGHT_TORSION;
    use ed25519_dalek::{Signer, SigningKey};

    fn key(n: u8) -> (SigningKey, VerifyKey) {
        let sk = SigningKey::from_bytes(&[n; 32]);
        let vk = VerifyKey::from_bytes(sk.verifying_key().as_bytes()).unwrap();
        (sk, vk)
    }

    #[test]
    fn single_and_batch_accept_honest_signatures() {
        let mut batch = Batch::new();
        for n in 1..=20u8 {
            let (sk, vk) = key(n % 3 + 1);
            let msg = [n; 32];
            let sig = sk.sign(&msg).to_bytes();
            assert!(vk.verify(&msg, &sig));
            // Agrees with the library's strict check on honest input.
            assert!(sk
                .verifying_key()
                .verify_strict(&msg, &sk.sign(&msg))
                .is_ok());
            batch.push(&vk, &msg, &sig);
        }
        assert_eq!(batch.keys.len(), 3);
        assert!(batch.verify());
    }

    #[test]
    fn one_bad_signature_fails_the_batch() {
        for bad in 0..8usize {
            let mut batch = Batch::new();
            for n in 0..8usize {
                let (sk, vk) = key(1 + (n % 2) as u8);
                let msg = [n as u8; 32];
                let mut sig = sk.sign(&msg).to_bytes();
                if n == bad {
                    sig[40] ^= 1;
                }
                assert_eq!(vk.verify(&msg, &sig), n != bad);
                batch.push(&vk, &msg, &sig);
            }
            assert!(!batch.verify(), "bad signature {bad} slipped through");
        }
    }

    #[test]
    fn non_canonical_s_is_refused() {
        let (sk, vk) = key(7);
        let msg = [9u8; 32];
        let mut sig = sk.sign(&msg).to_bytes();
        // s + ℓ is the same scalar mod ℓ but a second encoding.
        let l: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = sig[32 + i] as u16 + l[i] as u16 + carry;
            sig[32 + i] = v as u8;
            carry = v >> 8;
        }
        assert!(!vk.verify(&msg, &sig));
        let mut batch = Batch::new();
        batch.push(&vk, &msg, &sig);
        assert!(!batch.verify());
    }

    #[test]
    fn small_order_keys_and_nonces_are_refused() {
        for t in EIGHT_TORSION.iter() {
            let b = t.compress().to_bytes();
            assert!(VerifyKey::from_bytes(&b).is_none());
            let (_, vk) = key(3);
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(&b);
            assert!(!vk.verify(&[0u8; 32], &sig));
        }
        // A non-canonical y (p itself encodes 0) is refused.
        let mut p = [0xffu8; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        assert!(VerifyKey::from_bytes(&p).is_none());
    }

    /// The case that separates cofactored from cofactorless checks: a
    /// signer who hides a torsion point in R. Single and batch must agree
    /// on it, whatever the batch coefficients turn out to be.
    #[test]
    fn torsion_in_r_is_decided_alike_by_single_and_batch() {
        let sk = SigningKey::from_bytes(&[5; 32]);
        let vk = VerifyKey::from_bytes(sk.verifying_key().as_bytes()).unwrap();
        let a = sk.to_scalar();
        for (i, t) in EIGHT_TORSION.iter().enumerate().skip(1) {
            let msg = [i as u8; 32];
            let r = Scalar::from_bytes_mod_order([i as u8 + 11; 32]);
            let big_r = ED25519_BASEPOINT_POINT * r + t;
            let r_bytes = big_r.compress().to_bytes();
            let mut h = Sha512::new();
            Digest::update(&mut h, r_bytes);
            Digest::update(&mut h, vk.bytes);
            Digest::update(&mut h, msg);
            let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
            let s = r + k * a;
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(&r_bytes);
            sig[32..].copy_from_slice(s.as_bytes());
            let single = vk.verify(&msg, &sig);
            // Cofactorless libraries refuse it; the POZ rule accepts it,
            // and only the private key's holder could have made it.
            assert!(single);
            assert!(sk
                .verifying_key()
                .verify_strict(&msg, &ed25519_dalek::Signature::from_bytes(&sig))
                .is_err());
            let mut batch = Batch::new();
            batch.push(&vk, &msg, &sig);
            let honest = sk.sign(&[0xaa; 32]).to_bytes();
            batch.push(&vk, &[0xaa; 32], &honest);
            assert_eq!(batch.verify(), single);
        }
    }
}
