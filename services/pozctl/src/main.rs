//! pozctl: create, inspect, sign and verify POZ records and identity
//! bindings from the command line.
//!
//! Exit codes (SPEC §12): 0 success; 1 the operation was refused or a
//! check failed (threshold not met; a record, draft or binding that does
//! not decode or does not verify; an answer nothing pins); 2 usage or I/O
//! error (bad flags, unreadable files, unreachable servers).
#![forbid(unsafe_code)]

/// `println!` for pozctl's output: when the reader has gone away
/// (`pozctl … | head -1`), pozctl exits at once with status 141, as a
/// program killed by SIGPIPE would, instead of panicking as `println!`
/// does (Rust ignores SIGPIPE, so the write fails with EPIPE).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let mut o = std::io::stdout().lock();
        if let Err(e) = writeln!(o, $($t)*) {
            $crate::stdout_failed(e)
        }
    }};
}

/// `print!` for pozctl's output, with [`outln!`]'s end on a closed pipe.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let mut o = std::io::stdout().lock();
        if let Err(e) = write!(o, $($t)*).and_then(|()| o.flush()) {
            $crate::stdout_failed(e)
        }
    }};
}

/// Standard output failed: a reader that went away ends pozctl quietly
/// (141, the shells' status for SIGPIPE); any other failure is an I/O
/// error (2).
pub(crate) fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141)
    }
    eprintln!("error: writing to standard output: {e}");
    std::process::exit(2)
}

mod import;
mod keyio;
mod net;
mod render;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use keyio::{open_key, read_entry, read_record, write_atomic, write_record, Passphrase};
use poz::entries::{PoolHost, RevocationReason, ServiceEntry, ServiceType};
use poz::verify::{verify_and_accept, verify_binding};
use poz::workflow::{self, GenesisKey};
use poz::zone::{EntryKind, SignedEntry, ZoneType};
use poz::{Codec, Hash32, Record};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "pozctl",
    version,
    about = "POZ records: create, draft, sign, apply, inspect, verify; identity bindings"
)]
struct Cli {
    #[command(flatten)]
    pass: PassArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct PassArgs {
    /// Read key passphrases from this file (first line). Otherwise
    /// POZ_PASSPHRASE, otherwise a prompt on the terminal.
    #[arg(long, global = true)]
    passphrase_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Key files: one Ed25519 key each, sealed with a passphrase.
    #[command(subcommand)]
    Key(KeyCmd),
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
    /// Identity bindings: issue, sign, add, verify, revoke.
    #[command(subcommand)]
    Identity(IdentityCmd),
    /// A zone's signed authority section (namespace, service reference).
    #[command(subcommand)]
    Authority(AuthorityCmd),
    /// Service Zone entries.
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Whole-zone operations.
    #[command(subcommand)]
    Zone(ZoneCmd),
    /// Look a record or a binding up on POZ servers; every answer is
    /// verified (chain from genesis, signatures, thresholds) before it is shown.
    Query {
        /// The domain whose record to look up.
        domain: String,
        /// A handle in the domain's Identity Zone (CHAIN lookup).
        #[arg(long)]
        handle: Option<String>,
        /// master, serial or chain (default: chain with --handle, else master).
        #[arg(long = "type", default_value = "auto")]
        query_type: String,
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long)]
        json: bool,
    },
    /// Set the servers the fleet's MIRRORS answer names for a domain
    /// (operators: over the store's gRPC API). No --host clears them.
    Mirrors {
        /// The domain whose record the mirrors carry.
        domain: String,
        /// The store's gRPC address.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        store: String,
        /// HOST:PORT[:ENCRYPTION[:SERVER_KEY_HEX]][@PRIORITY/WEIGHT]
        /// (ENCRYPTION = none, tls, noise_nk), in the order to answer. Repeat.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Push a fully signed record revision to its authority (port 7076).
    Submit {
        record: PathBuf,
        #[arg(long)]
        domain: String,
        #[command(flatten)]
        target: TargetArgs,
    },
}

#[derive(Args, Clone)]
struct TargetArgs {
    /// Ask this server (HOST:PORT) instead of discovering the domain's.
    #[arg(long)]
    server: Option<String>,
    /// Use Noise NK with this server key (64 hex digits): port 7075 for
    /// lookups, 7076 for submissions. Without it lookups are plaintext.
    #[arg(long)]
    noise_key: Option<String>,
    /// Discovery asks this DNS server (IP:PORT) instead of the system's.
    #[arg(long)]
    nameserver: Option<std::net::SocketAddr>,
    /// After discovery, ask over Noise NK the hosts the record's own
    /// Service Zone publishes (so the lookup is private).
    #[arg(long, conflicts_with_all = ["server", "noise_key"])]
    private: bool,
    /// The hardest proof of work to do when a server asks (leading zero bits).
    #[arg(long, default_value_t = 24)]
    max_pow: u8,
    /// The record ID (64 hex digits) the answer must have: pins the
    /// domain's record by hand, as discovery's `_poz` TXT record or
    /// well-known file does. An answer nothing pins is UNPINNED (exit 1).
    #[arg(long, value_parser = parse_record_id)]
    record_id: Option<Hash32>,
    /// Accept an answer nothing pins (printed as UNPINNED, exit 0).
    #[arg(long)]
    allow_unpinned: bool,
    /// Discovery: trust only this CA (PEM file) for the well-known file
    /// (a private CA), instead of the web PKI.
    #[arg(long, value_name = "PEM")]
    well_known_root: Option<PathBuf>,
    /// Discovery: fetch the well-known file from this IP:PORT (split
    /// horizon, tests); needs --well-known-root.
    #[arg(long, requires = "well_known_root")]
    well_known_address: Option<std::net::SocketAddr>,
    /// Discovery without the well-known file (DNS only).
    #[arg(long, conflicts_with = "well_known_root")]
    no_well_known: bool,
}

fn parse_record_id(s: &str) -> std::result::Result<Hash32, String> {
    Hash32::from_hex(s).ok_or_else(|| format!("{s:?} is not a record ID (64 hex digits)"))
}

impl TargetArgs {
    fn target(&self) -> net::Target {
        net::Target {
            private: self.private,
            server: self.server.clone(),
            noise_key: self.noise_key.clone(),
            nameserver: self.nameserver,
            max_pow: self.max_pow,
            record_id: self.record_id,
            allow_unpinned: self.allow_unpinned,
            well_known_root: self.well_known_root.clone(),
            well_known_address: self.well_known_address,
            no_well_known: self.no_well_known,
        }
    }
}

#[derive(Subcommand)]
enum ZoneCmd {
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

#[derive(Subcommand)]
enum KeyCmd {
    /// Generate a key into a new key file.
    Generate {
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a key file's public key and ID (no passphrase needed).
    Show {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum IdentityCmd {
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
    /// Verify a binding against its provider's record.
    Verify {
        binding: PathBuf,
        #[arg(long)]
        provider: PathBuf,
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
        /// The Provider API's gRPC endpoint, e.g. http://127.0.0.1:50054.
        #[arg(long)]
        api: String,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
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

#[derive(Subcommand)]
enum AuthorityCmd {
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
enum ServiceCmd {
    /// Add a service with its pool of hosts to the Service Zone.
    Add {
        record: PathBuf,
        /// poz_query, poz_submit, https, mail, feed, revocation, custom
        #[arg(long = "type")]
        service_type: String,
        #[arg(long, default_value = "")]
        name: String,
        /// HOST:PORT[:ENCRYPTION[:SERVER_KEY_HEX]][@PRIORITY/WEIGHT]
        /// (ENCRYPTION = none, tls, noise_nk). Repeat.
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        #[arg(long)]
        time: Option<u64>,
    },
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A refusal the user should see plainly (exit 1), as opposed to usage or
/// I/O trouble (exit 2).
#[derive(Debug)]
struct Refused(String);
impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Refused {}

fn refuse(msg: impl Into<String>) -> anyhow::Error {
    anyhow!(Refused(msg.into()))
}

/// Maps library refusals to exit code 1: thresholds, verification, and
/// a record, draft or entry that does not decode or is not in the state
/// the operation needs. What is left (bad text or times given on the
/// command line, a wrong passphrase) is usage: 2.
fn lib(e: poz::Error) -> anyhow::Error {
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

/// An error with its causes on one line, each said once: a cause whose
/// text the line already holds (an error that prints its source in its
/// own message, as many do) is not repeated.
fn chain_text(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn parse_zone(s: &str) -> Result<ZoneType> {
    ZoneType::from_name(s)
        .ok_or_else(|| anyhow!("unknown zone {s:?} (identity, feed, email, auth, service)"))
}

fn parse_u8(s: &str, what: &str) -> Result<u8> {
    s.parse()
        .with_context(|| format!("{what}: {s:?} is not a number 0..=255"))
}

/// Splits "A:B:C" from the right into the last `n` fields and the rest
/// (so a key file path may itself contain ':').
fn split_spec<'a>(s: &'a str, n: usize, form: &str) -> Result<(&'a str, Vec<&'a str>)> {
    let mut parts: Vec<&str> = s.rsplitn(n + 1, ':').collect();
    if parts.len() != n + 1 {
        bail!("{s:?}: expected {form}");
    }
    let head = parts.pop().unwrap_or_default();
    parts.reverse();
    Ok((head, parts))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let pass = Passphrase {
        file: cli.pass.passphrase_file.clone(),
    };
    match run(cli.cmd, &pass) {
        Ok(code) => code,
        Err(e) => {
            if e.downcast_ref::<Refused>().is_some() {
                eprintln!("refused: {}", chain_text(&e));
                ExitCode::from(1)
            } else {
                eprintln!("error: {}", chain_text(&e));
                ExitCode::from(2)
            }
        }
    }
}

fn run(cmd: Cmd, pass: &Passphrase) -> Result<ExitCode> {
    match cmd {
        Cmd::Key(KeyCmd::Generate { out }) => {
            let k = keyio::create_key_file(&out, pass)?;
            outln!("wrote {} (key id {})", out.display(), k.public().id());
            outln!("public key {}", hex::encode(k.public().bytes()));
        }
        Cmd::Key(KeyCmd::Show { file, json }) => {
            let kf = keyio::read_key_file(&file)?;
            if json {
                outln!(
                    "{}",
                    json!({"public_key": hex::encode(kf.public.bytes()), "id": kf.public.id(), "type": kf.public.key_type().to_string()})
                );
            } else {
                outln!("type       {}", kf.public.key_type());
                outln!("public key {}", hex::encode(kf.public.bytes()));
                outln!("id         {}", kf.public.id());
            }
        }
        Cmd::Create {
            out,
            keys,
            time,
            embed_keys,
        } => create(&out, &keys, time.unwrap_or_else(now_ms), embed_keys, pass)?,
        Cmd::Export { record, out } => {
            let mut rec = read_record(&record)?;
            if !rec.master.is_finalized() {
                return Err(refuse("a draft is not published; apply it first"));
            }
            rec.private_keys = None;
            write_record(&out, &rec)?;
            outln!("exported {} without its Private Key Map", out.display());
        }
        Cmd::Draft {
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
        Cmd::Sign {
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
        Cmd::Apply { draft, out } => {
            let mut d = read_record(&draft)?;
            let h = workflow::apply(&mut d).map_err(lib)?;
            write_record(&out, &d)?;
            outln!("applied serial {} -> {}", d.master.serial, out.display());
            outln!("current_master_hash {h}");
        }
        Cmd::Inspect { record, json } => {
            let rec = read_record(&record)?;
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&render::record_json(&rec))?
                );
            } else {
                out!("{}", render::record_text(&rec));
            }
        }
        Cmd::Query {
            domain,
            handle,
            query_type,
            target,
            json,
        } => {
            return net::query(
                &target.target(),
                &domain,
                handle.as_deref(),
                &query_type,
                json,
            )
        }
        Cmd::Submit {
            record,
            domain,
            target,
        } => return net::submit(&target.target(), &domain, &record),
        Cmd::Mirrors {
            domain,
            store,
            hosts,
        } => {
            let hosts = hosts
                .iter()
                .map(|h| parse_host(h))
                .collect::<Result<Vec<_>>>()?;
            set_mirrors(&store, &domain, &hosts)?;
            outln!("{domain}: {} mirror(s) set", hosts.len());
        }
        Cmd::Verify {
            record,
            json,
            allow_partial,
        } => return verify(&record, json, allow_partial),
        Cmd::Identity(c) => return identity(c, pass),
        Cmd::Authority(AuthorityCmd::Set {
            record,
            zone,
            namespace,
            service_ref,
            keys,
            time,
        }) => {
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
        Cmd::Zone(ZoneCmd::Resign { record, zone, keys }) => {
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
        Cmd::Service(ServiceCmd::Add {
            record,
            service_type,
            name,
            hosts,
            keys,
            time,
        }) => {
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

/// Resolves the domain at the store, then replaces its record's mirrors.
fn set_mirrors(store: &str, domain: &str, hosts: &[PoolHost]) -> Result<()> {
    use poz_proto::v1 as pb;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(store.to_owned())
            .with_context(|| format!("--store {store}"))?
            .connect()
            .await
            .with_context(|| format!("connecting to the store at {store}"))?;
        let head = pb::store_read_client::StoreReadClient::new(channel.clone())
            .get_head(pb::GetHeadRequest {
                record: Some(pb::RecordRef {
                    by: Some(pb::record_ref::By::Domain(domain.to_ascii_lowercase())),
                }),
            })
            .await
            .with_context(|| format!("{domain}: resolving the record"))?
            .into_inner();
        pb::store_write_client::StoreWriteClient::new(channel)
            .set_mirrors(pb::SetMirrorsRequest {
                record_id: head.record_id,
                hosts: hosts.iter().map(|h| h.to_bytes()).collect(),
            })
            .await
            .with_context(|| format!("{domain}: SetMirrors"))?;
        Ok(())
    })
}

fn parse_host(spec: &str) -> Result<PoolHost> {
    Ok(PoolHost::from_spec(spec)?)
}

fn identity(cmd: IdentityCmd, pass: &Passphrase) -> Result<ExitCode> {
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
            at,
            json,
            allow_partial,
        } => {
            let rec = read_record(&provider)?;
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
            if !vr.complete && !allow_partial {
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
        IdentityCmd::Import { csv, api, quiet } => return import::import(&csv, &api, quiet),
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
