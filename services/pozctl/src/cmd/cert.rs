//! `pozctl cert issue`: POZ-as-CA (SPEC §21). Makes an X.509 certificate
//! for a host and a fresh host key, the certificate signed by a record
//! key (Ed25519) that the record's Service Zone names for that host by
//! `ca_key_idx`. Refused (exit 1) when the record does not verify or no
//! live Service Zone host of that name names the key.

use super::refuse;
use crate::keyio::{open_key, read_record, write_atomic, write_atomic_for, Passphrase, Readers};
use anyhow::Result;
use clap::Subcommand;
use poz::ca::{ca_keys, normalize_host};
use poz::verify::verify_and_accept;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

/// The longest validity `--days` takes.
pub const MAX_DAYS: u64 = 825;

#[derive(Subcommand)]
pub enum CertCmd {
    /// Issue a TLS certificate for HOST signed by record key KEY; the
    /// record's Service Zone must name KEY for HOST by ca_key_idx. With
    /// --api instead of --record/--key: a provider's certificate, signed
    /// by its signer (HSM) through its Provider API (IssueCertificate).
    Issue {
        /// The record (verified first).
        #[arg(long, required_unless_present = "api", conflicts_with = "api")]
        record: Option<PathBuf>,
        /// The record key's file (the signer).
        #[arg(long, required_unless_present = "api", conflicts_with = "api")]
        key: Option<PathBuf>,
        /// The provider's Provider API (http://HOST:PORT, or https:// with
        /// --tls-cert, --tls-key and --tls-ca): the provider's signer signs
        /// with the key its record names for HOST. The host's private key
        /// is made here and never sent.
        #[arg(long)]
        api: Option<String>,
        #[command(flatten)]
        tls: crate::grpc::TlsArgs,
        /// The host name the certificate is for (its SAN).
        #[arg(long)]
        host: String,
        /// Validity in days from now (1..=825).
        #[arg(long, default_value_t = 90)]
        days: u64,
        /// Where to write the certificate (PEM).
        #[arg(long)]
        out_cert: PathBuf,
        /// Where to write the host's fresh private key (PKCS#8 PEM, 0600).
        #[arg(long)]
        out_key: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: CertCmd, pass: &Passphrase) -> Result<ExitCode> {
    let CertCmd::Issue {
        record,
        key,
        api,
        tls,
        host,
        days,
        out_cert,
        out_key,
        json,
    } = cmd;
    if !(1..=MAX_DAYS).contains(&days) {
        anyhow::bail!("--days is 1..={MAX_DAYS}");
    }
    if out_key.exists() {
        anyhow::bail!("{} exists; refusing to overwrite a key", out_key.display());
    }
    // Normalized once; a name that is still not a DNS host name (an IP
    // address, a second trailing dot, a wildcard) is a usage error.
    if !poz::ca::is_dns_host(&normalize_host(&host)) {
        anyhow::bail!(
            "--host {host:?} is not a DNS host name a certificate can carry (letters, digits and hyphens in dot-separated labels; no IP address, no wildcard; SPEC §21)"
        );
    }
    let (Some(record), Some(key)) = (record, key) else {
        let api = api.ok_or_else(|| anyhow::anyhow!("give --record and --key, or --api"))?;
        return through_provider(&api, &tls, &host, days, &out_cert, &out_key, json);
    };
    let rec = read_record(&record)?;
    let vr = verify_and_accept(rec).map_err(|report| {
        let msgs: Vec<String> = report
            .failures()
            .map(|(r, d)| format!("{r}: {d}"))
            .collect();
        refuse(format!(
            "{} does not verify: {}",
            record.display(),
            msgs.join("; ")
        ))
    })?;
    let signer = open_key(&key, pass)?;
    let public = signer.public();
    let want = normalize_host(&host);
    let named: Vec<_> = ca_keys(&vr)
        .into_iter()
        .filter(|k| normalize_host(&k.hostname) == want)
        .collect();
    let Some(ca) = named.iter().find(|k| k.key == public) else {
        let idx: Vec<String> = named.iter().map(|k| k.key_idx.to_string()).collect();
        return Err(refuse(if idx.is_empty() {
            format!("no Service Zone host {want:?} of the record names a CA key (ca_key_idx)")
        } else {
            format!(
                "the Service Zone names key(s) {} for {want:?} by ca_key_idx, not {}",
                idx.join(", "),
                key.display()
            )
        }));
    };
    // Five minutes back for clocks a little behind.
    let now = SystemTime::now();
    let not_before = now - Duration::from_secs(300);
    let not_after = now + Duration::from_secs(days * 86_400);
    let c = poz_client::ca::issue_host_cert(&signer, &want, not_before, not_after)
        .map_err(|e| refuse(e.to_string()))?;
    // The certificate first: a key is never left behind without it (a
    // rerun would refuse to overwrite that key).
    write_atomic(&out_cert, c.cert_pem.as_bytes())?;
    write_atomic_for(&out_key, c.key_pem.as_bytes(), Readers::Owner)?;
    if json {
        outln!(
            "{}",
            json!({
                "host": want,
                "ca_key_idx": ca.key_idx,
                "ca_key_id": hex::encode(public.id().0),
                "days": days,
                "cert": out_cert.display().to_string(),
                "key": out_key.display().to_string(),
            })
        );
    } else {
        outln!(
            "certificate for {want} signed by record key {} (ca_key_idx {}), valid {days} days: {} (key {})",
            hex::encode(public.id().0),
            ca.key_idx,
            out_cert.display(),
            out_key.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cert issue --api`: a fresh ECDSA P-256 host key made here, its public
/// key sent to the Provider API's IssueCertificate; the certificate the
/// provider's signer made is checked against the host before it is
/// written (SPEC §21).
fn through_provider(
    api: &str,
    tls: &crate::grpc::TlsArgs,
    host: &str,
    days: u64,
    out_cert: &std::path::Path,
    out_key: &std::path::Path,
    json: bool,
) -> Result<ExitCode> {
    use poz_proto::v1 as pb;
    let want = normalize_host(host);
    let host_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| anyhow::anyhow!("generating the host key: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let signed = rt.block_on(async {
        let channel = crate::grpc::channel("--api", api, tls)?;
        pb::provider_api_client::ProviderApiClient::new(channel)
            .issue_certificate(pb::IssueCertificateRequest {
                host: want.clone(),
                subject_public_key_info: host_key.public_key_der(),
                days: u32::try_from(days)?,
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| crate::grpc::failure("the Provider API", api, &s))
    })?;
    // What came back is for this host, this key, and not a CA.
    check_issued(&signed.certificate, &want, &host_key.public_key_der())?;
    let cert_pem = pem::encode(&pem::Pem::new("CERTIFICATE", signed.certificate));
    write_atomic(out_cert, cert_pem.as_bytes())?;
    write_atomic_for(out_key, host_key.serialize_pem().as_bytes(), Readers::Owner)?;
    if json {
        outln!(
            "{}",
            json!({
                "host": want,
                "ca_key_idx": signed.key_idx,
                "audit_id": signed.audit_id,
                "days": days,
                "cert": out_cert.display().to_string(),
                "key": out_key.display().to_string(),
            })
        );
    } else {
        outln!(
            "certificate for {want} signed by the provider's signer (ca_key_idx {}, audit row {}), valid {days} days: {} (key {})",
            signed.key_idx,
            signed.audit_id,
            out_cert.display(),
            out_key.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The certificate the provider returned names `host` and carries the
/// public key sent (SubjectPublicKeyInfo DER `spki`).
fn check_issued(der: &[u8], host: &str, spki: &[u8]) -> Result<()> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|_| refuse("the provider returned a certificate that does not parse"))?;
    if cert.public_key().raw != spki {
        return Err(refuse(
            "the provider's certificate carries another public key than the one sent",
        ));
    }
    let names: Vec<String> = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(normalize_host(d)),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if !names.iter().any(|n| n == host) {
        return Err(refuse(format!(
            "the provider's certificate is for {names:?}, not {host:?}"
        )));
    }
    Ok(())
}
