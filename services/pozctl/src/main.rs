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

mod audit;
mod cmd;
mod grpc;
mod import;
mod keyio;
mod net;
mod render;

use clap::{Args, Parser, Subcommand};
use cmd::Refused;
use keyio::Passphrase;
use std::path::PathBuf;
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

/// The verbs, by family: each family's arguments and code are in its
/// module under `cmd/`.
#[derive(Subcommand)]
enum Cmd {
    /// Key files: one Ed25519 key each, sealed with a passphrase.
    #[command(subcommand)]
    Key(cmd::key::KeyCmd),
    // create, export, draft, sign, apply, inspect, verify
    #[command(flatten)]
    Record(cmd::record::RecordCmd),
    /// Identity bindings: issue, sign, add, verify, revoke.
    #[command(subcommand)]
    Identity(cmd::identity::IdentityCmd),
    /// A zone's signed authority section (namespace, service reference).
    #[command(subcommand)]
    Authority(cmd::zone::AuthorityCmd),
    /// Service Zone entries.
    #[command(subcommand)]
    Service(cmd::zone::ServiceCmd),
    /// Email Zone inboxes (each names a MAIL service of the Service Zone).
    #[command(subcommand)]
    Inbox(cmd::entries::InboxCmd),
    /// Feed Zone feeds (each names a FEED service of the Service Zone).
    #[command(subcommand)]
    Feed(cmd::entries::FeedCmd),
    /// Auth Zone trust groups: the keys that may log in for the record.
    #[command(subcommand)]
    TrustGroup(cmd::entries::TrustGroupCmd),
    /// The Auth Zone's revocation service (a REVOCATION service of the
    /// Service Zone).
    #[command(subcommand)]
    RevocationService(cmd::entries::RevocationServiceCmd),
    /// Whole-zone operations.
    #[command(subcommand)]
    Zone(cmd::zone::ZoneCmd),
    /// Look a record or a binding up on POZ servers; every answer is
    /// verified (chain from genesis, signatures, thresholds) before it is shown.
    Query(cmd::remote::Query),
    /// Set the servers the fleet's MIRRORS answer names for a domain
    /// (operators: over the store's gRPC API). No --host clears them.
    Mirrors(cmd::mirrors::Mirrors),
    /// Push a fully signed record revision to its authority (port 7076).
    Submit(cmd::remote::Submit),
    /// Publish a record to a provider that hosts records (port 7076,
    /// SUBMIT_SIGNED kind 3): a new record, verified from genesis, or the
    /// next revision of one it hosts. Anyone can then look it up by its
    /// record name (its ID in hex) on that provider's query ports.
    Publish(cmd::holder::Publish),
    /// A provider's queue of binding requests (Provider API gRPC): list,
    /// approve, refuse.
    #[command(subcommand)]
    Requests(cmd::requests::RequestsCmd),
    /// A record's fingerprint: 30 digits to compare aloud; with a second
    /// record, the pair's 60 digits, the same on both sides (SPEC §19).
    /// Each record is verified from genesis first.
    Fingerprint(cmd::fingerprint::FingerprintArgs),
    /// Login with the Auth Zone (SPEC §20): make a challenge, sign it with
    /// a trust group's keys, verify the proof (exit 0 accepted, 1 refused).
    #[command(subcommand)]
    Auth(cmd::auth::AuthCmd),
    /// POZ-as-CA (SPEC §21): issue a host's TLS certificate signed by the
    /// record key its Service Zone host names by ca_key_idx.
    #[command(subcommand)]
    Cert(cmd::cert::CertCmd),
    /// Audit a provider's issuance over its public query ports (SPEC
    /// §14.8): page its batch log and check every batch (each leaf once,
    /// proving to the root; root signatures to the grant threshold), or
    /// with --handle list one handle's bindings, each verified. Exit 1 on
    /// any gap or failed check.
    Audit(cmd::audit::Audit),
}

fn run(cmd: Cmd, pass: &Passphrase) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Key(c) => cmd::key::run(c, pass),
        Cmd::Record(c) => cmd::record::run(c, pass),
        Cmd::Identity(c) => cmd::identity::run(c, pass),
        Cmd::Authority(c) => cmd::zone::authority(c, pass),
        Cmd::Service(c) => cmd::zone::service(c, pass),
        Cmd::Zone(c) => cmd::zone::zone(c, pass),
        Cmd::Inbox(c) => cmd::entries::inbox(c, pass),
        Cmd::Feed(c) => cmd::entries::feed(c, pass),
        Cmd::TrustGroup(c) => cmd::entries::trust_group(c, pass),
        Cmd::RevocationService(c) => cmd::entries::revocation_service(c, pass),
        Cmd::Query(a) => cmd::remote::query(a),
        Cmd::Mirrors(a) => cmd::mirrors::run(a),
        Cmd::Submit(a) => cmd::remote::submit(a),
        Cmd::Publish(a) => cmd::holder::publish(a),
        Cmd::Requests(c) => cmd::requests::run(c),
        Cmd::Fingerprint(a) => cmd::fingerprint::run(a),
        Cmd::Auth(c) => cmd::auth::run(c, pass),
        Cmd::Cert(c) => cmd::cert::run(c, pass),
        Cmd::Audit(a) => cmd::audit::run(a),
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
