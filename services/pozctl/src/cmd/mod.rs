//! pozctl's verbs, one module per family, and what they share: the
//! refusal that exits 1 and the parsers of command-line specs.

pub mod audit;
pub mod auth;
pub mod cert;
pub mod entries;
pub mod fingerprint;
pub mod holder;
pub mod identity;
pub mod key;
pub mod mirrors;
pub mod record;
pub mod remote;
pub mod requests;
pub mod zone;

use anyhow::{anyhow, bail, Context, Result};
use poz::entries::PoolHost;
use poz::zone::ZoneType;

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A refusal the user should see plainly (exit 1), as opposed to usage or
/// I/O trouble (exit 2).
#[derive(Debug)]
pub struct Refused(pub String);
impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Refused {}

pub fn refuse(msg: impl Into<String>) -> anyhow::Error {
    anyhow!(Refused(msg.into()))
}

/// Maps library refusals to exit code 1: thresholds, verification, and
/// a record, draft or entry that does not decode or is not in the state
/// the operation needs. What is left (bad text or times given on the
/// command line, a wrong passphrase) is usage: 2.
pub fn lib(e: poz::Error) -> anyhow::Error {
    match e {
        poz::Error::ThresholdNotMet { .. }
        | poz::Error::NotAuthorizingKey { .. }
        | poz::Error::Verification(_)
        | poz::Error::TimestampNotIncreasing { .. }
        | poz::Error::NotDelegated { .. }
        | poz::Error::Decode(_)
        | poz::Error::Invalid { .. }
        | poz::Error::KeyIndexOutOfRange { .. }
        | poz::Error::Draft
        | poz::Error::NotDraft => refuse(e.to_string()),
        other => anyhow!(other),
    }
}

pub fn parse_zone(s: &str) -> Result<ZoneType> {
    ZoneType::from_name(s)
        .ok_or_else(|| anyhow!("unknown zone {s:?} (identity, feed, email, auth, service)"))
}

pub fn parse_u8(s: &str, what: &str) -> Result<u8> {
    s.parse()
        .with_context(|| format!("{what}: {s:?} is not a number 0..=255"))
}

/// Splits "A:B:C" from the right into the last `n` fields and the rest
/// (so a key file path may itself contain ':').
pub fn split_spec<'a>(s: &'a str, n: usize, form: &str) -> Result<(&'a str, Vec<&'a str>)> {
    let mut parts: Vec<&str> = s.rsplitn(n + 1, ':').collect();
    if parts.len() != n + 1 {
        bail!("{s:?}: expected {form}");
    }
    let head = parts.pop().unwrap_or_default();
    parts.reverse();
    Ok((head, parts))
}

pub fn parse_host(spec: &str) -> Result<PoolHost> {
    Ok(PoolHost::from_spec(spec)?)
}
