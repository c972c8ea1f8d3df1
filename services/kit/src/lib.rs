//! Plumbing every POZ service shares, so each service is only its logic:
//! structured logs, gRPC health checking and reflection, serving on a
//! listener the caller bound (tests use port 0), and graceful drain on
//! SIGTERM or Ctrl-C.
#![forbid(unsafe_code)]

use tokio::net::TcpListener;

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
///
/// TCP_NODELAY on every accepted connection: a gRPC answer is often
/// written as two small segments (headers, then data and trailers), and
/// with Nagle's algorithm the second waits for the peer's delayed ACK,
/// about 40 ms on Linux (seen: every store read of the Provider API took
/// 42-48 ms until this was set). Keepalive probes find dead peers.
pub fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(std::time::Duration::from_secs(60)))
}

/// Why a service refused to start with its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(String),
    #[error("configuration: {0}")]
    Load(Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

/// A service's configuration: every field has a default (or is checked by
/// `validate`), unknown keys are refused (`#[serde(deny_unknown_fields)]`),
/// and `validate` rejects what would only fail later.
pub trait ServiceConfig: serde::Serialize + serde::de::DeserializeOwned + Default {
    fn validate(&self) -> Result<(), String>;
}

/// The flags every service has for its configuration; flatten into the
/// service's own clap arguments.
#[derive(clap::Args, Debug, Default)]
pub struct ConfigArgs {
    /// TOML configuration file (default: `$POZ_<SERVICE>_CONFIG`, if set).
    #[arg(long = "config", value_name = "FILE")]
    pub file: Option<std::path::PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Loads a configuration from, lowest precedence first: the defaults, a
/// TOML file (`--config`, else `{env_prefix}CONFIG`; when named, it must
/// exist), environment variables named `{env_prefix}{FIELD}` (e.g.
/// `POZ_STORE_DATABASE_URL`), then `overrides` (command-line flags; fields
/// that are `None` are skipped). The result is validated before it is
/// returned.
pub fn load_config<C: ServiceConfig>(
    env_prefix: &str,
    args: &ConfigArgs,
    overrides: &impl serde::Serialize,
) -> Result<C, ConfigError> {
    use figment::providers::{Env, Format, Serialized, Toml};
    let from_env = std::env::var_os(format!("{env_prefix}CONFIG")).map(std::path::PathBuf::from);
    let file = args.file.clone().or(from_env);
    let mut fig = figment::Figment::from(Serialized::defaults(C::default()));
    if let Some(path) = &file {
        if !path.is_file() {
            return Err(ConfigError::MissingFile(path.display().to_string()));
        }
        fig = fig.merge(Toml::file(path));
    }
    // `{prefix}CONFIG` names the file; it is not a field.
    let fig = fig
        .merge(Env::prefixed(env_prefix).ignore(&["config"]))
        .merge(Serialized::defaults(overrides));
    let c: C = fig.extract().map_err(|e| ConfigError::Load(Box::new(e)))?;
    c.validate().map_err(ConfigError::Invalid)?;
    Ok(c)
}

/// The effective configuration as TOML (`--print-config`): a file an
/// operator can start from.
pub fn to_toml(c: &impl serde::Serialize) -> Result<String, ConfigError> {
    toml::to_string(c).map_err(|e| ConfigError::Invalid(format!("cannot print: {e}")))
}

/// Checks that `addr` is a socket address (`host:port` with an IP).
pub fn check_listen(field: &str, addr: &str) -> Result<(), String> {
    addr.parse::<std::net::SocketAddr>()
        .map(|_| ())
        .map_err(|e| format!("{field} {addr:?} is not an IP:port address: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    // figment::Jail's closures return its (large) error type.
    #![allow(clippy::result_large_err)]
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        listen: String,
        pool: u32,
        url: String,
    }
    impl Default for Demo {
        fn default() -> Self {
            Demo {
                listen: "127.0.0.1:1".into(),
                pool: 4,
                url: String::new(),
            }
        }
    }
    impl ServiceConfig for Demo {
        fn validate(&self) -> Result<(), String> {
            check_listen("listen", &self.listen)?;
            if self.pool == 0 {
                return Err("pool must be at least 1".into());
            }
            Ok(())
        }
    }

    fn file(p: &std::path::Path) -> ConfigArgs {
        ConfigArgs {
            file: Some(p.to_path_buf()),
            print_config: false,
        }
    }

    #[derive(Serialize, Default)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        pool: Option<u32>,
    }

    #[test]
    fn file_then_environment_then_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "demo.toml",
                "listen = \"127.0.0.1:9\"\npool = 7\nurl = \"f\"",
            )?;
            let path = jail.directory().join("demo.toml");
            let c: Demo = load_config("POZ_DEMO_", &file(&path), &Flags::default()).unwrap();
            assert_eq!((c.pool, c.url.as_str()), (7, "f"));
            jail.set_env("POZ_DEMO_URL", "e");
            // The variable naming the file is not a setting; a flag wins over it.
            jail.set_env("POZ_DEMO_CONFIG", "elsewhere.toml");
            let c: Demo = load_config("POZ_DEMO_", &file(&path), &Flags::default()).unwrap();
            assert_eq!((c.pool, c.url.as_str()), (7, "e"));
            let c: Demo = load_config("POZ_DEMO_", &file(&path), &Flags { pool: Some(2) }).unwrap();
            assert_eq!(
                (c.listen.as_str(), c.pool, c.url.as_str()),
                ("127.0.0.1:9", 2, "e")
            );
            Ok(())
        });
    }

    #[test]
    fn bad_configurations_are_refused_with_the_reason() {
        figment::Jail::expect_with(|jail| {
            let none = Flags::default();
            let missing = jail.directory().join("nope.toml");
            let e = load_config::<Demo>("POZ_DEMO_", &file(&missing), &none).unwrap_err();
            assert!(matches!(e, ConfigError::MissingFile(_)), "{e}");
            jail.create_file("typo.toml", "listn = \"127.0.0.1:9\"")?;
            let typo = jail.directory().join("typo.toml");
            let e = load_config::<Demo>("POZ_DEMO_", &file(&typo), &none).unwrap_err();
            assert!(e.to_string().contains("listn"), "{e}");
            jail.set_env("POZ_DEMO_POOL", "many");
            let e = load_config::<Demo>("POZ_DEMO_", &ConfigArgs::default(), &none)
                .unwrap_err()
                .to_string();
            assert!(e.contains("\"POOL\"") && e.contains("POZ_DEMO_"), "{e}");
            jail.set_env("POZ_DEMO_POOL", "0");
            let e = load_config::<Demo>("POZ_DEMO_", &ConfigArgs::default(), &none).unwrap_err();
            assert_eq!(e.to_string(), "configuration: pool must be at least 1");
            jail.set_env("POZ_DEMO_POOL", "1");
            jail.set_env("POZ_DEMO_LISTEN", "localhost");
            let e = load_config::<Demo>("POZ_DEMO_", &ConfigArgs::default(), &none).unwrap_err();
            assert!(e.to_string().contains("not an IP:port"), "{e}");
            Ok(())
        });
    }
}
