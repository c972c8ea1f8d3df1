//! Finding a domain's POZ servers (SPEC §18).
//!
//! In order: `_poz._tcp.<domain>` SRV (query servers), `_poz.<domain>` TXT
//! (`v=poz0 id=<64 hex>`: the record ID the domain is bound to),
//! `https://<domain>/.well-known/poz` (JSON, the PKI-backed fallback), and
//! last `<domain>:7074` directly. `_poz-submit._tcp.<domain>` SRV names
//! the submit servers. The paths cross-check each other: when DNS and the
//! well-known file both pin a record ID they must agree, and the record a
//! server returns must be the pinned one.

use crate::{ClientError, Endpoint, Security};
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::TokioAsyncResolver;
use poz::Hash32;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// What discovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovered {
    /// Query endpoints (plain: the client learns Noise keys from the
    /// record's own Service Zone, which it verifies first).
    pub query: Vec<Endpoint>,
    pub submit: Vec<SocketAddr>,
    /// Record ID pinned by the `_poz` TXT record.
    pub dns_pin: Option<Hash32>,
    /// Record ID pinned by the well-known file.
    pub well_known_pin: Option<Hash32>,
    /// Which path produced `query`: "srv", "well-known" or "direct".
    pub via: &'static str,
}

impl Discovered {
    /// The record ID every path agrees on, if any pins one.
    pub fn pin(&self, domain: &str) -> Result<Option<Hash32>, ClientError> {
        match (self.dns_pin, self.well_known_pin) {
            (Some(a), Some(b)) if a != b => Err(ClientError::Discovery {
                domain: domain.into(),
                detail: format!("DNS pins record {a} but the well-known file pins {b}"),
            }),
            (Some(a), _) => Ok(Some(a)),
            (None, b) => Ok(b),
        }
    }
}

/// The well-known file's JSON.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct WellKnown {
    /// The record ID (original master hash), 64 hex digits.
    pub record_id: String,
    #[serde(default)]
    pub query: Vec<WellKnownHost>,
    #[serde(default)]
    pub submit: Vec<WellKnownHost>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct WellKnownHost {
    pub host: String,
    pub port: u16,
}

/// Parses a `_poz` TXT record: `v=poz0 id=<64 hex digits>`.
pub fn parse_txt(txt: &str) -> Option<Hash32> {
    let mut parts = txt.split_whitespace();
    if parts.next()? != "v=poz0" {
        return None;
    }
    parts
        .find_map(|p| p.strip_prefix("id="))
        .and_then(Hash32::from_hex)
}

/// Fetches `https://<domain>/.well-known/poz`. Behind a trait so the
/// client does not pull an HTTP stack into every user; the fleet's client
/// binary and the tests supply a real HTTPS fetcher.
pub trait WellKnownFetcher: Send + Sync {
    fn fetch<'a>(
        &'a self,
        domain: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, String>> + Send + 'a>>;
}

/// Discovery settings.
pub struct Discovery {
    resolver: TokioAsyncResolver,
    well_known: Option<Box<dyn WellKnownFetcher>>,
    /// Ports for the direct fallback.
    pub direct_port: u16,
}

impl Discovery {
    /// Uses the system's resolver configuration.
    pub fn system() -> Result<Self, ClientError> {
        let resolver =
            TokioAsyncResolver::tokio_from_system_conf().map_err(|e| ClientError::Discovery {
                domain: String::new(),
                detail: format!("system resolver: {e}"),
            })?;
        Ok(Discovery {
            resolver,
            well_known: None,
            direct_port: 7074,
        })
    }

    /// Asks exactly this name server (UDP and TCP), e.g. a local one.
    pub fn with_nameserver(addr: SocketAddr) -> Self {
        let group = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 2;
        // Tests and operators pointing at one server want its answer now,
        // not a cached one from a previous run.
        opts.cache_size = 0;
        let resolver =
            TokioAsyncResolver::tokio(ResolverConfig::from_parts(None, vec![], group), opts);
        Discovery {
            resolver,
            well_known: None,
            direct_port: 7074,
        }
    }

    pub fn with_well_known(mut self, f: Box<dyn WellKnownFetcher>) -> Self {
        self.well_known = Some(f);
        self
    }

    async fn resolve_host(&self, host: &str, port: u16) -> Vec<SocketAddr> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return vec![SocketAddr::new(ip, port)];
        }
        match self.resolver.lookup_ip(host).await {
            Ok(ips) => ips.iter().map(|ip| SocketAddr::new(ip, port)).collect(),
            Err(_) => Vec::new(),
        }
    }

    async fn srv(&self, name: &str) -> Vec<SocketAddr> {
        let Ok(lookup) = self.resolver.srv_lookup(name).await else {
            return Vec::new();
        };
        let mut recs: Vec<_> = lookup.iter().cloned().collect();
        // RFC 2782: lower priority first; heavier first within a priority
        // (deterministic here; the weighted spread happens per pool).
        recs.sort_by_key(|r| (r.priority(), std::cmp::Reverse(r.weight())));
        let mut out = Vec::new();
        for r in recs {
            let target = r.target().to_utf8();
            out.extend(
                self.resolve_host(target.trim_end_matches('.'), r.port())
                    .await,
            );
        }
        out
    }

    async fn txt_pin(&self, domain: &str) -> Result<Option<Hash32>, ClientError> {
        let Ok(lookup) = self.resolver.txt_lookup(format!("_poz.{domain}.")).await else {
            return Ok(None);
        };
        let mut pins: Vec<Hash32> = lookup
            .iter()
            .filter_map(|t| {
                let s: String = t
                    .txt_data()
                    .iter()
                    .map(|d| String::from_utf8_lossy(d))
                    .collect();
                parse_txt(&s)
            })
            .collect();
        pins.dedup();
        match pins.len() {
            0 => Ok(None),
            1 => Ok(pins.pop()),
            _ => Err(ClientError::Discovery {
                domain: domain.into(),
                detail: "several different _poz TXT pins".into(),
            }),
        }
    }

    async fn well_known(&self, domain: &str) -> Result<Option<WellKnown>, ClientError> {
        let Some(f) = &self.well_known else {
            return Ok(None);
        };
        let Ok(bytes) = f.fetch(domain).await else {
            return Ok(None);
        };
        let wk: WellKnown = serde_json::from_slice(&bytes).map_err(|e| ClientError::Discovery {
            domain: domain.into(),
            detail: format!("well-known file: {e}"),
        })?;
        if Hash32::from_hex(&wk.record_id).is_none() {
            return Err(ClientError::Discovery {
                domain: domain.into(),
                detail: "well-known record_id is not 64 hex digits".into(),
            });
        }
        Ok(Some(wk))
    }

    /// The Noise endpoints a verified record publishes for private lookups:
    /// its POZ_QUERY services' NOISE_NK hosts with their server keys, by
    /// priority and weight, host names resolved through this resolver.
    pub async fn noise_endpoints(&self, record: &poz::verify::VerifiedRecord) -> Vec<Endpoint> {
        use poz::entries::{EntryBody, ServiceType};
        let Some(zs) = record.record.zones.get(&poz::ZoneType::SERVICE) else {
            return Vec::new();
        };
        // Priority and weight apply across every POZ_QUERY service of the
        // record, so their pools are ordered as one.
        let mut pool = Vec::new();
        for e in &zs.entries {
            if let Ok(EntryBody::Service(svc)) =
                EntryBody::decode(poz::ZoneType::SERVICE, e.kind, &e.body)
            {
                if svc.service_type == ServiceType::POZ_QUERY {
                    pool.extend(svc.pool);
                }
            }
        }
        let mut resolved = std::collections::HashMap::new();
        for h in &pool {
            if let std::collections::hash_map::Entry::Vacant(v) =
                resolved.entry((h.hostname.clone(), h.port))
            {
                v.insert(self.resolve_host(&h.hostname, h.port).await);
            }
        }
        let merged = poz::entries::ServiceEntry {
            service_type: ServiceType::POZ_QUERY,
            name: String::new(),
            pool,
        };
        crate::endpoints_from_service(&merged, |host, port| {
            resolved
                .get(&(host.to_string(), port))
                .cloned()
                .unwrap_or_default()
        })
        .into_iter()
        .filter(|ep| matches!(ep.security, Security::Noise(_)))
        .collect()
    }

    /// Runs every path and returns what they found, cross-checked.
    pub async fn discover(&self, domain: &str) -> Result<Discovered, ClientError> {
        if !poz::wire::valid_domain(domain) {
            return Err(ClientError::Discovery {
                domain: domain.into(),
                detail: "not a valid lowercase domain name".into(),
            });
        }
        let mut d = Discovered {
            dns_pin: self.txt_pin(domain).await?,
            ..Default::default()
        };
        let wk = self.well_known(domain).await?;
        d.well_known_pin = wk.as_ref().and_then(|w| Hash32::from_hex(&w.record_id));
        d.pin(domain)?;
        let plain = |addrs: Vec<SocketAddr>| {
            addrs
                .into_iter()
                .map(|addr| Endpoint {
                    addr,
                    security: Security::Plain,
                })
                .collect::<Vec<_>>()
        };
        d.query = plain(self.srv(&format!("_poz._tcp.{domain}.")).await);
        d.via = "srv";
        if d.query.is_empty() {
            if let Some(w) = &wk {
                for h in &w.query {
                    d.query
                        .extend(plain(self.resolve_host(&h.host, h.port).await));
                }
                d.via = "well-known";
            }
        }
        if d.query.is_empty() {
            d.query = plain(self.resolve_host(domain, self.direct_port).await);
            d.via = "direct";
        }
        d.submit = self.srv(&format!("_poz-submit._tcp.{domain}.")).await;
        if d.submit.is_empty() {
            if let Some(w) = &wk {
                for h in &w.submit {
                    d.submit.extend(self.resolve_host(&h.host, h.port).await);
                }
            }
        }
        Ok(d)
    }
}

/// The largest well-known file accepted.
pub const MAX_WELL_KNOWN: usize = 64 * 1024;

/// Fetches `https://<domain>/.well-known/poz` with rustls: the web PKI by
/// default, or only the roots given (a private CA, or a test CA). No
/// redirects are followed: the file must come from the domain itself.
pub struct HttpsWellKnown {
    client: reqwest::Client,
    port: Option<u16>,
}

impl HttpsWellKnown {
    /// Trusts the web PKI (Mozilla's roots, built in).
    pub fn web_pki() -> Result<Self, ClientError> {
        Self::build(reqwest::Client::builder(), None)
    }

    /// Trusts only `root_pem`; `pin_address` sends requests for a domain to
    /// a fixed address and port (tests, or a split-horizon setup).
    pub fn with_root(
        root_pem: &[u8],
        pin_address: Option<(&str, SocketAddr)>,
    ) -> Result<Self, ClientError> {
        let cert =
            reqwest::Certificate::from_pem(root_pem).map_err(|e| ClientError::Discovery {
                domain: String::new(),
                detail: format!("root certificate: {e}"),
            })?;
        let mut b = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert);
        let mut port = None;
        if let Some((domain, addr)) = pin_address {
            b = b.resolve(domain, addr);
            port = Some(addr.port());
        }
        Self::build(b, port)
    }

    /// Trusts the record's own CA keys (POZ-as-CA, SPEC §21): the file's
    /// server must present a certificate signed by a key that `record`'s
    /// Service Zone names by `ca_key_idx` for the domain's host name. With
    /// `public_roots_pem` (PEM certificates), the certificate must also
    /// chain to one of those roots. `pin_address` as for
    /// [`HttpsWellKnown::with_root`]. For a client that already holds the
    /// domain's record (a pinned or earlier copy) and re-discovers it.
    ///
    /// # Errors
    /// [`ClientError::Discovery`] when the roots do not parse or are
    /// empty, or the TLS configuration cannot be built.
    pub fn with_poz_ca(
        record: &poz::VerifiedRecord,
        public_roots_pem: Option<&[u8]>,
        pin_address: Option<(&str, SocketAddr)>,
    ) -> Result<Self, ClientError> {
        use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
        let bad = |detail: String| ClientError::Discovery {
            domain: String::new(),
            detail,
        };
        let poz = crate::ca::PozCaVerifier::new(record);
        let tls = match public_roots_pem {
            None => poz.client_config(),
            Some(pem) => {
                let mut roots = tokio_rustls::rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(pem) {
                    let c = c.map_err(|e| bad(format!("root certificate: {e}")))?;
                    roots
                        .add(c)
                        .map_err(|e| bad(format!("root certificate: {e}")))?;
                }
                poz.requiring_public_pki(roots)
                    .and_then(|v| v.client_config())
            }
        }
        .map_err(|e| bad(format!("TLS: {e}")))?;
        let mut b = reqwest::Client::builder().use_preconfigured_tls(tls);
        let mut port = None;
        if let Some((domain, addr)) = pin_address {
            b = b.resolve(domain, addr);
            port = Some(addr.port());
        }
        Self::build(b, port)
    }

    fn build(b: reqwest::ClientBuilder, port: Option<u16>) -> Result<Self, ClientError> {
        let client = b
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ClientError::Discovery {
                domain: String::new(),
                detail: format!("HTTPS client: {e}"),
            })?;
        Ok(HttpsWellKnown { client, port })
    }
}

impl WellKnownFetcher for HttpsWellKnown {
    fn fetch<'a>(
        &'a self,
        domain: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, String>> + Send + 'a>>
    {
        Box::pin(async move {
            let url = match self.port {
                Some(p) => format!("https://{domain}:{p}/.well-known/poz"),
                None => format!("https://{domain}/.well-known/poz"),
            };
            let mut resp = self
                .client
                .get(&url)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !resp.status().is_success() {
                return Err(format!("{url}: HTTP {}", resp.status()));
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
                if body.len() + chunk.len() > MAX_WELL_KNOWN {
                    return Err(format!("{url}: larger than {MAX_WELL_KNOWN} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_format() {
        let h = "ab".repeat(32);
        assert_eq!(parse_txt(&format!("v=poz0 id={h}")), Hash32::from_hex(&h));
        assert_eq!(parse_txt(&format!("v=poz1 id={h}")), None);
        assert_eq!(parse_txt("v=poz0 id=zz"), None);
    }

    #[test]
    fn pins_must_agree() {
        let a = Hash32([1; 32]);
        let b = Hash32([2; 32]);
        let mut d = Discovered {
            dns_pin: Some(a),
            well_known_pin: Some(a),
            ..Default::default()
        };
        assert_eq!(d.pin("x.example").unwrap(), Some(a));
        d.well_known_pin = Some(b);
        assert!(d.pin("x.example").is_err());
    }
}
