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
    // A URL that cannot name a server (port 99999, no host) is a usage
    // error, not "connection refused" after a dial.
    match url::Url::parse(url) {
        Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => {}
        Ok(_) => bail!("{flag} {url}: no host in the URL (http://HOST:PORT)"),
        Err(e) => bail!("{flag} {url}: not a URL ({e}); give http://HOST:PORT"),
    }
    let files = tls.files();
    if url.starts_with("http://") && files.is_set() {
        // Said rather than ignored: the operator asked for mutual TLS
        // and would otherwise send in the clear (review of issue 13).
        bail!(
            "{flag} {url}: --tls-cert, --tls-key and --tls-ca (or POZ_TLS_*) are for \
             https:// endpoints, and this one is plain http://; use https://HOST:PORT, \
             or drop the TLS settings"
        );
    }
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

/// Reaches the server at the other end of `channel` with one health
/// check (open to every caller that completes TLS), before a stream is
/// opened. Why: a server that rejects the client's certificate does so
/// with a TLS alert after the client's side of the handshake has ended;
/// a unary call waits for the answer and so reads that alert, while a
/// stream being written may first fail its write (a broken pipe) and
/// look like a lost connection, to be rerun. Errors: the
/// call's status when the server was not reached or refused this client
/// (see [`refusal`]); any answer, even UNIMPLEMENTED from a server
/// without health checks, means it was reached.
pub async fn reach(
    channel: poz_kit::Channel,
    url: &str,
    tls: &TlsArgs,
) -> Result<(), tonic::Status> {
    let check = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    match tonic_health::pb::health_client::HealthClient::new(channel)
        .check(check)
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if refusal("", &s).is_some() => Err(s),
        // The transport's failures (no answer at all: refused, reset,
        // closed). A rejected certificate can end this way when the
        // HTTP/2 connection, not the call, read the alert: ask the
        // server once more, at the TLS layer, before saying it was
        // unreachable.
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::Internal
                    | tonic::Code::Cancelled
            ) =>
        {
            let wait = std::time::Duration::from_secs(5);
            match poz_kit::tls::rejection(&tls.files(), url, wait).await {
                Some(alert) => Err(tonic::Status::unavailable(alert)),
                None => Err(s),
            }
        }
        Err(_) => Ok(()),
    }
}

/// When `status` says the server refused this client (its certificate's
/// identity is not on the RPC's allowlist, or it presented none; or the
/// server rejected the certificate itself in the TLS handshake), the
/// sentence for it, naming the status as gRPC spells it, or the alert.
pub fn refusal(server: &str, status: &tonic::Status) -> Option<String> {
    let code = match status.code() {
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
        _ => {
            // TLS 1.3: the client's side of the handshake ends before the
            // server has checked the client's certificate, so a rejection
            // arrives as an alert on the first read, and the call fails
            // like a lost connection. It is not one: a rerun fails alike.
            let alert = certificate_alert(&causes(status))?;
            return Some(format!(
                "{server} rejected this client's certificate in the TLS handshake \
                 (alert {alert}): is --tls-cert issued by the CA the server trusts, \
                 unexpired, and for client authentication?"
            ));
        }
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
    anyhow::anyhow!(causes(status))
}

/// [`unreachable`] for an endpoint dialled with this client's
/// certificate: a connection closed before any answer is also what a
/// server does when it rejects the certificate and its reset overtakes
/// the TLS alert, so the words say both.
/// The words name the endpoint (`URL could not be reached: …`).
pub fn unreached(url: &str, status: &tonic::Status) -> anyhow::Error {
    let e = unreachable(status);
    if url.starts_with("https://") && status.code() != tonic::Code::Unavailable {
        return e.context(format!(
            "{url}: the connection closed before the server answered: if the server is up, it \
             may have rejected this client's certificate (is --tls-cert issued by the CA \
             the server trusts, unexpired, for client authentication?)"
        ));
    }
    e.context(format!("{url} could not be reached"))
}

/// A failed call to `server` (its words, e.g. "the Provider API") at
/// `url`, as pozctl reports it: a refusal of this client (exit 1, see
/// [`refusal`]); no server reached, no gRPC answer (a POZ port or another
/// protocol), or no answer in time: usage/I-O (exit 2), naming the URL;
/// INVALID_ARGUMENT: the caller's input (exit 2); anything else the
/// server decided: refused (exit 1) with its message.
pub fn failure(server: &str, url: &str, status: &tonic::Status) -> anyhow::Error {
    if let Some(r) = refusal(&format!("{server} at {url}"), status) {
        return crate::cmd::refuse(r);
    }
    // A status tonic made itself from a transport failure carries the
    // transport's error as its source; a server's answer never does.
    let transport = std::error::Error::source(status).is_some();
    match status.code() {
        tonic::Code::Unavailable => unreached(url, status),
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            if transport || status.message().contains("Timeout") =>
        {
            anyhow::anyhow!(
                "{url} did not answer in time ({}): is {server} up, and is this its gRPC port?",
                causes(status)
            )
        }
        // Over TLS, a connection closed before any answer is also how a
        // server rejecting this client's certificate can look: `unreached`
        // says both.
        _ if transport && url.starts_with("https://") => unreached(url, status),
        _ if transport => anyhow::anyhow!(
            "{url} did not answer as a gRPC server ({}): is this {server}'s gRPC port, not a POZ port?",
            causes(status)
        ),
        tonic::Code::InvalidArgument => anyhow::anyhow!("{}", status.message()),
        _ => crate::cmd::refuse(format!("{server} at {url}: {}", status.message())),
    }
}

/// The alerts a TLS server sends when it rejects the client's
/// certificate (RFC 8446 §6.2), as rustls names them.
const CERTIFICATE_ALERTS: [&str; 9] = [
    "BadCertificate",
    "UnsupportedCertificate",
    "CertificateRevoked",
    "CertificateExpired",
    "CertificateUnknown",
    "UnknownCA",
    "AccessDenied",
    "DecryptError",
    "CertificateRequired",
];

/// The certificate alert a peer sent, from a transport error's words
/// (rustls: `received fatal alert: UnknownCA`).
fn certificate_alert(text: &str) -> Option<&'static str> {
    let (_, after) = text.split_once("received fatal alert: ")?;
    let word: String = after
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    CERTIFICATE_ALERTS.into_iter().find(|a| *a == word)
}

/// A status's message and its causes, each once, joined by `: `.
fn causes(status: &tonic::Status) -> String {
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
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_alerts_are_told_apart_from_other_transport_errors() {
        assert_eq!(
            certificate_alert("transport error: received fatal alert: UnknownCA"),
            Some("UnknownCA")
        );
        assert_eq!(
            certificate_alert("received fatal alert: CertificateRequired: x"),
            Some("CertificateRequired")
        );
        assert_eq!(
            certificate_alert("received fatal alert: ProtocolVersion"),
            None
        );
        assert_eq!(certificate_alert("connection refused"), None);
    }
}
