//! Plumbing every POZ service shares, so each service is only its logic:
//! configuration (file, environment, flags, validated at start,
//! `--print-config`), structured logs and OpenTelemetry traces
//! ([`telemetry`]), the gRPC runner ([`serve`]: mutual TLS ([`tls`]),
//! per-RPC allowlists ([`allow`]), health and reflection, Prometheus
//! metrics ([`metrics`]), drain on SIGTERM), and the one builder of gRPC
//! client channels ([`channel`]).
#![forbid(unsafe_code)]

pub mod allow;
pub mod api;
pub mod balance;
pub mod channel;
pub mod dial;
pub mod metrics;
pub mod peer;
pub mod serve;
pub mod telemetry;
pub mod tls;

pub use allow::Allowlist;
pub use channel::{install_discovery, Channel, Channels};
pub use serve::{GrpcArgs, GrpcRoutes, GrpcServer, ServeArgs, ServeError, ServeSettings};

use tokio::net::TcpListener;

/// Starts structured logging only (no trace export): JSON lines when
/// `json`, human text otherwise; the level comes from `RUST_LOG`
/// (default `info`). Services use [`telemetry::init`].
pub fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr; stdout carries only what a supervisor reads.
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless; ignore it.
    let _ = if json {
        b.json().try_init()
    } else {
        b.try_init()
    };
}

/// The environment variable that ties a service to its parent: when it is
/// `1`, [`exit_with_stdin`] makes the service exit once its stdin reaches
/// end of file.
pub const EXIT_WITH_STDIN: &str = "POZ_EXIT_WITH_STDIN";

/// When `POZ_EXIT_WITH_STDIN=1`, starts a thread that reads stdin (and
/// discards it) until end of file or a read error, then exits the process
/// with status 0. Every service binary calls this first thing in `main`.
///
/// Why: a test harness (or any supervisor) that spawns a service keeps
/// the write end of a pipe on the service's stdin open; the kernel closes
/// it when the parent dies, however it dies (a panic, SIGKILL, a crash),
/// so the service cannot outlive it. Killing on `Drop` covers only the
/// orderly paths. Returns whether the watcher was started.
pub fn exit_with_stdin() -> bool {
    if std::env::var_os(EXIT_WITH_STDIN).is_none_or(|v| v != "1") {
        return false;
    }
    let started = std::thread::Builder::new()
        .name("exit-with-stdin".into())
        .spawn(|| {
            use std::io::Read;
            let mut stdin = std::io::stdin().lock();
            let mut buf = [0u8; 512];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            // Logging may not be set up yet; stderr may be a pipe whose
            // reader died with the parent, so a failed write is ignored
            // (eprintln! would panic, and the process would not exit).
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "stdin closed ({EXIT_WITH_STDIN}=1): the parent is gone; exiting"
            );
            std::process::exit(0);
        });
    started.is_ok()
}

/// Prepares `cmd` to spawn a service tied to this process (tests and
/// supervisors): sets `POZ_EXIT_WITH_STDIN=1` and a piped stdin. Keep the
/// spawned child's `stdin` open (leave it in the `Child`) for as long as
/// the service should live; dropping it, or this process ending in any
/// way, stops the service (see [`exit_with_stdin`]).
pub fn tie_to_parent(cmd: &mut std::process::Command) -> &mut std::process::Command {
    cmd.env(EXIT_WITH_STDIN, "1")
        .stdin(std::process::Stdio::piped())
}

/// What every service's `main` does first: ties its life to a parent
/// that asks for it ([`exit_with_stdin`]), loads its configuration
/// ([`load_config`]) and, for `--print-config`, prints it and returns
/// `None` (the caller exits). Secrets a configuration holds must be
/// `#[serde(skip_serializing)]` or redacted by [`to_toml`].
pub fn start<C: ServiceConfig>(
    env_prefix: &str,
    args: &ConfigArgs,
    overrides: &impl serde::Serialize,
) -> Result<Option<C>, ConfigError> {
    exit_with_stdin();
    let c: C = load_config(env_prefix, args, overrides)?;
    if args.print_config {
        print!("{}", to_toml(&c)?);
        return Ok(None);
    }
    Ok(Some(c))
}

/// Writes a new secret file (a key, a passphrase) readable by its owner
/// only (0600), synced to disk; never replaces an existing file. Errors:
/// the file exists, or cannot be created or written (the path is named).
pub fn write_secret(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let named = |e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("creating {}: {e}", path.display()))
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(named)?;
    f.write_all(bytes).map_err(named)?;
    f.sync_all().map_err(named)
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
    /// Global: it may come before or after a subcommand
    /// (`poz-store migrate --config F`).
    #[arg(id = "config", long = "config", value_name = "FILE", global = true)]
    pub file: Option<std::path::PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long, global = true)]
    pub print_config: bool,
}

/// Loads a configuration from, lowest precedence first: the defaults, a
/// TOML file (`--config`, else `{env_prefix}CONFIG`; when named, it must
/// exist), environment variables named `{env_prefix}{FIELD}` (e.g.
/// `POZ_STORE_DATABASE_URL`), then `overrides` (command-line flags; fields
/// that serialize as null, `Option::None`, are skipped). The result is validated before it is
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
    // `{prefix}CONFIG` names the file; it is not a field. A flag that was
    // not given serializes as null and overrides nothing.
    let flags = without_nulls(
        serde_json::to_value(overrides).map_err(|e| ConfigError::Invalid(format!("flags: {e}")))?,
    );
    let fig = fig
        .merge(Env::prefixed(env_prefix).ignore(&["config"]))
        .merge(Serialized::defaults(flags));
    let c: C = fig.extract().map_err(|e| {
        // serde's flatten hides which key of the shared settings was
        // wrong (`insecure = "yes"` said only "found string"): those
        // read on their own name the key and the file.
        match fig.extract::<ServeSettings>() {
            Err(shared) => ConfigError::Load(Box::new(shared)),
            Ok(_) => ConfigError::Load(Box::new(e)),
        }
    })?;
    refuse_unknown_keys(&fig, &C::default())?;
    refuse_redacted(&c)?;
    c.validate().map_err(ConfigError::Invalid)?;
    Ok(c)
}

/// `v` without the object members that are null, at any depth: the
/// flags a command line did not give (`Option::None`).
fn without_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k, without_nulls(v)))
            .collect(),
        other => other,
    }
}

/// Refuses a top-level key that is not a setting of `C` (a typo would
/// otherwise be ignored and its default used). Done here rather than
/// by `#[serde(deny_unknown_fields)]`, which serde cannot combine with
/// the flattened [`ServeSettings`]; nested tables check their own keys.
fn refuse_unknown_keys<C: serde::Serialize>(
    fig: &figment::Figment,
    defaults: &C,
) -> Result<(), ConfigError> {
    let known = match serde_json::to_value(defaults) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => return Ok(()),
    };
    let given: figment::value::Dict = fig.extract().map_err(|e| ConfigError::Load(Box::new(e)))?;
    for key in given.keys() {
        if !known.contains_key(key) {
            let from = fig
                .find_metadata(key)
                .map(|m| match &m.source {
                    Some(src) => format!(" (from {} {src})", m.name),
                    None => format!(" (from {})", m.name),
                })
                .unwrap_or_default();
            return Err(ConfigError::Invalid(format!(
                "unknown setting `{key}`{from}; the settings are: {}",
                known.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    Ok(())
}

/// The effective configuration as TOML (`--print-config`): a file an
/// operator can start from. Every string that is a URL with a password
/// (`postgres://user:pw@host/db`, `redis://:pw@host`) or a `password`
/// query parameter is printed with the password replaced by `REDACTED`
/// ([`redact_url`]); fields are printed in declaration order.
pub fn to_toml(c: &impl serde::Serialize) -> Result<String, ConfigError> {
    let cannot = |e: &dyn std::fmt::Display| ConfigError::Invalid(format!("cannot print: {e}"));
    let mut v = toml::Value::try_from(c).map_err(|e| cannot(&e))?;
    redact_urls(&mut v);
    toml::to_string(&v).map_err(|e| cannot(&e))
}

/// What a redacted password reads as.
pub const REDACTED: &str = "REDACTED";

/// `text` with the password of its URL replaced by [`REDACTED`] (the user
/// name is kept: it says which role connects), and so the value of any
/// query parameter that names a secret: any name containing `pass`,
/// `pwd`, `secret`, `token` or `key`, any case (libpq reads `password=`,
/// `sslpassword=`, `sslkey=`; Redis drivers `auth=`-like names vary, so
/// the match is broad). `None` when `text` is not a URL or holds no
/// password.
pub fn redact_url(text: &str) -> Option<String> {
    match url::Url::parse(text) {
        // A password holding `/`, `?` or `#` ends the authority early and
        // the rest may still parse (`postgres://u:12/ss@db` is host `u`,
        // port 12, path `/ss@db`): such text is judged as text.
        Ok(u) if u.password().is_some() || userinfo_span(text).is_none() => redact_parsed(u),
        _ => redact_text(text),
    }
}

/// `text` (a URL or an address from a configuration) as an error message
/// may quote it: with any password redacted ([`redact_url`]); and not at
/// all when it looks like a libpq `key=value` string or holds spaces
/// (`host=db password=…`), where the secret's place cannot be told. Then
/// only its length is said.
pub fn shown(text: &str) -> String {
    if let Some(r) = redact_url(text) {
        return format!("{r:?}");
    }
    if text.contains('=') || text.contains(char::is_whitespace) {
        return format!(
            "({} characters, not shown: it may hold a secret)",
            text.chars().count()
        );
    }
    format!("{text:?}")
}

/// Whether a query parameter's name says its value is a secret.
fn secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    ["pass", "pwd", "secret", "token", "key"]
        .iter()
        .any(|s| k.contains(s))
        || k == "auth"
}

fn redact_parsed(mut u: url::Url) -> Option<String> {
    let mut changed = false;
    if u.password().is_some() {
        // Only URLs with a host can carry a password; setting one there
        // cannot fail.
        changed = u.set_password(Some(REDACTED)).is_ok();
    }
    if u.query_pairs().any(|(k, _)| secret_key(&k)) {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let v = if secret_key(&k) {
                    REDACTED.to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
        changed = true;
    }
    changed.then(|| u.to_string())
}

/// Where the password of a `scheme://user:password@host` text lies: from
/// the first `:` after `://` to the last `@`, when the user part before
/// that `:` holds none of `@ / ? #` (a user name cannot) — so
/// `postgres://u@db:5432/x?password=a@b` has no userinfo to redact here.
fn userinfo_span(text: &str) -> Option<(usize, usize)> {
    let start = text.find("://")? + 3;
    let at = start + text[start..].rfind('@')?;
    let colon = start + text[start..at].find(':')?;
    if text[start..colon].contains(['@', '/', '?', '#']) {
        return None;
    }
    Some((colon, at))
}

/// The fallback of [`redact_url`] for text that looks like a URL but
/// does not parse as one (a password holding `/`, `#` or `?`, a port out
/// of range): the userinfo password ([`userinfo_span`]) and the value of
/// every secret-named query parameter are redacted on the text. It may
/// redact more than the secret (the split is a guess), never less.
/// `None` when there is nothing to redact.
fn redact_text(text: &str) -> Option<String> {
    let mut out = match userinfo_span(text) {
        Some((colon, at)) => format!("{}:{REDACTED}{}", &text[..colon], &text[at..]),
        None => text.to_string(),
    };
    // The query starts at the first `?` after the userinfo's `@`.
    let from = out.find("://").map_or(0, |s| s + 3);
    let from = from + userinfo_span(&out).map_or(0, |(_, at)| at - from);
    if let Some(q) = out[from..].find('?').map(|q| from + q + 1) {
        let (head, query) = out.split_at(q);
        let (query, fragment) = match query.find('#') {
            Some(h) => query.split_at(h),
            None => (query, ""),
        };
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if secret_key(k) => format!("{k}={REDACTED}"),
                _ => pair.to_string(),
            })
            .collect();
        out = format!("{head}{}{fragment}", redacted.join("&"));
    }
    (out != text).then_some(out)
}

/// Refuses a configuration that holds the [`REDACTED`] placeholder where
/// a secret belongs: a file made from `--print-config` would otherwise
/// connect with the password `REDACTED` and fail far from the cause.
fn refuse_redacted(c: &impl serde::Serialize) -> Result<(), ConfigError> {
    fn walk(key: &str, v: &toml::Value) -> Result<(), String> {
        match v {
            toml::Value::String(s) => {
                let placeholder = (SECRET_KEYS.contains(&key) && s == REDACTED)
                    || (s.contains("://") && s.contains(&format!(":{REDACTED}@")))
                    || s.contains(&format!("={REDACTED}"));
                if placeholder {
                    return Err(format!(
                        "`{key}` holds the placeholder {REDACTED} that --print-config writes \
                         in place of a secret; give the real value (a file, or the environment)"
                    ));
                }
                Ok(())
            }
            toml::Value::Array(a) => a.iter().try_for_each(|v| walk(key, v)),
            toml::Value::Table(t) => t.iter().try_for_each(|(k, v)| walk(k, v)),
            _ => Ok(()),
        }
    }
    match toml::Value::try_from(c) {
        Ok(v) => walk("", &v).map_err(ConfigError::Invalid),
        // What cannot be printed as TOML cannot hold a printed placeholder.
        Err(_) => Ok(()),
    }
}

/// Setting names whose string value is itself a secret.
const SECRET_KEYS: [&str; 5] = ["pin", "password", "passphrase", "secret", "token"];

/// Redacts every URL string in a configuration value, at any depth, and
/// the value of every [`SECRET_KEYS`] setting.
fn redact_urls(v: &mut toml::Value) {
    match v {
        toml::Value::String(s) => {
            if let Some(r) = redact_url(s) {
                *s = r;
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(redact_urls),
        toml::Value::Table(t) => t.iter_mut().for_each(|(k, v)| {
            // A secret given inline (a PIN, a password) is never printed;
            // `pin_file` and the like name files and are kept.
            if SECRET_KEYS.contains(&k.as_str()) {
                if let toml::Value::String(s) = v {
                    *s = REDACTED.to_string();
                }
            } else {
                redact_urls(v)
            }
        }),
        _ => {}
    }
}

/// The query parameters a `postgres://` URL may carry here: the ones
/// the fleet's Postgres driver (sqlx) reads. Any other it would ignore
/// with a warning that logs the value, a password included
/// (`sslpassword=`), so they are refused at load instead.
pub const POSTGRES_URL_PARAMETERS: [&str; 18] = [
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// Refuses a `postgres://`/`postgresql://` URL in setting `field` whose
/// query names a parameter outside [`POSTGRES_URL_PARAMETERS`] (the
/// name is said, never the value). Other URLs pass.
pub fn check_postgres_url(field: &str, url: &str) -> Result<(), String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Ok(());
    }
    let Some((_, query)) = url.split_once('?') else {
        return Ok(());
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        if !POSTGRES_URL_PARAMETERS.contains(&key) {
            return Err(format!(
                "{field}: parameter `{key}` is not one the Postgres driver reads (it would be \
                 ignored, and its value logged); the parameters: {}",
                POSTGRES_URL_PARAMETERS.join(", ")
            ));
        }
    }
    Ok(())
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

    /// Issue 12 §9: `--print-config` printed database and Redis URLs with
    /// their passwords.
    #[test]
    fn printed_configurations_never_show_a_password() {
        #[derive(Serialize)]
        struct Urls {
            listen: String,
            database_url: String,
            redis_url: String,
            audit_database_url: String,
            replica_url: String,
            sqlite: String,
            stores: Vec<String>,
            note: String,
        }
        let c = Urls {
            listen: "127.0.0.1:1".into(),
            database_url: "postgres://poz_store:s3cr3t-pw@db.internal:5432/poz".into(),
            redis_url: "redis://:hunter2@127.0.0.1:6379/0".into(),
            audit_database_url: "postgres://signer@db/poz?sslmode=require&password=pa55".into(),
            // Issue 12 review: libpq's sslpassword (and friends) too.
            replica_url: "postgres://poz@db/poz?sslpassword=X-ssl-secret&sslkey=/k".into(),
            sqlite: "sqlite:///var/lib/poz/audit.db?mode=rwc".into(),
            stores: vec!["http://admin:letmein@store:50051".into()],
            note: "not a url: hunter2".into(),
        };
        let printed = to_toml(&c).unwrap();
        for secret in ["s3cr3t-pw", "hunter2@", "pa55", "letmein", "X-ssl-secret"] {
            assert!(!printed.contains(secret), "{secret} in\n{printed}");
        }
        for kept in [
            "listen = \"127.0.0.1:1\"",
            "database_url = \"postgres://poz_store:REDACTED@db.internal:5432/poz\"",
            "redis_url = \"redis://:REDACTED@127.0.0.1:6379/0\"",
            "audit_database_url = \"postgres://signer@db/poz?sslmode=require&password=REDACTED\"",
            "sqlite = \"sqlite:///var/lib/poz/audit.db?mode=rwc\"",
            "\"http://admin:REDACTED@store:50051/\"",
            "note = \"not a url: hunter2\"",
        ] {
            assert!(printed.contains(kept), "{kept} not in\n{printed}");
        }
        // Declaration order is kept.
        let at = |k: &str| printed.find(k).unwrap();
        assert!(at("listen") < at("database_url") && at("database_url") < at("redis_url"));
        assert_eq!(redact_url("postgres://u@h/db"), None);
        assert_eq!(redact_url("127.0.0.1:5432"), None);
        assert_eq!(redact_url("http://store:50051/"), None);
        // Review of issue 14: sqlx logged unknown parameters with their
        // values (`sslpassword=hunter2`); refused at load, by name only.
        assert_eq!(
            check_postgres_url(
                "database_url",
                "postgres://u@db/poz?sslmode=verify-full&sslrootcert=/ca.pem"
            ),
            Ok(())
        );
        let e = check_postgres_url("database_url", "postgres://u@db/poz?sslpassword=hunter2")
            .unwrap_err();
        assert!(e.contains("`sslpassword`") && !e.contains("hunter2"), "{e}");
        // Error messages quote configuration text through `shown`.
        assert_eq!(shown("http://store:50051"), "\"http://store:50051\"");
        assert_eq!(shown("redis://:pw@cache"), "\"redis://:REDACTED@cache\"");
        assert_eq!(
            shown("host=db password=s3cret"),
            "(23 characters, not shown: it may hold a secret)"
        );
    }

    /// Review of issue 13: a URL whose password holds a character that
    /// ends the authority, or with a port out of range, does not parse
    /// (or parses as something else) and was printed whole.
    #[test]
    fn passwords_of_urls_that_do_not_parse_are_redacted_too() {
        for (url, secret) in [
            ("postgres://poz:pa/ss@db/poz", "pa/ss"),
            ("postgres://poz:p#ss@db/poz", "p#ss"),
            ("postgres://poz:p?ss@db/poz", "p?ss"),
            ("postgres://poz:pw99@db:99999/poz", "pw99"),
            ("postgres://poz:1234/ss@db/poz", "1234/ss"),
            ("redis://:a@b@cache:6379", "a@b"),
            // Second review: a query password in a URL that does not
            // parse, and an `@` in a query password.
            ("postgres://poz@db:99999/poz?password=s3cretA", "s3cretA"),
            (
                "postgres://db:99999/poz?sslmode=require&password=s3cretB",
                "s3cretB",
            ),
            ("postgres://poz@db:5432/poz?password=a@s3cretC", "s3cretC"),
        ] {
            let r = redact_url(url).unwrap_or_else(|| panic!("{url} not redacted"));
            assert!(!r.contains(secret), "{url} -> {r}");
            assert!(r.contains(REDACTED), "{url} -> {r}");
            // The user and the host are kept.
            assert!(
                r.contains("cache") || r.contains("db:") || r.contains("@db"),
                "{url} -> {r}"
            );
        }
        assert_eq!(
            redact_url("postgres://poz:pa/ss@db/poz").unwrap(),
            "postgres://poz:REDACTED@db/poz"
        );
        // Not mangled: the host and the other parameters stay.
        assert_eq!(
            redact_url("postgres://db:99999/poz?sslmode=require&password=s3cretB").unwrap(),
            "postgres://db:99999/poz?sslmode=require&password=REDACTED"
        );
        assert_eq!(
            redact_url("postgres://poz@db:5432/poz?password=a@s3cretC").unwrap(),
            "postgres://poz@db:5432/poz?password=REDACTED"
        );
    }

    /// A file made from `--print-config` keeps the placeholder where the
    /// secrets were; loading it is refused, naming the setting.
    #[test]
    fn the_printed_placeholder_is_not_taken_for_a_secret() {
        #[derive(Serialize, Deserialize, Debug, Default)]
        #[serde(default)]
        struct Secrets {
            database_url: String,
            pin: String,
        }
        impl ServiceConfig for Secrets {
            fn validate(&self) -> Result<(), String> {
                Ok(())
            }
        }
        figment::Jail::expect_with(|jail| {
            let none = Flags::default();
            for (body, key) in [
                (
                    "database_url = \"postgres://poz:REDACTED@db/poz\"",
                    "database_url",
                ),
                (
                    "database_url = \"postgres://poz@db/poz?password=REDACTED\"",
                    "database_url",
                ),
                ("pin = \"REDACTED\"", "pin"),
            ] {
                jail.create_file("printed.toml", body)?;
                let e = load_config::<Secrets>(
                    "POZ_DEMO_",
                    &file(&jail.directory().join("printed.toml")),
                    &none,
                )
                .unwrap_err()
                .to_string();
                assert!(e.contains(&format!("`{key}` holds the placeholder")), "{e}");
            }
            jail.create_file(
                "real.toml",
                "database_url = \"postgres://poz:REDACTEDx@db/poz\"\npin = \"1234\"",
            )?;
            load_config::<Secrets>(
                "POZ_DEMO_",
                &file(&jail.directory().join("real.toml")),
                &none,
            )
            .unwrap();
            Ok(())
        });
    }

    /// A service configuration as the services have them: its own keys
    /// and the shared settings flattened in.
    #[derive(Serialize, Deserialize, Debug, Default)]
    #[serde(default)]
    struct Flat {
        listen: String,
        pool: Option<u32>,
        #[serde(flatten)]
        serve: ServeSettings,
    }
    impl ServiceConfig for Flat {
        fn validate(&self) -> Result<(), String> {
            self.serve.validate()
        }
    }

    #[test]
    fn shared_settings_are_flat_keys_and_typos_are_still_refused() {
        figment::Jail::expect_with(|jail| {
            let none = Flags::default();
            jail.create_file(
                "ok.toml",
                "listen = \"x\"\npool = 3\nmetrics_listen = \"127.0.0.1:9\"\n[allow]\n\"poz.v1.Signer\" = [\"a\"]\n",
            )?;
            let c: Flat =
                load_config("POZ_DEMO_", &file(&jail.directory().join("ok.toml")), &none).unwrap();
            assert_eq!((c.pool, c.serve.insecure), (Some(3), false));
            assert_eq!(c.serve.metrics_listen, "127.0.0.1:9");
            assert_eq!(c.serve.allow.0["poz.v1.Signer"], ["a"]);
            jail.set_env("POZ_DEMO_LOG_JSON", "true");
            let c: Flat =
                load_config("POZ_DEMO_", &file(&jail.directory().join("ok.toml")), &none).unwrap();
            assert!(c.serve.log_json);
            // A typo at the top level, in the file or the environment.
            jail.create_file("typo.toml", "listen = \"x\"\ninsecur = true\n")?;
            let e = load_config::<Flat>(
                "POZ_DEMO_",
                &file(&jail.directory().join("typo.toml")),
                &none,
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("unknown setting `insecur`") && e.contains("typo.toml"),
                "{e}"
            );
            // A wrong type in a shared setting names the key and file.
            jail.create_file("type.toml", "listen = \"x\"\ninsecure = \"yes\"\n")?;
            let e = load_config::<Flat>(
                "POZ_DEMO_",
                &file(&jail.directory().join("type.toml")),
                &none,
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("insecure") && e.contains("type.toml"), "{e}");
            // In the [tls] table.
            jail.create_file("tls.toml", "insecure = true\n[tls]\ncert_fil = \"a\"\n")?;
            let e = load_config::<Flat>(
                "POZ_DEMO_",
                &file(&jail.directory().join("tls.toml")),
                &none,
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("cert_fil"), "{e}");
            // Contradictions (review of issue 13): insecure with [tls],
            // insecure with [allow] (which TLS-less serving cannot enforce);
            // and an [allow] key naming no method of the API.
            for (name, body, says) in [
                (
                    "both.toml",
                    "insecure = true\n[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nca_file = \"a\"\n",
                    "insecure = true and [tls] are both set",
                ),
                (
                    "open.toml",
                    "insecure = true\n[allow]\n\"poz.v1.Signer\" = [\"a\"]\n",
                    "would not be enforced",
                ),
                (
                    "method.toml",
                    "[allow]\n\"poz.v1.Signer/SignEntri\" = [\"a\"]\n",
                    "has no method \"SignEntri\"",
                ),
            ] {
                jail.create_file(name, body)?;
                let e = load_config::<Flat>("POZ_DEMO_", &file(&jail.directory().join(name)), &none)
                    .unwrap_err()
                    .to_string();
                assert!(e.contains(says), "{name}: {e}");
            }
            // Neither TLS nor an explicit insecure: loads (to print it,
            // say), but may not serve.
            jail.create_file("bare.toml", "listen = \"x\"\n")?;
            let c = load_config::<Flat>(
                "POZ_DEMO_",
                &file(&jail.directory().join("bare.toml")),
                &none,
            )
            .unwrap();
            let e = c.serve.require_tls_or_insecure().unwrap_err().to_string();
            assert!(e.contains("insecure = true"), "{e}");
            jail.set_env("POZ_DEMO_METRICS_LISTN", "127.0.0.1:1");
            let e =
                load_config::<Flat>("POZ_DEMO_", &file(&jail.directory().join("ok.toml")), &none)
                    .unwrap_err()
                    .to_string();
            assert!(e.contains("unknown setting `metrics_listn`"), "{e}");
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
