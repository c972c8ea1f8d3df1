//! Mutual TLS between the fleet's services (rustls, ring provider).
//!
//! Every service presents one certificate (PEM chain and key files) as a
//! server and as a client, and trusts one CA bundle for its peers. The
//! files are re-read when they change on disk (checked at each new
//! connection: a `stat` of three files), so cert-manager's rotation of a
//! mounted Secret needs no restart; a file caught half-written keeps the
//! last good configuration and logs why (docs/OPERATIONS.md, "Service
//! identities and mTLS").
//!
//! A caller's identity is the list of DNS and URI subject alternative
//! names of the client certificate it presented, after the certificate
//! chained to the CA bundle; the allowlist (`allow`) decides per RPC.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio_rustls::rustls;

/// The files of a service's TLS identity (config table `[tls]`). All
/// three or none.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsFiles {
    /// PEM certificate chain this service presents, leaf first; as a
    /// server and as a client (needs both serverAuth and clientAuth).
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    pub key_file: Option<PathBuf>,
    /// PEM CA bundle that peers' certificates must chain to.
    pub ca_file: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether TLS is configured at all.
    pub fn is_set(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some() || self.ca_file.is_some()
    }

    /// All three files or none.
    pub fn validate(&self) -> Result<(), String> {
        let set = [&self.cert_file, &self.key_file, &self.ca_file]
            .iter()
            .filter(|f| f.is_some())
            .count();
        if set != 0 && set != 3 {
            return Err("tls needs cert_file, key_file and ca_file together".into());
        }
        for (name, f) in [
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
            ("ca_file", &self.ca_file),
        ] {
            if f.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(format!("tls.{name} is empty: name the PEM file"));
            }
        }
        Ok(())
    }

    fn paths(&self) -> Result<[&Path; 3], TlsError> {
        match (&self.cert_file, &self.key_file, &self.ca_file) {
            (Some(c), Some(k), Some(a)) => Ok([c, k, a]),
            _ => Err(TlsError::Incomplete),
        }
    }
}

/// Why a TLS configuration could not be built from its files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls needs cert_file, key_file and ca_file together")]
    Incomplete,
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no {what} in the PEM file")]
    Missing { path: String, what: &'static str },
    #[error("{path}: bad PEM: {reason}")]
    Pem { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error(transparent)]
    KeyPair(Box<KeyPairError>),
    #[error("client verifier: {0}")]
    Verifier(String),
}

/// A certificate and a key file that do not make a pair (boxed in
/// [`TlsError`] to keep every error that carries one small).
#[derive(Debug, thiserror::Error)]
#[error("{cert} and {key} do not make a pair (the key is not the certificate's, or is of a kind TLS cannot use): {reason}")]
pub struct KeyPairError {
    pub cert: String,
    pub key: String,
    /// Said in the message, so not a `source` (it would print twice).
    pub reason: rustls::Error,
}

fn pem_err(path: &Path, e: rustls_pki_types::pem::Error) -> TlsError {
    match e {
        rustls_pki_types::pem::Error::Io(source) => TlsError::Read {
            path: path.display().to_string(),
            source,
        },
        other => TlsError::Pem {
            path: path.display().to_string(),
            reason: other.to_string(),
        },
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(path, e))?;
    if chain.is_empty() {
        return Err(TlsError::Missing {
            path: path.display().to_string(),
            what: "certificate",
        });
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Missing {
            path: path.display().to_string(),
            what: "private key",
        },
        e => pem_err(path, e),
    })
}

fn read_roots(path: &Path) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in read_chain(path)? {
        roots.add(c).map_err(|e| TlsError::Pem {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// gRPC needs HTTP/2, negotiated by ALPN.
const ALPN_H2: &[u8] = b"h2";

fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig, TlsError> {
    let [cert, key, ca] = files.paths()?;
    let roots = read_roots(ca)?;
    // A client without a certificate completes the handshake and is then
    // refused per RPC with PERMISSION_DENIED and a log line (issue 13):
    // a handshake failure would tell the caller nothing. Health and
    // reflection stay open to it.
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut c = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(read_chain(cert)?, read_key(key)?)
        .map_err(|e| key_pair(cert, key, e))?;
    c.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(c)
}

fn key_pair(cert: &Path, key: &Path, reason: rustls::Error) -> TlsError {
    TlsError::KeyPair(Box::new(KeyPairError {
        cert: cert.display().to_string(),
        key: key.display().to_string(),
        reason,
    }))
}

fn client_config(files: &TlsFiles) -> Result<rustls::ClientConfig, TlsError> {
    let [cert, key, ca] = files.paths()?;
    let roots = read_roots(ca)?;
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(read_chain(cert)?, read_key(key)?)
        .map_err(|e| key_pair(cert, key, e))?;
    c.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(c)
}

/// What identifies a file's content without reading it: modification
/// time, length and inode (a Secret volume swaps a symlink, so the inode
/// changes even when the time does not).
type Stamp = Option<(std::time::SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// A rustls configuration that follows its files: [`Reloading::current`]
/// rebuilds it when any file's stamp changed since the last build.
pub struct Reloading<C> {
    files: TlsFiles,
    build: fn(&TlsFiles) -> Result<C, TlsError>,
    state: Mutex<ReloadState<C>>,
}

struct ReloadState<C> {
    /// The stamps of the files `config` was built from.
    loaded: Vec<Stamp>,
    config: Arc<C>,
    /// The stamps of files that failed to load: not read again (nor
    /// logged again) at every connection until one changes.
    failed: Option<Vec<Stamp>>,
}

/// The server side: presents the certificate, asks for (but does not
/// require) a client certificate chained to the CA bundle.
pub type ServerTls = Reloading<rustls::ServerConfig>;
/// The client side: presents the certificate, verifies the server's
/// against the CA bundle and the host name (or IP) it dialled.
pub type ClientTls = Reloading<rustls::ClientConfig>;

impl<C> Reloading<C> {
    fn stamps(files: &TlsFiles) -> Vec<Stamp> {
        files.paths().map_or(Vec::new(), |p| p.map(stamp).to_vec())
    }

    fn load_with(
        files: &TlsFiles,
        build: fn(&TlsFiles) -> Result<C, TlsError>,
    ) -> Result<Self, TlsError> {
        let stamps = Self::stamps(files);
        let config = build(files)?;
        Ok(Reloading {
            files: files.clone(),
            build,
            state: Mutex::new(ReloadState {
                loaded: stamps,
                config: Arc::new(config),
                failed: None,
            }),
        })
    }

    /// The configuration for the next connection: rebuilt first if a file
    /// changed. A rebuild that fails (a file mid-rotation) keeps the last
    /// good configuration, logs the reason once, and is retried when a
    /// file changes again.
    pub fn current(&self) -> Arc<C> {
        let now = Self::stamps(&self.files);
        let mut state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if state.loaded != now && state.failed.as_ref() != Some(&now) {
            match (self.build)(&self.files) {
                Ok(c) => {
                    tracing::info!(cert = ?self.files.cert_file, "TLS files changed: reloaded");
                    state.loaded = now;
                    state.config = Arc::new(c);
                    state.failed = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS files changed but do not load; keeping the last good ones");
                    state.failed = Some(now);
                }
            }
        }
        state.config.clone()
    }
}

impl ServerTls {
    /// Loads the server side from `files`. Errors: [`TlsError`].
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        Self::load_with(files, server_config)
    }
}

impl ClientTls {
    /// Loads the client side from `files`. Errors: [`TlsError`].
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        Self::load_with(files, client_config)
    }
}

/// The identities a certificate names: its DNS and URI subject
/// alternative names, in order. Empty when it has none or does not parse
/// (the allowlist then refuses it).
pub fn identities(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, parsed)) = X509Certificate::from_der(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(s) | GeneralName::URI(s) => Some(s.to_string()),
            _ => None,
        })
        .collect()
}

/// Whether the server at `https://HOST:PORT` (`url`) rejects the client
/// certificate of `files`: dials it, completes the handshake and reads
/// for up to `wait`. In TLS 1.3 a server judges the client's certificate
/// after the client's side of the handshake has ended, so its verdict is
/// an alert on the first read; a gRPC call may lose that alert behind a
/// "connection closed" (the HTTP/2 connection task sees it, the call
/// does not). Returns the rustls text of the alert received
/// (`received fatal alert: UnknownCA`), or `None` (accepted, no answer
/// in time, or not reachable).
pub async fn rejection(files: &TlsFiles, url: &str, wait: std::time::Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let authority = url.strip_prefix("https://")?.split('/').next()?;
    let uri: http::Uri = format!("https://{authority}/").parse().ok()?;
    let host = uri
        .host()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let tls = ClientTls::load(files).ok()?;
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .ok()?;
        let name = rustls_pki_types::ServerName::try_from(host.clone()).ok()?;
        let mut s = match tokio_rustls::TlsConnector::from(tls.current())
            .connect(name, tcp)
            .await
        {
            Ok(s) => s,
            Err(e) => return alert_in(&e.to_string()),
        };
        let mut b = [0u8; 1];
        match s.read(&mut b).await {
            Err(e) => alert_in(&e.to_string()),
            Ok(_) => None,
        }
    };
    tokio::time::timeout(wait, attempt).await.ok().flatten()
}

fn alert_in(text: &str) -> Option<String> {
    text.find("received fatal alert: ")
        .map(|i| text[i..].to_string())
}
