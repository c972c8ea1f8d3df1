//! Prometheus metrics (prometheus-client): one registry per process,
//! served in the text exposition format at `/metrics` on the address of
//! the `metrics_listen` setting, beside `/healthz` for probes that speak
//! no gRPC or TLS (the kubelet's).
//!
//! Each family registers itself once, on first use (`LazyLock`), so one
//! process serving several services (pozd) exports each name once.
//! docs/OPERATIONS.md lists every metric.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry, Unit};
use std::sync::{LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(Registry::default()));

fn with_registry<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    let mut r = match REGISTRY.lock() {
        Ok(r) => r,
        Err(poisoned) => poisoned.into_inner(),
    };
    f(&mut r)
}

/// Registers `metric` under `name` (a `poz_` name without the unit or
/// `_total` suffix, which the encoder adds). Call once per name: from a
/// `LazyLock` initialiser.
pub fn register(name: &str, help: &str, unit: Option<Unit>, metric: impl Metric) {
    with_registry(|r| match unit {
        Some(u) => r.register_with_unit(name, help, u, metric),
        None => r.register(name, help, metric),
    })
}

/// Registers a collector, read at every scrape (gauges over state a
/// service already keeps, such as a connection pool's size).
pub fn register_collector(c: Box<dyn prometheus_client::collector::Collector>) {
    with_registry(|r| r.register_collector(c))
}

/// The registry in the text exposition format (OpenMetrics 1.0).
pub fn encode() -> String {
    let mut out = String::new();
    with_registry(|r| {
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, r);
    });
    out
}

/// Latency buckets from 0.1 ms to about 13 s (seconds), factor 2.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0001, 2.0, 18)
}

/// Labels of one gRPC method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `poz.v1.StoreRead` and the like.
    pub service: String,
    /// `GetBinding` and the like.
    pub method: String,
}

/// Labels of one finished gRPC call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcStatusLabels {
    pub service: String,
    pub method: String,
    /// The gRPC status name: `OK`, `NOT_FOUND`, `PERMISSION_DENIED`, …
    pub code: String,
}

/// Per-RPC counts and latency of a gRPC server or client.
pub struct RpcMetrics {
    pub calls: Family<RpcStatusLabels, Counter>,
    pub duration: Family<RpcLabels, Histogram>,
}

impl RpcMetrics {
    fn new(side: &str) -> Self {
        let m = RpcMetrics {
            calls: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(latency_buckets())),
        };
        register(
            &format!("poz_grpc_{side}_calls"),
            &format!("gRPC calls finished by this {side}, by method and status"),
            None,
            m.calls.clone(),
        );
        register(
            &format!("poz_grpc_{side}_duration"),
            &format!("gRPC call latency at this {side}, from request to trailers"),
            Some(Unit::Seconds),
            m.duration.clone(),
        );
        m
    }

    /// Records a finished call to `path` with `code`, labelled by
    /// [`rpc_name`] (whatever the status: a call refused before any
    /// handler is still named from the API); with `known` (a server's own
    /// services), a service the port does not serve is `unknown` too.
    pub fn record(
        &self,
        path: &str,
        code: tonic::Code,
        elapsed: std::time::Duration,
        known: Option<&[&'static str]>,
    ) {
        let (mut service, method) = rpc_name(path);
        if known.is_some_and(|k| !k.contains(&service)) {
            service = "unknown";
        }
        let method = if service == "unknown" {
            "unknown"
        } else {
            method
        };
        self.calls
            .get_or_create(&RpcStatusLabels {
                service: service.to_string(),
                method: method.to_string(),
                code: code_name(code).to_string(),
            })
            .inc();
        self.duration
            .get_or_create(&RpcLabels {
                service: service.to_string(),
                method: method.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// The gRPC server side's metrics: `poz_grpc_server_calls_total`,
/// `poz_grpc_server_duration_seconds`.
pub static GRPC_SERVER: LazyLock<RpcMetrics> = LazyLock::new(|| RpcMetrics::new("server"));
/// The gRPC client side's metrics (every channel from
/// the kit's channels): `poz_grpc_client_calls_total`,
/// `poz_grpc_client_duration_seconds`.
pub static GRPC_CLIENT: LazyLock<RpcMetrics> = LazyLock::new(|| RpcMetrics::new("client"));

/// Labels of a failed TLS handshake.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// `error` (the client's certificate did not chain, no common
    /// version or cipher, not TLS at all), `timeout`, or `per_ip` (closed
    /// unread: that address had too many handshakes in progress).
    pub reason: &'static str,
}

/// `poz_tls_handshake_failures_total{reason}`: a rise after a rotation
/// means peers hold certificates from another CA.
pub static TLS_HANDSHAKE_FAILURES: LazyLock<Family<HandshakeLabels, Counter>> =
    LazyLock::new(|| {
        let f = Family::default();
        register(
            "poz_tls_handshake_failures",
            "TLS handshakes on a gRPC port that failed or timed out, by reason",
            None,
            f.clone(),
        );
        f
    });

/// Counts one failed TLS handshake (`reason`: `error` or `timeout`).
pub fn tls_handshake_failed(reason: &'static str) {
    TLS_HANDSHAKE_FAILURES
        .get_or_create(&HandshakeLabels { reason })
        .inc();
}

/// The service and method a gRPC `path` names, as labels and span names
/// may carry them: `("poz.v1.StoreRead", "GetBinding")` for
/// `/poz.v1.StoreRead/GetBinding`; `"unknown"` for a service outside
/// the POZ API (and health and reflection), or a method its service does
/// not have. The path is the caller's text: taken as is, a caller could
/// mint one metric series (and span name) per request.
pub fn rpc_name(path: &str) -> (&str, &str) {
    let (service, method) = split_path(path);
    match crate::api::has_method(service, method) {
        None => ("unknown", "unknown"),
        Some(true) => (service, method),
        Some(false) => (service, "unknown"),
    }
}

/// `("poz.v1.StoreRead", "GetBinding")` from `/poz.v1.StoreRead/GetBinding`.
pub fn split_path(path: &str) -> (&str, &str) {
    let p = path.trim_start_matches('/');
    p.split_once('/').unwrap_or((p, ""))
}

/// The canonical upper-case name of a gRPC status code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

fn status_in(headers: &http::HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<i32>().ok())
        .map(tonic::Code::from_i32)
}

/// One call being measured: recorded once, when its status is known
/// (trailers, or trailers-only headers), or as CANCELLED if the body is
/// dropped first (the peer went away).
struct CallTimer {
    metrics: &'static RpcMetrics,
    known: Option<std::sync::Arc<[&'static str]>>,
    path: String,
    start: Instant,
    done: bool,
}

impl CallTimer {
    fn finish(&mut self, code: tonic::Code) {
        if !self.done {
            self.done = true;
            self.metrics.record(
                &self.path,
                code,
                self.start.elapsed(),
                self.known.as_deref(),
            );
        }
    }
}

impl Drop for CallTimer {
    fn drop(&mut self) {
        self.finish(tonic::Code::Cancelled);
    }
}

pin_project_lite::pin_project! {
    /// A response body that reports the call's status from its trailers.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        timer: Option<CallTimer>,
    }
}

impl<B> http_body::Body for MeteredBody<B>
where
    B: http_body::Body,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Some(timer) = this.timer.as_mut() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(code) = frame.trailers_ref().and_then(status_in) {
                        timer.finish(code);
                    }
                }
                Poll::Ready(Some(Err(_))) => timer.finish(tonic::Code::Internal),
                // A body that ends without a status is a broken call.
                Poll::Ready(None) => timer.finish(tonic::Code::Unknown),
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Tower layer counting and timing every gRPC call through it.
#[derive(Clone)]
pub struct Metered {
    metrics: &'static RpcMetrics,
    known: Option<std::sync::Arc<[&'static str]>>,
}

impl Metered {
    /// A server's: calls to services other than `served` are counted as
    /// `unknown` ([`RpcMetrics::record`]).
    pub fn server(served: &[&'static str]) -> Metered {
        Metered {
            metrics: &GRPC_SERVER,
            known: Some(served.into()),
        }
    }

    /// A client's: calls to services outside the POZ API (and health and
    /// reflection) are counted as `unknown`, as on a server.
    pub fn client() -> Metered {
        let api = crate::api::fleet_api().keys().map(|k| k.as_str());
        Metered {
            metrics: &GRPC_CLIENT,
            known: Some(api.chain(crate::api::OPEN_SERVICES).collect()),
        }
    }
}

impl<S> tower_layer::Layer<S> for Metered {
    type Service = MeteredService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MeteredService {
            inner,
            metrics: self.metrics,
            known: self.known.clone(),
        }
    }
}

/// See [`Metered`].
#[derive(Clone)]
pub struct MeteredService<S> {
    inner: S,
    metrics: &'static RpcMetrics,
    known: Option<std::sync::Arc<[&'static str]>>,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, ReqB, ResB> tower_service::Service<http::Request<ReqB>> for MeteredService<S>
where
    S: tower_service::Service<http::Request<ReqB>, Response = http::Response<ResB>>,
    S::Future: Send + 'static,
    ResB: http_body::Body,
{
    type Response = http::Response<MeteredBody<ResB>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqB>) -> Self::Future {
        let mut timer = CallTimer {
            metrics: self.metrics,
            known: self.known.clone(),
            path: req.uri().path().to_string(),
            start: Instant::now(),
            done: false,
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(res) => {
                    // Trailers-only: the status is in the headers.
                    if let Some(code) = status_in(res.headers()) {
                        timer.finish(code);
                    }
                    Ok(res.map(|inner| MeteredBody {
                        inner,
                        timer: Some(timer),
                    }))
                }
                Err(e) => {
                    timer.finish(tonic::Code::Unavailable);
                    Err(e)
                }
            }
        })
    }
}

/// Whether a server of this process has started to serve.
static SERVING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Whether this process has started to drain (SIGTERM).
static DRAINING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Says that this process serves (a gRPC port or a gateway's ports):
/// `/readyz` answers 200 from now until [`mark_draining`].
pub fn mark_serving() {
    SERVING.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Says that this process drains: `/readyz` answers 503 from now on, so
/// Kubernetes takes the pod out of its Services' endpoints while calls
/// and connections in flight finish.
pub fn mark_draining() {
    DRAINING.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// `/readyz`: 200 `ready` while serving; 503 `starting` before, 503
/// `draining` after a drain began.
async fn readiness() -> (http::StatusCode, &'static str) {
    use std::sync::atomic::Ordering::SeqCst;
    if DRAINING.load(SeqCst) {
        (http::StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if SERVING.load(SeqCst) {
        (http::StatusCode::OK, "ready\n")
    } else {
        (http::StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

/// Serves `/metrics` (text format), `/healthz` (liveness: 200 while the
/// process runs) and `/readyz` (readiness: see [`mark_serving`] and
/// [`mark_draining`]) on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(|| async {
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    encode(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readiness));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A running `/metrics` endpoint, stopped when dropped.
pub struct Endpoint {
    addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    /// Binds `addr` and serves `/metrics` and `/healthz` there until
    /// dropped; `None` when `addr` is empty (no endpoint). Errors: the
    /// address cannot be bound.
    pub async fn start(addr: &str) -> std::io::Result<Option<Endpoint>> {
        if addr.is_empty() {
            return Ok(None);
        }
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "metrics at http://{addr}/metrics");
        let task = tokio::spawn(async move {
            if let Err(e) = serve(listener, std::future::pending()).await {
                tracing::warn!(error = %e, "metrics endpoint stopped");
            }
        });
        Ok(Some(Endpoint { addr, task }))
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}
