//! The one place gRPC client channels are built: timeouts, TCP tuning,
//! mutual TLS from the service's files (re-read when they change, at the
//! next connection), W3C trace context sent on every call, and client
//! metrics. Every service and gateway dials its peers with
//! [`Channels::lazy`].
//!
//! A peer URL is one of:
//! - `http://HOST:PORT`, `https://HOST:PORT`: one address, one lazily
//!   connected HTTP/2 connection (outside Kubernetes: pozd, bare
//!   processes, tests);
//! - `k8s://SERVICE.NAMESPACE:PORT`: every ready address of a Kubernetes
//!   Service, balanced per call ([`crate::balance`]), fed by a
//!   [`Discovery`] source (the `poz-cluster` crate's EndpointSlice watch,
//!   installed by a service's `main` with `poz_cluster::install_for(peers)`). TLS
//!   when the channels have `[tls]`.

use crate::balance::{Discovery, ServiceTarget};
use crate::tls::{ClientTls, TlsError, TlsFiles};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

pub use crate::dial::{CALL_TIMEOUT, CONNECT_TIMEOUT};

/// Why a channel could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("{url} is not an http://HOST:PORT, https://HOST:PORT or k8s://SERVICE.NAMESPACE:PORT endpoint")]
    BadUrl { url: String },
    #[error("{url}: k8s:// peers are for services in Kubernetes, which find their pods through the Kubernetes API; this program has no such source: give http(s)://HOST:PORT")]
    NoDiscovery { url: String },
    #[error("{url}: https needs the [tls] files (cert_file, key_file, ca_file)")]
    NoTls { url: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Checks a peer URL setting (`name` names it in the message) at load:
/// `http://…`, `https://…` (needs `[tls]`: `tls_set`) or
/// `k8s://SERVICE.NAMESPACE:PORT`.
pub fn check_peer(name: &str, url: &str, tls_set: bool) -> Result<(), String> {
    if let Some(rest) = url.strip_prefix("k8s://") {
        return ServiceTarget::parse(rest).map(|_| ()).ok_or_else(|| {
            format!(
                "{name} {} is not a k8s://SERVICE.NAMESPACE:PORT URL (DNS labels, port 1-65535)",
                crate::shown(url)
            )
        });
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "{name} {} is not an http(s):// URL or k8s://SERVICE.NAMESPACE:PORT",
            crate::shown(url)
        ));
    }
    if url.starts_with("https://") && !tls_set {
        return Err(format!("{name} is https:// but no [tls] files are set"));
    }
    Ok(())
}

/// Builds client channels with one TLS identity.
#[derive(Clone, Default)]
pub struct Channels {
    tls: Option<Arc<ClientTls>>,
    /// The source of `k8s://` endpoints; `None`: the one installed for
    /// the process ([`install_discovery`]), if any.
    discovery: Option<Arc<dyn Discovery>>,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels")
            .field("tls", &self.tls.is_some())
            .field("discovery", &self.discovery.is_some())
            .finish()
    }
}

/// The process's discovery source for `k8s://` URLs.
static DISCOVERY: OnceLock<Arc<dyn Discovery>> = OnceLock::new();

/// Installs the process's source of `k8s://` endpoints, used by every
/// [`Channels`] that was not given one ([`Channels::with_discovery`]).
/// The first call wins; returns whether this one did. Called once from a
/// service's `main` (by `poz_cluster::install_for`): the kit itself links
/// no Kubernetes client.
pub fn install_discovery(discovery: Arc<dyn Discovery>) -> bool {
    DISCOVERY.set(discovery).is_ok()
}

impl Channels {
    /// Channels presenting the certificate in `files` (when set) to
    /// `https://` peers. Errors: [`ChannelError::Tls`] when the files do
    /// not load.
    pub fn new(files: &TlsFiles) -> Result<Self, ChannelError> {
        Ok(Channels {
            tls: if files.is_set() {
                Some(Arc::new(ClientTls::load(files)?))
            } else {
                None
            },
            discovery: None,
        })
    }

    /// These channels, resolving `k8s://` URLs with `discovery` instead
    /// of the process's source (tests; a service that watches another
    /// cluster).
    pub fn with_discovery(mut self, discovery: Arc<dyn Discovery>) -> Self {
        self.discovery = Some(discovery);
        self
    }

    /// A channel to `url`, connected on first use (a peer still starting
    /// makes calls fail UNAVAILABLE until it is up, not the caller's
    /// start). `https://` dials TLS with the client certificate and
    /// checks the peer's certificate for the URL's host (a DNS name, or
    /// an IP SAN); `http://` dials plain TCP. `k8s://SERVICE.NAMESPACE:PORT`
    /// balances over the Service's ready endpoints ([`crate::balance`]),
    /// with TLS when these channels have a certificate, each connection
    /// checking the certificate for `SERVICE.NAMESPACE.svc`. Errors:
    /// [`ChannelError::BadUrl`], [`ChannelError::NoTls`],
    /// [`ChannelError::NoDiscovery`].
    pub fn lazy(&self, url: &str) -> Result<Channel, ChannelError> {
        // The URL is kept as an error may show it: passwords redacted.
        let bad = || ChannelError::BadUrl {
            url: crate::shown(url),
        };
        if let Some(rest) = url.strip_prefix("k8s://") {
            let target = ServiceTarget::parse(rest).ok_or_else(bad)?;
            let discovery = self
                .discovery
                .clone()
                .or_else(|| DISCOVERY.get().cloned())
                .ok_or_else(|| ChannelError::NoDiscovery {
                    url: url.to_string(),
                })?;
            let endpoints = discovery.watch(&target);
            let tls = self.tls.clone();
            let balanced = crate::balance::balanced(target, endpoints, tls);
            use tower_layer::Layer;
            return Ok(crate::metrics::Metered::client().layer(Traced(Inner::Balanced(balanced))));
        }
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            let tls = self.tls.clone().ok_or_else(|| ChannelError::NoTls {
                url: crate::shown(url),
            })?;
            (Some(tls), rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (None, rest)
        } else {
            return Err(bad());
        };
        // tonic is given http:// always: TLS is done by our connector,
        // which also re-reads the files for each new connection.
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{rest}"))
            .map_err(|_| bad())?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true);
        let uri = endpoint.uri().clone();
        if uri.host().is_none() {
            return Err(bad());
        }
        let channel = crate::dial::lazy(endpoint, tls, None);
        use tower_layer::Layer;
        Ok(crate::metrics::Metered::client().layer(Traced(Inner::Static(channel))))
    }
}

/// What a [`Traced`] channel sends through: one address, or a balancer
/// over a Service's endpoints.
#[derive(Clone)]
enum Inner {
    Static(tonic::transport::Channel),
    Balanced(crate::balance::Balanced),
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Inner::Static(c) => f.debug_tuple("Static").field(c).finish(),
            Inner::Balanced(_) => f.write_str("Balanced"),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// A channel (static or balanced) that sends the current trace context
/// with each call, under a client span.
#[derive(Clone, Debug)]
pub struct Traced(Inner);

impl tower_service::Service<http::Request<tonic::body::Body>> for Traced {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = tracing::instrument::Instrumented<BoxFuture<Result<Self::Response, BoxError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match &mut self.0 {
            Inner::Static(c) => {
                tower_service::Service::poll_ready(c, cx).map_err(|e| peer_unavailable(e.into()))
            }
            Inner::Balanced(b) => {
                tower_service::Service::poll_ready(b, cx).map_err(peer_unavailable)
            }
        }
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        use tracing::Instrument;
        let span = crate::telemetry::client_span(req.uri().path());
        crate::telemetry::inject(&span, req.headers_mut());
        let fut: BoxFuture<Result<Self::Response, BoxError>> = match &mut self.0 {
            Inner::Static(c) => {
                let f = tower_service::Service::call(c, req);
                Box::pin(async move { f.await.map_err(Into::into) })
            }
            Inner::Balanced(b) => Box::pin(tower_service::Service::call(b, req)),
        };
        let fut: BoxFuture<Result<Self::Response, BoxError>> = Box::pin(async move {
            match fut.await {
                Ok(resp) => Ok(resp.map(|body| {
                    use http_body_util::BodyExt;
                    tonic::body::Body::new(body.map_err(body_unavailable))
                })),
                Err(e) => Err(peer_unavailable(e)),
            }
        });
        fut.instrument(span)
    }
}

/// A call that got no answer from the peer (no connection, the
/// connection lost, the call's time up) as `UNAVAILABLE` with what
/// happened in the message, whatever the transport called it (tonic
/// gives `UNKNOWN "transport error"` for most): a caller of the fleet is
/// promised UNAVAILABLE with a retry hint when a peer is down, and a
/// service that passes a peer's status on would pass UNKNOWN (found by
/// the fault harness, issue 16). A status already made (the balancer's
/// fail-fast one) is kept.
fn peer_unavailable(e: BoxError) -> BoxError {
    match e.downcast::<tonic::Status>() {
        Ok(s) => s,
        Err(e) => Box::new(tonic::Status::unavailable(format!(
            "peer unavailable: {}",
            error_chain(&*e)
        ))),
    }
}

/// An error reading a response body at this layer is the transport's (a
/// peer's own statuses arrive in headers and trailers, not as body
/// errors): the connection broke mid-answer, as `UNAVAILABLE`.
fn body_unavailable(s: tonic::Status) -> tonic::Status {
    match s.code() {
        tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::Cancelled => {
            // The causes are kept in the words: a TLS alert read here (a
            // peer rejecting this client's certificate) must still show.
            let mut words = s.message().to_string();
            let mut next = std::error::Error::source(&s);
            while let Some(c) = next {
                words.push_str(": ");
                words.push_str(&c.to_string());
                next = c.source();
            }
            tonic::Status::unavailable(format!("peer unavailable: {words}"))
        }
        _ => s,
    }
}

/// `e` and its sources, joined with `: `.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        s.push_str(": ");
        s.push_str(&c.to_string());
        next = c.source();
    }
    s
}

/// Every gRPC client of the fleet holds this: a lazily connected channel
/// (one address, or balanced over a Kubernetes Service's ready
/// endpoints) with trace context and client metrics ([`Channels::lazy`]).
pub type Channel = crate::metrics::MeteredService<Traced>;
