//! Logs and traces.
//!
//! Logs: structured lines on stderr ([`init`]). Traces: OpenTelemetry,
//! exported over OTLP/gRPC when the standard environment asks for it
//! (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
//! set, or `OTEL_TRACES_EXPORTER=otlp`; off when none is, or when
//! `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`). The exporter,
//! batch processor, sampler and resource read the other `OTEL_*`
//! variables themselves (`OTEL_SERVICE_NAME`, `OTEL_BSP_SCHEDULE_DELAY`,
//! `OTEL_TRACES_SAMPLER`, …). W3C trace context (`traceparent`,
//! `tracestate`) crosses every gRPC hop: [`ServerSpans`] continues the
//! caller's trace, the kit's client channels send the current one.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use std::task::{Context, Poll};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the trace pipeline alive; dropping it flushes the spans not yet
/// exported (at the end of `main`, after the drain).
#[must_use = "dropping it stops trace export"]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("trace export: shutdown: {e}");
            }
        }
    }
}

/// Whether the `OTEL_*` environment asks for OTLP trace export.
pub fn otlp_requested() -> bool {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return false;
    }
    match var("OTEL_TRACES_EXPORTER") {
        Some(v) if v.eq_ignore_ascii_case("none") => false,
        Some(v) if v.eq_ignore_ascii_case("otlp") => true,
        _ => {
            var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
                || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        }
    }
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(
        "OTLP trace exporter: {0} (the services export OTLP over gRPC without TLS: \
         OTEL_EXPORTER_OTLP_ENDPOINT=http://HOST:4317)"
    )]
    Exporter(String),
}

/// Starts logs (JSON lines when `json`, else text; level from `RUST_LOG`,
/// default `info`) and, when [`otlp_requested`], trace export with
/// `service` as the default `service.name`. Must run inside the tokio
/// runtime (the exporter's gRPC channel lives there). A second call in
/// one process (tests) keeps the first subscriber. Errors:
/// [`TelemetryError::Exporter`] when the OTLP settings do not build.
pub fn init(service: &'static str, json: bool) -> Result<Telemetry, TelemetryError> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr; stdout carries only what a supervisor reads.
    // Colour codes only for a terminal: a log collector reading a pipe or
    // a file would otherwise store the escape sequences.
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = if otlp_requested() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let mut resource = opentelemetry_sdk::Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(service);
        }
        Some(
            opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource.build())
                .build(),
        )
    } else {
        None
    };
    // The exporter's own gRPC client (tonic, hyper, h2) and the SDK log
    // through `tracing` too; their spans must not become spans to export
    // (each export would make more), so the trace layer skips them. Their
    // events still reach the log: a collector that cannot be reached is
    // logged (`internal-logs`), not silent.
    let own = tracing_subscriber::filter::Targets::new()
        .with_default(tracing::Level::TRACE)
        .with_targets(
            [
                "opentelemetry",
                "opentelemetry_sdk",
                "opentelemetry_otlp",
                "tonic",
                "hyper",
                "h2",
                "tower",
            ]
            .map(|t| (t, tracing_subscriber::filter::LevelFilter::OFF)),
        );
    let otel = provider.as_ref().map(|p| {
        use tracing_subscriber::Layer;
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("poz"))
            .with_tracked_inactivity(false)
            .with_filter(own)
    });
    // A second initialisation (tests) is harmless; ignore it.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    Ok(Telemetry { provider })
}

use tracing_subscriber::Layer as _;

/// Reads W3C trace context from request headers.
struct HeaderExtractor<'a>(&'a http::HeaderMap);
impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes W3C trace context into request headers.
struct HeaderInjector<'a>(&'a mut http::HeaderMap);
impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            http::header::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// Writes the trace context of `span` into `headers` (W3C
/// `traceparent`/`tracestate`), for the next hop.
pub fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(headers))
    });
}

/// A span for a gRPC call handled here, continuing the caller's trace
/// when its headers carry one.
pub fn server_span(req_headers: &http::HeaderMap, path: &str) -> tracing::Span {
    // Named from the API, never from the caller's text (see `rpc_name`).
    let (service, method) = crate::metrics::rpc_name(path);
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(req_headers))
    });
    // Without a valid remote parent the span starts a trace of its own.
    let _ = span.set_parent(parent);
    span
}

/// A span for a gRPC call made from here, a child of the current span.
pub fn client_span(path: &str) -> tracing::Span {
    let (service, method) = crate::metrics::rpc_name(path);
    tracing::info_span!(
        "grpc.client",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = "client",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
    )
}

/// Tower layer giving every gRPC call a server span in the caller's
/// trace ([`server_span`]).
#[derive(Clone, Copy, Default)]
pub struct ServerSpans;

impl<S> tower_layer::Layer<S> for ServerSpans {
    type Service = ServerSpansService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ServerSpansService { inner }
    }
}

/// See [`ServerSpans`].
#[derive(Clone)]
pub struct ServerSpansService<S> {
    inner: S,
}

impl<S, B> tower_service::Service<http::Request<B>> for ServerSpansService<S>
where
    S: tower_service::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tracing::instrument::Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        use tracing::Instrument;
        let span = server_span(req.headers(), req.uri().path());
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        fut.instrument(span)
    }
}
