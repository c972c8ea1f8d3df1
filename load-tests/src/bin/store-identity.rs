//! IDENTITY lookups by handle through the store's gRPC API, with a
//! provider holding many bindings (BENCHMARKS.md, issue 4).
//!
//! 1. Creates the sample provider (`poz::sample::chain_provider`, one
//!    identity device) in the store, idempotently.
//! 2. Issues `--bindings` bindings ("user0", "user1", …), signed on all
//!    cores, and writes them with PutEntries in chunks; every chunk has an
//!    idempotency key, so a rerun against the same database stores nothing
//!    twice (`--skip-load` skips the signing too).
//! 3. `--concurrency` tasks call GetBinding for random handles for
//!    `--seconds` (after a warm-up), each lookup timed into an HDR
//!    histogram.
//!
//! Prints a progress line while loading and one result line; `--json`
//! prints the result as JSON.
use anyhow::{bail, Context};
use clap::Parser;
use hdrhistogram::Histogram;
use pb::store_read_client::StoreReadClient;
use pb::store_write_client::StoreWriteClient;
use poz::sample::{self, T0};
use poz::zone::ZoneType;
use poz::{workflow, Codec, Record};
use poz_proto::v1 as pb;
use rand_core::RngCore;
use std::io::Write;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(about = "IDENTITY lookups through the POZ store")]
struct Args {
    /// The store's gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    endpoint: String,
    /// Bindings the provider holds.
    #[arg(long, default_value_t = 1_000_000)]
    bindings: u64,
    /// Bindings per PutEntries call.
    #[arg(long, default_value_t = 5_000)]
    chunk: u64,
    /// The bindings are already loaded (a rerun): skip issuing them.
    #[arg(long)]
    skip_load: bool,
    /// Look up the bindings of the record this domain names (another
    /// tool issues them, e.g. bulk-issue's `bench.example` while it
    /// runs: load-tests/issue-while-serving.sh) instead of creating and
    /// loading the sample provider. Handles not issued yet answer
    /// NOT_FOUND, counted apart (`not_found`) and timed like the rest.
    #[arg(long)]
    domain: Option<String>,
    /// Concurrent lookup tasks.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// HTTP/2 connections the tasks share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Measured seconds (after `--warmup`).
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Unmeasured warm-up seconds.
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Outcome {
    bindings: u64,
    load_seconds: Option<f64>,
    load_bindings_per_second: Option<f64>,
    concurrency: usize,
    seconds: f64,
    lookups: u64,
    /// Lookups answered NOT_FOUND (with `--domain`: not issued yet).
    not_found: u64,
    errors: u64,
    lookups_per_second: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
}

fn record_ref(id: &poz::Hash32) -> Option<pb::RecordRef> {
    Some(pb::RecordRef {
        by: Some(pb::record_ref::By::RecordId(pb::Hash {
            value: id.0.to_vec(),
        })),
    })
}

async fn connect(endpoint: &str) -> anyhow::Result<Channel> {
    Channel::from_shared(endpoint.to_string())?
        .connect()
        .await
        .with_context(|| format!("connecting to {endpoint}"))
}

/// Creates the provider's record at serial 1, then its serial 2 (identity
/// delegation and authority). Both writes are idempotent.
async fn create_provider(ch: &Channel, rec: &Record) -> anyhow::Result<()> {
    let mut w = StoreWriteClient::new(ch.clone());
    let genesis = Record::new(rec.keys.clone(), rec.history[0].clone());
    w.create_record(pb::CreateRecordRequest {
        record: genesis.to_bytes(),
        domains: vec!["bench.example".into()],
        idempotency_key: "bench-provider-create".into(),
    })
    .await?;
    w.advance_head(pb::AdvanceHeadRequest {
        record: rec.to_bytes(),
        expected_serial: 1,
        idempotency_key: "bench-provider-serial-2".into(),
    })
    .await?;
    Ok(())
}

/// Signs bindings `range` with the provider's identity device.
fn issue_chunk(rec: &Record, range: std::ops::Range<u64>) -> anyhow::Result<Vec<Vec<u8>>> {
    let device = sample::provider_keys().device_a;
    range
        .map(|i| {
            let subject = poz::hash::tagged_hash("bench user", &[&i.to_be_bytes()]);
            let mut e = workflow::new_binding(rec, subject, &format!("user{i}"), T0 + 5, 0)?;
            workflow::sign_entry(rec, ZoneType::IDENTITY, &mut e, &device)?;
            Ok(e.to_bytes())
        })
        .collect()
}

async fn load(ch: &Channel, rec: &Record, args: &Args) -> anyhow::Result<f64> {
    let started = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u64, Vec<Vec<u8>>)>(4);
    // Signing is CPU work: one thread per core, chunks interleaved.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let chunks = args.bindings.div_ceil(args.chunk);
    let mut threads = Vec::new();
    for w in 0..workers {
        let (tx, rec, chunk, total) = (tx.clone(), rec.clone(), args.chunk, args.bindings);
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let mut c = w;
            while c < chunks {
                let start = c * chunk;
                let entries = issue_chunk(&rec, start..(start + chunk).min(total))?;
                if tx.blocking_send((start, entries)).is_err() {
                    break;
                }
                c += workers;
            }
            Ok(())
        }));
    }
    drop(tx);
    let id = rec.id();
    let mut written = 0u64;
    let mut inflight = tokio::task::JoinSet::new();
    while let Some((start, entries)) = rx.recv().await {
        let n = entries.len() as u64;
        let mut w = StoreWriteClient::new(ch.clone())
            .max_encoding_message_size(64 << 20)
            .max_decoding_message_size(64 << 20);
        inflight.spawn(async move {
            w.put_entries(pb::PutEntriesRequest {
                record_id: Some(pb::Hash {
                    value: id.0.to_vec(),
                }),
                zone_type: ZoneType::IDENTITY.0 as u32,
                entries,
                idempotency_key: format!("bench-load-{start}"),
            })
            .await
            .map(|_| n)
        });
        // Two writes in flight keep Postgres busy while the next chunk is
        // signed.
        while inflight.len() >= 2 {
            if let Some(r) = inflight.join_next().await {
                written += r??;
            }
        }
        let secs = started.elapsed().as_secs_f64();
        eprint!(
            "\rloaded {written}/{} bindings, {:.0}/s   ",
            args.bindings,
            written as f64 / secs
        );
        std::io::stderr().flush().ok();
    }
    while let Some(r) = inflight.join_next().await {
        written += r??;
    }
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("signing thread panicked"))??;
    }
    eprintln!();
    if written != args.bindings {
        bail!("wrote {written} of {} bindings", args.bindings);
    }
    Ok(started.elapsed().as_secs_f64())
}

/// One lookup task: random handles until `until`; latencies recorded from
/// `measure_from`.
async fn lookups(
    mut client: StoreReadClient<Channel>,
    record: Option<pb::RecordRef>,
    bindings: u64,
    measure_from: Instant,
    until: Instant,
) -> anyhow::Result<(Histogram<u64>, u64, u64)> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0u64;
    let mut not_found = 0u64;
    let mut rng = rand_core::OsRng;
    loop {
        let now = Instant::now();
        if now >= until {
            break;
        }
        let handle = format!("user{}", rng.next_u64() % bindings);
        let r = client
            .get_binding(pb::GetBindingRequest {
                record: record.clone(),
                handle,
            })
            .await;
        let took = now.elapsed();
        match r {
            Ok(resp) if !resp.get_ref().binding.is_empty() => {
                if now >= measure_from {
                    h.record((took.as_micros() as u64).max(1))?;
                }
            }
            Err(e) if e.code() == tonic::Code::NotFound => {
                if now >= measure_from {
                    not_found += 1;
                    h.record((took.as_micros() as u64).max(1))?;
                }
            }
            _ => errors += 1,
        }
    }
    Ok((h, not_found, errors))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.bindings == 0 || args.chunk == 0 || args.concurrency == 0 || args.connections == 0 {
        bail!("--bindings, --chunk, --concurrency and --connections must be at least 1");
    }
    let ch = connect(&args.endpoint).await?;
    let (record, load_seconds) = match &args.domain {
        Some(d) => (
            Some(pb::RecordRef {
                by: Some(pb::record_ref::By::Domain(d.clone())),
            }),
            None,
        ),
        None => {
            let (rec, _) = sample::chain_provider()?;
            create_provider(&ch, &rec).await?;
            let loaded = if args.skip_load {
                None
            } else {
                Some(load(&ch, &rec, &args).await?)
            };
            (record_ref(&rec.id()), loaded)
        }
    };

    let mut channels = Vec::new();
    for _ in 0..args.connections {
        channels.push(connect(&args.endpoint).await?);
    }
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let until = measure_from + Duration::from_secs(args.seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..args.concurrency {
        let client = StoreReadClient::new(channels[t % channels.len()].clone());
        tasks.spawn(lookups(
            client,
            record.clone(),
            args.bindings,
            measure_from,
            until,
        ));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    let mut not_found = 0;
    while let Some(r) = tasks.join_next().await {
        let (h, nf, e) = r??;
        all.add(&h)?;
        not_found += nf;
        errors += e;
    }
    let out = Outcome {
        bindings: args.bindings,
        load_seconds,
        load_bindings_per_second: load_seconds.map(|s| args.bindings as f64 / s),
        concurrency: args.concurrency,
        seconds: args.seconds as f64,
        lookups: all.len(),
        not_found,
        errors,
        lookups_per_second: all.len() as f64 / args.seconds as f64,
        p50_us: all.value_at_quantile(0.50),
        p99_us: all.value_at_quantile(0.99),
        p999_us: all.value_at_quantile(0.999),
        max_us: all.max(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{} bindings; {} lookups in {} s with {} tasks: {:.0} lookups/s, p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs, {} not found, {} errors{}",
            out.bindings,
            out.lookups,
            args.seconds,
            out.concurrency,
            out.lookups_per_second,
            out.p50_us,
            out.p99_us,
            out.p999_us,
            out.max_us,
            out.not_found,
            out.errors,
            out.load_seconds
                .map(|s| format!("; loaded in {s:.1} s ({:.0} bindings/s)", args.bindings as f64 / s))
                .unwrap_or_default()
        );
    }
    if errors > 0 {
        bail!("{errors} lookups failed");
    }
    Ok(())
}
