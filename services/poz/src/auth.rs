//! Login with the Auth Zone (SPEC §20): a relying party sends a
//! [`Challenge`]; the holder's keys of one trust group sign its login
//! digest; [`verify`] accepts the [`Proof`] when the signers' values sum
//! to at least 100 in that group and none of them is revoked.
//!
//! - [`Challenge`]: the relying party's name or origin, a random nonce and
//!   a time window of at most [`MAX_WINDOW_MS`].
//! - [`login_digest`]: `H("POZ-v0 auth-login", record_id ‖ u8 group_id ‖
//!   challenge)`, what each key signs.
//! - [`Proof`]: the record ID, the group, and the signatures by key index.
//! - [`verify`]: every check, each refusal a typed [`AuthError`].
//!
//! This crate is sans-I/O, so two things stay with the caller: a relying
//! party must accept each nonce once (remember the nonces it issued until
//! their window closes), and when the record's Auth Zone names a
//! revocation service ([`Accepted::revocation_services`]), it must ask
//! that service about the signing keys before it lets the holder in: the
//! record can only say what was revoked when it was published.

use crate::codec::{read_str8, valid_str8, write_str8, Codec, DecodeError, Reader};
use crate::entries::{AuthEntry, EntryBody, ServiceEntry, ServiceType};
use crate::hash::{tag, tagged_hash, Hash32};
use crate::keys::{read_signatures, write_signatures, KeyId, SigType, Signature, SigningKey};
use crate::record::Record;
use crate::zone::{EntryKind, KeyBinding, ZoneType};

/// The only challenge and proof version.
pub const VERSION: u8 = 0x01;
/// The longest window a challenge may give: 10 minutes, in ms. A relying
/// party must remember every nonce it issued until the window closes, so
/// the window bounds what it stores and how long a proof can be replayed.
pub const MAX_WINDOW_MS: u64 = 10 * 60 * 1000;
/// Nonce length in bytes.
pub const NONCE_LEN: usize = 32;

/// What a relying party asks the holder to sign.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Challenge {
    /// The relying party's name or origin, e.g. `https://shop.example`:
    /// the holder's tool shows it before signing, and the signature binds
    /// it, so a proof made for one relying party is refused by another.
    pub relying_party: String,
    /// Random bytes chosen by the relying party, accepted once.
    pub nonce: [u8; NONCE_LEN],
    /// The window in ms since the epoch: valid while
    /// `not_before <= now < not_after`.
    pub not_before: u64,
    pub not_after: u64,
}

impl Challenge {
    /// A challenge, checked as the decoder checks one.
    pub fn new(
        relying_party: &str,
        nonce: [u8; NONCE_LEN],
        not_before: u64,
        not_after: u64,
    ) -> Result<Challenge, AuthError> {
        let c = Challenge {
            relying_party: relying_party.to_owned(),
            nonce,
            not_before,
            not_after,
        };
        if relying_party.is_empty() || !valid_str8(relying_party) {
            return Err(AuthError::InvalidChallenge(
                "the relying party is 1 to 255 bytes of UTF-8 without control characters",
            ));
        }
        if not_after <= not_before || not_after - not_before > MAX_WINDOW_MS {
            return Err(AuthError::InvalidChallenge(
                "the window must be non-empty and at most 10 minutes",
            ));
        }
        Ok(c)
    }

    /// Whether `now_ms` is inside the window.
    pub fn is_open_at(&self, now_ms: u64) -> bool {
        self.not_before <= now_ms && now_ms < self.not_after
    }
}

impl Codec for Challenge {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        write_str8(out, &self.relying_party);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.not_before.to_be_bytes());
        out.extend_from_slice(&self.not_after.to_be_bytes());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let at = r.offset();
        let v = r.u8("auth_challenge.version")?;
        if v != VERSION {
            return Err(DecodeError::InvalidValue {
                field: "auth_challenge.version",
                offset: at,
                value: v.into(),
            });
        }
        let at = r.offset();
        let relying_party = read_str8(r, "auth_challenge.relying_party")?;
        if relying_party.is_empty() {
            return Err(DecodeError::Layout {
                field: "auth_challenge.relying_party",
                offset: at,
                reason: "empty",
            });
        }
        let nonce = r.array::<NONCE_LEN>("auth_challenge.nonce")?;
        let not_before = r.u64("auth_challenge.not_before")?;
        let at = r.offset();
        let not_after = r.u64("auth_challenge.not_after")?;
        if not_after <= not_before || not_after - not_before > MAX_WINDOW_MS {
            return Err(DecodeError::InvalidValue {
                field: "auth_challenge.not_after",
                offset: at,
                value: not_after,
            });
        }
        Ok(Challenge {
            relying_party,
            nonce,
            not_before,
            not_after,
        })
    }
}

/// What each key of the group signs: `H("POZ-v0 auth-login", record_id ‖
/// u8 group_id ‖ challenge encoding)`. Binding the record and the group
/// means a signature made for one record or group counts for no other.
pub fn login_digest(record_id: &Hash32, group_id: u8, challenge: &Challenge) -> Hash32 {
    tagged_hash(
        tag::AUTH_LOGIN,
        &[&record_id.0, &[group_id], &challenge.to_bytes()],
    )
}

/// The holder's answer: which record and group, and the signatures of the
/// group's keys over the login digest, ascending by key index (one per
/// key, Ed25519 only).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Proof {
    pub record_id: Hash32,
    pub group_id: u8,
    pub signatures: Vec<Signature>,
}

impl Codec for Proof {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        self.record_id.encode(out);
        out.push(self.group_id);
        write_signatures(out, &self.signatures);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let at = r.offset();
        let v = r.u8("auth_proof.version")?;
        if v != VERSION {
            return Err(DecodeError::InvalidValue {
                field: "auth_proof.version",
                offset: at,
                value: v.into(),
            });
        }
        let record_id = Hash32::read(r)?;
        let group_id = r.u8("auth_proof.group_id")?;
        let at = r.offset();
        // Strictly ascending by key index: a key signs once, so no key can
        // be counted twice.
        let signatures = read_signatures(r, "auth_proof.signatures")?;
        if signatures.is_empty() {
            return Err(DecodeError::InvalidValue {
                field: "auth_proof.signatures",
                offset: at,
                value: 0,
            });
        }
        if signatures.iter().any(|s| s.sig_type != SigType::ED25519) {
            return Err(DecodeError::Layout {
                field: "auth_proof.signatures",
                offset: at,
                reason: "only Ed25519 signatures (type 0x01) sign a login",
            });
        }
        Ok(Proof {
            record_id,
            group_id,
            signatures,
        })
    }
}

/// A signing key of an accepted login.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Signer {
    pub key_idx: u8,
    pub key_id: KeyId,
    pub value: u8,
}

/// An accepted login.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Accepted {
    pub record_id: Hash32,
    pub group_id: u8,
    pub group_name: String,
    /// Ascending by key index.
    pub signers: Vec<Signer>,
    /// The signers' values; at least 100.
    pub sum: u32,
    /// The revocation services the record's Auth Zone names (its
    /// revocation-service entries, then its authority's `service_ref` when
    /// that is a REVOCATION service), each with its hash. **Not empty
    /// means the caller must ask each about the signers' keys before
    /// letting the holder in**: this crate does no I/O.
    pub revocation_services: Vec<(Hash32, ServiceEntry)>,
}

impl Accepted {
    /// Whether the caller still has to consult a revocation service.
    pub fn needs_revocation_check(&self) -> bool {
        !self.revocation_services.is_empty()
    }
}

/// Why a login is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The challenge or proof bytes do not decode (strictly: lengths,
    /// counts, order, trailing bytes).
    #[error("decode: {0}")]
    Decode(DecodeError),
    #[error("invalid challenge: {0}")]
    InvalidChallenge(&'static str),
    #[error("the record does not verify: {0}")]
    RecordInvalid(String),
    #[error("the record's chain cannot be walked from genesis (no Zone History): its record ID is unproven")]
    RecordUnproven,
    #[error("the proof is for record {proof}, not {record}")]
    WrongRecord { proof: Hash32, record: Hash32 },
    #[error("the challenge is not valid before {not_before} (now {now_ms})")]
    ChallengeNotYetValid { not_before: u64, now_ms: u64 },
    #[error("the challenge expired at {not_after} (now {now_ms})")]
    ChallengeExpired { not_after: u64, now_ms: u64 },
    #[error("the record's Auth Zone has no trust group {group_id}")]
    NoSuchGroup { group_id: u8 },
    #[error("trust group {group_id} is revoked in the record's Auth Zone")]
    GroupRevoked { group_id: u8 },
    #[error("the record's Auth Zone has {count} live trust groups with id {group_id}")]
    AmbiguousGroup { group_id: u8, count: usize },
    #[error("key {key_idx} is not a member of trust group {group_id}")]
    NotMember { key_idx: u8, group_id: u8 },
    #[error("key {key_idx} ({key_id}) is revoked in the record's Auth Zone")]
    KeyRevoked { key_idx: u8, key_id: KeyId },
    #[error("the signature of key {key_idx} does not verify over the login digest")]
    BadSignature { key_idx: u8 },
    #[error("trust group {group_id}: the signers' values sum to {sum} of 100")]
    BelowThreshold { group_id: u8, sum: u32 },
    #[error("signing key {key_id} is not a member of trust group {group_id}")]
    SignerNotMember { key_id: KeyId, group_id: u8 },
}

impl From<DecodeError> for AuthError {
    fn from(e: DecodeError) -> Self {
        AuthError::Decode(e)
    }
}

impl AuthError {
    /// A stable short code for each refusal (the vectors' `refused`).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Decode(_) => "decode",
            AuthError::InvalidChallenge(_) => "invalid-challenge",
            AuthError::RecordInvalid(_) => "record-invalid",
            AuthError::RecordUnproven => "record-unproven",
            AuthError::WrongRecord { .. } => "wrong-record",
            AuthError::ChallengeNotYetValid { .. } => "challenge-not-yet-valid",
            AuthError::ChallengeExpired { .. } => "challenge-expired",
            AuthError::NoSuchGroup { .. } => "no-such-group",
            AuthError::GroupRevoked { .. } => "group-revoked",
            AuthError::AmbiguousGroup { .. } => "ambiguous-group",
            AuthError::NotMember { .. } | AuthError::SignerNotMember { .. } => "not-member",
            AuthError::KeyRevoked { .. } => "key-revoked",
            AuthError::BadSignature { .. } => "bad-signature",
            AuthError::BelowThreshold { .. } => "below-threshold",
        }
    }
}

/// A trust group as the verified record states it.
struct Group {
    name: String,
    members: Vec<crate::entries::TrustMember>,
}

/// What the Auth Zone of a verified record says: the live trust groups
/// with `group_id`, the revoked targets, the revocation services.
struct AuthView {
    groups: Vec<Group>,
    group_revoked: bool,
    revoked: std::collections::HashSet<Hash32>,
    services: Vec<Hash32>,
}

fn auth_view(rec: &Record, group_id: u8) -> AuthView {
    let id = rec.id();
    let mut v = AuthView {
        groups: Vec::new(),
        group_revoked: false,
        revoked: Default::default(),
        services: Vec::new(),
    };
    let Some(zone) = rec.zones.get(&ZoneType::AUTH) else {
        return v;
    };
    // In a valid record every REVOKE entry meets the deny threshold, so
    // each names a revoked target: an entry digest or a key ID.
    for e in &zone.entries {
        if let Ok(EntryBody::Revocation(r)) = EntryBody::decode(ZoneType::AUTH, e.kind, &e.body) {
            v.revoked.insert(r.target);
        }
    }
    let mut candidates = Vec::new();
    for e in &zone.entries {
        if e.kind != EntryKind::GRANT {
            continue;
        }
        let Ok(body) = EntryBody::decode(ZoneType::AUTH, e.kind, &e.body) else {
            continue;
        };
        let Ok(kb) = KeyBinding::resolve(&body, &rec.keys) else {
            continue;
        };
        let live = !v.revoked.contains(&e.digest(&id, ZoneType::AUTH, &kb));
        match body {
            EntryBody::Auth(AuthEntry::TrustGroup {
                group_id: g,
                name,
                members,
            }) if g == group_id => {
                if live {
                    candidates.push(Group { name, members });
                } else {
                    v.group_revoked = true;
                }
            }
            EntryBody::Auth(AuthEntry::RevocationService { service }) if live => {
                v.services.push(service)
            }
            _ => {}
        }
    }
    if let Some(a) = rec.authorities.get(&ZoneType::AUTH) {
        if !a.service_ref.is_zero() && !v.services.contains(&a.service_ref) {
            v.services.push(a.service_ref);
        }
    }
    v.groups = candidates;
    v
}

fn revocation_services(rec: &Record, hashes: &[Hash32]) -> Vec<(Hash32, ServiceEntry)> {
    let Some(zone) = rec.zones.get(&ZoneType::SERVICE) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for h in hashes {
        for e in &zone.entries {
            if e.kind != EntryKind::GRANT {
                continue;
            }
            if let Ok(EntryBody::Service(s)) = EntryBody::decode(ZoneType::SERVICE, e.kind, &e.body)
            {
                if s.service_type == ServiceType::REVOCATION && s.service_hash() == *h {
                    out.push((*h, s));
                    break;
                }
            }
        }
    }
    out
}

/// Checks a login: the record verifies from genesis; the proof names it;
/// the challenge is open at `now_ms`; the group exists once, unrevoked, in
/// the record's Auth Zone; each signature is by a member of that group
/// (the proof's strict order means no key twice), not revoked in the
/// Auth Zone, and valid over [`login_digest`]; the members' values sum to
/// at least 100. Never panics; every refusal is an [`AuthError`].
pub fn verify(
    record: &Record,
    challenge: &Challenge,
    proof: &Proof,
    now_ms: u64,
) -> Result<Accepted, AuthError> {
    let vr = crate::verify::verify_and_accept(record.clone()).map_err(|report| {
        let msgs: Vec<String> = report
            .failures()
            .map(|(r, d)| format!("{r}: {d}"))
            .collect();
        AuthError::RecordInvalid(msgs.join("; "))
    })?;
    if !vr.from_genesis {
        return Err(AuthError::RecordUnproven);
    }
    let rec = &vr.record;
    if proof.record_id != vr.id {
        return Err(AuthError::WrongRecord {
            proof: proof.record_id,
            record: vr.id,
        });
    }
    if now_ms < challenge.not_before {
        return Err(AuthError::ChallengeNotYetValid {
            not_before: challenge.not_before,
            now_ms,
        });
    }
    if now_ms >= challenge.not_after {
        return Err(AuthError::ChallengeExpired {
            not_after: challenge.not_after,
            now_ms,
        });
    }
    let group_id = proof.group_id;
    let view = auth_view(rec, group_id);
    let group = match view.groups.as_slice() {
        [g] => g,
        [] if view.group_revoked => return Err(AuthError::GroupRevoked { group_id }),
        [] => return Err(AuthError::NoSuchGroup { group_id }),
        many => {
            return Err(AuthError::AmbiguousGroup {
                group_id,
                count: many.len(),
            })
        }
    };
    let digest = login_digest(&vr.id, group_id, challenge);
    let mut signers = Vec::with_capacity(proof.signatures.len());
    let mut sum: u32 = 0;
    let mut last: Option<u8> = None;
    for s in &proof.signatures {
        // The decoder enforces this; a Proof built in code is checked too.
        if last.is_some_and(|l| l >= s.key_idx) {
            return Err(AuthError::Decode(DecodeError::NotCanonical {
                field: "auth_proof.signatures",
                offset: 0,
            }));
        }
        last = Some(s.key_idx);
        let Some(m) = group.members.iter().find(|m| m.key_idx == s.key_idx) else {
            return Err(AuthError::NotMember {
                key_idx: s.key_idx,
                group_id,
            });
        };
        // A member's index resolves: the record passed `key-index`.
        let Some(key) = rec.keys.get(s.key_idx) else {
            return Err(AuthError::NotMember {
                key_idx: s.key_idx,
                group_id,
            });
        };
        if view.revoked.contains(&key.id()) {
            return Err(AuthError::KeyRevoked {
                key_idx: s.key_idx,
                key_id: key.id(),
            });
        }
        if !key.verify(&digest, s) {
            return Err(AuthError::BadSignature { key_idx: s.key_idx });
        }
        sum += u32::from(m.value);
        signers.push(Signer {
            key_idx: s.key_idx,
            key_id: key.id(),
            value: m.value,
        });
    }
    if sum < 100 {
        return Err(AuthError::BelowThreshold { group_id, sum });
    }
    Ok(Accepted {
        record_id: vr.id,
        group_id,
        group_name: group.name.clone(),
        signers,
        sum,
        revocation_services: revocation_services(rec, &view.services),
    })
}

/// [`verify`] on bytes: the challenge and the proof are decoded strictly
/// first (a decode failure is [`AuthError::Decode`]).
pub fn verify_bytes(
    record: &Record,
    challenge: &[u8],
    proof: &[u8],
    now_ms: u64,
) -> Result<Accepted, AuthError> {
    let c = Challenge::from_bytes(challenge)?;
    let p = Proof::from_bytes(proof)?;
    verify(record, &c, &p, now_ms)
}

/// The holder's side: signs `challenge` for `group_id` of `record` with
/// `keys`, each named by its index in the record's Public Key Map. Every
/// key must be a member of the group; whether they reach 100 is
/// [`verify`]'s to say.
pub fn prove(
    record: &Record,
    challenge: &Challenge,
    group_id: u8,
    keys: &[&SigningKey],
) -> Result<Proof, AuthError> {
    let view = auth_view(record, group_id);
    let group = match view.groups.as_slice() {
        [g] => g,
        [] if view.group_revoked => return Err(AuthError::GroupRevoked { group_id }),
        [] => return Err(AuthError::NoSuchGroup { group_id }),
        many => {
            return Err(AuthError::AmbiguousGroup {
                group_id,
                count: many.len(),
            })
        }
    };
    let id = record.id();
    let digest = login_digest(&id, group_id, challenge);
    let mut signatures: Vec<Signature> = Vec::with_capacity(keys.len());
    for k in keys {
        let key_id = k.public().id();
        let idx = record
            .keys
            .index_of(&key_id)
            .filter(|i| group.members.iter().any(|m| m.key_idx == *i))
            .ok_or(AuthError::SignerNotMember { key_id, group_id })?;
        crate::keys::insert_signature(&mut signatures, k.sign(idx, &digest));
    }
    Ok(Proof {
        record_id: id,
        group_id,
        signatures,
    })
}
