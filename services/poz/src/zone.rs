//! Sub-zones: the authority section (0x00X0) and the zone section (0x00X1).
//!
//! Every zone entry is signed on its own by the zone's delegation keys, so a
//! provider's Identity Zone can grow to millions of entries without any
//! entry's signature covering another: adding one binding never re-signs or
//! re-sends the zone. The authority section is the zone's small signed
//! header (namespace, service reference, serial).

use crate::codec::{read_str8, valid_str8, write_str8, Codec, DecodeError, Reader};
use crate::hash::{tag, Hash32, TaggedHasher};
use crate::keys::{insert_signature, read_signatures, write_signatures, Signature};

pub use crate::types::{EntryKind, ZoneType};

/// The signed header of a sub-zone.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AuthoritySection {
    pub zone_type: ZoneType,
    pub serial: u32,
    pub timestamp: u64,
    /// The namespace the zone speaks for (for Identity: the provider's
    /// domain in which it issues handles). May be empty.
    pub namespace: String,
    /// A service in the Service Zone this zone relies on (Auth: the
    /// revocation service; Email: the default MAIL service), or zero.
    pub service_ref: Hash32,
    pub signatures: Vec<Signature>,
}

impl AuthoritySection {
    pub fn new(
        zone_type: ZoneType,
        serial: u32,
        timestamp: u64,
        namespace: &str,
    ) -> Result<Self, crate::Error> {
        if !valid_str8(namespace) {
            return Err(crate::Error::InvalidText { field: "namespace" });
        }
        Ok(AuthoritySection {
            zone_type,
            serial,
            timestamp,
            namespace: namespace.to_owned(),
            service_ref: Hash32::ZERO,
            signatures: Vec::new(),
        })
    }

    fn encode_unsigned(&self, out: &mut Vec<u8>) {
        out.push(self.zone_type.0);
        out.extend_from_slice(&self.serial.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        write_str8(out, &self.namespace);
        self.service_ref.encode(out);
    }

    /// What the zone's delegation keys sign: the header bound to the record.
    pub fn signable_digest(&self, record_id: &Hash32) -> Hash32 {
        let mut body = Vec::with_capacity(80 + self.namespace.len());
        self.encode_unsigned(&mut body);
        let mut h = TaggedHasher::new(tag::AUTHORITY_SIGNABLE);
        h.update(&record_id.0).update(&body);
        h.finish()
    }

    pub fn add_signature(&mut self, sig: Signature) {
        insert_signature(&mut self.signatures, sig)
    }
}

impl Codec for AuthoritySection {
    fn encode(&self, out: &mut Vec<u8>) {
        self.encode_unsigned(out);
        write_signatures(out, &self.signatures);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let at = r.offset();
        let zone_type = ZoneType(r.u8("authority.zone_type")?);
        if !zone_type.is_known() {
            return Err(DecodeError::InvalidValue {
                field: "authority.zone_type",
                offset: at,
                value: zone_type.0 as u64,
            });
        }
        let serial = r.u32("authority.serial")?;
        let timestamp = r.u64("authority.timestamp")?;
        let namespace = read_str8(r, "authority.namespace")?;
        let service_ref = Hash32::read(r)?;
        let signatures = read_signatures(r, "authority.signatures")?;
        Ok(AuthoritySection {
            zone_type,
            serial,
            timestamp,
            namespace,
            service_ref,
            signatures,
        })
    }
}

/// Largest body of one zone entry.
pub const MAX_ENTRY_BODY: usize = 64 * 1024;

/// One independently signed zone entry: a typed body and its signatures.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SignedEntry {
    pub kind: EntryKind,
    /// The canonical encoding of the typed body (see `entries`).
    pub body: Vec<u8>,
    pub signatures: Vec<Signature>,
}

impl SignedEntry {
    pub fn new(kind: EntryKind, body: Vec<u8>) -> Self {
        SignedEntry {
            kind,
            body,
            signatures: Vec::new(),
        }
    }

    /// The entry's identity and what its signers sign (SPEC §8.2, §5.3):
    /// `H("POZ-v0 zone-entry", issuer ‖ zone_type ‖ kind ‖ u32 len ‖ body ‖ K)`
    /// where `K` is the 32-byte key ID of every key the body names by index
    /// (`keys`, from [`KeyBinding::resolve`]). The issuer is the record whose
    /// delegation keys sign (for a binding, its `issuer`).
    pub fn digest(&self, issuer: &Hash32, zone: ZoneType, keys: &KeyBinding) -> Hash32 {
        let mut h = TaggedHasher::new(tag::ENTRY_ID);
        h.update(&issuer.0)
            .update(&[zone.0, self.kind.0])
            .update(&(self.body.len() as u32).to_be_bytes())
            .update(&self.body);
        for id in &keys.0 {
            h.update(&id.0);
        }
        h.finish()
    }

    /// The digest of an Identity Zone entry (a binding or a revocation).
    /// Neither body names a key by index, so `K` is empty and the digest
    /// needs no Public Key Map: this is what a binding's holder, a store
    /// or a gateway computes from the entry alone.
    pub fn identity_digest(&self, issuer: &Hash32) -> Hash32 {
        self.digest(issuer, ZoneType::IDENTITY, &KeyBinding::NONE)
    }

    /// The digest of this entry as it stands in a record whose Public Key
    /// Map is `keys`: decodes the body (any zone), resolves the indices it
    /// names and binds their key IDs (SPEC §5.3).
    ///
    /// Errors: [`EntryDigestError::Body`] when the body does not decode
    /// as `zone` and the entry's kind say; [`EntryDigestError::KeyIndex`]
    /// when a named index is not in `keys`.
    pub fn digest_in(
        &self,
        issuer: &Hash32,
        zone: ZoneType,
        keys: &crate::keys::PublicKeyMap,
    ) -> Result<Hash32, EntryDigestError> {
        let body = crate::entries::EntryBody::decode(zone, self.kind, &self.body)?;
        let binding = KeyBinding::resolve(&body, keys)?;
        Ok(self.digest(issuer, zone, &binding))
    }

    pub fn add_signature(&mut self, sig: Signature) {
        insert_signature(&mut self.signatures, sig)
    }

    /// Canonical order of entries in a zone section.
    fn order_key(&self) -> (u8, &[u8]) {
        (self.kind.0, &self.body)
    }
}

impl Codec for SignedEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.kind.0);
        out.extend_from_slice(&(self.body.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.body);
        write_signatures(out, &self.signatures);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let at = r.offset();
        let kind = EntryKind(r.u8("entry.kind")?);
        if !kind.is_known() {
            return Err(DecodeError::InvalidValue {
                field: "entry.kind",
                offset: at,
                value: kind.0 as u64,
            });
        }
        let len = r.u32("entry.body_length")? as usize;
        if len > MAX_ENTRY_BODY {
            return Err(DecodeError::TooMany {
                field: "entry.body_length",
                offset: r.offset() - 4,
                count: len as u64,
                max: MAX_ENTRY_BODY as u64,
            });
        }
        let body = r.take(len, "entry.body")?.to_vec();
        let signatures = read_signatures(r, "entry.signatures")?;
        Ok(SignedEntry {
            kind,
            body,
            signatures,
        })
    }
}

/// The key IDs an entry body names by index, in field order (SPEC §5.3):
/// what an entry's digest binds so that swapping a key in the Public Key
/// Map under a signed entry breaks its signatures.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct KeyBinding(pub Vec<crate::keys::KeyId>);

impl KeyBinding {
    /// A body that names no key (bindings, revocations, inboxes, feeds,
    /// revocation-service references, hosts without a CA key).
    pub const NONE: KeyBinding = KeyBinding(Vec::new());

    /// Resolves every index `body` names ([`EntryBody::key_refs`]) in
    /// `keys`.
    ///
    /// Errors: [`KeyIndexError`] naming the first index not in the map.
    pub fn resolve(
        body: &crate::entries::EntryBody,
        keys: &crate::keys::PublicKeyMap,
    ) -> Result<KeyBinding, KeyIndexError> {
        body.key_refs()
            .into_iter()
            .map(|idx| {
                keys.get(idx)
                    .map(|k| k.id())
                    .ok_or(KeyIndexError { key_idx: idx })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(KeyBinding)
    }
}

/// An entry names a key index that is not in the record's Public Key Map
/// (rule `key-index`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
#[error("key index {key_idx} is not in the Public Key Map")]
pub struct KeyIndexError {
    pub key_idx: u8,
}

/// Why an entry's digest cannot be computed in a record.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum EntryDigestError {
    #[error(transparent)]
    Body(#[from] DecodeError),
    #[error(transparent)]
    KeyIndex(#[from] KeyIndexError),
}

/// A zone section: entries in canonical order (by kind, then body bytes).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct ZoneSection {
    pub entries: Vec<SignedEntry>,
}

impl ZoneSection {
    /// Inserts an entry in canonical order, replacing one with the same
    /// kind and body (that is, the same entry with other signatures).
    pub fn upsert(&mut self, e: SignedEntry) {
        match self
            .entries
            .binary_search_by(|x| x.order_key().cmp(&e.order_key()))
        {
            Ok(i) => self.entries[i] = e,
            Err(i) => self.entries.insert(i, e),
        }
    }
}

impl Codec for ZoneSection {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for e in &self.entries {
            e.encode(out);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let count = r.u32("zone.entry_count")? as usize;
        // The smallest entry is 6 bytes (kind, length, no signatures, empty
        // body); a count beyond that is refused before allocation.
        if count > r.left() / 6 {
            return Err(DecodeError::TooMany {
                field: "zone.entry_count",
                offset: r.offset() - 4,
                count: count as u64,
                max: (r.left() / 6) as u64,
            });
        }
        let mut entries: Vec<SignedEntry> = Vec::with_capacity(count);
        for _ in 0..count {
            let at = r.offset();
            let e = SignedEntry::read(r)?;
            if let Some(prev) = entries.last() {
                if prev.order_key() >= e.order_key() {
                    return Err(DecodeError::NotCanonical {
                        field: "zone.entries",
                        offset: at,
                    });
                }
            }
            entries.push(e);
        }
        Ok(ZoneSection { entries })
    }
}

/// The leaf index of an entry's first batch signature (`u32::MAX` when it
/// has none): the order of a batch's entries.
pub fn leaf_index_of(entry: &SignedEntry) -> u32 {
    entry
        .signatures
        .iter()
        .filter(|s| s.sig_type == crate::types::SigType::ED25519_BATCH)
        .find_map(|s| crate::batch::BatchProof::from_bytes(&s.data).ok())
        .map_or(u32::MAX, |p| p.leaf_index)
}

/// Why a listed batch does not check out.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BatchAuditError {
    #[error("entry {position} carries no batch signature proving to this root")]
    NotInBatch { position: usize },
    #[error("the batch claims {claimed} entries but {listed} are listed")]
    Incomplete { claimed: u32, listed: usize },
    #[error("leaf index {index} is listed at position {position}")]
    OutOfOrder { position: usize, index: u32 },
}

/// An auditor's check of a listed batch, for the issuer's `zone`: every
/// entry proves to `root_digest`, the leaves are exactly 0..n in order,
/// and n is the size the root commits to. (Each root signature is then
/// checked with the issuer's keys, as for any entry.) `keys` is the
/// issuer's Public Key Map, which entries naming keys by index bind into
/// their digests (SPEC §5.3). Returns n; an entry whose body does not
/// decode or names a key not in `keys` is `NotInBatch`.
pub fn audit_batch(
    issuer: &Hash32,
    zone: ZoneType,
    keys: &crate::keys::PublicKeyMap,
    root_digest: &Hash32,
    entries: &[SignedEntry],
) -> Result<u32, BatchAuditError> {
    let mut size = None;
    for (position, e) in entries.iter().enumerate() {
        let digest = e
            .digest_in(issuer, zone, keys)
            .map_err(|_| BatchAuditError::NotInBatch { position })?;
        let proof = e
            .signatures
            .iter()
            .filter(|s| s.sig_type == crate::types::SigType::ED25519_BATCH)
            .filter_map(|s| crate::batch::BatchProof::from_bytes(&s.data).ok())
            .find(|p| p.signed_digest(issuer, zone, &digest).as_ref() == Some(root_digest))
            .ok_or(BatchAuditError::NotInBatch { position })?;
        if proof.leaf_index as usize != position {
            return Err(BatchAuditError::OutOfOrder {
                position,
                index: proof.leaf_index,
            });
        }
        size = Some(proof.tree_size);
    }
    let claimed = size.unwrap_or(0);
    if claimed as usize != entries.len() {
        return Err(BatchAuditError::Incomplete {
            claimed,
            listed: entries.len(),
        });
    }
    Ok(claimed)
}
