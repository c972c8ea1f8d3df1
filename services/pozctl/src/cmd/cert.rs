//! `pozctl cert issue`: POZ-as-CA (SPEC §21). Makes an X.509 certificate
//! for a host and a fresh host key, the certificate signed by a record
//! key (Ed25519) that the record's Service Zone names for that host by
//! `ca_key_idx`. Refused (exit 1) when the record does not verify or no
//! live Service Zone host of that name names the key.

use super::refuse;
use crate::keyio::{open_key, read_record, write_atomic, write_atomic_for, Passphrase, Readers};
use anyhow::Result;
use clap::Subcommand;
use poz::ca::{ca_keys, normalize_host};
use poz::verify::verify_and_accept;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

/// The longest validity `--days` takes.
pub const MAX_DAYS: u64 = 825;

#[derive(Subcommand)]
pub enum CertCmd {
    /// Issue a TLS certificate for HOST signed by record key KEY; the
    /// record's Service Zone must name KEY for HOST by ca_key_idx.
    Issue {
        /// The record (verified first).
        #[arg(long)]
        record: PathBuf,
        /// The record key's file (the signer).
        #[arg(long)]
        key: PathBuf,
        /// The host name the certificate is for (its SAN).
        #[arg(long)]
        host: String,
        /// Validity in days from now (1..=825).
        #[arg(long, default_value_t = 90)]
        days: u64,
        /// Where to write the certificate (PEM).
        #[arg(long)]
        out_cert: PathBuf,
        /// Where to write the host's fresh private key (PKCS#8 PEM, 0600).
        #[arg(long)]
        out_key: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: CertCmd, pass: &Passphrase) -> Result<ExitCode> {
    let CertCmd::Issue {
        record,
        key,
        host,
        days,
        out_cert,
        out_key,
        json,
    } = cmd;
    if !(1..=MAX_DAYS).contains(&days) {
        anyhow::bail!("--days is 1..={MAX_DAYS}");
    }
    if out_key.exists() {
        anyhow::bail!("{} exists; refusing to overwrite a key", out_key.display());
    }
    let rec = read_record(&record)?;
    let vr = verify_and_accept(rec).map_err(|report| {
        let msgs: Vec<String> = report
            .failures()
            .map(|(r, d)| format!("{r}: {d}"))
            .collect();
        refuse(format!(
            "{} does not verify: {}",
            record.display(),
            msgs.join("; ")
        ))
    })?;
    let signer = open_key(&key, pass)?;
    let public = signer.public();
    let want = normalize_host(&host);
    let named: Vec<_> = ca_keys(&vr)
        .into_iter()
        .filter(|k| normalize_host(&k.hostname) == want)
        .collect();
    let Some(ca) = named.iter().find(|k| k.key == public) else {
        let idx: Vec<String> = named.iter().map(|k| k.key_idx.to_string()).collect();
        return Err(refuse(if idx.is_empty() {
            format!("no Service Zone host {want:?} of the record names a CA key (ca_key_idx)")
        } else {
            format!(
                "the Service Zone names key(s) {} for {want:?} by ca_key_idx, not {}",
                idx.join(", "),
                key.display()
            )
        }));
    };
    // Five minutes back for clocks a little behind.
    let now = SystemTime::now();
    let not_before = now - Duration::from_secs(300);
    let not_after = now + Duration::from_secs(days * 86_400);
    let c = poz_client::ca::issue_host_cert(&signer, &want, not_before, not_after)
        .map_err(|e| refuse(e.to_string()))?;
    write_atomic_for(&out_key, c.key_pem.as_bytes(), Readers::Owner)?;
    write_atomic(&out_cert, c.cert_pem.as_bytes())?;
    if json {
        outln!(
            "{}",
            json!({
                "host": want,
                "ca_key_idx": ca.key_idx,
                "ca_key_id": hex::encode(public.id().0),
                "days": days,
                "cert": out_cert.display().to_string(),
                "key": out_key.display().to_string(),
            })
        );
    } else {
        outln!(
            "certificate for {want} signed by record key {} (ca_key_idx {}), valid {days} days: {} (key {})",
            hex::encode(public.id().0),
            ca.key_idx,
            out_cert.display(),
            out_key.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
