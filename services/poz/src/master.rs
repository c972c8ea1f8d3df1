//! The Master Zone (section 0x0001): the root of authority of a record.

use crate::codec::{read_sorted_list, Codec, DecodeError, Reader};
use crate::hash::{tag, Hash32, TaggedHasher};
use crate::keys::{read_signatures, write_signatures, PublicKeyMap, Signature};
use crate::zone::ZoneType;
use crate::Error;

/// The largest value a key can carry; a threshold is met at 100.
pub const THRESHOLD: u32 = 100;

/// A key that controls the record itself.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MasterKey {
    pub key_idx: u8,
    /// The survivorship group the key belongs to.
    pub group: u8,
    /// 1..=100; a group authorizes when its signing members sum to >= 100.
    pub value: u8,
}

impl Codec for MasterKey {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.key_idx, self.group, self.value]);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let key_idx = r.u8("master_key.key_idx")?;
        let group = r.u8("master_key.group")?;
        let value = r.u8("master_key.value")?;
        if value == 0 || value as u32 > THRESHOLD {
            return Err(DecodeError::InvalidValue {
                field: "master_key.value",
                offset: r.offset() - 1,
                value: value as u64,
            });
        }
        Ok(MasterKey {
            key_idx,
            group,
            value,
        })
    }
}

/// A key delegated authority over one sub-zone, with separate values for
/// adding/modifying entries (grant) and revoking/removing them (deny).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DelegationKey {
    pub key_idx: u8,
    pub group: u8,
    pub grant: u8,
    pub deny: u8,
}

impl Codec for DelegationKey {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.key_idx, self.group, self.grant, self.deny]);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let key_idx = r.u8("delegation_key.key_idx")?;
        let group = r.u8("delegation_key.group")?;
        let grant = r.u8("delegation_key.grant")?;
        let deny = r.u8("delegation_key.deny")?;
        let at = r.offset() - 2;
        if grant as u32 > THRESHOLD || deny as u32 > THRESHOLD || (grant == 0 && deny == 0) {
            return Err(DecodeError::InvalidValue {
                field: "delegation_key.grant_deny",
                offset: at,
                value: ((grant as u64) << 8) | deny as u64,
            });
        }
        Ok(DelegationKey {
            key_idx,
            group,
            grant,
            deny,
        })
    }
}

/// The keys the master zone delegates one sub-zone to.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Delegation {
    pub zone_type: ZoneType,
    pub keys: Vec<DelegationKey>,
}

impl Codec for Delegation {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.zone_type.0);
        out.push(self.keys.len() as u8);
        for k in &self.keys {
            k.encode(out);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let at = r.offset();
        let zone_type = ZoneType(r.u8("delegation.zone_type")?);
        if !zone_type.is_known() {
            return Err(DecodeError::InvalidValue {
                field: "delegation.zone_type",
                offset: at,
                value: zone_type.0 as u64,
            });
        }
        let n = r.u8("delegation.key_count")? as usize;
        if n == 0 {
            return Err(r.layout("delegation.keys", "a delegation needs at least one key"));
        }
        let keys = read_sorted_list(r, n, "delegation.keys", |k: &DelegationKey| k.key_idx)?;
        Ok(Delegation { zone_type, keys })
    }
}

/// Which bytes of a master zone an encoding covers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scope {
    /// Everything: the stored form.
    Stored,
    /// Everything but `current_master_hash` (hashed into it).
    FullHash,
    /// Everything but `current_master_hash` and `signatures` (what signers sign).
    Signable,
}

/// One revision of the master zone.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MasterZone {
    pub original_master_hash: Hash32,
    pub original_timestamp: u64,
    pub current_master_hash: Hash32,
    pub serial: u32,
    /// Milliseconds since the Unix epoch, strictly increasing along the chain.
    pub timestamp: u64,
    pub master_keys: Vec<MasterKey>,
    pub delegations: Vec<Delegation>,
    pub signatures: Vec<Signature>,
    pub previous_master_hash: Hash32,
}

impl MasterZone {
    /// A genesis revision (serial 1), unsigned and not yet finalized.
    pub fn genesis(timestamp: u64, master_keys: Vec<MasterKey>) -> Self {
        let mut mz = MasterZone {
            original_master_hash: Hash32::ZERO,
            original_timestamp: timestamp,
            current_master_hash: Hash32::ZERO,
            serial: 1,
            timestamp,
            master_keys,
            delegations: Vec::new(),
            signatures: Vec::new(),
            previous_master_hash: Hash32::ZERO,
        };
        mz.normalize();
        mz
    }

    pub fn is_genesis(&self) -> bool {
        self.serial == 1
    }

    /// Whether `current_master_hash` has been computed (a draft has not).
    pub fn is_finalized(&self) -> bool {
        !self.current_master_hash.is_zero()
    }

    /// The record's permanent identifier.
    pub fn record_id(&self) -> Hash32 {
        if self.is_genesis() {
            self.current_master_hash
        } else {
            self.original_master_hash
        }
    }

    /// Starts the next revision: serial + 1, linked to this one, signatures
    /// cleared, not finalized. The caller edits keys and delegations.
    pub fn draft_next(&self, timestamp: u64) -> MasterZone {
        MasterZone {
            original_master_hash: self.record_id(),
            original_timestamp: self.original_timestamp,
            current_master_hash: Hash32::ZERO,
            serial: self.serial.saturating_add(1),
            timestamp,
            master_keys: self.master_keys.clone(),
            delegations: self.delegations.clone(),
            signatures: Vec::new(),
            previous_master_hash: self.current_master_hash,
        }
    }

    /// Sorts lists into canonical order (builders may push in any order).
    pub fn normalize(&mut self) {
        self.master_keys.sort_by_key(|k| k.key_idx);
        self.delegations.sort_by_key(|d| d.zone_type);
        for d in &mut self.delegations {
            d.keys.sort_by_key(|k| k.key_idx);
        }
        self.signatures.sort_by_key(|s| s.key_idx);
    }

    pub fn delegation(&self, zone: ZoneType) -> Option<&Delegation> {
        self.delegations.iter().find(|d| d.zone_type == zone)
    }

    fn encode_scoped(&self, out: &mut Vec<u8>, scope: Scope) {
        // At genesis the record ID is the hash being computed, so both
        // scopes see it as zero; it is filled in afterwards.
        if scope != Scope::Stored && self.is_genesis() {
            out.extend_from_slice(&[0u8; 32]);
        } else {
            self.original_master_hash.encode(out);
        }
        out.extend_from_slice(&self.original_timestamp.to_be_bytes());
        if scope == Scope::Stored {
            self.current_master_hash.encode(out);
        }
        out.extend_from_slice(&self.serial.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.push(self.master_keys.len() as u8);
        for k in &self.master_keys {
            k.encode(out);
        }
        out.push(self.delegations.len() as u8);
        for d in &self.delegations {
            d.encode(out);
        }
        if scope != Scope::Signable {
            write_signatures(out, &self.signatures);
        }
        self.previous_master_hash.encode(out);
    }

    /// The key IDs every index in this zone resolves to, in field order:
    /// master keys, then each delegation's keys. Hashing these with the
    /// zone binds its signatures and its hash to keys, not to indices.
    pub fn key_binding(&self, keys: &PublicKeyMap) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(32 * (self.master_keys.len() + 4));
        let idxs = self.master_keys.iter().map(|k| k.key_idx).chain(
            self.delegations
                .iter()
                .flat_map(|d| d.keys.iter().map(|k| k.key_idx)),
        );
        for idx in idxs {
            let k = keys
                .get(idx)
                .ok_or(Error::KeyIndexOutOfRange { key_idx: idx })?;
            out.extend_from_slice(&k.id().0);
        }
        Ok(out)
    }

    /// The digest every master-zone signer signs.
    pub fn signable_digest(&self, keys: &PublicKeyMap) -> Result<Hash32, Error> {
        Ok(self.scoped_digest(Scope::Signable, &self.key_binding(keys)?))
    }

    /// The value `current_master_hash` must hold.
    pub fn compute_hash(&self, keys: &PublicKeyMap) -> Result<Hash32, Error> {
        Ok(self.scoped_digest(Scope::FullHash, &self.key_binding(keys)?))
    }

    /// Both digests at once, resolving the key binding only once (the
    /// verifier needs both for every revision it walks).
    pub fn digests(&self, keys: &PublicKeyMap) -> Result<(Hash32, Hash32), Error> {
        let kb = self.key_binding(keys)?;
        Ok((
            self.scoped_digest(Scope::Signable, &kb),
            self.scoped_digest(Scope::FullHash, &kb),
        ))
    }

    fn scoped_digest(&self, scope: Scope, key_binding: &[u8]) -> Hash32 {
        let mut body = Vec::with_capacity(512);
        self.encode_scoped(&mut body, scope);
        let tag = if scope == Scope::Signable {
            tag::MASTER_SIGNABLE
        } else {
            tag::MASTER_HASH
        };
        let mut h = TaggedHasher::new(tag);
        h.update(&body).update(key_binding);
        h.finish()
    }

    /// Computes and stores `current_master_hash` (and, at genesis, the
    /// record ID). Call once the signatures are in.
    pub fn finalize(&mut self, keys: &PublicKeyMap) -> Result<Hash32, Error> {
        self.normalize();
        let h = self.compute_hash(keys)?;
        self.current_master_hash = h;
        if self.is_genesis() {
            self.original_master_hash = h;
        }
        Ok(h)
    }
}

/// Most revisions have a handful of keys; the u8 counts cap them at 255.
pub const MAX_MASTER_KEYS: usize = 255;

impl Codec for MasterZone {
    fn encode(&self, out: &mut Vec<u8>) {
        self.encode_scoped(out, Scope::Stored)
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let original_master_hash = Hash32::read(r)?;
        let original_timestamp = r.u64("master_zone.original_timestamp")?;
        let current_master_hash = Hash32::read(r)?;
        let serial = r.u32("master_zone.serial")?;
        if serial == 0 {
            return Err(DecodeError::InvalidValue {
                field: "master_zone.serial",
                offset: r.offset() - 4,
                value: 0,
            });
        }
        let timestamp = r.u64("master_zone.timestamp")?;
        let n = r.u8("master_zone.master_key_count")? as usize;
        if n == 0 {
            return Err(r.layout(
                "master_zone.master_keys",
                "a master zone needs at least one key",
            ));
        }
        let master_keys =
            read_sorted_list(r, n, "master_zone.master_keys", |k: &MasterKey| k.key_idx)?;
        let n = r.u8("master_zone.delegation_count")? as usize;
        let delegations = read_sorted_list(r, n, "master_zone.delegations", |d: &Delegation| {
            d.zone_type
        })?;
        let signatures = read_signatures(r, "master_zone.signatures")?;
        let previous_master_hash = Hash32::read(r)?;
        Ok(MasterZone {
            original_master_hash,
            original_timestamp,
            current_master_hash,
            serial,
            timestamp,
            master_keys,
            delegations,
            signatures,
            previous_master_hash,
        })
    }
}
