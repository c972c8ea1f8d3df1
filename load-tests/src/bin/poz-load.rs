//! `poz-load`: a load generator for POZ lookups. N concurrent clients
//! each open a new TCP connection per query (as the protocol prescribes:
//! one request and one response per connection), plain or Noise NK,
//! solving proofs of work when a gateway asks. Connections come from
//! `--sources` loopback addresses (127.1.0.1, 127.1.0.2, …) so that a
//! gateway's per-address limits see many clients, not one. Reports
//! queries/s and latency percentiles (HdrHistogram), errors by status,
//! a progress line each second, and JSON with `--json`.
use anyhow::{bail, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use poz::codec::Codec;
use poz::wire::{DomainQuery, IdentityQuery, MessageType};
use poz_client::{Client, ClientConfig, ClientError, Endpoint, Security};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Load generator for POZ lookups (new connection per query)")]
struct Args {
    /// The server, HOST:PORT.
    #[arg(long)]
    target: SocketAddr,
    /// Noise NK to this server key (64 hex digits); plaintext without.
    #[arg(long)]
    noise_key: Option<String>,
    /// identity, chain, master or serial.
    #[arg(long = "type", default_value = "identity")]
    query_type: String,
    #[arg(long, default_value = "demo.example")]
    domain: String,
    /// Handles to ask for, in turn (identity and chain).
    #[arg(long, value_delimiter = ',', default_value = "alice,bob,carol")]
    handles: Vec<String>,
    /// Instead of --handles: 10,000 handles drawn at random from
    /// PREFIX0 .. PREFIX(N-1) (as `store-identity` loads them: user0 ..).
    #[arg(long, value_name = "PREFIX:N")]
    handle_range: Option<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Spread connections over this many loopback source addresses
    /// (127.1.0.1, 127.1.0.2, …; at most 60,000; 0: the system's choice).
    #[arg(long, default_value_t = 0)]
    sources: u16,
    /// The hardest proof of work to do when asked.
    #[arg(long, default_value_t = 24)]
    max_pow: u8,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Outcome {
    target: String,
    security: &'static str,
    query_type: String,
    concurrency: usize,
    seconds: f64,
    queries: u64,
    queries_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    errors: BTreeMap<String, u64>,
}

fn error_kind(e: &ClientError) -> String {
    match e {
        ClientError::Status { status, .. } => status.to_string(),
        ClientError::Timeout { stage, .. } => format!("timeout-{stage}"),
        ClientError::Connect { .. } => "connect".into(),
        ClientError::Io { .. } => "io".into(),
        ClientError::Noise { .. } => "noise".into(),
        ClientError::PowTooHard { .. } => "pow-too-hard".into(),
        _ => "other".into(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let security = match &args.noise_key {
        Some(k) => {
            let b = hex_decode(k).context("--noise-key")?;
            Security::Noise(b)
        }
        None => Security::Plain,
    };
    let handles: Vec<String> = match &args.handle_range {
        None => args.handles.clone(),
        Some(spec) => {
            let (prefix, n) = spec
                .rsplit_once(':')
                .context("--handle-range is PREFIX:N")?;
            let n: u64 = n.parse().context("--handle-range N")?;
            if n == 0 {
                bail!("--handle-range: N must be at least 1");
            }
            use rand_core::RngCore;
            let mut rng = rand_core::OsRng;
            (0..10_000)
                .map(|_| format!("{prefix}{}", rng.next_u64() % n))
                .collect()
        }
    };
    let (message_type, payloads): (MessageType, Vec<Vec<u8>>) = match args.query_type.as_str() {
        "identity" | "chain" => (
            if args.query_type == "identity" {
                MessageType::IDENTITY
            } else {
                MessageType::CHAIN
            },
            handles
                .iter()
                .map(|h| {
                    IdentityQuery {
                        domain: args.domain.clone(),
                        handle: h.clone(),
                    }
                    .to_bytes()
                })
                .collect(),
        ),
        "master" | "serial" => (
            if args.query_type == "master" {
                MessageType::MASTER
            } else {
                MessageType::SERIAL
            },
            vec![DomainQuery {
                domain: args.domain.clone(),
            }
            .to_bytes()],
        ),
        other => bail!("--type: identity, chain, master or serial, not {other:?}"),
    };
    let ep = Endpoint {
        addr: args.target,
        security,
    };
    let clients: Vec<Arc<Client>> = (0..args.sources.max(1))
        .map(|i| {
            Arc::new(Client::new(ClientConfig {
                attempts: 1,
                max_pow_difficulty: args.max_pow,
                local_ip: (args.sources > 0).then(|| {
                    let i = i.min(59_999);
                    IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, 1 + (i % 250) as u8))
                }),
                ..ClientConfig::default()
            }))
        })
        .collect();
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let errors: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let payloads = Arc::new(payloads);
    let mut tasks = Vec::new();
    for w in 0..args.concurrency {
        let client = clients[w % clients.len()].clone();
        // With more sources than workers, each worker walks its share.
        let own: Vec<Arc<Client>> = clients
            .iter()
            .skip(w)
            .step_by(args.concurrency.max(1))
            .cloned()
            .collect();
        let (hist, errors, done, payloads) =
            (hist.clone(), errors.clone(), done.clone(), payloads.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while Instant::now() < until {
                let t = Instant::now();
                let c = if own.is_empty() {
                    &client
                } else {
                    &own[i % own.len()]
                };
                let r = c
                    .request(&ep, message_type, payloads[i % payloads.len()].clone())
                    .await;
                i += 1;
                match r {
                    Ok(_) => {
                        let us = t.elapsed().as_micros() as u64;
                        let _ = hist
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .record(us.max(1));
                        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => {
                        *errors
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(error_kind(&e))
                            .or_default() += 1;
                    }
                }
            }
        }));
    }
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let n = done.load(std::sync::atomic::Ordering::Relaxed);
                eprint!(
                    "\r{:>4.0} s  {n} answered  {}/s      ",
                    started.elapsed().as_secs_f64(),
                    n - last
                );
                let _ = std::io::stderr().flush();
                last = n;
            }
        })
    };
    for t in tasks {
        t.await?;
    }
    progress.abort();
    eprintln!();
    let secs = started.elapsed().as_secs_f64();
    let h = hist.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let n = done.load(std::sync::atomic::Ordering::Relaxed);
    let out = Outcome {
        target: args.target.to_string(),
        security: if args.noise_key.is_some() {
            "noise"
        } else {
            "plain"
        },
        query_type: args.query_type.clone(),
        concurrency: args.concurrency,
        seconds: secs,
        queries: n,
        queries_per_second: n as f64 / secs,
        p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
        p999_ms: h.value_at_quantile(0.999) as f64 / 1000.0,
        errors: errors.lock().unwrap_or_else(|p| p.into_inner()).clone(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{} {} {}: {} queries in {:.1} s = {:.0}/s; p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms; errors {:?}",
            out.security,
            out.query_type,
            out.target,
            out.queries,
            out.seconds,
            out.queries_per_second,
            out.p50_ms,
            out.p99_ms,
            out.p999_ms,
            out.errors
        );
    }
    Ok(())
}

fn hex_decode(s: &str) -> anyhow::Result<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        bail!("64 hex digits");
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).context("not hex")?;
    }
    Ok(out)
}
