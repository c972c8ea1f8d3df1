//! `pozctl query` and `pozctl submit`: the network side, through the
//! verifying client. Every answer is verified before it is printed.

use crate::render;
use anyhow::{anyhow, bail, Context, Result};
use poz::codec::Codec;
use poz::wire::SubmitSigned;
use poz_client::discovery::{Discovery, HttpsWellKnown};
use poz_client::{Client, ClientConfig, ClientError, Endpoint, Security};
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

/// Where to send: an explicit server, or discovery by domain.
pub struct Target {
    /// After discovery, verify the record over plaintext, then ask its own
    /// Noise NK hosts (from its Service Zone) so the lookup stays private.
    pub private: bool,
    pub server: Option<String>,
    pub noise_key: Option<String>,
    pub nameserver: Option<SocketAddr>,
    pub max_pow: u8,
    /// The record ID the answer must have (`--record-id`), pinned by hand.
    pub record_id: Option<poz::Hash32>,
    /// Accept an answer nothing pins (exit 0, printed as UNPINNED).
    pub allow_unpinned: bool,
    /// Discovery's well-known file: trust only this CA (PEM) instead of
    /// the web PKI, and fetch it from this address (tests, split horizon).
    pub well_known_root: Option<std::path::PathBuf>,
    pub well_known_address: Option<SocketAddr>,
    /// Discovery's well-known file: trust the CA keys this record names
    /// for the domain's host (POZ-as-CA), and the roots above too if given.
    pub well_known_record: Option<std::path::PathBuf>,
    /// Discovery without the well-known file.
    pub no_well_known: bool,
    /// `pozctl query --save`: write the verified MASTER record here.
    pub save: Option<std::path::PathBuf>,
}

/// What ties an answer to the domain asked (issue 12 §9): a record ID
/// pinned by discovery (DNS `_poz` TXT, the well-known file) or by
/// `--record-id`. Without one, a server (or anything between us and it)
/// can answer with another domain's record, and only the Identity
/// namespace check below stands in the way.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pin {
    pub(crate) id: poz::Hash32,
    pub(crate) by: &'static str,
}

/// Why an answer is refused although it verifies (exit 1).
#[derive(Debug)]
pub(crate) enum NotTheDomain {
    /// The record's Identity authority speaks for another domain.
    Namespace {
        record: poz::Hash32,
        namespace: String,
    },
    /// The binding's human form names another domain.
    Binding { human: String },
    /// The answer's record is not the pinned one.
    Pinned { got: poz::Hash32, pin: Pin },
}

impl std::fmt::Display for NotTheDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotTheDomain::Namespace { record, namespace } => write!(
                f,
                "record {record} speaks for identity namespace \"{namespace}\", not the domain asked"
            ),
            NotTheDomain::Binding { human } => {
                write!(f, "binding \"{human}\" is not in the namespace of the domain asked")
            }
            NotTheDomain::Pinned { got, pin } => write!(
                f,
                "record {got} is not the record {} that {} pins",
                pin.id, pin.by
            ),
        }
    }
}

/// Whether `namespace` (an Identity authority's; empty: none stated)
/// names `domain` (case and a final dot aside).
fn same_domain(namespace: &str, domain: &str) -> bool {
    namespace
        .trim_end_matches('.')
        .eq_ignore_ascii_case(domain.trim_end_matches('.'))
}

/// A verified record answers for `domain` only if its Identity authority,
/// when it states a namespace, names `domain`, and it is the pinned record
/// when something pins one.
pub(crate) fn check_record(
    rec: &poz::Record,
    id: poz::Hash32,
    domain: &str,
    pin: Option<Pin>,
) -> Result<(), NotTheDomain> {
    // A record name is not a namespace: the record's ID, checked below
    // against the pin the name makes, is what ties it.
    let named = poz::wire::record_name_id(domain).is_some();
    if let Some(a) = rec.authorities.get(&poz::zone::ZoneType::IDENTITY) {
        if !named && !a.namespace.is_empty() && !same_domain(&a.namespace, domain) {
            return Err(NotTheDomain::Namespace {
                record: id,
                namespace: a.namespace.clone(),
            });
        }
    }
    match pin {
        Some(p) if p.id != id => Err(NotTheDomain::Pinned { got: id, pin: p }),
        _ => Ok(()),
    }
}

fn noise_key(hex_key: &str) -> Result<[u8; 32]> {
    let b = hex::decode(hex_key).context("--noise-key: hex")?;
    b.try_into()
        .map_err(|_| anyhow!("--noise-key: an X25519 key is 32 bytes"))
}

fn resolve(server: &str) -> Result<Vec<SocketAddr>> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = server
        .to_socket_addrs()
        .with_context(|| format!("--server {server}: HOST:PORT"))?
        .collect();
    if addrs.is_empty() {
        bail!("--server {server}: resolves to no address");
    }
    Ok(addrs)
}

/// Discovery as pozctl runs it: DNS (the system's resolver or
/// `--nameserver`) and the well-known file over HTTPS (the web PKI, or
/// `--well-known-root`), unless `--no-well-known`.
fn discovery(t: &Target, domain: &str) -> Result<Discovery> {
    let disc = match t.nameserver {
        Some(ns) => Discovery::with_nameserver(ns),
        None => Discovery::system()?,
    };
    if t.no_well_known {
        return Ok(disc);
    }
    if t.well_known_address.is_some()
        && t.well_known_root.is_none()
        && t.well_known_record.is_none()
    {
        bail!("--well-known-address needs --well-known-root or --well-known-record");
    }
    let root = match &t.well_known_root {
        Some(pem) => Some(
            std::fs::read(pem).with_context(|| format!("--well-known-root {}", pem.display()))?,
        ),
        None => None,
    };
    let pinned_address = t.well_known_address.map(|a| (domain, a));
    let fetcher = match (&t.well_known_record, &root) {
        (Some(path), _) => {
            let rec = crate::keyio::read_record(path)?;
            let vr = poz::verify::verify_and_accept(rec).map_err(|report| {
                let f: Vec<String> = report
                    .failures()
                    .map(|(r, d)| format!("{r}: {d}"))
                    .collect();
                crate::cmd::refuse(format!(
                    "--well-known-record {}: the record does not verify: {}",
                    path.display(),
                    f.join("; ")
                ))
            })?;
            HttpsWellKnown::with_poz_ca(&vr, root.as_deref(), pinned_address)?
        }
        (None, Some(root)) => HttpsWellKnown::with_root(root, pinned_address)?,
        (None, None) => HttpsWellKnown::web_pki()?,
    };
    Ok(disc.with_well_known(Box::new(fetcher)))
}

pub(crate) async fn endpoints(
    t: &Target,
    domain: &str,
) -> Result<(Vec<Endpoint>, Option<poz::Hash32>, String)> {
    let security = match &t.noise_key {
        Some(k) => Security::Noise(noise_key(k)?),
        None => Security::Plain,
    };
    if t.server.is_none() && poz::wire::record_name_id(domain).is_some() {
        bail!("{domain} is a record name: a record without a domain has no discovery; give the --server that hosts it");
    }
    if let Some(s) = &t.server {
        let eps = resolve(s)?
            .into_iter()
            .map(|addr| Endpoint { addr, security })
            .collect();
        return Ok((eps, None, format!("server {s}")));
    }
    let disc = discovery(t, domain)?;
    let d = disc.discover(domain).await?;
    let pin = d.pin(domain)?;
    if t.private {
        let record = client(t).master(&d.query, domain, pin).await?;
        let eps = disc.noise_endpoints(&record).await;
        if eps.is_empty() {
            bail!("{domain}'s record publishes no reachable Noise NK query host");
        }
        // What discovery pinned, not the record just fetched: an answer
        // is pinned only if something other than a server vouches for it.
        return Ok((
            eps,
            pin,
            format!(
                "discovered via {}, Noise NK host from the record's Service Zone",
                d.via
            ),
        ));
    }
    let mut eps = d.query.clone();
    if let Security::Noise(k) = security {
        // A Noise key given by hand applies to the discovered hosts' 7075.
        eps = eps
            .into_iter()
            .map(|e| Endpoint {
                addr: SocketAddr::new(
                    e.addr.ip(),
                    if e.addr.port() == 7074 {
                        7075
                    } else {
                        e.addr.port()
                    },
                ),
                security: Security::Noise(k),
            })
            .collect();
    }
    Ok((eps, pin, format!("discovered via {}", d.via)))
}

pub(crate) fn client(t: &Target) -> Client {
    Client::new(ClientConfig {
        max_pow_difficulty: t.max_pow,
        ..ClientConfig::default()
    })
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Maps client errors to exit codes: a server's refusal or an answer that
/// does not verify is 1; unreachable servers and usage are 2.
pub fn exit_for(e: &ClientError) -> u8 {
    match e {
        ClientError::Status { .. }
        | ClientError::Invalid(_)
        | ClientError::Stale { .. }
        | ClientError::PinMismatch { .. }
        | ClientError::PowTooHard { .. } => 1,
        _ => 2,
    }
}

/// Why a query ends without an answer to print as it is.
enum Failure {
    /// The client's error (a server's refusal, an answer that does not
    /// verify: 1; unreachable: 2; see `exit_for`).
    Client(ClientError),
    /// The answer verifies but is not the domain's (exit 1).
    NotTheDomain(NotTheDomain),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure::Client(e)
    }
}

impl From<NotTheDomain> for Failure {
    fn from(e: NotTheDomain) -> Self {
        Failure::NotTheDomain(e)
    }
}

/// The pin the answer must match: `--record-id`, else discovery's; both
/// given and different is a refusal.
pub(crate) fn pin_of(t: &Target, found: Option<poz::Hash32>) -> Result<Option<Pin>> {
    Ok(match (t.record_id, found) {
        (Some(given), Some(d)) if given != d => {
            return Err(crate::cmd::refuse(format!(
                "--record-id {given} is not the record this domain's discovery (DNS TXT or .well-known/poz) names, {d}: give that ID, or leave --record-id out"
            )))
        }
        (Some(id), _) => Some(Pin {
            id,
            by: "--record-id",
        }),
        (None, Some(id)) => Some(Pin {
            id,
            by: "discovery",
        }),
        (None, None) => None,
    })
}

/// How a verified answer is tied to the domain, for the first line.
pub(crate) fn tied(pin: Option<Pin>) -> String {
    match pin {
        Some(p) => format!("record ID pinned by {}", p.by),
        None => "UNPINNED: nothing ties this record to the domain asked".into(),
    }
}

pub fn query(
    t: &Target,
    domain: &str,
    handle: Option<&str>,
    what: &str,
    as_json: bool,
) -> Result<ExitCode> {
    let rt = runtime()?;
    rt.block_on(async {
        let (eps, found, via) = match endpoints(t, domain).await {
            Ok(found) => found,
            // Discovery's own lookups (--private asks for the record
            // first) fail as the query would: same words, same code.
            Err(e) => match e.downcast_ref::<ClientError>() {
                Some(ce) => {
                    eprintln!("query failed: {}", crate::chain_text(&e));
                    return Ok(ExitCode::from(exit_for(ce)));
                }
                None => return Err(e),
            },
        };
        let mut pin = pin_of(t, found)?;
        // A record name pins itself (SPEC §14.4): the answer must be the
        // record with that ID, whatever else is given.
        if let Some(id) = poz::wire::record_name_id(domain) {
            if let Some(p) = pin.filter(|p| p.id != id) {
                return Err(crate::cmd::refuse(format!(
                    "{} {} is not the record {domain} names",
                    p.by, p.id
                )));
            }
            pin = Some(Pin {
                id,
                by: "its record name",
            });
        }
        // The client checks no pin: pozctl does, and says which pinned it.
        let c = client(t);
        let pinned = pin.is_some();
        let verdict = if pinned { "VERIFIED" } else { "UNPINNED" };
        let result: Result<(), Failure> = async {
            match (what, handle) {
                ("serial", _) => {
                    let a = c.serial(&eps, domain).await?;
                    if let Some(p) = pin.filter(|p| p.id != a.record_id) {
                        return Err(NotTheDomain::Pinned { got: a.record_id, pin: p }.into());
                    }
                    if as_json {
                        outln!("{}", json!({"record_id": a.record_id, "serial": a.serial, "current_master_hash": a.current_master_hash, "timestamp": a.timestamp, "pinned": pinned}));
                    } else {
                        outln!("{domain}: record {} serial {} ({via}; SERIAL is unsigned: a freshness hint; {})", a.record_id, a.serial, tied(pin));
                    }
                }
                ("master", _) | ("auto", None) => {
                    let r = c.master(&eps, domain, None).await?;
                    check_record(&r.record, r.id, domain, pin)?;
                    if let Some(path) = &t.save {
                        std::fs::write(path, r.record.to_bytes()).map_err(|e| {
                            ClientError::Invalid(format!("writing {}: {e}", path.display()))
                        })?;
                    }
                    if as_json {
                        outln!("{}", serde_json::to_string_pretty(&json!({"verified": true, "pinned": pinned, "pinned_by": pin.map(|p| p.by), "record": render::record_json(&r.record)})).unwrap_or_default());
                    } else {
                        outln!("{verdict} record for {domain} ({via}), chain from genesis; {}", tied(pin));
                        out!("{}", render::record_text(&r.record));
                    }
                }
                ("chain", Some(h)) | ("auto", Some(h)) => {
                    let (p, b) = c.chain(&eps, domain, h, None).await?;
                    check_record(&p.record, p.id, domain, pin)?;
                    let human = if b.namespace.is_empty() { b.binding.handle.clone() } else { format!("{}@{}", b.binding.handle, b.namespace) };
                    if !b.namespace.is_empty() && !same_domain(&b.namespace, domain) {
                        return Err(NotTheDomain::Binding { human }.into());
                    }
                    if as_json {
                        outln!("{}", json!({"verified": true, "pinned": pinned, "pinned_by": pin.map(|p| p.by), "provider": p.id, "serial": p.record.master.serial, "binding": b}));
                    } else {
                        outln!("{verdict} binding \"{human}\" -> {}", b.binding.subject);
                        outln!("provider {} serial {} ({via}); {}", p.id, p.record.master.serial, tied(pin));
                    }
                }
                (other, _) => {
                    return Err(ClientError::Invalid(format!("query type {other:?} needs --handle or is unknown (master, serial, chain)")).into());
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) if pinned || t.allow_unpinned => Ok(ExitCode::SUCCESS),
            Ok(()) => {
                eprintln!("refused: nothing pins the record for {domain} (no _poz TXT or well-known pin, no --record-id); give --record-id ID, or --allow-unpinned to accept it");
                Ok(ExitCode::from(1))
            }
            Err(Failure::NotTheDomain(e)) => {
                eprintln!("refused: {e} ({domain})");
                Ok(ExitCode::from(1))
            }
            Err(Failure::Client(e)) => {
                eprintln!("query failed: {e}");
                Ok(ExitCode::from(exit_for(&e)))
            }
        }
    })
}

pub fn submit(t: &Target, domain: &str, record: &Path) -> Result<ExitCode> {
    if t.noise_key.is_none() {
        bail!("submissions are encrypted: give the submit server's --noise-key");
    }
    let bytes = std::fs::read(record).with_context(|| format!("reading {}", record.display()))?;
    let rec = poz::Record::from_bytes(&bytes).map_err(|e| {
        crate::cmd::refuse(format!(
            "{} is not a valid POZ record: {e}",
            record.display()
        ))
    })?;
    let report = poz::verify_record(&rec);
    if !report.is_complete() {
        return Err(crate::cmd::refuse(format!(
            "{} does not verify completely; nothing was sent (run pozctl verify)",
            record.display()
        )));
    }
    let mut public = rec.clone();
    public.private_keys = None;
    let rt = runtime()?;
    rt.block_on(async {
        let (eps, _, _) = endpoints(t, domain).await?;
        let c = client(t);
        let s = SubmitSigned::Record {
            domain: domain.into(),
            record: public.to_bytes(),
        };
        match c.submit_signed(&eps, &s).await {
            Ok(ticket) => {
                outln!(
                    "submitted serial {}: {} (submission {})",
                    public.master.serial,
                    ticket.state,
                    hex::encode(ticket.submission_id)
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("submit failed: {e}");
                Ok(ExitCode::from(exit_for(&e)))
            }
        }
    })
}

/// The submit endpoints for `name` (a domain or a record name): the
/// server given, else those discovery finds. Submissions travel only over
/// Noise NK, so the server's key is required.
async fn submit_endpoints(t: &Target, name: &str) -> Result<Vec<Endpoint>> {
    if t.noise_key.is_none() {
        bail!("submissions are encrypted: give the submit server's --noise-key");
    }
    if t.server.is_none() && poz::wire::record_name_id(name).is_some() {
        bail!("a record without a domain has no discovery: give the provider's --server");
    }
    Ok(endpoints(t, name).await?.0)
}

/// Sends one SUBMIT_SIGNED and prints `said(ticket)` once committed.
pub fn submit_and_say(
    t: &Target,
    name: &str,
    s: &SubmitSigned,
    said: impl FnOnce(&poz::wire::SubmitTicket) -> String,
) -> Result<ExitCode> {
    let rt = runtime()?;
    rt.block_on(async {
        let eps = submit_endpoints(t, name).await?;
        match client(t).submit_signed(&eps, s).await {
            Ok(ticket) => {
                outln!("{}", said(&ticket));
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("submit failed: {e}");
                Ok(ExitCode::from(exit_for(&e)))
            }
        }
    })
}

/// Sends one SUBMIT_REQUEST and prints the ticket: the submission ID to
/// fetch the outcome with, and the state (issued and refused are final).
pub fn request_and_say(
    t: &Target,
    domain: &str,
    ask: &poz::wire::SubmitRequest,
    ticket_file: Option<&Path>,
) -> Result<ExitCode> {
    // The ticket file is opened before anything is sent: a path that
    // cannot be written must not file a request whose ID is then lost.
    let mut ticket_out = match ticket_file {
        Some(f) => Some(std::fs::File::create(f).with_context(|| {
            format!(
                "--ticket {}: cannot write it; nothing was sent",
                f.display()
            )
        })?),
        None => None,
    };
    let rt = runtime()?;
    rt.block_on(async {
        let eps = submit_endpoints(t, domain).await?;
        let c = client(t);
        match c.submit_request(&eps, ask).await {
            Ok(ticket) => {
                let sid = hex::encode(ticket.submission_id);
                if let (Some(out), Some(f)) = (ticket_out.as_mut(), ticket_file) {
                    use std::io::Write as _;
                    writeln!(out, "{sid}").with_context(|| {
                        format!("writing {} (the submission is {sid})", f.display())
                    })?;
                }
                outln!(
                    "requested \"{}@{domain}\" -> {}: {} (submission {sid})",
                    ask.handle,
                    ask.subject,
                    ticket.state,
                );
                if ticket.state != poz::wire::SubmissionState::REFUSED {
                    return Ok(ExitCode::SUCCESS);
                }
                // Refused at once (the handle is taken, a look-alike,
                // reserved): the reason is in the status, one more
                // exchange; a refusal is exit 1.
                match c.submit_status(&eps, ticket.submission_id).await {
                    Ok(a) => eprintln!("{}", crate::render::decision(a.ticket.state, &a.message)),
                    Err(e) => eprintln!("refused; the reason could not be read: {e}"),
                }
                Ok(ExitCode::from(1))
            }
            Err(e) => {
                eprintln!("request failed: {e}");
                Ok(ExitCode::from(exit_for(&e)))
            }
        }
    })
}

/// SUBMIT_STATUS for `sid`: the answer, or the exit code of a failure
/// (already reported).
pub fn status(
    t: &Target,
    sid: [u8; 16],
) -> Result<std::result::Result<poz::wire::StatusAnswer, ExitCode>> {
    if t.server.is_none() {
        bail!("give the provider's submit --server");
    }
    let rt = runtime()?;
    rt.block_on(async {
        let eps = submit_endpoints(t, "status").await?;
        match client(t).submit_status(&eps, sid).await {
            Ok(a) => Ok(Ok(a)),
            Err(e) => {
                eprintln!("status failed: {e}");
                Ok(Err(ExitCode::from(exit_for(&e))))
            }
        }
    })
}

/// The provider's record as a CHAIN for `handle` carries it (the binding
/// and its revocation, if any), verified from genesis and pinned (by
/// `--record-id`, discovery or a record name): what `identity verify
/// --from` and `identity adopt --from` judge a binding against.
pub fn provider_chain(
    t: &Target,
    domain: &str,
    handle: &str,
) -> Result<poz::verify::VerifiedRecord> {
    let rt = runtime()?;
    rt.block_on(async {
        let (eps, found, _) = endpoints(t, domain).await?;
        let pin = match poz::wire::record_name_id(domain) {
            Some(id) => Some(id),
            None => pin_of(t, found)?.map(|p| p.id),
        };
        let Some(pin) = pin else {
            return Err(crate::cmd::refuse(format!(
                "nothing pins the record for {domain}: give --record-id ID"
            )));
        };
        match client(t)
            .chain_record(&eps, domain, handle, Some(pin))
            .await
        {
            Ok(vr) => {
                check_record(&vr.record, vr.id, domain, None)
                    .map_err(|e| crate::cmd::refuse(format!("{e} ({domain})")))?;
                Ok(vr)
            }
            Err(e) if exit_for(&e) == 1 => Err(crate::cmd::refuse(format!("{domain}: {e}"))),
            Err(e) => Err(anyhow!("{domain}: {e}")),
        }
    })
}
