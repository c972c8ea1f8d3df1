//! `pozctl auth challenge|prove|verify`: login with the Auth Zone (SPEC
//! §20). A relying party makes a challenge; the holder signs it with the
//! keys of one trust group of their record; the relying party verifies
//! the proof against the record. `verify` exits 0 on an accepted login,
//! 1 on a refused one (saying why), 2 on usage or unreadable files.

use super::{now_ms, refuse};
use crate::keyio::{open_key, read_record, write_atomic, Passphrase};
use anyhow::{Context, Result};
use clap::Subcommand;
use poz::auth::{self, AuthError, Challenge, Proof};
use poz::Codec;
use rand_core::RngCore;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum AuthCmd {
    /// (Relying party) Make a challenge: your name or origin, a random
    /// nonce, and a window from now. Accept each nonce once.
    Challenge {
        /// Your name or origin as the holder will see it, e.g.
        /// https://shop.example.
        #[arg(long)]
        relying_party: String,
        /// How long the challenge stays open, in seconds (at most 600).
        #[arg(long, default_value_t = 300)]
        ttl: u64,
        /// Where to write the challenge (binary).
        #[arg(long)]
        out: PathBuf,
    },
    /// (Holder) Sign a challenge with keys of one trust group of your
    /// record. Shows the relying party before signing.
    Prove {
        /// The challenge file the relying party sent.
        challenge: PathBuf,
        #[arg(long)]
        record: PathBuf,
        /// The trust group's id in the record's Auth Zone.
        #[arg(long)]
        group: u8,
        /// Key files of the group's members; their values must reach 100.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Where to write the proof (binary).
        #[arg(long)]
        out: PathBuf,
    },
    /// (Relying party) Verify a proof: exit 0 accepted, 1 refused.
    Verify {
        record: PathBuf,
        challenge: PathBuf,
        proof: PathBuf,
        /// Check at this time (ms since the epoch) instead of now.
        #[arg(long)]
        now_ms: Option<u64>,
        #[arg(long)]
        json: bool,
    },
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn read_challenge(path: &Path) -> Result<Challenge> {
    Challenge::from_bytes(&read(path)?).map_err(|e| {
        refuse(format!(
            "{} is not a valid login challenge: {e}",
            path.display()
        ))
    })
}

fn refused(e: AuthError) -> anyhow::Error {
    refuse(format!("login refused ({}): {e}", e.code()))
}

pub fn run(cmd: AuthCmd, pass: &Passphrase) -> Result<ExitCode> {
    match cmd {
        AuthCmd::Challenge {
            relying_party,
            ttl,
            out,
        } => {
            let mut nonce = [0u8; auth::NONCE_LEN];
            rand_core::OsRng.fill_bytes(&mut nonce);
            let now = now_ms();
            let c = Challenge::new(&relying_party, nonce, now, now + ttl.saturating_mul(1000))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            write_atomic(&out, &c.to_bytes())?;
            outln!(
                "challenge for {relying_party}: nonce {}, open until {} (ms)",
                hex::encode(nonce),
                c.not_after
            );
            Ok(ExitCode::SUCCESS)
        }
        AuthCmd::Prove {
            challenge,
            record,
            group,
            keys,
            out,
        } => {
            let c = read_challenge(&challenge)?;
            let rec = read_record(&record)?;
            let keys = keys
                .iter()
                .map(|k| open_key(k, pass))
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<&poz::SigningKey> = keys.iter().collect();
            eprintln!(
                "signing a login to {:?} for record {} with trust group {group}",
                c.relying_party,
                rec.id()
            );
            let p = auth::prove(&rec, &c, group, &refs).map_err(refused)?;
            // Check before handing it over: a proof the relying party
            // would refuse is refused here, with the reason.
            auth::verify(&rec, &c, &p, now_ms()).map_err(refused)?;
            write_atomic(&out, &p.to_bytes())?;
            outln!("proof written to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        AuthCmd::Verify {
            record,
            challenge,
            proof,
            now_ms: at,
            json,
        } => {
            let rec = read_record(&record)?;
            let c = read_challenge(&challenge)?;
            let p = Proof::from_bytes(&read(&proof)?).map_err(|e| {
                refuse(format!(
                    "{} is not a valid login proof: {e}",
                    proof.display()
                ))
            })?;
            let a = auth::verify(&rec, &c, &p, at.unwrap_or_else(now_ms)).map_err(refused)?;
            let services: Vec<String> = a
                .revocation_services
                .iter()
                .map(|(h, s)| {
                    let hosts: Vec<String> = s
                        .pool
                        .iter()
                        .map(|h| format!("{}:{}", h.hostname, h.port))
                        .collect();
                    format!("{h} ({})", hosts.join(", "))
                })
                .collect();
            if json {
                outln!(
                    "{}",
                    json!({
                        "accepted": true,
                        "record_id": a.record_id.to_hex(),
                        "relying_party": c.relying_party,
                        "group_id": a.group_id,
                        "group_name": a.group_name,
                        "sum": a.sum,
                        "signers": a.signers.iter().map(|s| json!({"key_idx": s.key_idx, "key_id": s.key_id.to_hex(), "value": s.value})).collect::<Vec<_>>(),
                        "revocation_services": a.revocation_services.iter().map(|(h, _)| h.to_hex()).collect::<Vec<_>>(),
                    })
                );
            } else {
                let keys: Vec<String> = a
                    .signers
                    .iter()
                    .map(|s| format!("{} ({})", s.key_idx, s.value))
                    .collect();
                outln!(
                    "accepted: record {} trust group {} {:?}, keys {} sum {} of 100",
                    a.record_id,
                    a.group_id,
                    a.group_name,
                    keys.join(", "),
                    a.sum
                );
            }
            if a.needs_revocation_check() {
                eprintln!(
                    "note: the record names revocation services; ask them about the signing keys before letting the holder in: {}",
                    services.join("; ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
