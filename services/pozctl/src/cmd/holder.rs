//! The holder's side of the journey over the POZ ports (SPEC §14.5):
//! `pozctl publish` (SUBMIT_SIGNED kind 3: a record, new or the next
//! revision of one the provider hosts), `pozctl identity request`
//! (SUBMIT_REQUEST, the proof signed by the record's master keys),
//! `pozctl identity fetch` (SUBMIT_STATUS, the issued binding written to
//! a file) and `pozctl identity adopt` (the binding copied into the
//! holder's own Identity Zone, checked against the provider's record).

use super::remote::TargetArgs;
use super::{lib, now_ms, refuse};
use crate::keyio::{open_key, read_entry, read_record, write_atomic, write_record, Passphrase};
use crate::net;
use anyhow::{bail, Result};
use clap::Args;
use poz::codec::Codec;
use poz::wire::{SubmissionState, SubmitRequest, SubmitSigned};
use poz::zone::ZoneType;
use poz::{workflow, Hash32};
use std::path::PathBuf;
use std::process::ExitCode;

// `pozctl publish`'s arguments (its help text is on `Cmd::Publish`).
#[derive(Args)]
pub struct Publish {
    /// The record file (its Private Key Map is never sent).
    record: PathBuf,
    #[command(flatten)]
    target: TargetArgs,
}

pub fn publish(a: Publish) -> Result<ExitCode> {
    let t = a.target.target();
    let rec = read_record(&a.record)?;
    if !rec.master.is_finalized() {
        return Err(refuse(format!(
            "{} is a draft (master zone serial {} not applied); nothing was sent: sign it, then `pozctl apply` it and publish the record apply writes",
            a.record.display(),
            rec.master.serial
        )));
    }
    // Valid with its chain from genesis: binding copies in its Identity
    // Zone are "not checked" here (each verifies against its issuer's
    // record), so "complete" would refuse every record holding one.
    let report = poz::verify_record(&rec);
    let from_genesis =
        report.outcome(poz::verify::Rule::ChainGenesis) == Some(&poz::verify::Outcome::Pass);
    if !report.is_valid() || !from_genesis {
        return Err(refuse(format!(
            "{} does not verify from genesis; nothing was sent (run pozctl verify)",
            a.record.display()
        )));
    }
    let mut public = rec.clone();
    public.private_keys = None;
    let id = public.id();
    let s = SubmitSigned::NewRecord {
        record: public.to_bytes(),
    };
    net::submit_and_say(&t, &poz::wire::record_name(&id), &s, |ticket| {
        format!(
            "published {} serial {}: {} (submission {}); look it up as {}",
            id,
            public.master.serial,
            ticket.state,
            hex::encode(ticket.submission_id),
            poz::wire::record_name(&id)
        )
    })
}

/// `pozctl identity request`: SUBMIT_REQUEST for `handle` at `domain`,
/// the proof signed by `keys` (master keys of `record`, to threshold).
pub fn request(
    target: &TargetArgs,
    domain: &str,
    handle: &str,
    record: &std::path::Path,
    keys: &[PathBuf],
    ticket: Option<&std::path::Path>,
    pass: &Passphrase,
) -> Result<ExitCode> {
    let rec = read_record(record)?;
    let mut ask = SubmitRequest {
        domain: domain.to_ascii_lowercase(),
        handle: handle.into(),
        subject: rec.id(),
        proof: Vec::new(),
    };
    let digest = ask.digest();
    for k in keys {
        let k = open_key(k, pass)?;
        let kid = k.public().id();
        let Some(idx) = rec.keys.index_of(&kid) else {
            bail!("key {kid} is not in {}'s Public Key Map", record.display());
        };
        if !rec.master.master_keys.iter().any(|m| m.key_idx == idx) {
            return Err(refuse(format!(
                "key {kid} is not a master key of {}: only master keys prove a request",
                record.display()
            )));
        }
        ask.proof.push(k.sign(idx, &digest));
    }
    let t = target.target();
    net::request_and_say(&t, domain, &ask, ticket)
}

/// A submission ID given as 32 hex digits, or as the file `identity
/// request --ticket` wrote.
fn submission_arg(s: &str) -> Result<[u8; 16]> {
    // A file by that name is read first: a ticket file may have any
    // name, 32 characters long included.
    let text = if std::path::Path::new(s).is_file() {
        std::fs::read_to_string(s).map_err(|e| anyhow::anyhow!("reading {s}: {e}"))?
    } else {
        s.to_owned()
    };
    hex::decode(text.trim())
        .ok()
        .and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok())
        .ok_or_else(|| {
            anyhow::anyhow!("{s:?} is not a submission ID (32 hex digits) or a ticket file")
        })
}

/// `pozctl identity fetch`: SUBMIT_STATUS for `submission`; an issued
/// binding is written to `out`. Exit 0 issued, 1 refused, 3 pending.
/// `submission` is the ID in hex or a ticket file.
pub fn fetch(target: &TargetArgs, submission: &str, out: &std::path::Path) -> Result<ExitCode> {
    let sid = submission_arg(submission)?;
    let t = target.target();
    let answer = net::status(&t, sid)?;
    let answer = match answer {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    match (answer.ticket.state, answer.entry) {
        (SubmissionState::ISSUED, Some(e)) => {
            write_atomic(out, &e.to_bytes())?;
            outln!("issued: binding written to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        (SubmissionState::PENDING, _) => {
            outln!("pending: the provider has not decided yet");
            Ok(ExitCode::from(3))
        }
        (state, _) => {
            outln!("{}", crate::render::decision(state, &answer.message));
            Ok(ExitCode::from(1))
        }
    }
}

/// `pozctl identity adopt`: copies a binding issued to `record` into its
/// Identity Zone, after checking it against the provider's record.
pub fn adopt(
    binding: &std::path::Path,
    record: &std::path::Path,
    provider: poz::Record,
) -> Result<ExitCode> {
    let mut rec = read_record(record)?;
    let e = read_entry(binding)?;
    let b = poz::entries::IdentityBinding::from_bytes(&e.body).map_err(|err| {
        refuse(format!(
            "{} is not an identity binding: {err}",
            binding.display()
        ))
    })?;
    if b.subject != rec.id() {
        return Err(refuse(format!(
            "the binding is issued to {}, not to {} ({})",
            b.subject,
            rec.id(),
            record.display()
        )));
    }
    let vr = poz::verify::verify_and_accept(provider).map_err(|report| {
        let f: Vec<String> = report
            .failures()
            .map(|(r, d)| format!("{r}: {d}"))
            .collect();
        refuse(format!(
            "the provider record does not verify: {}",
            f.join("; ")
        ))
    })?;
    poz::verify::verify_binding(&vr, &e, now_ms()).map_err(|err| {
        refuse(format!(
            "the binding does not verify against the provider: {err}"
        ))
    })?;
    if rec.master.delegation(ZoneType::IDENTITY).is_none()
        || !rec.authorities.contains_key(&ZoneType::IDENTITY)
    {
        return Err(refuse(format!(
            "{} has no Identity Zone to hold the copy: delegate one (pozctl draft --delegate identity:KEY:GROUP:GRANT:DENY) and sign its authority (pozctl authority set --zone identity) first",
            record.display()
        )));
    }
    workflow::insert_entry(&mut rec, ZoneType::IDENTITY, e).map_err(lib)?;
    write_record(record, &rec)?;
    let human: Hash32 = vr.id;
    outln!(
        "adopted \"{}\" (issued by {human}) into {}; publish the record's next revision to carry it",
        b.handle,
        record.display()
    );
    Ok(ExitCode::SUCCESS)
}
