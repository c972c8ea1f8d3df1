//! `poz-signer`: the Signer gRPC service. Settings: docs/OPERATIONS.md
//! ("The signer" and "Every service").
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use poz_kit::allow::identity;
use poz_kit::{Allowlist, GrpcRoutes, GrpcServer, ServeSettings, ServiceConfig};
use poz_proto::v1::signer_server::SignerServer;
use poz_signer::{
    KeyStore, Pkcs11KeyStore, SignatureAudit, SignatureAuditLog, SignerService, SoftwareKeyStore,
    TokenConfig,
};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use zeroize::Zeroizing;

const NAME: &str = "poz-signer";

/// Every setting, with its default. (No `Debug`: it holds the PIN, which
/// `--print-config` prints as REDACTED.)
#[derive(Serialize, Deserialize)]
#[serde(default)]
struct Config {
    /// gRPC address.
    listen: String,
    /// "pkcs11" (an HSM) or "software" (encrypted key files).
    backend: String,
    /// The PKCS#11 module.
    pkcs11_module: PathBuf,
    /// The token's label.
    token_label: String,
    /// A file holding the token's user PIN (first line). Prefer it, or
    /// POZ_SIGNER_PIN from a Kubernetes Secret, to a PIN in the file.
    pin_file: Option<PathBuf>,
    /// The user PIN (prefer pin_file); wiped from memory when dropped.
    pin: Option<Zeroizing<String>>,
    /// PKCS#11 sessions for parallel signing.
    sessions: usize,
    /// Software backend: POZ key files (`pozctl key generate`).
    key_files: Vec<PathBuf>,
    /// Software backend: the key files' passphrase, first line of this file.
    passphrase_file: Option<PathBuf>,
    /// The store's database, for the audit log (the signer's role needs
    /// INSERT on signature_audit only).
    audit_database_url: String,
    #[serde(flatten)]
    serve: ServeSettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:50053".into(),
            backend: "pkcs11".into(),
            pkcs11_module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token_label: "poz".into(),
            pin_file: None,
            pin: None,
            sessions: 2,
            key_files: Vec::new(),
            passphrase_file: None,
            audit_database_url: String::new(),
            serve: ServeSettings::default(),
        }
    }
}

impl ServiceConfig for Config {
    fn validate(&self) -> Result<(), String> {
        poz_kit::check_listen("listen", &self.listen)?;
        match self.backend.as_str() {
            "pkcs11" => {
                if self.pin.is_none() && self.pin_file.is_none() {
                    return Err("backend pkcs11 needs pin_file or pin".into());
                }
                if self.sessions == 0 {
                    return Err("sessions must be at least 1".into());
                }
            }
            "software" => {
                if self.key_files.is_empty() || self.passphrase_file.is_none() {
                    return Err("backend software needs key_files and passphrase_file".into());
                }
            }
            other => return Err(format!("backend must be pkcs11 or software, not {other:?}")),
        }
        if self.audit_database_url.is_empty() {
            return Err("audit_database_url is required: no signature leaves unaudited".into());
        }
        poz_kit::check_postgres_url("audit_database_url", &self.audit_database_url)?;
        self.serve.validate()
    }
}

/// Flags: each overrides the file and the environment.
#[derive(Parser, Serialize, Debug)]
#[command(
    name = NAME,
    version,
    about = "The POZ signer: typed signing requests, PKCS#11 keys, audited"
)]
struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    common: poz_kit::GrpcArgs,
    /// Generate an Ed25519 key with this label inside the token, print its
    /// key ID and public key, and exit.
    #[arg(long, value_name = "LABEL")]
    #[serde(skip)]
    generate_key: Option<String>,
    /// Run the provider ceremony of this plan (TOML; docs/OPERATIONS.md)
    /// with the token's keys, generating any key the plan names that the
    /// token lacks; write the record and the gateways' Noise keys to
    /// --out, audit every signature, and exit.
    #[arg(long, value_name = "PLAN")]
    #[serde(skip)]
    ceremony: Option<PathBuf>,
    /// Where the ceremony writes record.poz and noise/<host>-<port>.key.
    #[arg(long, value_name = "DIR", requires = "ceremony")]
    #[serde(skip)]
    out: Option<PathBuf>,
    /// Key store: pkcs11 (an HSM) or software (key files; trials).
    #[arg(long)]
    backend: Option<String>,
    /// Database of the signature audit log (postgres://… or sqlite:…).
    #[arg(long)]
    audit_database_url: Option<String>,
}

/// The first line of a secret's file (a PIN, a passphrase); the file's
/// text and the line are wiped from memory when dropped.
fn first_line(path: &std::path::Path) -> anyhow::Result<Zeroizing<String>> {
    let s = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    );
    Ok(Zeroizing::new(
        s.lines().next().unwrap_or_default().to_string(),
    ))
}

fn open_keys(c: &Config) -> anyhow::Result<Arc<dyn KeyStore>> {
    Ok(match c.backend.as_str() {
        "software" => {
            let pass = first_line(c.passphrase_file.as_deref().unwrap_or("".as_ref()))?;
            Arc::new(SoftwareKeyStore::open_files(&c.key_files, pass.as_bytes())?)
        }
        _ => Arc::new(Pkcs11KeyStore::open(&token(c)?)?),
    })
}

fn token(c: &Config) -> anyhow::Result<TokenConfig> {
    let pin = match (&c.pin_file, &c.pin) {
        (Some(f), _) => first_line(f)?,
        (None, Some(p)) => p.clone(),
        (None, None) => anyhow::bail!("no PIN"),
    };
    Ok(TokenConfig {
        module: c.pkcs11_module.clone(),
        token_label: c.token_label.clone(),
        pin,
        sessions: c.sessions,
    })
}

/// Only the writers obtain signatures (and an operator's ceremony);
/// certificates only through the Provider API (the operator's
/// IssueCertificate), never straight from a gateway.
fn default_allow() -> Allowlist {
    Allowlist::of(&[
        (
            "poz.v1.Signer",
            &[
                identity::PROVIDER_API,
                identity::SUBMIT_GW,
                identity::CEREMONY,
            ],
        ),
        ("poz.v1.Signer/SignCertificate", &[identity::PROVIDER_API]),
    ])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let Some(c) = poz_kit::start::<Config>("POZ_SIGNER_", &args.common.config, &args)? else {
        return Ok(());
    };
    let _telemetry = poz_kit::telemetry::init(NAME, c.serve.log_json)?;
    if let Some(label) = &args.generate_key {
        let hsm = Pkcs11KeyStore::open(&token(&c)?)?;
        let k = hsm.generate(label)?;
        println!(
            "generated {label}: key id {} public key {}",
            k.public.id(),
            hex_string(k.public.bytes())
        );
        return Ok(());
    }
    if let Some(plan) = &args.ceremony {
        let out = args.out.clone().unwrap_or_else(|| PathBuf::from("."));
        return ceremony(&c, plan, &out).await;
    }
    // Refused before any key is opened when it would serve without TLS,
    // with TLS files that do not load, or with an allowlist for a
    // service it does not serve.
    c.serve.preflight(default_allow())?;
    let keys = open_keys(&c)?;
    for k in keys.keys() {
        tracing::info!(label = %k.label, key_id = %k.public.id(), "holding key");
    }
    let audit = SignatureAuditLog::open(&c.audit_database_url).await?;
    let server = GrpcServer::bind(NAME, &c.listen, &c.serve, default_allow()).await?;
    tracing::info!(backend = %c.backend, "serving the signer");
    let signer = SignerServer::new(SignerService::new(keys, audit))
        .max_decoding_message_size(poz_kit::MAX_GRPC_MESSAGE);
    server.serve(GrpcRoutes::new().service(signer)).await?;
    Ok(())
}

/// `--ceremony`: see `poz_signer::ceremony`. The audit rows are written
/// before any file: a record whose signatures are not audited is not
/// released.
async fn ceremony(
    c: &Config,
    plan_path: &std::path::Path,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    use poz::Codec;
    let text = std::fs::read_to_string(plan_path)
        .with_context(|| format!("reading {}", plan_path.display()))?;
    let plan: poz_signer::ceremony::CeremonyPlan =
        toml::from_str(&text).with_context(|| format!("plan {}", plan_path.display()))?;
    plan.check()?;
    let record_path = out.join("record.poz");
    if record_path.exists() {
        anyhow::bail!(
            "{} exists: a ceremony never overwrites a record",
            record_path.display()
        );
    }
    let audit = SignatureAuditLog::open(&c.audit_database_url).await?;
    if c.backend == "pkcs11" {
        let hsm = Pkcs11KeyStore::open(&token(c)?)?;
        for label in plan.labels() {
            if !hsm.keys().iter().any(|k| k.label == label) {
                let k = hsm.generate(&label)?;
                println!("generated {label}: key id {}", k.public.id());
            }
        }
    }
    let keys = open_keys(c)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let done =
        tokio::task::spawn_blocking(move || poz_signer::ceremony::run(keys.as_ref(), &plan, now))
            .await??;
    let id = done.record.id();
    let rows: Vec<SignatureAudit> = done
        .signatures
        .iter()
        .map(|s| SignatureAudit {
            key_id: s.key_id,
            record_id: id,
            zone_type: s.zone_type,
            what: format!("ceremony-{}", s.what),
            digest: s.digest,
            signature: s.signature.to_vec(),
        })
        .collect();
    audit.append(&rows).await?;
    // Owner-only, as the key files in it.
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(out.join("noise"))?;
    }
    for (host, port, kp) in &done.noise_keys {
        let path = out.join("noise").join(format!("{host}-{port}.key"));
        let line = Zeroizing::new(format!("{}\n", hex_string(kp.secret())));
        poz_kit::write_secret(&path, line.as_bytes())?;
        println!(
            "noise key {host}:{port}: public {} -> {}",
            hex_string(&kp.public),
            path.display()
        );
    }
    std::fs::write(&record_path, done.record.to_bytes())?;
    println!(
        "record {id} serial {} with {} signatures (all audited) -> {}",
        done.record.master.serial,
        rows.len(),
        record_path.display()
    );
    Ok(())
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
