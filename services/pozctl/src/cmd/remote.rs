//! The verbs that talk to POZ servers over the POZ protocol: `query`
//! (every answer verified before it is shown) and `submit`.

use crate::net;
use anyhow::Result;
use clap::Args;
use poz::Hash32;
use std::path::PathBuf;
use std::process::ExitCode;

// `pozctl query`'s arguments (its help text is on `Cmd::Query`).
#[derive(Args)]
pub struct Query {
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
    /// Also write the verified record (MASTER) to this file.
    #[arg(long, value_name = "FILE")]
    save: Option<PathBuf>,
}

// `pozctl submit`'s arguments (its help text is on `Cmd::Submit`).
#[derive(Args)]
pub struct Submit {
    record: PathBuf,
    #[arg(long)]
    domain: String,
    #[command(flatten)]
    target: TargetArgs,
}

pub fn query(a: Query) -> Result<ExitCode> {
    let mut t = a.target.target();
    t.save = a.save;
    net::query(&t, &a.domain, a.handle.as_deref(), &a.query_type, a.json)
}

pub fn submit(a: Submit) -> Result<ExitCode> {
    net::submit(&a.target.target(), &a.domain, &a.record)
}

#[derive(Args, Clone)]
pub struct TargetArgs {
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
    /// horizon, tests); needs --well-known-root or --well-known-record.
    #[arg(long)]
    well_known_address: Option<std::net::SocketAddr>,
    /// Discovery: trust, for the well-known file, a certificate signed by
    /// the CA key this record's Service Zone names for the domain's host
    /// (POZ-as-CA, SPEC §21): a copy of the domain's record already held.
    /// With --well-known-root, the certificate must also chain to it.
    #[arg(long, value_name = "RECORD", conflicts_with = "no_well_known")]
    well_known_record: Option<PathBuf>,
    /// Discovery without the well-known file (DNS only).
    #[arg(long, conflicts_with = "well_known_root")]
    no_well_known: bool,
}

fn parse_record_id(s: &str) -> std::result::Result<Hash32, String> {
    Hash32::from_hex(s).ok_or_else(|| format!("{s:?} is not a record ID (64 hex digits)"))
}

impl TargetArgs {
    pub(crate) fn target(&self) -> net::Target {
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
            well_known_record: self.well_known_record.clone(),
            no_well_known: self.no_well_known,
            save: None,
        }
    }
}
