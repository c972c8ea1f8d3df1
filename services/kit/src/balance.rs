//! Client-side balancing over a Kubernetes Service's ready endpoints
//! (`k8s://SERVICE.NAMESPACE:PORT` peer URLs).
//!
//! Why not the Service's ClusterIP: gRPC keeps one long-lived HTTP/2
//! connection per channel, and kube-proxy balances connections, not
//! calls, so every call of a client lands on the one pod its connection
//! was given. Here each ready endpoint gets its own lazily connected
//! channel and each call picks one (as linkerd2-proxy does):
//!
//! 1. A [`Discovery`] source (the `poz-cluster` crate watches
//!    EndpointSlices; the kit links no Kubernetes client) publishes the
//!    current set of ready `IP:PORT` addresses on a `watch` channel:
//!    `None` until its first list, then every change. A snapshot rather
//!    than a queue of changes: a burst of EndpointSlice updates coalesces,
//!    and a channel nobody calls holds no backlog.
//! 2. The kit diffs successive sets into `Insert`/`Remove` changes (a
//!    `tower::discover` stream), building one channel per new address.
//!    A removed address (its pod turned not-ready or is terminating)
//!    gets no new calls; calls already on it finish (drain).
//! 3. `tower::balance::p2c` picks, for each call, the less loaded of two
//!    random endpoints by calls in flight (least-pending), behind a
//!    `tower::buffer::Buffer` so the channel is `Clone` like tonic's.
//!    Not linkerd's peak-EWMA latency: a new endpoint starts from a
//!    default round-trip estimate, and under light, sequential load one
//!    already measured below it (a call within a cluster takes about a
//!    millisecond) wins every comparison until the new one's estimate
//!    decays, for tens of seconds with a 10 s decay: a pod that just
//!    turned ready would get nothing. Calls in flight spread load from
//!    the first call and still steer away from a slow pod (its calls
//!    pile up).
//! 4. No endpoint means fail fast: a call made while the Service has no
//!    ready address fails at once with UNAVAILABLE instead of waiting
//!    for one (until the caller's deadline). Before discovery's first
//!    list a call waits up to [`FIRST_LIST_WAIT`], then fails the same
//!    way.

use crate::tls::ClientTls;
use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::discover::Change;

/// How long a call waits for discovery's first list of endpoints before
/// it fails UNAVAILABLE (the Kubernetes API answers a list in
/// milliseconds; a source that has not answered in this time is down).
pub const FIRST_LIST_WAIT: Duration = Duration::from_secs(5);

/// Calls queued in the balancer's buffer before `poll_ready` waits
/// (tonic's own channel buffer is the same size).
const BUFFER: usize = 1024;

/// A Kubernetes Service's port, named by a peer URL
/// `k8s://SERVICE.NAMESPACE:PORT`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceTarget {
    /// The Service's name (a DNS label).
    pub service: String,
    /// Its namespace (a DNS label).
    pub namespace: String,
    /// The port dialled at each endpoint address: the pods' port (the
    /// fleet's chart gives Service and container the same number).
    pub port: u16,
}

impl ServiceTarget {
    /// Parses `SERVICE.NAMESPACE:PORT` (the URL after `k8s://`; a
    /// trailing `/` is allowed). `None` when a name is not a DNS label
    /// (lower-case letters, digits, `-`; at most 63) or the port is not
    /// 1-65535.
    pub fn parse(rest: &str) -> Option<ServiceTarget> {
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = rest.rsplit_once(':')?;
        let (service, namespace) = host.split_once('.')?;
        let port: u16 = port.parse().ok()?;
        let label = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        (label(service) && label(namespace) && port != 0).then(|| ServiceTarget {
            service: service.to_string(),
            namespace: namespace.to_string(),
            port,
        })
    }

    /// The name every endpoint's certificate is checked against:
    /// `SERVICE.NAMESPACE.svc` (the chart issues it as a SAN).
    pub fn dns_name(&self) -> String {
        format!("{}.{}.svc", self.service, self.namespace)
    }
}

impl std::fmt::Display for ServiceTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "k8s://{}.{}:{}", self.service, self.namespace, self.port)
    }
}

/// The ready addresses of a Service as a source publishes them: `None`
/// until its first complete list, then the whole current set.
pub type Endpoints = tokio::sync::watch::Receiver<Option<BTreeSet<SocketAddr>>>;

/// A source of the ready endpoints of Services (implemented by the
/// `poz-cluster` crate over EndpointSlice watches; tests implement it
/// with a `watch` channel they drive).
pub trait Discovery: Send + Sync + 'static {
    /// Starts following `target` and returns its endpoints. Called once
    /// per channel, from within a Tokio runtime; the source keeps the
    /// sender alive (and up to date) as long as it runs.
    fn watch(&self, target: &ServiceTarget) -> Endpoints;
}

type Request = http::Request<tonic::body::Body>;
type Response = http::Response<tonic::body::Body>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// The balanced service a `k8s://` `Channel` sends through.
pub type Balanced = tower::buffer::Buffer<Request, BoxFuture<Result<Response, BoxError>>>;

/// Builds the balancer for `target` over `endpoints`, dialling each with
/// `tls` (when set) and checking certificates for
/// [`ServiceTarget::dns_name`]. Must be called within a Tokio runtime
/// (the buffer's worker is spawned).
pub(crate) fn balanced(
    target: ServiceTarget,
    endpoints: Endpoints,
    tls: Option<Arc<ClientTls>>,
) -> Balanced {
    // DNS labels joined by dots (`ServiceTarget::parse`) always make a
    // valid name; the fallback matches no certificate.
    let name = rustls_pki_types::ServerName::try_from(target.dns_name())
        .unwrap_or_else(|_| unreachable_name());
    let synced = Arc::new(AtomicBool::new(false));
    let stream = EndpointStream {
        updates: tokio_stream::wrappers::WatchStream::new(endpoints),
        current: BTreeSet::new(),
        queue: VecDeque::new(),
        make: Box::new(move |addr| crate::dial::endpoint_channel(addr, tls.clone(), name.clone())),
        listed: false,
        synced: synced.clone(),
    };
    let discover = tower::load::PendingRequestsDiscover::new(
        stream,
        tower::load::CompleteOnResponse::default(),
    );
    let balance = tower::balance::p2c::Balance::new(discover);
    tower::buffer::Buffer::new(
        FailFast {
            inner: balance,
            synced,
            first_list: None,
            fail: None,
            target,
        },
        BUFFER,
    )
}

/// A name no certificate carries (0.0.0.0).
fn unreachable_name() -> rustls_pki_types::ServerName<'static> {
    rustls_pki_types::ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into())
}

type MakeChannel = Box<dyn Fn(SocketAddr) -> tonic::transport::Channel + Send>;

/// The sets a [`Discovery`] publishes, as `tower::discover` changes.
struct EndpointStream {
    updates: tokio_stream::wrappers::WatchStream<Option<BTreeSet<SocketAddr>>>,
    /// The addresses the balancer has been given.
    current: BTreeSet<SocketAddr>,
    /// Changes computed from the last set, not yet handed out.
    queue: VecDeque<Change<SocketAddr, tonic::transport::Channel>>,
    make: MakeChannel,
    /// Whether the source has published its first list.
    listed: bool,
    /// Set once the first list's changes have all been handed out.
    synced: Arc<AtomicBool>,
}

impl EndpointStream {
    fn diff(&mut self, next: BTreeSet<SocketAddr>) {
        for gone in self.current.difference(&next) {
            self.queue.push_back(Change::Remove(*gone));
        }
        for new in next.difference(&self.current) {
            self.queue
                .push_back(Change::Insert(*new, (self.make)(*new)));
        }
        if !self.queue.is_empty() {
            tracing::debug!(endpoints = ?next, "endpoints changed");
        }
        self.current = next;
    }
}

impl tokio_stream::Stream for EndpointStream {
    type Item = Result<Change<SocketAddr, tonic::transport::Channel>, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(change) = self.queue.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            match Pin::new(&mut self.updates).poll_next(cx) {
                Poll::Ready(Some(Some(set))) => {
                    self.listed = true;
                    self.diff(set);
                }
                // Not listed yet.
                Poll::Ready(Some(None)) => continue,
                // `Ready(None)`: the source is gone; the last set stays
                // (a source that stops is a bug, logged by the source).
                Poll::Ready(None) | Poll::Pending => {
                    // Everything the source said is now the balancer's
                    // set: from here an empty balancer means no endpoint.
                    if self.listed {
                        self.synced.store(true, Ordering::Release);
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// The balancer, failing a call at once (UNAVAILABLE) when there is no
/// endpoint to send it to.
struct FailFast<S> {
    inner: S,
    synced: Arc<AtomicBool>,
    /// When a call started waiting for discovery's first list.
    first_list: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Why the next call fails (set by `poll_ready`).
    fail: Option<&'static str>,
    target: ServiceTarget,
}

type Balancer = tower::balance::p2c::Balance<
    tower::load::PendingRequestsDiscover<EndpointStream, tower::load::CompleteOnResponse>,
    Request,
>;

impl tower_service::Service<Request> for FailFast<Balancer> {
    type Response = Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                self.fail = None;
                self.first_list = None;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if self.synced.load(Ordering::Acquire) {
                    if self.inner.is_empty() {
                        self.first_list = None;
                        self.fail = Some("no ready endpoint");
                        return Poll::Ready(Ok(()));
                    }
                    // Endpoints exist but none is ready yet (connecting).
                    return Poll::Pending;
                }
                let wait = self
                    .first_list
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(FIRST_LIST_WAIT)));
                if wait.as_mut().poll(cx).is_ready() {
                    self.first_list = None;
                    self.fail = Some("endpoint discovery has not answered");
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending
            }
        }
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if let Some(why) = self.fail.take() {
            let status = tonic::Status::unavailable(format!("{}: {why}", self.target));
            return Box::pin(std::future::ready(Err(Box::new(status) as BoxError)));
        }
        Box::pin(self.inner.call(req))
    }
}

use std::future::Future as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_name_their_service() {
        let t = ServiceTarget::parse("poz-store.poz:50051").expect("parses");
        assert_eq!(
            (t.service.as_str(), t.namespace.as_str(), t.port),
            ("poz-store", "poz", 50051)
        );
        assert_eq!(t.dns_name(), "poz-store.poz.svc");
        assert_eq!(t.to_string(), "k8s://poz-store.poz:50051");
        assert!(ServiceTarget::parse("poz-store.poz:50051/").is_some());
        for bad in [
            "poz-store:50051",
            "poz-store.poz",
            "poz-store.poz:0",
            "poz-store.poz:70000",
            "Poz.poz:1",
            "-a.poz:1",
            ".poz:1",
            "a.b.c:1",
            "a.poz:1/path",
        ] {
            assert!(ServiceTarget::parse(bad).is_none(), "{bad}");
        }
    }
}
