//! `pozd`: the whole POZ fleet in one process, on the embedded default:
//! the store on SQLite, the verifier, the signer with software keys (POZ
//! key files, encrypted), the Provider API, and the query gateway on 7074
//! (plain) and 7075 (Noise NK) and the submit gateway on 7076 (Noise NK),
//! with in-process load metrics. Every part
//! talks to the others over gRPC on loopback, exactly as the separate
//! services do in production.
//!
//! The first start creates a demo provider in the data directory: its
//! keys, its record made by the provider ceremony (the same code the HSM
//! signer runs), and a few identity bindings; then prints how to query it
//! with pozctl. Later starts serve what is there.
#![forbid(unsafe_code)]

use anyhow::{bail, Context};
use clap::Parser;
use poz::zone::ZoneType;
use poz::{workflow, Codec, Hash32, Record};
use poz_edge::{EdgeConfig, Guard};
use poz_kit::ServiceConfig;
use poz_signer::ceremony::{CeremonyPlan, HostPlan};
use poz_signer::{KeyStore, SoftwareKeyStore};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "pozd",
    version,
    about = "The whole POZ fleet in one process (SQLite, software keys)"
)]
struct Args {
    /// Where the store, the keys and the demo record live.
    #[arg(long, default_value = "pozd-data", env = "POZD_DATA")]
    data: PathBuf,
    /// Plaintext lookups (7074). Port 0: a free port at first start, the same
    /// port again on later starts (the demo record names it).
    #[arg(long, default_value = "127.0.0.1:7074", env = "POZD_PLAIN")]
    plain: SocketAddr,
    /// Noise NK lookups (7075). Port 0: a free port at first start, the same
    /// port again on later starts (the demo record names it).
    #[arg(long, default_value = "127.0.0.1:7075", env = "POZD_NOISE")]
    noise: SocketAddr,
    /// Noise NK submissions (7076). Port 0: a free port at first start, the same
    /// port again on later starts (the demo record names it).
    #[arg(long, default_value = "127.0.0.1:7076", env = "POZD_SUBMIT")]
    submit: SocketAddr,
    /// How long the query gateway reuses an answer (0: never).
    #[arg(long, default_value_t = 1_000)]
    cache_ttl_ms: u64,
    /// Proof-of-work difficulty with no load (leading zero bits, 0..=24;
    /// 0: no proof asked for until load raises it).
    #[arg(long, default_value_t = 0, env = "POZD_POW_BASE",
          value_parser = clap::value_parser!(u8).range(0..=24))]
    pow_base: u8,
    /// The demo provider's domain (first start only).
    #[arg(long, default_value = "demo.example")]
    domain: String,
    /// Binding requests over 7076 (SUBMIT_REQUEST): "issue" (the demo
    /// provider issues a free handle to anyone who proves they hold the
    /// record it names), "queue" (pending until decided with `pozctl
    /// requests`) or "off".
    #[arg(long, default_value = "issue", env = "POZD_BINDING_REQUESTS",
          value_parser = ["issue", "queue", "off"])]
    binding_requests: String,
    /// The handle namespace policy (SPEC §8.4.1): "ascii" (lowercase
    /// a-z, 0-9 and . - _) or "unicode" (one script, NFC, case-folded).
    #[arg(long, default_value = "ascii", env = "POZD_HANDLE_POLICY")]
    handle_policy: poz::handle::HandlePolicy,
    /// JSON log lines.
    #[arg(long)]
    log_json: bool,
    /// Prometheus endpoint (`/metrics`, `/healthz`) for the whole process.
    #[arg(long, value_name = "ADDR", env = "POZD_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
}

/// The addresses pozd's three listeners are bound to (a port 0 given on
/// the command line resolved to the port the kernel chose).
struct BoundPorts {
    plain: SocketAddr,
    noise: SocketAddr,
    submit: SocketAddr,
}

/// Where the first start keeps the addresses its demo record names
/// (`plain ADDR`, `noise ADDR`, `submit ADDR`, one per line).
const PORTS_FILE: &str = "ports";

impl BoundPorts {
    fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(
            path,
            format!(
                "plain {}\nnoise {}\nsubmit {}\n",
                self.plain, self.noise, self.submit
            ),
        )
    }

    /// The first start's addresses; `None` for data made before this
    /// file existed, or a file that does not read (port 0 is then a free
    /// port again).
    fn read(path: &Path) -> Option<BoundPorts> {
        let text = std::fs::read_to_string(path).ok()?;
        let addr = |name: &str| -> Option<SocketAddr> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|a| a.trim().parse().ok())
        };
        Some(BoundPorts {
            plain: addr("plain")?,
            noise: addr("noise")?,
            submit: addr("submit")?,
        })
    }
}

const DEMO_USERS: [&str; 3] = ["alice", "bob", "carol"];
const KEY_LABELS: [&str; 3] = ["master-1", "identity-1", "service-1"];

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn random32() -> [u8; 32] {
    use rand_core::RngCore;
    let mut b = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut b);
    b
}

fn store_url(dir: &Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("store.db").display())
}

/// The first start: everything is made in `DIR.init` and renamed to `DIR`
/// at the end, so a start that dies half-way leaves nothing that looks
/// finished.
async fn initialise(dir: &Path, args: &Args, bound: &BoundPorts) -> anyhow::Result<()> {
    let tmp = dir.with_extension("init");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    // Owner-only from the start: the data directory holds the keys, the
    // Noise and challenge secrets and the store.
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(tmp.join("keys"))?;
    }
    // Software keys, sealed in POZ key files under a random passphrase
    // that only this user can read (the embedded default; production keys
    // live in an HSM).
    let passphrase = zeroize::Zeroizing::new(hex::encode(random32()));
    poz_kit::write_secret(&tmp.join("keys/passphrase"), passphrase.as_bytes())?;
    let mut keys = Vec::new();
    for label in KEY_LABELS {
        let k = poz::keys::SigningKey::generate();
        let file = poz::private::KeyFile::create(&k, passphrase.as_bytes(), Default::default())?;
        poz_kit::write_secret(&tmp.join("keys").join(label), &file.to_bytes())?;
        keys.push((label.to_string(), k));
    }
    let held = SoftwareKeyStore::new(keys);
    let plan = CeremonyPlan {
        domain: args.domain.clone(),
        timestamp_ms: 0,
        master_keys: vec!["master-1".into()],
        master_threshold: 1,
        identity_keys: vec!["identity-1".into()],
        service_keys: vec!["service-1".into()],
        query_hosts: vec![
            HostPlan {
                hostname: bound.plain.ip().to_string(),
                port: bound.plain.port(),
                noise: false,
                priority: 20,
                weight: 100,
                ca_key: None,
            },
            HostPlan {
                hostname: bound.noise.ip().to_string(),
                port: bound.noise.port(),
                noise: true,
                priority: 10,
                weight: 100,
                ca_key: None,
            },
        ],
        submit_hosts: vec![HostPlan {
            hostname: bound.submit.ip().to_string(),
            port: bound.submit.port(),
            noise: true,
            priority: 10,
            weight: 100,
            ca_key: None,
        }],
        // The demo provider's web host (its domain, 443) names the service
        // key as its CA key, so the tour can issue it a certificate through
        // the signer (`pozctl cert issue --api`, SPEC §21).
        https_hosts: vec![HostPlan {
            hostname: args.domain.clone(),
            port: 443,
            noise: false,
            priority: 10,
            weight: 100,
            ca_key: Some("service-1".into()),
        }],
    };
    let done = poz_signer::ceremony::run(&held, &plan, now_ms())?;
    // One Noise key per Noise gateway, as the ceremony made them.
    for (_, port, kp) in &done.noise_keys {
        let name = if *port == bound.submit.port() {
            "submit-noise.key"
        } else {
            "noise.key"
        };
        poz_kit::write_secret(&tmp.join(name), hex::encode(kp.secret()).as_bytes())?;
    }
    poz_kit::write_secret(
        &tmp.join("challenge.secret"),
        hex::encode(random32()).as_bytes(),
    )?;

    let rec = done.record;
    let store =
        poz_store::Store::open(&store_url(&tmp), poz_store::StoreOptions::default()).await?;
    let genesis = Record::new(rec.keys.clone(), rec.history[0].clone());
    let id = store
        .create_record(
            &genesis.to_bytes(),
            std::slice::from_ref(&args.domain),
            "pozd-init",
        )
        .await?;
    store
        .advance_head(&rec.to_bytes(), 1, "pozd-init-2")
        .await?;
    // A few bindings for the tour, signed by the identity key.
    let identity = held
        .keys()
        .iter()
        .find(|k| k.label == "identity-1")
        .context("identity key")?
        .clone();
    let mut entries = Vec::new();
    for user in DEMO_USERS {
        let subject = poz::hash::tagged_hash("pozd demo user", &[user.as_bytes()]);
        let mut b = workflow::new_binding(&rec, subject, user, now_ms(), 0)?;
        let (idx, digest) =
            workflow::entry_signing_target(&rec, ZoneType::IDENTITY, &b, &identity.public.id())?;
        let sig = held.sign(&identity.public.id(), &digest)?;
        b.add_signature(poz::keys::Signature {
            key_idx: idx,
            sig_type: poz::keys::SigType::ED25519,
            data: sig.to_vec(),
        });
        entries.push(b.to_bytes());
    }
    store
        .put_entries(&id, ZoneType::IDENTITY, &entries, "pozd-init-bindings")
        .await?;
    store.close().await;
    bound.write(&tmp.join(PORTS_FILE))?;
    std::fs::write(tmp.join("record.id"), id.to_hex())?;
    std::fs::rename(&tmp, dir)
        .with_context(|| format!("moving {} to {}", tmp.display(), dir.display()))?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A supervisor that pipes our stdin may tie our life to its own.
    poz_kit::exit_with_stdin();
    let args = Args::parse();
    let _telemetry = poz_kit::telemetry::init("pozd", args.log_json)?;
    let dir = args.data.clone();
    let fresh = !dir.join("record.id").exists();
    // The ports are bound before anything else, so that port 0 (a free
    // port, as tests ask for) is known when the first start writes the
    // demo record's Service Zone, and a port in use fails before any work.
    // A later start given port 0 takes the port the first start chose:
    // the demo record's Service Zone names it.
    let first: Option<BoundPorts> = if fresh {
        None
    } else {
        BoundPorts::read(&dir.join(PORTS_FILE))
    };
    let wanted = |given: SocketAddr, was: Option<SocketAddr>| match (given.port(), was) {
        (0, Some(was)) => SocketAddr::new(given.ip(), was.port()).to_string(),
        _ => given.to_string(),
    };
    let plain_port = poz_edge::bind(&wanted(args.plain, first.as_ref().map(|b| b.plain))).await?;
    let noise_port = poz_edge::bind(&wanted(args.noise, first.as_ref().map(|b| b.noise))).await?;
    let submit_port =
        poz_edge::bind(&wanted(args.submit, first.as_ref().map(|b| b.submit))).await?;
    let bound = BoundPorts {
        plain: poz_edge::local_addr(&plain_port, "--plain")?,
        noise: poz_edge::local_addr(&noise_port, "--noise")?,
        submit: poz_edge::local_addr(&submit_port, "--submit")?,
    };
    if fresh {
        if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
            bail!(
                "{} exists but holds no pozd data (no record.id); give another --data",
                dir.display()
            );
        }
        if dir.exists() {
            std::fs::remove_dir(&dir)?;
        }
        tracing::info!(dir = %dir.display(), domain = %args.domain, "first start: creating the demo provider");
        initialise(&dir, &args, &bound).await?;
    }
    let id = Hash32::from_hex(std::fs::read_to_string(dir.join("record.id"))?.trim())
        .context("record.id is not a record ID")?;
    let passphrase = zeroize::Zeroizing::new(std::fs::read(dir.join("keys/passphrase"))?);
    let key_files: Vec<PathBuf> = KEY_LABELS
        .iter()
        .map(|l| dir.join("keys").join(l))
        .collect();
    let keys: Arc<dyn KeyStore> = Arc::new(SoftwareKeyStore::open_files(&key_files, &passphrase)?);
    let store =
        poz_store::Store::open(&store_url(&dir), poz_store::StoreOptions::default()).await?;
    poz_store::metrics::export_pool(&store);
    let domain = store
        .domains_of(&id)
        .await?
        .into_iter()
        .next()
        .context("the record has no domain")?;

    // Store, verifier, signer and Provider API on loopback gRPC.
    let fleet =
        poz_provider::inprocess::start_with_policy(store, keys, id, 1_000, args.handle_policy)
            .await?;
    // The two gateways, configured as the separate ones would be, with
    // the edge's defaults but for the proof-of-work base.
    let edge = EdgeConfig {
        noise_key_file: Some(dir.join("noise.key")),
        challenge_secrets_file: Some(dir.join("challenge.secret")),
        pow_base: args.pow_base,
        // Its gRPC stays on loopback inside this process: no TLS, said in
        // the banner. One metrics endpoint serves the whole process.
        serve: poz_kit::ServeSettings {
            log_json: args.log_json,
            insecure: true,
            ..poz_kit::ServeSettings::default()
        },
        ..EdgeConfig::default()
    };
    let query = poz_query_gw::Config {
        listen_plain: bound.plain.to_string(),
        listen_noise: bound.noise.to_string(),
        store: fleet.store.clone(),
        cache_ttl_ms: args.cache_ttl_ms,
        edge: edge.clone(),
        ..poz_query_gw::Config::default()
    };
    // By default the demo provider issues a binding to anyone who proves
    // they hold the record it names and asks for a free handle.
    let submit = poz_submit_gw::Config {
        listen: bound.submit.to_string(),
        store: fleet.store.clone(),
        verifier: fleet.verifier.clone(),
        binding_requests: args.binding_requests.clone(),
        provider_api: fleet.provider_api.clone(),
        handle_policy: args.handle_policy.to_string(),
        provider_record: id.to_hex(),
        // The demo provider hosts people's records, so a holder can
        // publish one and ask for a binding over the POZ ports alone.
        host_records: true,
        edge: EdgeConfig {
            noise_key_file: Some(dir.join("submit-noise.key")),
            ..edge
        },
        ..poz_submit_gw::Config::default()
    };
    query.validate().map_err(anyhow::Error::msg)?;
    submit.validate().map_err(anyhow::Error::msg)?;
    // One guard for 7074, 7075 and 7076: one load meter and difficulty,
    // and a proof is spent once in this process, whichever port it is
    // shown on (SPEC §15).
    let metrics = match args.metrics_listen {
        Some(a) => poz_kit::metrics::Endpoint::start(&a.to_string())
            .await
            .with_context(|| format!("--metrics-listen {a}"))?,
        None => None,
    };
    let guard = Guard::start(&query.edge)?;
    let lookups = poz_query_gw::edge(&query, &guard)?;
    let submissions = poz_submit_gw::edge(&submit, &guard)?;
    let query_ports = poz_query_gw::Listeners {
        plain: plain_port,
        noise: noise_port,
    };
    let submit_ports = poz_submit_gw::Listeners {
        submit: submit_port,
    };
    let (plain_addr, noise_addr, submit_addr) = (bound.plain, bound.noise, bound.submit);

    let key_hex = hex::encode(lookups.key.public);
    println!(
        "pozd: serving {domain} (record {id}) from {}",
        dir.display()
    );
    println!("  plaintext lookups  {plain_addr}");
    println!("  Noise NK lookups   {noise_addr}  server key {key_hex}");
    println!(
        "  Noise NK submits   {submit_addr}  server key {}",
        hex::encode(submissions.key.public)
    );
    println!(
        "  Provider API       {}  (gRPC, poz.v1.ProviderApi; loopback, no TLS)",
        fleet.provider_api
    );
    println!(
        "  store, verifier, signer  {}  {}  {}  (gRPC; loopback, no TLS)",
        fleet.store, fleet.verifier, fleet.signer
    );
    if let Some(m) = &metrics {
        println!("  metrics            http://{}/metrics", m.local_addr());
    }
    println!("Try, from another terminal:");
    // --record-id: a server named by hand does not say whose record it
    // serves; the ID pins it (pozctl refuses an unpinned answer).
    println!("  pozctl query {domain} --server {plain_addr} --record-id {id}");
    println!("  pozctl query {domain} --server {plain_addr} --record-id {id} --handle alice");
    println!(
        "  pozctl query {domain} --server {noise_addr} --noise-key {key_hex} --record-id {id} --handle bob"
    );
    // The holder's journey in the README reads these (a person's record
    // is published to this provider and asks it for a handle).
    println!("For the holder's journey (README), in that terminal:");
    println!(
        "  export POZ_QUERY={plain_addr} POZ_SUBMIT={submit_addr} POZ_SUBMIT_KEY={} POZ_PROVIDER={id} POZ_API={}",
        hex::encode(submissions.key.public),
        fleet.provider_api
    );
    std::io::stdout().flush()?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let signal = async {
        poz_kit::shutdown_signal().await;
        let _ = stop_tx.send(true);
    };
    tokio::join!(
        poz_query_gw::run(lookups, query_ports, stopped(stop_rx.clone())),
        poz_submit_gw::run(submissions, submit_ports, stopped(stop_rx)),
        signal,
    );
    drop(guard);
    drop(metrics);
    tracing::info!("pozd stopped");
    Ok(())
}
