//! `pozctl identity`: bindings issued, signed, added, verified and
//! revoked on files, and issued in bulk through a Provider API.

use super::{lib, now_ms, refuse};
use crate::keyio::{
    self, open_key, read_entry, read_record, write_atomic, write_record, Passphrase,
};
use crate::{grpc, import};
use anyhow::{anyhow, Result};
use clap::Subcommand;
use poz::entries::RevocationReason;
use poz::verify::{verify_and_accept, verify_binding};
use poz::workflow;
use poz::zone::ZoneType;
use poz::Codec;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum IdentityCmd {
    /// Issue a binding handle -> user record, signed by the given devices.
    Issue {
        #[arg(long)]
        provider: PathBuf,
        /// The user's record ID (64 hex digits) or record file.
        #[arg(long)]
        subject: String,
        #[arg(long)]
        handle: String,
        /// Delegation key files to sign with. Repeat.
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
        /// Expiry in ms since the epoch (default: none).
        #[arg(long)]
        expires: Option<u64>,
        #[arg(long)]
        time: Option<u64>,
        /// Output binding file.
        #[arg(long)]
        out: PathBuf,
        /// Also add it to the provider record's Identity Zone (needs the
        /// grant threshold met).
        #[arg(long)]
        add: bool,
    },
    /// Add a signature to a binding (a second device).
    Sign {
        binding: PathBuf,
        #[arg(long)]
        provider: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
    /// Add a fully signed binding to the provider's Identity Zone.
    Add {
        binding: PathBuf,
        #[arg(long)]
        provider: PathBuf,
    },
    /// Verify a binding against its provider's record: a file, or
    /// fetched over the POZ ports (--from DOMAIN: the provider's CHAIN for
    /// the binding's handle, verified from genesis and pinned).
    Verify {
        binding: PathBuf,
        #[arg(long, required_unless_present = "from", conflicts_with = "from")]
        provider: Option<PathBuf>,
        /// The provider's domain (or record name) to fetch its record from.
        #[arg(long, value_name = "DOMAIN")]
        from: Option<String>,
        #[command(flatten)]
        target: super::remote::TargetArgs,
        /// Verification time in ms (default: now).
        #[arg(long)]
        at: Option<u64>,
        #[arg(long)]
        json: bool,
        /// Accept a provider record whose chain cannot be walked from
        /// genesis (its Zone History is missing).
        #[arg(long)]
        allow_partial: bool,
    },
    /// Issue bindings in bulk through a Provider API from a CSV of
    /// `handle,user-record-hash` lines (a `handle,…` header is skipped),
    /// with a progress bar. Rerunning the same file resumes: nothing is
    /// issued twice.
    Import {
        csv: PathBuf,
        /// The Provider API's gRPC endpoint, e.g. http://127.0.0.1:50054,
        /// or https://HOST:PORT with --tls-cert, --tls-key and --tls-ca.
        #[arg(long)]
        api: String,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        #[command(flatten)]
        tls: grpc::TlsArgs,
    },
    /// Ask a provider over its submit port (7076) to bind a handle to
    /// your record (SUBMIT_REQUEST), proved with the record's master keys;
    /// prints the submission ID. The record must be published to that
    /// provider first (pozctl publish).
    Request {
        /// The provider's domain (or record name) to ask a handle of.
        domain: String,
        #[arg(long)]
        handle: String,
        /// Your record file.
        #[arg(long)]
        record: PathBuf,
        /// Master key files of the record, to its threshold. Repeat.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Also write the submission ID (32 hex digits and a newline) to
        /// this file, for `identity fetch`.
        #[arg(long, value_name = "FILE")]
        ticket: Option<PathBuf>,
        #[command(flatten)]
        target: super::remote::TargetArgs,
    },
    /// Fetch what became of a binding request (SUBMIT_STATUS); an issued
    /// binding is written to --out. Exit 0 issued, 1 refused, 3 pending.
    Fetch {
        /// The submission ID (32 hex digits) `identity request` printed,
        /// or the file its --ticket wrote.
        submission: String,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        target: super::remote::TargetArgs,
    },
    /// Copy a binding issued to your record into its own Identity Zone,
    /// after verifying it against the provider's record; publish the next
    /// revision afterwards.
    Adopt {
        binding: PathBuf,
        /// Your record file (written in place).
        #[arg(long)]
        record: PathBuf,
        /// The provider's record file.
        #[arg(long, required_unless_present = "from", conflicts_with = "from")]
        provider: Option<PathBuf>,
        /// Or fetch it over the POZ ports from this domain, as `identity
        /// verify --from` does.
        #[arg(long, value_name = "DOMAIN")]
        from: Option<String>,
        #[command(flatten)]
        target: super::remote::TargetArgs,
    },
    /// A provider revokes a handle's binding through its Provider API
    /// (gRPC RevokeBinding; the signer signs the revocation).
    RevokeHandle {
        handle: String,
        /// unspecified, key-compromise, superseded, account-closed, policy
        #[arg(long, default_value = "unspecified")]
        reason: String,
        #[command(flatten)]
        api: super::requests::ApiArgs,
    },
    /// Revoke a binding: a revocation signed under the deny threshold,
    /// added to the provider's Identity Zone.
    Revoke {
        binding: PathBuf,
        #[arg(long)]
        provider: PathBuf,
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// unspecified, key-compromise, superseded, account-closed, policy
        #[arg(long, default_value = "unspecified")]
        reason: String,
        #[arg(long)]
        time: Option<u64>,
    },
}

pub fn run(cmd: IdentityCmd, pass: &Passphrase) -> Result<ExitCode> {
    match cmd {
        IdentityCmd::Issue {
            provider,
            subject,
            handle,
            keys,
            expires,
            time,
            out,
            add,
        } => {
            let mut rec = read_record(&provider)?;
            let subject = keyio::record_id(&subject)?;
            let mut e = workflow::new_binding(
                &rec,
                subject,
                &handle,
                time.unwrap_or_else(now_ms),
                expires.unwrap_or(0),
            )
            .map_err(lib)?;
            for k in &keys {
                let k = open_key(k, pass)?;
                workflow::sign_entry(&rec, ZoneType::IDENTITY, &mut e, &k).map_err(lib)?;
            }
            write_atomic(&out, &e.to_bytes())?;
            let t = workflow::entry_tally(&rec, ZoneType::IDENTITY, &e).map_err(lib)?;
            outln!(
                "binding \"{handle}\" -> {subject} written to {}",
                out.display()
            );
            outln!("binding id {}", e.identity_digest(&rec.id()));
            outln!("grant: {}", t.describe());
            if add {
                workflow::insert_entry(&mut rec, ZoneType::IDENTITY, e).map_err(lib)?;
                write_record(&provider, &rec)?;
                outln!("added to {}", provider.display());
            } else if !t.is_met() {
                outln!("grant threshold not yet met: add signatures with `pozctl identity sign`");
            }
        }
        IdentityCmd::Sign {
            binding,
            provider,
            key,
        } => {
            let rec = read_record(&provider)?;
            let mut e = read_entry(&binding)?;
            let k = open_key(&key, pass)?;
            let idx = workflow::sign_entry(&rec, ZoneType::IDENTITY, &mut e, &k).map_err(lib)?;
            write_atomic(&binding, &e.to_bytes())?;
            let t = workflow::entry_tally(&rec, ZoneType::IDENTITY, &e).map_err(lib)?;
            outln!("signed as key {idx}; grant: {}", t.describe());
        }
        IdentityCmd::Add { binding, provider } => {
            let mut rec = read_record(&provider)?;
            let e = read_entry(&binding)?;
            workflow::insert_entry(&mut rec, ZoneType::IDENTITY, e).map_err(lib)?;
            write_record(&provider, &rec)?;
            outln!("added to {}", provider.display());
        }
        IdentityCmd::Verify {
            binding,
            provider,
            from,
            target,
            at,
            json,
            allow_partial,
        } => {
            let rec = provider_record(&binding, provider.as_deref(), from.as_deref(), &target)?;
            let e = read_entry(&binding)?;
            let vr = match verify_and_accept(rec) {
                Ok(v) => v,
                Err(report) => {
                    let msgs: Vec<String> = report
                        .failures()
                        .map(|(r, d)| format!("{r}: {d}"))
                        .collect();
                    return Err(refuse(format!(
                        "the provider record does not verify: {}",
                        msgs.join("; ")
                    )));
                }
            };
            if !vr.from_genesis && !allow_partial {
                return Err(refuse(
                    "the provider record's chain cannot be walked from genesis (no Zone History); pass --allow-partial to accept it",
                ));
            }
            let now = at.unwrap_or_else(now_ms);
            match verify_binding(&vr, &e, now) {
                Ok(b) => {
                    if json {
                        outln!("{}", json!({"valid": true, "binding": b}));
                    } else {
                        let ns = if b.namespace.is_empty() {
                            String::new()
                        } else {
                            format!("@{}", b.namespace)
                        };
                        outln!(
                            "VALID binding \"{}{}\" -> {}",
                            b.binding.handle,
                            ns,
                            b.binding.subject
                        );
                        outln!(
                            "issuer {} (group {} granted it)",
                            b.binding.issuer,
                            b.authorizing_group
                        );
                        outln!("binding id {}", b.digest);
                    }
                }
                Err(err) => {
                    if json {
                        outln!(
                            "{}",
                            json!({"valid": false, "rule": err.rule, "detail": err.detail})
                        );
                    } else {
                        outln!("INVALID {}: {}", err.rule, err.detail);
                    }
                    return Ok(ExitCode::from(1));
                }
            }
        }
        IdentityCmd::Request {
            domain,
            handle,
            record,
            keys,
            ticket,
            target,
        } => {
            return super::holder::request(
                &target,
                &domain,
                &handle,
                &record,
                &keys,
                ticket.as_deref(),
                pass,
            )
        }
        IdentityCmd::Fetch {
            submission,
            out,
            target,
        } => return super::holder::fetch(&target, &submission, &out),
        IdentityCmd::Adopt {
            binding,
            record,
            provider,
            from,
            target,
        } => {
            let prov = provider_record(&binding, provider.as_deref(), from.as_deref(), &target)?;
            return super::holder::adopt(&binding, &record, prov);
        }
        IdentityCmd::RevokeHandle {
            handle,
            reason,
            api,
        } => return super::requests::revoke_handle(&handle, &reason, &api),
        IdentityCmd::Import {
            csv,
            api,
            quiet,
            tls,
        } => return import::import(&csv, &api, &tls, quiet),
        IdentityCmd::Revoke {
            binding,
            provider,
            keys,
            reason,
            time,
        } => {
            let mut rec = read_record(&provider)?;
            let e = read_entry(&binding)?;
            let reason = RevocationReason::from_name(&reason)
                .ok_or_else(|| anyhow!("unknown reason {reason:?}"))?;
            let target = e.identity_digest(&rec.id());
            let mut rev = workflow::new_revocation(target, time.unwrap_or_else(now_ms), reason);
            for k in &keys {
                let k = open_key(k, pass)?;
                workflow::sign_entry(&rec, ZoneType::IDENTITY, &mut rev, &k).map_err(lib)?;
            }
            workflow::insert_entry(&mut rec, ZoneType::IDENTITY, rev).map_err(lib)?;
            write_record(&provider, &rec)?;
            outln!(
                "revoked binding {target} ({reason}) in {}",
                provider.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The provider record a binding is judged against: the file given, or
/// the provider's CHAIN for the binding's handle fetched from `from`.
fn provider_record(
    binding: &std::path::Path,
    file: Option<&std::path::Path>,
    from: Option<&str>,
    target: &super::remote::TargetArgs,
) -> Result<poz::Record> {
    match (file, from) {
        (Some(f), _) => read_record(f),
        (None, Some(domain)) => {
            let e = read_entry(binding)?;
            let b = poz::entries::IdentityBinding::from_bytes(&e.body).map_err(|err| {
                refuse(format!(
                    "{} is not an identity binding: {err}",
                    binding.display()
                ))
            })?;
            Ok(crate::net::provider_chain(&target.target(), domain, &b.handle)?.record)
        }
        (None, None) => Err(anyhow!("give --provider FILE or --from DOMAIN")),
    }
}
