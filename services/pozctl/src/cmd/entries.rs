//! The entries of the Email, Auth and Feed zones (SPEC §8.5, §8.6, §8.8):
//! `inbox add`, `feed add`, `trust-group add`, `revocation-service add`.
//! Each checks, before anything is signed, that the service it names is a
//! live service of the right type in the record's own Service Zone (rule
//! `service-ref`), so no record is written that would then fail to verify.

use super::{lib, now_ms, parse_u8};
use crate::keyio::{open_key, read_record, write_record, Passphrase};
use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use poz::entries::{
    AuthEntry, EntryBody, FeedEntry, Inbox, ServiceEntry, ServiceType, TrustMember,
};
use poz::workflow;
use poz::zone::{EntryKind, SignedEntry, ZoneType};
use poz::{Codec, Hash32, Record};
use std::path::PathBuf;
use std::process::ExitCode;

/// What every entry verb takes: the record file, the zone's delegation
/// keys that sign, and the time for a new authority section.
#[derive(Args)]
pub struct Signing {
    record: PathBuf,
    /// A key file of the zone's delegation; repeat until the grant
    /// threshold is met.
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// The new authority section's timestamp, ms (default: now); only
    /// used when the zone has no authority section yet.
    #[arg(long)]
    time: Option<u64>,
}

#[derive(Subcommand)]
pub enum InboxCmd {
    /// Add an inbox to the Email Zone, delivered by a MAIL service of the
    /// record's Service Zone.
    Add {
        /// The inbox's name (e.g. "Main").
        #[arg(long)]
        name: String,
        /// The inbox's address: 32 hex digits (default: random).
        #[arg(long)]
        guid: Option<String>,
        /// The hash of a MAIL service in the Service Zone (64 hex digits).
        #[arg(long)]
        service: String,
        #[command(flatten)]
        signing: Signing,
    },
}

#[derive(Subcommand)]
pub enum FeedCmd {
    /// Add a feed to the Feed Zone, published through a FEED service of
    /// the record's Service Zone.
    Add {
        #[arg(long)]
        name: String,
        /// The hash of a FEED service in the Service Zone (64 hex digits).
        #[arg(long)]
        service: String,
        #[command(flatten)]
        signing: Signing,
    },
}

#[derive(Subcommand)]
pub enum TrustGroupCmd {
    /// Add a trust group to the Auth Zone: the keys that may log in on
    /// the record's behalf (SPEC §20), each with a value; a login needs
    /// signing members worth 100 together.
    Add {
        /// The group's number (0..=255), which `auth prove --group` names.
        #[arg(long)]
        group: u8,
        #[arg(long, default_value = "")]
        name: String,
        /// KEY_IDX:VALUE — a key of the record's Public Key Map and its
        /// value (1..=100). Repeat; together at least 100.
        #[arg(long = "member", required = true)]
        members: Vec<String>,
        #[command(flatten)]
        signing: Signing,
    },
}

#[derive(Subcommand)]
pub enum RevocationServiceCmd {
    /// Name the Auth Zone's revocation service: a REVOCATION service of
    /// the record's Service Zone where relying parties check keys live.
    Add {
        /// The hash of a REVOCATION service in the Service Zone.
        #[arg(long)]
        service: String,
        #[command(flatten)]
        signing: Signing,
    },
}

/// The live service whose hash is `hash` in `rec`'s Service Zone: granted
/// to the grant threshold and not revoked (what `service-ref` accepts).
pub fn service_named(rec: &Record, hash: &Hash32) -> Option<ServiceEntry> {
    let zs = rec.zones.get(&ZoneType::SERVICE)?;
    let id = rec.id();
    let revoked: Vec<Hash32> = zs
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::REVOKE)
        .filter_map(
            |e| match EntryBody::decode(ZoneType::SERVICE, e.kind, &e.body) {
                Ok(EntryBody::Revocation(r)) => Some(r.target),
                _ => None,
            },
        )
        .collect();
    zs.entries
        .iter()
        .filter(|e| e.kind == EntryKind::GRANT)
        .filter(|e| workflow::entry_tally(rec, ZoneType::SERVICE, e).is_ok_and(|t| t.is_met()))
        .filter(|e| {
            e.digest_in(&id, ZoneType::SERVICE, &rec.keys)
                .is_ok_and(|d| !revoked.contains(&d))
        })
        .find_map(|e| {
            ServiceEntry::from_bytes(&e.body)
                .ok()
                .filter(|s| s.service_hash() == *hash)
        })
}

/// Refuses (exit 1) a reference to anything but a live `want` service of
/// `rec`'s Service Zone.
fn require_service(rec: &Record, hash: &str, want: ServiceType) -> Result<Hash32> {
    let h = Hash32::from_hex(hash).ok_or_else(|| anyhow!("--service: 64 hex digits"))?;
    match service_named(rec, &h) {
        None => Err(super::refuse(format!(
            "service {h} is not a live service of the record's Service Zone (add it with `pozctl service add --type {want}`)"
        ))),
        Some(s) if s.service_type != want => Err(super::refuse(format!(
            "service {h} is a {} service, not {want}",
            s.service_type
        ))),
        Some(_) => Ok(h),
    }
}

/// Signs `body` into `zone` of the record (creating the zone's authority
/// section when there is none) and writes the record.
fn add_entry(
    s: &Signing,
    pass: &Passphrase,
    mut rec: Record,
    zone: ZoneType,
    body: Vec<u8>,
) -> Result<Hash32> {
    let ks = s
        .keys
        .iter()
        .map(|k| open_key(k, pass))
        .collect::<Result<Vec<_>>>()?;
    if !rec.authorities.contains_key(&zone) {
        let refs: Vec<&poz::SigningKey> = ks.iter().collect();
        workflow::set_authority(
            &mut rec,
            zone,
            "",
            Hash32::ZERO,
            s.time.unwrap_or_else(now_ms),
            &refs,
        )
        .map_err(lib)?;
    }
    let mut e = SignedEntry::new(EntryKind::GRANT, body);
    for k in &ks {
        workflow::sign_entry(&rec, zone, &mut e, k).map_err(lib)?;
    }
    let digest = e
        .digest_in(&rec.id(), zone, &rec.keys)
        .map_err(|err| super::refuse(format!("{zone} entry: {err}")))?;
    workflow::insert_entry(&mut rec, zone, e).map_err(lib)?;
    write_record(&s.record, &rec)?;
    Ok(digest)
}

pub fn inbox(cmd: InboxCmd, pass: &Passphrase) -> Result<ExitCode> {
    let InboxCmd::Add {
        name,
        guid,
        service,
        signing,
    } = cmd;
    let rec = read_record(&signing.record)?;
    let mail_service = require_service(&rec, &service, ServiceType::MAIL)?;
    let guid: [u8; 16] = match guid {
        Some(g) => hex::decode(&g)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| anyhow!("--guid: 32 hex digits"))?,
        None => {
            use rand_core::RngCore;
            let mut g = [0u8; 16];
            rand_core::OsRng.fill_bytes(&mut g);
            g
        }
    };
    if !poz::codec::valid_str8(&name) {
        bail!("--name: at most 255 bytes, no control characters");
    }
    let body = Inbox {
        guid,
        name: name.clone(),
        mail_service,
    }
    .to_bytes();
    let digest = add_entry(&signing, pass, rec, ZoneType::EMAIL, body)?;
    outln!(
        "inbox \"{name}\" guid {} added to the email zone (entry {digest})",
        hex::encode(guid)
    );
    Ok(ExitCode::SUCCESS)
}

pub fn feed(cmd: FeedCmd, pass: &Passphrase) -> Result<ExitCode> {
    let FeedCmd::Add {
        name,
        service,
        signing,
    } = cmd;
    let rec = read_record(&signing.record)?;
    let feed_service = require_service(&rec, &service, ServiceType::FEED)?;
    if !poz::codec::valid_str8(&name) {
        bail!("--name: at most 255 bytes, no control characters");
    }
    let body = FeedEntry {
        name: name.clone(),
        feed_service,
    }
    .to_bytes();
    let digest = add_entry(&signing, pass, rec, ZoneType::FEED, body)?;
    outln!("feed \"{name}\" added to the feed zone (entry {digest})");
    Ok(ExitCode::SUCCESS)
}

pub fn trust_group(cmd: TrustGroupCmd, pass: &Passphrase) -> Result<ExitCode> {
    let TrustGroupCmd::Add {
        group,
        name,
        members,
        signing,
    } = cmd;
    let rec = read_record(&signing.record)?;
    let mut ms = Vec::with_capacity(members.len());
    for m in &members {
        let (idx, value) = m
            .split_once(':')
            .ok_or_else(|| anyhow!("--member {m:?}: expected KEY_IDX:VALUE"))?;
        let key_idx = parse_u8(idx, "--member key index")?;
        let value = parse_u8(value, "--member value")?;
        if !(1..=100).contains(&value) {
            bail!("--member {m:?}: the value is 1..=100");
        }
        if rec.keys.get(key_idx).is_none() {
            return Err(super::refuse(format!(
                "--member {m:?}: the record has no key {key_idx}"
            )));
        }
        ms.push(TrustMember { key_idx, value });
    }
    ms.sort_by_key(|m| m.key_idx);
    if ms.windows(2).any(|w| w[0].key_idx == w[1].key_idx) {
        bail!("--member: a key is named twice");
    }
    let sum: u32 = ms.iter().map(|m| u32::from(m.value)).sum();
    if sum < 100 {
        return Err(super::refuse(format!(
            "the members' values sum to {sum}: no login could reach 100"
        )));
    }
    if !poz::codec::valid_str8(&name) {
        bail!("--name: at most 255 bytes, no control characters");
    }
    let body = AuthEntry::TrustGroup {
        group_id: group,
        name: name.clone(),
        members: ms,
    }
    .to_bytes();
    // A second live group with this number would make every login for
    // it `ambiguous-group` (SPEC §20); the same entry again is the same
    // entry and changes nothing.
    if let Some((digest, old)) = live_trust_groups(&rec, group)
        .into_iter()
        .find(|(_, e)| e.body != body)
    {
        let old_name = match EntryBody::decode(ZoneType::AUTH, old.kind, &old.body) {
            Ok(EntryBody::Auth(AuthEntry::TrustGroup { name, .. })) => name,
            _ => String::new(),
        };
        return Err(super::refuse(format!(
            "the auth zone already has a live trust group {group} (\"{old_name}\", entry {digest}): a second one would make every login for group {group} ambiguous-group (SPEC §20); revoke that entry first or choose another --group"
        )));
    }
    let digest = add_entry(&signing, pass, rec, ZoneType::AUTH, body)?;
    outln!("trust group {group} \"{name}\" added to the auth zone (entry {digest})");
    Ok(ExitCode::SUCCESS)
}

/// The Auth Zone's live (not revoked) trust group entries numbered
/// `group` (SPEC §8.6, §20), each with its digest.
fn live_trust_groups(rec: &Record, group: u8) -> Vec<(Hash32, SignedEntry)> {
    let Some(zone) = rec.zones.get(&ZoneType::AUTH) else {
        return Vec::new();
    };
    let id = rec.id();
    let revoked: Vec<Hash32> = zone
        .entries
        .iter()
        .filter_map(
            |e| match EntryBody::decode(ZoneType::AUTH, e.kind, &e.body) {
                Ok(EntryBody::Revocation(r)) => Some(r.target),
                _ => None,
            },
        )
        .collect();
    zone.entries
        .iter()
        .filter(|e| e.kind == EntryKind::GRANT)
        .filter(|e| {
            matches!(
                EntryBody::decode(ZoneType::AUTH, e.kind, &e.body),
                Ok(EntryBody::Auth(AuthEntry::TrustGroup { group_id, .. })) if group_id == group
            )
        })
        .filter_map(|e| {
            let digest = e.digest_in(&id, ZoneType::AUTH, &rec.keys).ok()?;
            (!revoked.contains(&digest)).then(|| (digest, e.clone()))
        })
        .collect()
}

pub fn revocation_service(cmd: RevocationServiceCmd, pass: &Passphrase) -> Result<ExitCode> {
    let RevocationServiceCmd::Add { service, signing } = cmd;
    let rec = read_record(&signing.record)?;
    let h = require_service(&rec, &service, ServiceType::REVOCATION)?;
    let body = AuthEntry::RevocationService { service: h }.to_bytes();
    let digest = add_entry(&signing, pass, rec, ZoneType::AUTH, body)?;
    outln!("revocation service {h} added to the auth zone (entry {digest})");
    Ok(ExitCode::SUCCESS)
}
