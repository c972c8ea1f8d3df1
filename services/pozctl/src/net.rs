//! `pozctl query` and `pozctl submit`: the network side, through the
//! verifying client. Every answer is verified before it is printed.

use crate::render;
use anyhow::{anyhow, bail, Context, Result};
use poz::codec::Codec;
use poz::wire::SubmitSigned;
use poz_client::discovery::Discovery;
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

async fn endpoints(
    t: &Target,
    domain: &str,
) -> Result<(Vec<Endpoint>, Option<poz::Hash32>, String)> {
    let security = match &t.noise_key {
        Some(k) => Security::Noise(noise_key(k)?),
        None => Security::Plain,
    };
    if let Some(s) = &t.server {
        let eps = resolve(s)?
            .into_iter()
            .map(|addr| Endpoint { addr, security })
            .collect();
        return Ok((eps, None, format!("server {s}")));
    }
    let disc = match t.nameserver {
        Some(ns) => Discovery::with_nameserver(ns),
        None => Discovery::system()?,
    };
    let d = disc.discover(domain).await?;
    let pin = d.pin(domain)?;
    if t.private {
        let record = client(t).master(&d.query, domain, pin).await?;
        let eps = disc.noise_endpoints(&record).await;
        if eps.is_empty() {
            bail!("{domain}'s record publishes no reachable Noise NK query host");
        }
        return Ok((
            eps,
            Some(record.id),
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

fn client(t: &Target) -> Client {
    Client::new(ClientConfig {
        max_pow_difficulty: t.max_pow,
        ..ClientConfig::default()
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
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

pub fn query(
    t: &Target,
    domain: &str,
    handle: Option<&str>,
    what: &str,
    as_json: bool,
) -> Result<ExitCode> {
    let rt = runtime()?;
    rt.block_on(async {
        let (eps, pin, via) = endpoints(t, domain).await?;
        let c = client(t);
        let result: Result<(), ClientError> = async {
            match (what, handle) {
                ("serial", _) => {
                    let a = c.serial(&eps, domain).await?;
                    if as_json {
                        println!("{}", json!({"record_id": a.record_id, "serial": a.serial, "current_master_hash": a.current_master_hash, "timestamp": a.timestamp}));
                    } else {
                        println!("{domain}: record {} serial {} ({via}; SERIAL is unsigned: a freshness hint)", a.record_id, a.serial);
                    }
                }
                ("master", _) | ("auto", None) => {
                    let r = c.master(&eps, domain, pin).await?;
                    if as_json {
                        println!("{}", serde_json::to_string_pretty(&json!({"verified": true, "record": render::record_json(&r.record)})).unwrap_or_default());
                    } else {
                        println!("VERIFIED record for {domain} ({via}), chain from genesis");
                        print!("{}", render::record_text(&r.record));
                    }
                }
                ("chain", Some(h)) | ("auto", Some(h)) => {
                    let (p, b) = c.chain(&eps, domain, h, pin).await?;
                    if as_json {
                        println!("{}", json!({"verified": true, "provider": p.id, "serial": p.record.master.serial, "binding": b}));
                    } else {
                        let ns = if b.namespace.is_empty() { String::new() } else { format!("@{}", b.namespace) };
                        println!("VERIFIED binding \"{}{}\" -> {}", b.binding.handle, ns, b.binding.subject);
                        println!("provider {} serial {} ({via})", p.id, p.record.master.serial);
                    }
                }
                (other, _) => {
                    return Err(ClientError::Invalid(format!("query type {other:?} needs --handle or is unknown (master, serial, chain)")));
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(e) => {
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
    let rec = poz::Record::from_bytes(&bytes)
        .with_context(|| format!("{} is not a POZ record", record.display()))?;
    let report = poz::verify_record(&rec);
    if !report.is_complete() {
        bail!(
            "{} does not verify completely; nothing was sent (run pozctl verify)",
            record.display()
        );
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
                println!(
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
