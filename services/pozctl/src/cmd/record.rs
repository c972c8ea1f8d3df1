//! The record verbs: `create`, `export`, `draft`, `sign`, `apply`,
//! `inspect`, `verify`: a record's life from genesis through each
//! revision, on files.

use super::{lib, now_ms, parse_u8, parse_zone, refuse, split_spec};
use crate::keyio::{self, open_key, read_record, write_record, Passphrase};
use crate::render;
use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use poz::workflow::{self, GenesisKey};
use poz::{Codec, Record};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum RecordCmd {
    /// Create a record: a genesis master zone signed by the given keys.
    Create {
        /// Output record file.
        #[arg(long)]
        out: PathBuf,
        /// A master key: KEYFILE:GROUP:VALUE (value 1..=100). Repeat.
        #[arg(long = "key", required = true)]
        keys: Vec<String>,
        /// Timestamp in ms since the epoch (default: now).
        #[arg(long)]
        time: Option<u64>,
        /// Also seal the keys into the record's Private Key Map (0x8002),
        /// for a holder who keeps one file. Publish with `export`.
        #[arg(long)]
        embed_keys: bool,
    },
    /// Write a copy of a record without its Private Key Map, for publishing.
    Export {
        record: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Start the next revision of a record as a draft file.
    Draft {
        record: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Add or change a master key: KEY:GROUP:VALUE (KEY = key file or hex).
        #[arg(long = "set-master-key")]
        set_master: Vec<String>,
        /// Remove a master key by index.
        #[arg(long = "remove-master-key")]
        remove_master: Vec<u8>,
        /// Delegate a zone: ZONE:KEY:GROUP:GRANT:DENY (ZONE = identity, feed, email, auth, service).
        #[arg(long = "delegate")]
        delegate: Vec<String>,
        /// Remove a delegation key: ZONE:INDEX.
        #[arg(long = "undelegate")]
        undelegate: Vec<String>,
        /// Name a key: INDEX:NAME (or KEY:NAME).
        #[arg(long = "name-key")]
        name_key: Vec<String>,
        #[arg(long)]
        time: Option<u64>,
    },
    /// Sign a draft with one holder's key file (in place unless --out).
    Sign {
        draft: PathBuf,
        /// The holder's key file.
        #[arg(long, required_unless_present = "embedded")]
        key: Option<PathBuf>,
        /// Sign with every authorizing key in the draft's own Private Key Map.
        #[arg(long, conflicts_with = "key")]
        embedded: bool,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Finalize a draft once one survivorship group's threshold is met.
    Apply {
        draft: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Show a record (text, or --json).
    Inspect {
        record: PathBuf,
        #[arg(long)]
        json: bool,
        /// Print only the record ID (its record name, 64 hex digits, SPEC
        /// §14.4), for scripts.
        #[arg(long, conflicts_with = "json")]
        id: bool,
    },
    /// Check every rule; say which hold and which fail. Exit 1 if any fails.
    Verify {
        record: PathBuf,
        #[arg(long)]
        json: bool,
        /// Accept a record whose chain cannot be walked from genesis (its
        /// Zone History is missing): valid, but not everything checked.
        #[arg(long)]
        allow_partial: bool,
    },
}

pub fn run(cmd: RecordCmd, pass: &Passphrase) -> Result<ExitCode> {
    match cmd {
        RecordCmd::Create {
            out,
            keys,
            time,
            embed_keys,
        } => create(&out, &keys, time.unwrap_or_else(now_ms), embed_keys, pass)?,
        RecordCmd::Export { record, out } => {
            let mut rec = read_record(&record)?;
            if !rec.master.is_finalized() {
                return Err(refuse("a draft is not published; apply it first"));
            }
            rec.private_keys = None;
            write_record(&out, &rec)?;
            outln!("exported {} without its Private Key Map", out.display());
        }
        RecordCmd::Draft {
            record,
            out,
            set_master,
            remove_master,
            delegate,
            undelegate,
            name_key,
            time,
        } => {
            let rec = read_record(&record)?;
            let mut d = workflow::draft(&rec, time.unwrap_or_else(now_ms)).map_err(lib)?;
            for spec in &set_master {
                let (key, f) = split_spec(spec, 2, "KEY:GROUP:VALUE")?;
                let idx = workflow::set_master_key(
                    &mut d,
                    keyio::public_key(key)?,
                    parse_u8(f[0], "group")?,
                    parse_u8(f[1], "value")?,
                )
                .map_err(lib)?;
                outln!("master key {idx} set");
            }
            for idx in &remove_master {
                workflow::remove_master_key(&mut d, *idx).map_err(lib)?;
            }
            for spec in &delegate {
                let (zone, rest) = spec
                    .split_once(':')
                    .ok_or_else(|| anyhow!("{spec:?}: expected ZONE:KEY:GROUP:GRANT:DENY"))?;
                let (key, f) = split_spec(rest, 3, "ZONE:KEY:GROUP:GRANT:DENY")?;
                let idx = workflow::set_delegation_key(
                    &mut d,
                    parse_zone(zone)?,
                    keyio::public_key(key)?,
                    parse_u8(f[0], "group")?,
                    parse_u8(f[1], "grant")?,
                    parse_u8(f[2], "deny")?,
                )
                .map_err(lib)?;
                outln!("{zone} delegated to key {idx}");
            }
            for spec in &undelegate {
                let (zone, idx) = spec
                    .split_once(':')
                    .ok_or_else(|| anyhow!("{spec:?}: expected ZONE:INDEX"))?;
                workflow::remove_delegation_key(&mut d, parse_zone(zone)?, parse_u8(idx, "index")?)
                    .map_err(lib)?;
            }
            for spec in &name_key {
                let (key, name) = spec
                    .split_once(':')
                    .ok_or_else(|| anyhow!("{spec:?}: expected INDEX:NAME"))?;
                let idx = match key.parse::<u8>() {
                    Ok(i) => i,
                    Err(_) => d
                        .keys
                        .index_of(&keyio::public_key(key)?.id())
                        .ok_or_else(|| anyhow!("{key}: not in the record"))?,
                };
                if !poz::codec::valid_str8(name) {
                    bail!("key name {name:?}: at most 255 bytes, no control characters");
                }
                d.key_names.insert(idx, name.to_owned());
            }
            write_record(&out, &d)?;
            outln!(
                "draft of serial {} written to {}",
                d.master.serial,
                out.display()
            );
            outln!(
                "authorizing keys (serial {}): {}",
                rec.master.serial,
                workflow::draft_tally(&d).map_err(lib)?.describe()
            );
        }
        RecordCmd::Sign {
            draft,
            key,
            embedded,
            out,
        } => {
            let mut d = read_record(&draft)?;
            let keys = match key {
                Some(path) => vec![open_key(&path, pass)?],
                None => {
                    let sealed = d
                        .private_keys
                        .as_ref()
                        .ok_or_else(|| refuse("the draft has no Private Key Map"))?;
                    sealed.open(&pass.get("the record's Private Key Map")?)?
                }
            };
            let mut signed = Vec::new();
            for k in &keys {
                match workflow::sign_draft(&mut d, k) {
                    Ok(idx) => signed.push(idx.to_string()),
                    // An embedded map may hold keys that are not master
                    // keys of the authorizing revision; they do not sign.
                    Err(poz::Error::NotAuthorizingKey { .. }) if embedded => {}
                    Err(e) => return Err(lib(e)),
                }
            }
            if signed.is_empty() {
                return Err(refuse("none of the embedded keys may sign this draft"));
            }
            write_record(out.as_deref().unwrap_or(&draft), &d)?;
            let t = workflow::draft_tally(&d).map_err(lib)?;
            outln!(
                "signed serial {} as key {}; {}",
                d.master.serial,
                signed.join(", "),
                t.describe()
            );
            if t.is_met() {
                outln!(
                    "threshold met (group {}): ready to apply",
                    t.authorizing_group().unwrap_or(0)
                );
            }
        }
        RecordCmd::Apply { draft, out } => {
            let mut d = read_record(&draft)?;
            let h = workflow::apply(&mut d).map_err(lib)?;
            write_record(&out, &d)?;
            outln!("applied serial {} -> {}", d.master.serial, out.display());
            outln!("current_master_hash {h}");
        }
        RecordCmd::Inspect { record, json, id } => {
            let rec = read_record(&record)?;
            if id {
                outln!("{}", rec.id());
            } else if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&render::record_json(&rec))?
                );
            } else {
                out!("{}", render::record_text(&rec));
            }
        }
        RecordCmd::Verify {
            record,
            json,
            allow_partial,
        } => return verify(&record, json, allow_partial),
    }
    Ok(ExitCode::SUCCESS)
}

fn create(out: &Path, specs: &[String], time: u64, embed: bool, pass: &Passphrase) -> Result<()> {
    if out.exists() {
        bail!("{} exists; refusing to overwrite a record", out.display());
    }
    let mut gks = Vec::new();
    let mut files = Vec::new();
    for s in specs {
        let (file, f) = split_spec(s, 2, "KEYFILE:GROUP:VALUE")?;
        let kf = keyio::read_key_file(Path::new(file))?;
        gks.push(GenesisKey {
            public: kf.public.clone(),
            group: parse_u8(f[0], "group")?,
            value: parse_u8(f[1], "value")?,
        });
        files.push(PathBuf::from(file));
    }
    let mut rec = workflow::genesis(&gks, time).map_err(lib)?;
    let mut opened = Vec::new();
    for f in &files {
        let k = open_key(f, pass)?;
        workflow::sign_draft(&mut rec, &k).map_err(lib)?;
        opened.push(k);
    }
    let id = workflow::apply(&mut rec).map_err(lib)?;
    if embed {
        let refs: Vec<&poz::SigningKey> = opened.iter().collect();
        let p = pass.get("the record's Private Key Map")?;
        rec.private_keys = Some(poz::private::SealedKeys::seal(
            &refs,
            &p,
            poz::private::KdfParams::default(),
        )?);
        outln!("sealed {} keys into the Private Key Map", refs.len());
    }
    write_record(out, &rec)?;
    outln!("created {} (serial 1)", out.display());
    outln!("record id {id}");
    Ok(())
}

fn verify(path: &Path, as_json: bool, allow_partial: bool) -> Result<ExitCode> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let report = match Record::from_bytes(&bytes) {
        Ok(rec) => {
            let r = poz::verify_record(&rec);
            if !as_json {
                let chain: Vec<String> = rec
                    .history
                    .iter()
                    .chain([&rec.master])
                    .map(|m| m.serial.to_string())
                    .collect();
                outln!("record {}  chain {}", rec.id(), chain.join(" -> "));
            }
            r
        }
        Err(e) => {
            if as_json {
                outln!(
                    "{}",
                    json!({"valid": false, "complete": false, "checks": [{"rule": "decode", "outcome": "fail", "detail": e.to_string()}]})
                );
            } else {
                outln!("FAIL decode  {e}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    let ok = report.is_valid() && (allow_partial || report.is_complete());
    if as_json {
        outln!(
            "{}",
            json!({"valid": report.is_valid(), "complete": report.is_complete(), "checks": report.checks})
        );
    } else {
        out!("{}", render::report_text(&report));
        outln!(
            "{}",
            if report.is_complete() {
                "VALID: every rule holds"
            } else if report.is_valid() {
                "VALID BUT INCOMPLETE: some rules could not be checked (pass --allow-partial to accept)"
            } else {
                "INVALID"
            }
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
