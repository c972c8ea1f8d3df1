//! `pozctl fingerprint RECORD [OTHER]`: the digit code of a record ID, or
//! of two records, to compare aloud (SPEC §19). Each record is verified
//! from genesis first: a code means something only for an ID bound to the
//! record's keys.

use super::refuse;
use crate::keyio::read_record;
use anyhow::Result;
use clap::Args;
use poz::fingerprint::{Fingerprint, PairFingerprint};
use poz::verify::verify_and_accept;
use poz::Hash32;
use serde_json::json;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

// `pozctl fingerprint`'s arguments (its help text is on `Cmd::Fingerprint`).
#[derive(Args)]
pub struct FingerprintArgs {
    /// A record file.
    record: PathBuf,
    /// The other side's record file: print the pair's code, the same
    /// whichever order the two are given in.
    other: Option<PathBuf>,
    /// Accept a record whose chain cannot be walked from genesis (its
    /// Zone History is missing): its record ID is then taken on trust.
    #[arg(long)]
    allow_partial: bool,
    #[arg(long)]
    json: bool,
}

/// The record ID of a record file that verifies.
fn verified_id(path: &Path, allow_partial: bool) -> Result<Hash32> {
    let rec = read_record(path)?;
    if !rec.master.is_finalized() {
        return Err(refuse(format!(
            "{} is a draft: it has no record ID of its own yet (apply it first)",
            path.display()
        )));
    }
    let vr = verify_and_accept(rec).map_err(|report| {
        let msgs: Vec<String> = report
            .failures()
            .map(|(r, d)| format!("{r}: {d}"))
            .collect();
        refuse(format!(
            "{} does not verify: {}",
            path.display(),
            msgs.join("; ")
        ))
    })?;
    if !vr.from_genesis && !allow_partial {
        return Err(refuse(format!(
            "{}: the chain cannot be walked from genesis (no Zone History), so its record ID is unproven; pass --allow-partial to accept it",
            path.display()
        )));
    }
    Ok(vr.id)
}

pub fn run(a: FingerprintArgs) -> Result<ExitCode> {
    let id = verified_id(&a.record, a.allow_partial)?;
    match &a.other {
        None => {
            let f = Fingerprint::of(&id);
            if a.json {
                outln!(
                    "{}",
                    json!({"record_ids": [id.to_hex()], "digits": f.digits(), "code": f.to_string()})
                );
            } else {
                outln!("{f}");
            }
        }
        Some(other) => {
            let id2 = verified_id(other, a.allow_partial)?;
            if id2 == id {
                eprintln!("note: both files are the same record ({id})");
            }
            let p = PairFingerprint::of(&id, &id2);
            if a.json {
                let mut ids = [id.to_hex(), id2.to_hex()];
                ids.sort();
                outln!(
                    "{}",
                    json!({"record_ids": ids, "digits": p.digits(), "code": p.to_string()})
                );
            } else {
                // One line per record's half: twelve groups are easier to
                // read aloud as two rows of six.
                outln!("{}", p.first);
                outln!("{}", p.second);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
