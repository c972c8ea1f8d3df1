//! POZ — Portable Ownership Zone: the standard as a sans-I/O library.
//!
//! This crate has no sockets, no clock and no storage: time is always an
//! argument (milliseconds since the Unix epoch), bytes come in and go out.
//! The fleet's services are thin shells around it.
//!
//! - [`codec`]: the one codec trait and its strict reader.
//! - [`record`]: header, TOC and sections of a record.
//! - [`master`], [`threshold`]: the master zone, its two hash scopes and
//!   survivorship groups.
//! - [`zone`], [`entries`]: delegated sub-zones and their entries,
//!   identity bindings among them.
//! - [`verify`]: every validation rule, reported one by one.
//! - [`workflow`]: genesis, draft / sign / apply, issue and revoke.
//! - [`private`]: private keys sealed with a passphrase.
//! - [`fingerprint`]: digit codes of record IDs to compare aloud.
//! - [`auth`]: login with the Auth Zone's trust groups.
//!
//! A record owned by three keys (34/33/33, all three must act), revised
//! and verified:
//!
//! ```
//! use poz::workflow::{self, GenesisKey};
//! use poz::{Codec, Record, SigningKey};
//!
//! let keys: Vec<SigningKey> = (1..=3).map(|n| SigningKey::from_seed(&[n; 32])).collect();
//! let genesis: Vec<GenesisKey> = keys
//!     .iter()
//!     .zip([34, 33, 33])
//!     .map(|(k, value)| GenesisKey { public: k.public(), group: 0, value })
//!     .collect();
//! let t0 = 1_767_225_600_000; // ms since the epoch: time is always an argument
//! let mut rec = workflow::genesis(&genesis, t0)?;
//! for k in &keys {
//!     workflow::sign_draft(&mut rec, k)?;
//! }
//! workflow::apply(&mut rec)?;
//!
//! // Revision 2: two of three signatures are not enough.
//! let mut draft = workflow::draft(&rec, t0 + 1)?;
//! workflow::sign_draft(&mut draft, &keys[0])?;
//! workflow::sign_draft(&mut draft, &keys[1])?;
//! assert!(matches!(
//!     workflow::apply(&mut draft.clone()),
//!     Err(poz::Error::ThresholdNotMet { best: 67, .. })
//! ));
//! workflow::sign_draft(&mut draft, &keys[2])?;
//! workflow::apply(&mut draft)?;
//!
//! // Bytes out, bytes in, every rule checked.
//! let back = Record::from_bytes(&draft.to_bytes())?;
//! let report = poz::verify_record(&back);
//! assert!(report.is_complete());
//! assert_eq!(back.id(), rec.id());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod batch;
pub mod ca;
pub mod codec;
pub mod ed25519;
pub mod entries;
pub mod fingerprint;
pub mod gate;
pub mod handle;
pub mod hash;
pub mod keys;
pub mod master;
pub mod noise;
pub mod pow;
pub mod private;
pub mod record;
pub mod sample;
pub mod serve;
pub mod threshold;
pub mod types;
pub mod verify;
pub mod wire;
pub mod workflow;
pub mod zone;

pub use codec::{Codec, DecodeError, Reader};
pub use hash::Hash32;
pub use keys::{PublicKey, PublicKeyMap, Signature, SigningKey};
pub use master::{Delegation, DelegationKey, MasterKey, MasterZone};
pub use record::Record;
pub use verify::{verify_binding, verify_record, Report, Rule, VerifiedRecord};
pub use zone::{AuthoritySection, EntryKind, SignedEntry, ZoneSection, ZoneType};

impl From<DecodeError> for Error {
    fn from(e: DecodeError) -> Self {
        Error::Decode(e)
    }
}

/// Errors of the workflow operations (building, signing, applying).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The message says the decode error itself: no `source`, so a chain
    /// printer (anyhow's `{:#}`) does not say it twice.
    #[error("decode: {0}")]
    Decode(DecodeError),
    #[error("key index {key_idx} is not in the Public Key Map")]
    KeyIndexOutOfRange { key_idx: u8 },
    #[error("the Public Key Map is full (255 keys)")]
    KeyMapFull,
    #[error("{field}: text must be 1 to 255 bytes of UTF-8 without control characters")]
    InvalidText { field: &'static str },
    #[error("{reason}")]
    InvalidHandle { reason: &'static str },
    #[error("expiry must be after the issue time")]
    InvalidExpiry,
    #[error("KDF parameters are out of bounds")]
    BadKdfParams,
    #[error("decryption failed: wrong passphrase or altered data")]
    Decryption,
    #[error("key file is inconsistent: the sealed key does not match its public key")]
    KeyFileMismatch,
    #[error("{what}: threshold not met: best group has {best} of 100 ({tally})")]
    ThresholdNotMet {
        what: String,
        tally: String,
        best: u32,
    },
    #[error("{what}: key {key_id} is not one of the keys that may sign it")]
    NotAuthorizingKey { what: String, key_id: Hash32 },
    #[error("the master zone delegates no {zone} zone")]
    NotDelegated { zone: ZoneType },
    #[error("the record is a draft; apply it first")]
    Draft,
    #[error("the record is already final; start a draft with `draft`")]
    NotDraft,
    #[error("timestamp {timestamp} is not after the previous revision's {previous}")]
    TimestampNotIncreasing { timestamp: u64, previous: u64 },
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("record does not verify: {0}")]
    Verification(String),
    #[error("signing with key {key_id} failed: {detail}")]
    Signer { key_id: Hash32, detail: String },
}

impl From<zone::EntryDigestError> for Error {
    fn from(e: zone::EntryDigestError) -> Self {
        match e {
            zone::EntryDigestError::Body(d) => Error::Decode(d),
            zone::EntryDigestError::KeyIndex(k) => Error::KeyIndexOutOfRange { key_idx: k.key_idx },
        }
    }
}
