//! The one place gRPC client channels are built: timeouts, TCP tuning,
//! mutual TLS from the service's files (re-read when they change, at the
//! next connection), W3C trace context sent on every call, and client
//! metrics. Every service and gateway dials its peers with
//! [`Channels::lazy`].

use crate::tls::{ClientTls, TlsError, TlsFiles};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// How long dialling a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call may wait for its response headers (a streaming
/// call's body is not limited). Callers set shorter deadlines per call
/// where they need them.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a channel could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("{url} is not an http:// or https:// endpoint")]
    BadUrl { url: String },
    #[error("{url}: https needs the [tls] files (cert_file, key_file, ca_file)")]
    NoTls { url: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Builds client channels with one TLS identity.
#[derive(Clone, Default)]
pub struct Channels {
    tls: Option<Arc<ClientTls>>,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels")
            .field("tls", &self.tls.is_some())
            .finish()
    }
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
        })
    }

    /// A channel to `url`, connected on first use (a peer still starting
    /// makes calls fail UNAVAILABLE until it is up, not the caller's
    /// start). `https://` dials TLS with the client certificate and
    /// checks the peer's certificate for the URL's host (a DNS name, or
    /// an IP SAN); `http://` dials plain TCP. Errors:
    /// [`ChannelError::BadUrl`], [`ChannelError::NoTls`].
    pub fn lazy(&self, url: &str) -> Result<Channel, ChannelError> {
        // The URL is kept as an error may show it: passwords redacted.
        let bad = || ChannelError::BadUrl {
            url: crate::shown(url),
        };
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
        let connector = tower::service_fn(move |uri: http::Uri| connect(uri, tls.clone()));
        let channel = endpoint.connect_with_connector_lazy(connector);
        use tower_layer::Layer;
        Ok(crate::metrics::Metered::client().layer(Traced(channel)))
    }
}

type ClientIo = tokio_util::either::Either<
    tokio::net::TcpStream,
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
>;

async fn connect(
    uri: http::Uri,
    tls: Option<Arc<ClientTls>>,
) -> Result<hyper_util::rt::TokioIo<ClientIo>, Box<dyn std::error::Error + Send + Sync>> {
    let host = uri.host().ok_or("no host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    // An IPv6 literal comes bracketed in a URI.
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tcp = tokio::net::TcpStream::connect((bare.as_str(), port)).await?;
    crate::peer::tune(&tcp);
    let io = match tls {
        None => tokio_util::either::Either::Left(tcp),
        Some(tls) => {
            let name = rustls_pki_types::ServerName::try_from(bare)?;
            let s = tokio_rustls::TlsConnector::from(tls.current())
                .connect(name, tcp)
                .await?;
            tokio_util::either::Either::Right(s)
        }
    };
    Ok(hyper_util::rt::TokioIo::new(io))
}

/// A tonic channel that sends the current trace context with each call,
/// under a client span.
#[derive(Clone, Debug)]
pub struct Traced(tonic::transport::Channel);

impl tower_service::Service<http::Request<tonic::body::Body>> for Traced {
    type Response = http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future =
        tracing::instrument::Instrumented<
            <tonic::transport::Channel as tower_service::Service<
                http::Request<tonic::body::Body>,
            >>::Future,
        >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower_service::Service::poll_ready(&mut self.0, cx)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        use tracing::Instrument;
        let span = crate::telemetry::client_span(req.uri().path());
        crate::telemetry::inject(&span, req.headers_mut());
        tower_service::Service::call(&mut self.0, req).instrument(span)
    }
}

/// Every gRPC client of the fleet holds this: a lazily connected channel
/// with trace context and client metrics ([`Channels::lazy`]).
pub type Channel = crate::metrics::MeteredService<Traced>;
