//! Plumbing every POZ service shares, so each service is only its logic:
//! structured logs, gRPC health checking and reflection, serving on a
//! listener the caller bound (tests use port 0), and graceful drain on
//! SIGTERM or Ctrl-C.
#![forbid(unsafe_code)]

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// Starts structured logging: JSON lines when `json`, human text
/// otherwise; the level comes from `RUST_LOG` (default `info`).
pub fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr; stdout carries only what a supervisor reads.
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless; ignore it.
    let _ = if json {
        b.json().try_init()
    } else {
        b.try_init()
    };
}

/// Resolves when the process is asked to stop (SIGTERM, Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested: draining");
}

/// The largest gRPC message a service accepts or sends. A record with a
/// long history fits; anything larger is refused (OUT_OF_RANGE) unread.
pub const MAX_GRPC_MESSAGE: usize = 32 * 1024 * 1024;

/// gRPC health and reflection for a service named `service_names`; health
/// reports SERVING for each once called.
pub async fn health_and_reflection(
    service_names: &[&str],
) -> Result<
    (
        tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let (reporter, health) = tonic_health::server::health_reporter();
    for name in service_names {
        reporter
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(poz_proto::v1::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    Ok((health, reflection))
}

/// The incoming-connection stream tonic serves from a listener the
/// caller bound (port 0 in tests, the configured address in production).
pub fn incoming(listener: TcpListener) -> TcpListenerStream {
    TcpListenerStream::new(listener)
}
