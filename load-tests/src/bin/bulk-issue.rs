//! Issuance through the Provider API with keys in a PKCS#11 token
//! (docs/BENCHMARKS.md, issue 5). The store (on `--database-url`),
//! verifier, signer and Provider API run in this process as gRPC servers
//! on loopback (`poz_provider::inprocess`), so every binding crosses the
//! same calls as in the fleet.
//!
//! - `--mode bulk`: streams `--bindings` requests through BulkIssue (batch
//!   signatures) and reports the time until all are committed.
//! - `--mode single`: `--concurrency` clients call IssueBinding (one HSM
//!   signature per binding) for `--seconds`, then the bare token signs
//!   with one thread per signer session for as long; reports both rates
//!   and their ratio.
use anyhow::{bail, Context};
use clap::Parser;
use poz::sample;
use poz::Codec;
use poz_proto::v1 as pb;
use poz_signer::{KeyStore, Pkcs11KeyStore, TokenConfig};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Bulk and single issuance through the POZ Provider API")]
struct Args {
    /// bulk or single.
    #[arg(long, default_value = "bulk")]
    mode: String,
    /// The store's database (a fresh one).
    #[arg(long)]
    database_url: String,
    /// The PKCS#11 module.
    #[arg(long, default_value = "/usr/lib/softhsm/libsofthsm2.so")]
    pkcs11_module: std::path::PathBuf,
    #[arg(long, default_value = "poz-bench")]
    token_label: String,
    #[arg(long, default_value = "1234")]
    pin: String,
    /// PKCS#11 sessions in the signer.
    #[arg(long, default_value_t = 2)]
    sessions: usize,
    /// Bulk: bindings to issue.
    #[arg(long, default_value_t = 1_000_000)]
    bindings: u64,
    /// Bulk: bindings per batch signature.
    #[arg(long, default_value_t = 4_096)]
    batch_size: usize,
    /// Single: concurrent clients (and bare signing threads).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Single: seconds per measurement.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Hash partitions of a fresh database's entries table (the store's
    /// `entries_partitions`); 0, the store's default: one heap.
    #[arg(long, default_value_t = 0)]
    entries_partitions: u32,
}

fn request(i: u64) -> pb::IssueBindingRequest {
    pb::IssueBindingRequest {
        handle: format!("user{i}"),
        subject: Some(pb::Hash {
            value: poz::hash::tagged_hash("bench subject", &[&i.to_be_bytes()])
                .0
                .to_vec(),
        }),
        expires_at: 0,
        idempotency_key: format!("k{i}"),
    }
}

#[derive(serde::Serialize, Default)]
struct Outcome {
    mode: String,
    bindings: u64,
    seconds: f64,
    bindings_per_second: f64,
    batch_size: Option<usize>,
    hsm_signatures: u64,
    bare_hsm_signatures_per_second: Option<f64>,
    ratio_to_bare_hsm: Option<f64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    poz_kit::init_tracing(false);
    let token = TokenConfig {
        module: args.pkcs11_module.clone(),
        token_label: args.token_label.clone(),
        pin: args.pin.clone().into(),
        sessions: args.sessions,
    };
    // One identity key in the token (generated on the first run).
    let hsm = {
        let s = Pkcs11KeyStore::open(&token).context("opening the token")?;
        if s.keys().is_empty() {
            s.generate("identity-bench")?;
        }
        drop(s);
        Arc::new(Pkcs11KeyStore::open(&token)?)
    };
    let hsm_key = hsm.keys()[0].public.clone();
    let (genesis, rec) = sample::provider_with_identity_key(&hsm_key, "bench.example")?;
    let options = poz_store::StoreOptions {
        entries_partitions: args.entries_partitions,
        ..poz_store::StoreOptions::default()
    };
    let store = poz_store::Store::open(&args.database_url, options)
        .await
        .context("opening the store")?;
    let id = store
        .create_record(
            &genesis.to_bytes(),
            &["bench.example".into()],
            "bench-create",
        )
        .await?;
    store
        .advance_head(&rec.to_bytes(), 1, "bench-serial-2")
        .await?;
    let fleet =
        poz_provider::inprocess::start(store.clone(), hsm.clone(), id, args.batch_size).await?;
    let channel = tonic::transport::Channel::from_shared(fleet.provider_api.clone())?
        .connect()
        .await?;
    let api = pb::provider_api_client::ProviderApiClient::new(channel);

    let out = match args.mode.as_str() {
        "bulk" => {
            let n = args.bindings;
            let started = Instant::now();
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            tokio::spawn(async move {
                for i in 0..n {
                    if tx.send(request(i)).await.is_err() {
                        break;
                    }
                }
            });
            let mut progress = api
                .clone()
                .bulk_issue(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await?
                .into_inner();
            let mut committed = 0;
            while let Some(p) = progress.message().await? {
                if !p.errors.is_empty() {
                    bail!("refused: {:?}", &p.errors[..p.errors.len().min(3)]);
                }
                committed = p.committed;
                eprint!(
                    "\rcommitted {committed}/{n}, {:.0}/s   ",
                    committed as f64 / started.elapsed().as_secs_f64()
                );
                std::io::stderr().flush().ok();
            }
            let secs = started.elapsed().as_secs_f64();
            eprintln!();
            let stored = store.count_bindings(&id).await?;
            if committed != n || stored != n {
                bail!("committed {committed}, stored {stored}, expected {n}");
            }
            let signatures = store.signature_audit(&id).await?.len() as u64;
            Outcome {
                mode: "bulk".into(),
                bindings: n,
                seconds: secs,
                bindings_per_second: n as f64 / secs,
                batch_size: Some(args.batch_size),
                hsm_signatures: signatures,
                ..Outcome::default()
            }
        }
        "single" => {
            let until = Instant::now() + Duration::from_secs(args.seconds);
            let started = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for t in 0..args.concurrency as u64 {
                let mut api = api.clone();
                tasks.spawn(async move {
                    let mut i = t;
                    let mut n = 0u64;
                    while Instant::now() < until {
                        api.issue_binding(request(i)).await?;
                        i += 1 << 32;
                        n += 1;
                    }
                    Ok::<u64, tonic::Status>(n)
                });
            }
            let mut issued = 0;
            while let Some(r) = tasks.join_next().await {
                issued += r??;
            }
            let secs = started.elapsed().as_secs_f64();
            // The bare token: one thread per session the signer has, the
            // same duration.
            let until = Instant::now() + Duration::from_secs(args.seconds);
            let started = Instant::now();
            let mut threads = Vec::new();
            for t in 0..args.sessions {
                let hsm = hsm.clone();
                let key = hsm_key.id();
                threads.push(std::thread::spawn(move || {
                    let mut n = 0u64;
                    while Instant::now() < until {
                        let d = poz::hash::tagged_hash(
                            "bare",
                            &[&(t as u64).to_be_bytes(), &n.to_be_bytes()],
                        );
                        if hsm.sign(&key, &d).is_err() {
                            break;
                        }
                        n += 1;
                    }
                    n
                }));
            }
            let bare: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
            let bare_rate = bare as f64 / started.elapsed().as_secs_f64();
            let rate = issued as f64 / secs;
            Outcome {
                mode: "single".into(),
                bindings: issued,
                seconds: secs,
                bindings_per_second: rate,
                hsm_signatures: issued,
                bare_hsm_signatures_per_second: Some(bare_rate),
                ratio_to_bare_hsm: Some(rate / bare_rate),
                ..Outcome::default()
            }
        }
        other => bail!("--mode must be bulk or single, not {other:?}"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{}: {} bindings in {:.1} s = {:.0} bindings/s; {} HSM signatures{}",
            out.mode,
            out.bindings,
            out.seconds,
            out.bindings_per_second,
            out.hsm_signatures,
            match (out.bare_hsm_signatures_per_second, out.ratio_to_bare_hsm) {
                (Some(b), Some(r)) => format!("; bare token {b:.0} signatures/s; ratio {r:.3}"),
                _ => String::new(),
            }
        );
    }
    Ok(())
}
