//! `poz-load`: a load generator for POZ lookups, and for DNS over TCP so
//! that a POZ gateway and a DNS server are driven by the same code
//! (docs/BENCHMARKS.md, `load-tests/compare.sh`). Each query opens a new
//! TCP connection (as POZ prescribes: one request and one response per
//! connection; for DNS the same discipline, so both sides pay the same
//! connection cost), plain or Noise NK, solving proofs of work when a
//! gateway asks and `--max-pow` allows. Connections come from `--sources`
//! loopback addresses (127.1.0.1, 127.1.0.2, …) so that a server's
//! per-address limits see many clients, not one.
//!
//! Two ways to load:
//! - closed loop (the default): `--concurrency` clients, each sending its
//!   next query when the last one is answered: the most a server answers;
//! - open loop (`--rate R`): R queries/s arrive on a fixed schedule
//!   whatever the server does, and each latency is measured from the
//!   query's scheduled arrival, so a stalled server is charged for every
//!   query that should have been sent meanwhile (no coordinated omission).
//!
//! Reports attempts, answers/s, the success rate, latency percentiles of
//! the answered queries (HdrHistogram, µs resolution), errors by kind, a
//! progress line each second on stderr, and JSON with `--json`.
use anyhow::{bail, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use hickory_proto::op::{
    Edns, Message, MessageType as DnsMessageType, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::{Name, RecordType};
use poz::codec::Codec;
use poz::wire::{DomainQuery, IdentityQuery, MessageType};
use poz_client::{Client, ClientConfig, ClientError, Endpoint, Security};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser, Debug)]
#[command(about = "Load generator for POZ lookups and DNS over TCP (new connection per query)")]
struct Args {
    /// The server, HOST:PORT.
    #[arg(long)]
    target: SocketAddr,
    /// poz (the POZ wire protocol) or dns (DNS over TCP, RFC 7766: a TXT
    /// query for HANDLE.DOMAIN with the DNSSEC OK bit, RFC 3225).
    #[arg(long, default_value = "poz")]
    protocol: String,
    /// Noise NK to this server key (64 hex digits); plaintext without.
    #[arg(long)]
    noise_key: Option<String>,
    /// identity, chain, master or serial (POZ only).
    #[arg(long = "type", default_value = "identity")]
    query_type: String,
    #[arg(long, default_value = "demo.example")]
    domain: String,
    /// Handles to ask for, in turn (identity and chain; DNS names).
    #[arg(long, value_delimiter = ',', default_value = "alice,bob,carol")]
    handles: Vec<String>,
    /// Instead of --handles: each query asks a handle drawn at random
    /// (uniformly, afresh per query) from PREFIX0 .. PREFIX(N-1), as
    /// `store-identity` loads them: user0 ...
    #[arg(long, value_name = "PREFIX:N")]
    handle_range: Option<String>,
    /// Closed loop: concurrent clients.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Open loop: queries per second arriving on a fixed schedule
    /// (replaces --concurrency).
    #[arg(long)]
    rate: Option<u32>,
    /// Open loop: queries outstanding at once; an arrival beyond it is
    /// counted as the error `client-saturated` (the generator, not the
    /// server, ran out of room), never delayed.
    #[arg(long, default_value_t = 8_000)]
    max_outstanding: usize,
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Spread connections over this many loopback source addresses
    /// (127.1.0.1, 127.1.0.2, …; at most 60,000; 0: the system's choice).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=60_000))]
    sources: u16,
    /// Skip this many source addresses first, so that two generators run
    /// side by side (a flood and honest clients) use disjoint addresses.
    #[arg(long, default_value_t = 0)]
    source_offset: u16,
    /// The hardest proof of work to do when asked (0: never solve, as a
    /// flood does; POW_REQUIRED then counts as the error `pow-too-hard`).
    #[arg(long, default_value_t = 24)]
    max_pow: u8,
    /// Seconds one query may take before it counts as `timeout`.
    #[arg(long, default_value_t = 5)]
    timeout_s: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Outcome {
    target: String,
    protocol: String,
    security: &'static str,
    query_type: String,
    /// "closed" or "open".
    mode: &'static str,
    concurrency: usize,
    /// Open loop: the scheduled arrival rate, queries/s.
    offered_per_second: Option<f64>,
    seconds: f64,
    attempts: u64,
    queries: u64,
    queries_per_second: f64,
    /// Answered / attempted.
    success_rate: f64,
    /// One answer's size: the POZ response payload, or the whole DNS
    /// message (bytes).
    answer_bytes: u64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
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
        ClientError::Malformed { .. } => "malformed".into(),
        ClientError::Exhausted(_) => "exhausted".into(),
        _ => "other".into(),
    }
}

/// Which handle each query asks for.
enum Handles {
    /// In turn.
    List(Vec<String>),
    /// Drawn uniformly from PREFIX0 .. PREFIX(n-1), afresh per query: a
    /// hash of the query's number and a per-run seed, so no RNG state is
    /// shared between tasks.
    Range { prefix: String, n: u64, seed: u64 },
}

impl Handles {
    fn pick(&self, i: usize) -> String {
        match self {
            Handles::List(l) => l[i % l.len()].clone(),
            Handles::Range { prefix, n, seed } => {
                // splitmix64: a full-period mix, uniform enough for load.
                let mut z = seed.wrapping_add((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                format!("{prefix}{}", z % n)
            }
        }
    }
}

/// What the load asks of one server: a POZ gateway or a DNS server.
enum Target {
    Poz {
        /// One client per source address.
        clients: Vec<Client>,
        endpoint: Endpoint,
        message_type: MessageType,
        /// IDENTITY and CHAIN: the handles; MASTER and SERIAL ask the
        /// domain alone.
        handles: Option<Handles>,
        domain: String,
    },
    Dns {
        addr: SocketAddr,
        /// Source addresses to connect from (empty: the system's choice).
        sources: Vec<IpAddr>,
        handles: Handles,
        domain: String,
    },
}

impl Target {
    /// Query `i` (its handle and source address chosen by `i`): Ok when
    /// answered, else the kind of failure.
    async fn one(&self, i: usize) -> Result<usize, String> {
        match self {
            Target::Poz {
                clients,
                endpoint,
                message_type,
                handles,
                domain,
            } => {
                let payload = match handles {
                    Some(h) => IdentityQuery {
                        domain: domain.clone(),
                        handle: h.pick(i),
                    }
                    .to_bytes(),
                    None => DomainQuery {
                        domain: domain.clone(),
                    }
                    .to_bytes(),
                };
                clients[i % clients.len()]
                    .request(endpoint, *message_type, payload)
                    .await
                    .map(|answer| answer.len())
                    .map_err(|e| error_kind(&e))
            }
            Target::Dns {
                addr,
                sources,
                handles,
                domain,
            } => {
                let local = (!sources.is_empty()).then(|| sources[i % sources.len()]);
                let query = dns_query(&format!("{}.{domain}.", handles.pick(i)), i as u16)
                    .map_err(|_| "dns-bad-name".to_owned())?;
                dns_exchange(*addr, local, &query).await
            }
        }
    }
}

/// One DNS query over a new TCP connection: NOERROR with at least one
/// answer record is answered (its size in bytes); anything else is an
/// error kind.
async fn dns_exchange(
    addr: SocketAddr,
    local: Option<IpAddr>,
    query: &[u8],
) -> Result<usize, String> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(|_| "io")?;
    if let Some(ip) = local {
        socket.bind(SocketAddr::new(ip, 0)).map_err(|_| "connect")?;
    }
    let mut s = socket.connect(addr).await.map_err(|_| "connect")?;
    let _ = s.set_nodelay(true);
    s.write_all(query).await.map_err(|_| "io")?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.map_err(|_| "io")?;
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut msg).await.map_err(|_| "io")?;
    let m = Message::from_vec(&msg).map_err(|_| "dns-malformed")?;
    match m.response_code() {
        ResponseCode::NoError if !m.answers().is_empty() => Ok(msg.len()),
        ResponseCode::NoError => Err("dns-no-answer".into()),
        other => Err(format!("dns-{other}")),
    }
}

/// A TXT query for `name` with EDNS (1,232-byte payload) and the DNSSEC
/// OK bit, so a signed zone answers with its RRSIG; length-prefixed.
fn dns_query(name: &str, id: u16) -> anyhow::Result<Vec<u8>> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(DnsMessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(false)
        .add_query(Query::query(
            Name::from_ascii(name).with_context(|| format!("DNS name {name:?}"))?,
            RecordType::TXT,
        ));
    let mut edns = Edns::new();
    edns.set_max_payload(1232).set_dnssec_ok(true);
    m.set_edns(edns);
    let b = m.to_vec().context("encoding a DNS query")?;
    let mut out = Vec::with_capacity(2 + b.len());
    out.extend_from_slice(&u16::try_from(b.len())?.to_be_bytes());
    out.extend_from_slice(&b);
    Ok(out)
}

fn source_ip(i: u16) -> IpAddr {
    let i = i.min(59_999);
    IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, 1 + (i % 250) as u8))
}

/// What every query adds to.
#[derive(Default)]
struct Tally {
    attempts: AtomicU64,
    answered: AtomicU64,
    /// Answered before the run's end (a closed loop's rate counts these
    /// only: the queries still out at the end would stretch its time).
    answered_in_time: AtomicU64,
    until: Option<Instant>,
    /// The size of an answer (the last one), bytes.
    answer_bytes: AtomicU64,
    hist: Mutex<Option<Histogram<u64>>>,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn new(until: Instant) -> anyhow::Result<Self> {
        let t = Tally {
            until: Some(until),
            ..Tally::default()
        };
        *t.hist.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?);
        Ok(t)
    }

    fn answered(&self, since: Instant) {
        let us = since.elapsed().as_micros() as u64;
        if let Some(h) = self.hist.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            let _ = h.record(us.max(1));
        }
        self.answered.fetch_add(1, Ordering::Relaxed);
        if self.until.is_some_and(|u| Instant::now() <= u) {
            self.answered_in_time.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn failed(&self, kind: String) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind)
            .or_default() += 1;
    }

    /// One query, timed from `since` (its scheduled arrival in an open
    /// loop, its start in a closed one); the caller counted the attempt.
    async fn answer(&self, target: &Target, i: usize, since: Instant, timeout: Duration) {
        match tokio::time::timeout(timeout, target.one(i)).await {
            Ok(Ok(bytes)) => {
                self.answer_bytes.store(bytes as u64, Ordering::Relaxed);
                self.answered(since)
            }
            Ok(Err(kind)) => self.failed(kind),
            Err(_) => self.failed("timeout".into()),
        }
    }
}

fn handles(args: &Args) -> anyhow::Result<Handles> {
    Ok(match &args.handle_range {
        None => Handles::List(args.handles.clone()),
        Some(spec) => {
            let (prefix, n) = spec
                .rsplit_once(':')
                .context("--handle-range is PREFIX:N")?;
            let n: u64 = n.parse().context("--handle-range N")?;
            if n == 0 {
                bail!("--handle-range: N must be at least 1");
            }
            use rand_core::RngCore;
            Handles::Range {
                prefix: prefix.to_owned(),
                n,
                seed: rand_core::OsRng.next_u64(),
            }
        }
    })
}

fn poz_target(args: &Args, handles: Handles) -> anyhow::Result<Target> {
    let security = match &args.noise_key {
        Some(k) => Security::Noise(hex_decode(k).context("--noise-key")?),
        None => Security::Plain,
    };
    let (message_type, handles) = match args.query_type.as_str() {
        "identity" => (MessageType::IDENTITY, Some(handles)),
        "chain" => (MessageType::CHAIN, Some(handles)),
        "master" => (MessageType::MASTER, None),
        "serial" => (MessageType::SERIAL, None),
        other => bail!("--type: identity, chain, master or serial, not {other:?}"),
    };
    let clients = (0..args.sources.max(1))
        .map(|i| {
            Client::new(ClientConfig {
                attempts: 1,
                max_pow_difficulty: args.max_pow,
                local_ip: (args.sources > 0)
                    .then(|| source_ip(args.source_offset.saturating_add(i))),
                exchange_timeout: Duration::from_secs(args.timeout_s),
                ..ClientConfig::default()
            })
        })
        .collect();
    Ok(Target::Poz {
        clients,
        endpoint: Endpoint {
            addr: args.target,
            security,
        },
        message_type,
        handles,
        domain: args.domain.clone(),
    })
}

fn dns_target(args: &Args, handles: Handles) -> anyhow::Result<Target> {
    if args.noise_key.is_some() || args.query_type != "identity" {
        bail!("--protocol dns asks TXT queries only: no --noise-key, no --type");
    }
    Ok(Target::Dns {
        addr: args.target,
        sources: (0..args.sources)
            .map(|i| source_ip(args.source_offset.saturating_add(i)))
            .collect(),
        handles,
        domain: args.domain.clone(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let handles = handles(&args)?;
    let target = Arc::new(match args.protocol.as_str() {
        "poz" => poz_target(&args, handles)?,
        "dns" => dns_target(&args, handles)?,
        other => bail!("--protocol: poz or dns, not {other:?}"),
    });
    if args.rate == Some(0) {
        bail!("--rate: at least 1 query/s");
    }
    let timeout = Duration::from_secs(args.timeout_s.max(1));
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let tally = Arc::new(Tally::new(until)?);
    let progress = {
        let tally = tally.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let n = tally.answered.load(Ordering::Relaxed);
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
    match args.rate {
        None => closed_loop(&args, &target, &tally, until, timeout).await?,
        Some(rate) => open_loop(&args, rate, &target, &tally, started, until, timeout).await?,
    }
    progress.abort();
    eprintln!();
    // Both rates are over the run's seconds: an open loop's counts every
    // answer to an arrival of the schedule, a closed loop's the answers
    // that came within the time (a worker's last query may end later).
    let secs = args.seconds.max(1) as f64;
    let h = tally
        .hist
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .context("histogram")?;
    let n = tally.answered.load(Ordering::Relaxed);
    let per_second = match args.rate {
        Some(_) => n,
        None => tally.answered_in_time.load(Ordering::Relaxed),
    } as f64
        / secs;
    let attempts = tally.attempts.load(Ordering::Relaxed);
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let out = Outcome {
        target: args.target.to_string(),
        protocol: args.protocol.clone(),
        security: if args.noise_key.is_some() {
            "noise"
        } else {
            "plain"
        },
        query_type: args.query_type.clone(),
        mode: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        concurrency: args.concurrency,
        offered_per_second: args.rate.map(f64::from),
        seconds: secs,
        attempts,
        queries: n,
        queries_per_second: per_second,
        success_rate: if attempts == 0 {
            0.0
        } else {
            n as f64 / attempts as f64
        },
        answer_bytes: tally.answer_bytes.load(Ordering::Relaxed),
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: h.max() as f64 / 1000.0,
        errors: tally
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
    };
    if n == 0 {
        // Still a result (an overload can answer nothing), but never one
        // to mistake for a measurement of answers.
        eprintln!("poz-load: warning: nothing was answered ({attempts} attempts)");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{} {} {} {} {}: {} of {} answered in {:.1} s = {:.0}/s; p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms; errors {:?}",
            out.protocol,
            out.security,
            out.query_type,
            out.target,
            match out.offered_per_second {
                Some(r) => format!("open loop {r:.0}/s"),
                None => format!("closed loop x{}", out.concurrency),
            },
            out.queries,
            out.attempts,
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

/// `--concurrency` workers, each asking its next query as soon as the
/// last is done, until `until`.
async fn closed_loop(
    args: &Args,
    target: &Arc<Target>,
    tally: &Arc<Tally>,
    until: Instant,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    let stride = args.concurrency.max(1);
    for w in 0..args.concurrency {
        let (target, tally) = (target.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            // Worker w asks queries w, w + stride, …: every handle and
            // source address is used, none by two workers at once.
            let mut i = w;
            while Instant::now() < until {
                tally.attempts.fetch_add(1, Ordering::Relaxed);
                tally.answer(&target, i, Instant::now(), timeout).await;
                i += stride;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(())
}

/// `rate` arrivals per second on a fixed schedule until `until`, each
/// run as its own task and timed from its exact scheduled instant (so a
/// dispatcher or server that falls behind is charged for it). A thread of
/// its own keeps the schedule with the OS's high-resolution sleep rather
/// than tokio's 1 ms timer, whose lateness would add up to a millisecond
/// of the generator's own to every latency.
async fn open_loop(
    args: &Args,
    rate: u32,
    target: &Arc<Target>,
    tally: &Arc<Tally>,
    started: Instant,
    until: Instant,
    timeout: Duration,
) -> anyhow::Result<()> {
    let outstanding = Arc::new(tokio::sync::Semaphore::new(args.max_outstanding.max(1)));
    let interval = Duration::from_secs(1).as_nanos() as f64 / f64::from(rate);
    let runtime = tokio::runtime::Handle::current();
    let (target, tally) = (target.clone(), tally.clone());
    let dispatcher = std::thread::spawn(move || {
        let mut tasks = Vec::new();
        let mut sent: u64 = 0;
        loop {
            let scheduled = started + Duration::from_nanos((sent as f64 * interval) as u64);
            if scheduled >= until {
                break;
            }
            let now = Instant::now();
            if scheduled > now {
                std::thread::sleep(scheduled - now);
            }
            let i = sent as usize;
            sent += 1;
            tally.attempts.fetch_add(1, Ordering::Relaxed);
            let Ok(permit) = outstanding.clone().try_acquire_owned() else {
                tally.failed("client-saturated".into());
                continue;
            };
            let (target, tally) = (target.clone(), tally.clone());
            tasks.push(runtime.spawn(async move {
                tally.answer(&target, i, scheduled, timeout).await;
                drop(permit);
            }));
            // Keep only the unfinished handles, so the list stays small.
            if tasks.len() >= 4_096 {
                tasks.retain(|t| !t.is_finished());
            }
        }
        tasks
    });
    let tasks = tokio::task::spawn_blocking(move || dispatcher.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the open-loop dispatcher panicked"))?;
    for t in tasks {
        t.await?;
    }
    Ok(())
}

fn hex_decode(s: &str) -> anyhow::Result<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut out).context("64 hex digits")?;
    Ok(out)
}
