//! The zone verbs: `authority set`, `service add`, `zone resign`: a
//! zone's signed authority section and entries, edited in a record file.

use super::{lib, now_ms, parse_host, parse_zone};
use crate::keyio::{open_key, read_record, write_record, Passphrase};
use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use poz::entries::{ServiceEntry, ServiceType};
use poz::workflow;
use poz::zone::{EntryKind, SignedEntry, ZoneType};
use poz::{Codec, Hash32};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum AuthorityCmd {
    /// Create or replace a zone's authority section.
    Set {
        record: PathBuf,
        #[arg(long)]
        zone: String,
        #[arg(long, default_value = "")]
        namespace: String,
        /// A service hash in the Service Zone this zone relies on.
        #[arg(long)]
        service_ref: Option<String>,
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        #[arg(long)]
        time: Option<u64>,
    },
}

#[derive(Subcommand)]
pub enum ServiceCmd {
    /// Add a service with its pool of hosts to the Service Zone.
    Add {
        record: PathBuf,
        /// poz_query, poz_submit, https, mail, feed, revocation, custom
        #[arg(long = "type")]
        service_type: String,
        #[arg(long, default_value = "")]
        name: String,
        /// HOST:PORT[:ENCRYPTION[:SERVER_KEY_HEX]][@PRIORITY/WEIGHT][#CA_KEY_IDX]
        /// (ENCRYPTION = none, tls, noise_nk). Repeat.
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        #[arg(long)]
        time: Option<u64>,
    },
}

#[derive(Subcommand)]
pub enum ZoneCmd {
    /// Re-sign a zone (authority section and every entry) against the
    /// delegation of a record or draft: signatures by keys that no longer
    /// hold the authority are dropped, the given keys sign. Used to rotate
    /// a delegation key within one revision.
    Resign {
        record: PathBuf,
        #[arg(long)]
        zone: String,
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
    },
}

pub fn authority(cmd: AuthorityCmd, pass: &Passphrase) -> Result<ExitCode> {
    match cmd {
        AuthorityCmd::Set {
            record,
            zone,
            namespace,
            service_ref,
            keys,
            time,
        } => {
            let mut rec = read_record(&record)?;
            let zone = parse_zone(&zone)?;
            let sref = match service_ref {
                Some(s) => {
                    Hash32::from_hex(&s).ok_or_else(|| anyhow!("--service-ref: 64 hex digits"))?
                }
                None => Hash32::ZERO,
            };
            let ks = keys
                .iter()
                .map(|k| open_key(k, pass))
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<&poz::SigningKey> = ks.iter().collect();
            workflow::set_authority(
                &mut rec,
                zone,
                &namespace,
                sref,
                time.unwrap_or_else(now_ms),
                &refs,
            )
            .map_err(lib)?;
            write_record(&record, &rec)?;
            outln!(
                "{zone} authority serial {} written",
                rec.authorities[&zone].serial
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn service(cmd: ServiceCmd, pass: &Passphrase) -> Result<ExitCode> {
    match cmd {
        ServiceCmd::Add {
            record,
            service_type,
            name,
            hosts,
            keys,
            time,
        } => {
            let mut rec = read_record(&record)?;
            let st = ServiceType::from_name(&service_type)
                .ok_or_else(|| anyhow!("unknown service type {service_type:?}"))?;
            if !poz::codec::valid_str8(&name) {
                bail!("service name: at most 255 bytes, no control characters");
            }
            let pool = hosts
                .iter()
                .map(|h| parse_host(h))
                .collect::<Result<Vec<_>>>()?;
            let svc = ServiceEntry {
                service_type: st,
                name,
                pool,
            };
            // Round-trip through the codec: the same checks a reader applies.
            let svc = ServiceEntry::from_bytes(&svc.to_bytes()).context("service entry")?;
            let ks = keys
                .iter()
                .map(|k| open_key(k, pass))
                .collect::<Result<Vec<_>>>()?;
            if !rec.authorities.contains_key(&ZoneType::SERVICE) {
                let refs: Vec<&poz::SigningKey> = ks.iter().collect();
                workflow::set_authority(
                    &mut rec,
                    ZoneType::SERVICE,
                    "",
                    Hash32::ZERO,
                    time.unwrap_or_else(now_ms),
                    &refs,
                )
                .map_err(lib)?;
            }
            let mut e = SignedEntry::new(EntryKind::GRANT, svc.to_bytes());
            for k in &ks {
                workflow::sign_entry(&rec, ZoneType::SERVICE, &mut e, k).map_err(lib)?;
            }
            workflow::insert_entry(&mut rec, ZoneType::SERVICE, e).map_err(lib)?;
            write_record(&record, &rec)?;
            outln!(
                "service {} added; service hash {}",
                svc.service_type,
                svc.service_hash()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn zone(cmd: ZoneCmd, pass: &Passphrase) -> Result<ExitCode> {
    match cmd {
        ZoneCmd::Resign { record, zone, keys } => {
            let mut rec = read_record(&record)?;
            let zone = parse_zone(&zone)?;
            let ks = keys
                .iter()
                .map(|k| open_key(k, pass))
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<&poz::SigningKey> = ks.iter().collect();
            let r = workflow::resign_zone(&mut rec, zone, &refs).map_err(lib)?;
            write_record(&record, &rec)?;
            outln!(
                "{zone} zone re-signed: {} signatures added, {} dropped (keys no longer delegated)",
                r.added,
                r.dropped
            );
            if r.short > 0 {
                outln!(
                    "{} items still short of their threshold: add more signers",
                    r.short
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
