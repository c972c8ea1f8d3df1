//! The Public Key Map (section 0x0000), signatures, and signing keys.
//!
//! Every other section refers to a key by its zero-based index in this map.
//! Because an index alone says nothing about *which* key it names, every
//! digest that is signed or hashed into a chain also covers the key IDs the
//! indices resolve to (see `MasterZone::key_binding`), so swapping the map
//! under a signed zone breaks its hash and its signatures.

use crate::codec::{read_sorted_list, Codec, DecodeError, Reader};
use crate::ed25519::VerifyKey;
use crate::hash::{tag, tagged_hash, Hash32};
use ed25519_dalek::Signer as _;
use zeroize::Zeroizing;

pub use crate::types::{KeyType, SigType};

/// Ed25519 public key length.
pub const ED25519_PUBLIC_LEN: usize = 32;
/// Ed25519 signature length.
pub const ED25519_SIG_LEN: usize = 64;
/// Largest public key or signature value the format accepts (bytes); keeps
/// a hostile u16 length from meaning anything.
pub const MAX_KEY_OR_SIG_LEN: usize = 1024;
/// Keys are addressed by a u8 index.
pub const MAX_KEYS: usize = 255;

/// The SHA3-256 identifier of a public key.
pub type KeyId = Hash32;

/// One entry of the Public Key Map.
///
/// The key ID and the decompressed Ed25519 point are computed once, when
/// the key is built or decoded: every signature check and every key
/// binding would otherwise redo them (point decompression alone costs a
/// noticeable share of a verification).
#[derive(Clone, Debug)]
pub struct PublicKey {
    key_type: KeyType,
    bytes: Vec<u8>,
    id: KeyId,
    ed25519: Option<VerifyKey>,
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.key_type == other.key_type && self.bytes == other.bytes
    }
}
impl Eq for PublicKey {}

impl PublicKey {
    fn build(key_type: KeyType, bytes: Vec<u8>) -> Self {
        let id = tagged_hash(tag::KEY_ID, &[&[key_type.0], &bytes]);
        let ed25519 = if key_type == KeyType::ED25519 {
            <[u8; 32]>::try_from(bytes.as_slice())
                .ok()
                .and_then(|a| VerifyKey::from_bytes(&a))
        } else {
            None
        };
        PublicKey {
            key_type,
            bytes,
            id,
            ed25519,
        }
    }

    pub fn ed25519(vk: &ed25519_dalek::VerifyingKey) -> Self {
        Self::build(KeyType::ED25519, vk.to_bytes().to_vec())
    }

    /// An Ed25519 public key from its 32 bytes, if they are a canonical
    /// encoding of a point outside the small-order subgroup.
    pub fn ed25519_from_bytes(bytes: &[u8; 32]) -> Option<Self> {
        VerifyKey::from_bytes(bytes).map(|_| Self::build(KeyType::ED25519, bytes.to_vec()))
    }

    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// `SHA3-256(tag ‖ key_type ‖ key bytes)`.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key as the POZ Ed25519 rule uses it (SPEC §5.2).
    pub fn verify_key(&self) -> Option<&VerifyKey> {
        self.ed25519.as_ref()
    }

    /// Verifies `sig` over `digest` under this key.
    pub fn verify(&self, digest: &Hash32, sig: &Signature) -> bool {
        if sig.sig_type != SigType::ED25519 {
            return false;
        }
        let (Some(vk), Ok(bytes)) = (&self.ed25519, <[u8; 64]>::try_from(sig.data.as_slice()))
        else {
            return false;
        };
        vk.verify(&digest.0, &bytes)
    }

    /// Verifies `sig` on a zone entry of `issuer`'s `zone` with digest
    /// `entry_digest`: a plain signature or a batch signature (SPEC §8.9).
    pub fn verify_entry(
        &self,
        issuer: &Hash32,
        zone: crate::types::ZoneType,
        entry_digest: &Hash32,
        sig: &Signature,
    ) -> bool {
        match (&self.ed25519, sig.entry_message(issuer, zone, entry_digest)) {
            (Some(vk), Some((msg, s))) => vk.verify(&msg.0, &s),
            _ => false,
        }
    }
}

impl Codec for PublicKey {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.key_type.0);
        out.extend_from_slice(&(self.bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.bytes);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let at = r.offset();
        let key_type = KeyType(r.u8("public_key.key_type")?);
        if !key_type.is_known() {
            return Err(DecodeError::InvalidValue {
                field: "public_key.key_type",
                offset: at,
                value: key_type.0 as u64,
            });
        }
        let len = r.u16("public_key.length")? as usize;
        if len != ED25519_PUBLIC_LEN {
            return Err(r.invalid("public_key.length", len as u64));
        }
        let at = r.offset();
        let bytes = r.take(len, "public_key.bytes")?.to_vec();
        let k = PublicKey::build(key_type, bytes);
        // A key that is not a point on the curve can never verify anything;
        // refuse it where it stands rather than at every signature.
        if k.ed25519.is_none() {
            return Err(DecodeError::Layout {
                field: "public_key.bytes",
                offset: at,
                reason: "not a canonical Ed25519 point outside the small-order subgroup",
            });
        }
        Ok(k)
    }
}

/// Section 0x0000: the record's public keys, addressed by index.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct PublicKeyMap {
    pub keys: Vec<PublicKey>,
}

impl PublicKeyMap {
    pub fn get(&self, idx: u8) -> Option<&PublicKey> {
        self.keys.get(idx as usize)
    }

    /// The index of the key with this ID.
    pub fn index_of(&self, id: &KeyId) -> Option<u8> {
        self.keys
            .iter()
            .position(|k| &k.id() == id)
            .map(|i| i as u8)
    }

    /// Appends a key (keys are never removed or reordered: indices used by
    /// earlier revisions in the zone history must keep naming the same key).
    /// Returns the existing index if the key is already present.
    pub fn add(&mut self, key: PublicKey) -> Result<u8, crate::Error> {
        if let Some(i) = self.index_of(&key.id()) {
            return Ok(i);
        }
        if self.keys.len() >= MAX_KEYS {
            return Err(crate::Error::KeyMapFull);
        }
        self.keys.push(key);
        Ok((self.keys.len() - 1) as u8)
    }
}

impl Codec for PublicKeyMap {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.keys.len() as u8);
        for k in &self.keys {
            k.encode(out);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let count = r.u8("public_key_map.count")? as usize;
        let mut keys: Vec<PublicKey> = Vec::with_capacity(count.min(r.left()));
        for _ in 0..count {
            let at = r.offset();
            let k = PublicKey::read(r)?;
            // One key, one index: a duplicate would let two indices name the
            // same key and so count one holder twice toward a threshold.
            if keys
                .iter()
                .any(|o| o.bytes == k.bytes && o.key_type == k.key_type)
            {
                return Err(DecodeError::Layout {
                    field: "public_key_map.keys",
                    offset: at,
                    reason: "duplicate key",
                });
            }
            keys.push(k);
        }
        Ok(PublicKeyMap { keys })
    }
}

/// A signature by the key at `key_idx`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Signature {
    pub key_idx: u8,
    pub sig_type: SigType,
    pub data: Vec<u8>,
}

impl Signature {
    /// What this signature on a zone entry must verify over, and the
    /// 64-byte Ed25519 signature: the entry digest itself, or for a batch
    /// signature the batch root digest its audit path leads to. `None`
    /// when it cannot verify (malformed, or a path that leads nowhere).
    pub fn entry_message(
        &self,
        issuer: &Hash32,
        zone: crate::types::ZoneType,
        entry_digest: &Hash32,
    ) -> Option<(Hash32, [u8; 64])> {
        match self.sig_type {
            SigType::ED25519 => Some((*entry_digest, self.data.as_slice().try_into().ok()?)),
            SigType::ED25519_BATCH => {
                let p = crate::batch::BatchProof::from_bytes(&self.data).ok()?;
                Some((
                    p.signed_digest(issuer, zone, entry_digest)?,
                    p.root_signature,
                ))
            }
            _ => None,
        }
    }
}

impl Codec for Signature {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.key_idx);
        out.push(self.sig_type.0);
        out.extend_from_slice(&(self.data.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.data);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let key_idx = r.u8("signature.key_idx")?;
        let at = r.offset();
        let sig_type = SigType(r.u8("signature.sig_type")?);
        if !sig_type.is_known() {
            return Err(DecodeError::InvalidValue {
                field: "signature.sig_type",
                offset: at,
                value: sig_type.0 as u64,
            });
        }
        let len = r.u16("signature.length")? as usize;
        if sig_type == SigType::ED25519 && len != ED25519_SIG_LEN {
            return Err(r.invalid("signature.length", len as u64));
        }
        let at = r.offset();
        let data = r.take(len, "signature.data")?.to_vec();
        if sig_type == SigType::ED25519_BATCH {
            crate::batch::BatchProof::from_bytes(&data).map_err(|e| DecodeError::Layout {
                field: "signature.data",
                offset: at,
                reason: match e {
                    DecodeError::Truncated { .. } => "batch proof truncated",
                    DecodeError::InvalidValue {
                        field: "batch_proof.path_len",
                        ..
                    } => "batch proof path_len is not the audit path length for its leaf_index and tree_size",
                    DecodeError::InvalidValue {
                        field: "batch_proof.tree_size",
                        ..
                    } => "batch proof tree_size is 0",
                    DecodeError::InvalidValue {
                        field: "batch_proof.leaf_index",
                        ..
                    } => "batch proof leaf_index is not below tree_size",
                    _ => "not a well-formed batch proof",
                },
            })?;
        }
        Ok(Signature {
            key_idx,
            sig_type,
            data,
        })
    }
}

/// Reads a u8-counted signature list, strictly ascending by key index (one
/// signature per key, one canonical order).
pub fn read_signatures(
    r: &mut Reader<'_>,
    field: &'static str,
) -> Result<Vec<Signature>, DecodeError> {
    let n = r.u8(field)? as usize;
    read_sorted_list(r, n, field, |s: &Signature| s.key_idx)
}

pub fn write_signatures(out: &mut Vec<u8>, sigs: &[Signature]) {
    out.push(sigs.len() as u8);
    for s in sigs {
        s.encode(out);
    }
}

/// Inserts or replaces the signature of `sig.key_idx`, keeping the list in
/// canonical order.
pub fn insert_signature(sigs: &mut Vec<Signature>, sig: Signature) {
    match sigs.binary_search_by_key(&sig.key_idx, |s| s.key_idx) {
        Ok(i) => sigs[i] = sig,
        Err(i) => sigs.insert(i, sig),
    }
}

/// A private signing key held in software (key files, the Private Key Map,
/// the embedded default). HSM-held keys live behind the signer service.
pub struct SigningKey {
    inner: ed25519_dalek::SigningKey,
}

impl SigningKey {
    pub fn generate() -> Self {
        SigningKey {
            inner: ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng),
        }
    }

    pub fn from_seed(seed: &[u8; 32]) -> Self {
        SigningKey {
            inner: ed25519_dalek::SigningKey::from_bytes(seed),
        }
    }

    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.inner.to_bytes())
    }

    pub fn public(&self) -> PublicKey {
        PublicKey::ed25519(&self.inner.verifying_key())
    }

    pub fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        self.inner.verifying_key()
    }

    /// PureEd25519 (RFC 8032) over a whole message: only for formats that
    /// sign their own bytes, X.509 for POZ-as-CA (SPEC §21, RFC 8410).
    /// POZ's own signatures are over tagged digests ([`Self::sign`]).
    pub fn sign_message(&self, message: &[u8]) -> [u8; 64] {
        self.inner.sign(message).to_bytes()
    }

    /// Signs a tagged digest, naming the signer by its index in the record.
    pub fn sign(&self, key_idx: u8, digest: &Hash32) -> Signature {
        Signature {
            key_idx,
            sig_type: SigType::ED25519,
            data: self.inner.sign(&digest.0).to_bytes().to_vec(),
        }
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.public().id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_tamper() {
        let k = SigningKey::from_seed(&[7u8; 32]);
        let d = tagged_hash("t", &[b"m"]);
        let s = k.sign(3, &d);
        assert!(k.public().verify(&d, &s));
        let mut bad = s.clone();
        bad.data[10] ^= 1;
        assert!(!k.public().verify(&d, &bad));
        assert!(!k.public().verify(&tagged_hash("t", &[b"n"]), &s));
    }

    #[test]
    fn key_map_refuses_duplicates() {
        let k = SigningKey::from_seed(&[1u8; 32]).public();
        let mut m = PublicKeyMap::default();
        m.keys.push(k.clone());
        m.keys.push(k);
        let e = PublicKeyMap::from_bytes(&m.to_bytes()).unwrap_err();
        assert!(matches!(
            e,
            DecodeError::Layout {
                reason: "duplicate key",
                ..
            }
        ));
    }

    #[test]
    fn wire_enum_unknown_prints_hex() {
        assert_eq!(format!("{:?}", KeyType(0x7f)), "KeyType(0x7f)");
        assert_eq!(format!("{}", KeyType::ED25519), "ed25519");
    }
}
