//! Dialling one address: the connector every client channel uses (TCP
//! tuning, TLS with the service's client certificate, the server name to
//! check), apart from `channel` (which builds channels from URLs) and
//! `balance` (which builds one per endpoint), so that neither imports the
//! other.

use crate::tls::ClientTls;
use std::sync::Arc;
use std::time::Duration;

/// How long dialling a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call may wait for its response headers (a streaming
/// call's body is not limited). Callers set shorter deadlines per call
/// where they need them.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One endpoint's lazily connected channel to `addr`: TLS (when `tls`)
/// verifying the server's certificate for `server_name`, whatever
/// address was dialled (a pod IP stands for its Service's DNS name).
pub(crate) fn endpoint_channel(
    addr: std::net::SocketAddr,
    tls: Option<Arc<ClientTls>>,
    server_name: rustls_pki_types::ServerName<'static>,
) -> tonic::transport::Channel {
    // A SocketAddr always makes a valid authority.
    let endpoint = tonic::transport::Endpoint::from(
        http::Uri::builder()
            .scheme("http")
            .authority(addr.to_string())
            .path_and_query("/")
            .build()
            .unwrap_or_default(),
    )
    .connect_timeout(CONNECT_TIMEOUT)
    .timeout(CALL_TIMEOUT)
    .tcp_nodelay(true);
    lazy(endpoint, tls, Some(server_name))
}

/// `endpoint` connected lazily through our connector: TLS when `tls`
/// (re-reading its files for each new connection), checking the server's
/// certificate for `server_name` (default: the URI's host).
pub(crate) fn lazy(
    endpoint: tonic::transport::Endpoint,
    tls: Option<Arc<ClientTls>>,
    server_name: Option<rustls_pki_types::ServerName<'static>>,
) -> tonic::transport::Channel {
    let dial = Dial { tls, server_name };
    let connector = tower::service_fn(move |uri: http::Uri| connect(uri, dial.clone()));
    endpoint.connect_with_connector_lazy(connector)
}

/// How one connection is dialled: TLS or not, and the name the server's
/// certificate must carry (default: the URI's host).
#[derive(Clone)]
struct Dial {
    tls: Option<Arc<ClientTls>>,
    server_name: Option<rustls_pki_types::ServerName<'static>>,
}

type ClientIo = tokio_util::either::Either<
    tokio::net::TcpStream,
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
>;

async fn connect(
    uri: http::Uri,
    dial: Dial,
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
    let io = match dial.tls {
        None => tokio_util::either::Either::Left(tcp),
        Some(tls) => {
            let name = match dial.server_name {
                Some(name) => name,
                None => rustls_pki_types::ServerName::try_from(bare)?,
            };
            let s = tokio_rustls::TlsConnector::from(tls.current())
                .connect(name, tcp)
                .await?;
            tokio_util::either::Either::Right(s)
        }
    };
    Ok(hyper_util::rt::TokioIo::new(io))
}
