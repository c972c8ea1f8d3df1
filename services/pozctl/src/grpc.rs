//! The fleet's gRPC APIs as pozctl dials them (`identity import`,
//! `mirrors`): channels built by `poz_kit::Channels`, as every service
//! builds its own, so an `https://` endpoint gets mutual TLS with the
//! operator's client certificate and an `http://` one plain TCP.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;

/// The client certificate for `https://` endpoints: all three files or
/// none (clap enforces it, with the environment counted).
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "Mutual TLS (for https:// endpoints)")]
pub struct TlsArgs {
    /// This client's certificate (PEM chain, leaf first). Its DNS SAN is
    /// the identity the server's allowlist checks: `poz-operator` is on
    /// the Provider API's by default; for `mirrors` the store must allow
    /// it on poz.v1.StoreRead and poz.v1.StoreWrite/SetMirrors
    /// (docs/OPERATIONS.md).
    #[arg(long, env = "POZ_TLS_CERT", value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "POZ_TLS_KEY", value_name = "FILE", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The CA bundle (PEM) the server's certificate must chain to.
    #[arg(long, env = "POZ_TLS_CA", value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    fn files(&self) -> poz_kit::tls::TlsFiles {
        poz_kit::tls::TlsFiles {
            cert_file: self.tls_cert.clone(),
            key_file: self.tls_key.clone(),
            ca_file: self.tls_ca.clone(),
        }
    }
}

/// A channel to `url`, given as `flag`; connected at the first call.
/// Must be called inside the Tokio runtime (the channel spawns its
/// worker). Errors (usage, exit 2): an `https://` URL without the TLS
/// files, TLS files that do not load, a URL that is neither `http://`
/// nor `https://`.
pub fn channel(flag: &str, url: &str, tls: &TlsArgs) -> Result<poz_kit::Channel> {
    let files = tls.files();
    if url.starts_with("https://") && !files.is_set() {
        bail!(
            "{flag} {url}: an https:// endpoint needs this client's certificate: \
             --tls-cert FILE --tls-key FILE --tls-ca FILE \
             (or POZ_TLS_CERT, POZ_TLS_KEY, POZ_TLS_CA)"
        );
    }
    let channels = poz_kit::Channels::new(&files)
        .context("loading the client certificate (--tls-cert, --tls-key, --tls-ca)")?;
    channels.lazy(url).with_context(|| format!("{flag} {url}"))
}

/// When `status` says the server refused this client (its certificate's
/// identity is not on the RPC's allowlist, or it presented none), the
/// sentence for it, naming the status as gRPC spells it.
pub fn refusal(server: &str, status: &tonic::Status) -> Option<String> {
    let code = match status.code() {
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
        _ => return None,
    };
    Some(format!(
        "{server} refused this client ({code}): {}",
        status.message()
    ))
}

/// A first call that failed UNAVAILABLE: the server was never reached
/// (refused connection, TLS handshake failure). The words are the
/// status's message and its causes (the transport's, the TLS alert),
/// each once.
pub fn unreachable(status: &tonic::Status) -> anyhow::Error {
    let mut line = status.message().to_string();
    let mut cause = std::error::Error::source(status);
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        cause = c.source();
    }
    anyhow::anyhow!(line)
}
