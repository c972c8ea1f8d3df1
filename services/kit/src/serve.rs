//! The runner every gRPC service of the fleet is served by: one
//! listener with TLS (or, said out loud, without), per-RPC allowlists,
//! server spans in the caller's trace, per-RPC metrics, health and
//! reflection (v1 and v1alpha, listing exactly what the port serves),
//! a Prometheus endpoint, and a drain on SIGTERM.

use crate::allow::{Allowlist, Authorize, OPEN_SERVICES};
use crate::tls::{ServerTls, TlsError, TlsFiles};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::net::TcpListener;

/// Settings every gRPC service and gateway shares, flattened into its
/// configuration (file keys as named here; environment
/// `POZ_<SERVICE>_<KEY>`; `[tls]` and `[allow]` are tables).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct ServeSettings {
    /// JSON log lines.
    pub log_json: bool,
    /// Address of the Prometheus endpoint (`/metrics`, `/healthz`);
    /// empty: none.
    pub metrics_listen: String,
    /// Serve and dial without TLS. Required, explicitly, to run a split
    /// service without `[tls]`: the fleet trusts no caller it cannot name.
    pub insecure: bool,
    /// This service's certificate, key and the CA bundle of its peers.
    pub tls: TlsFiles,
    /// How long, after SIGTERM, a service keeps accepting while it
    /// reports not ready (`/readyz` 503, health NOT_SERVING), before it
    /// closes its listeners, ms: the time a load balancer or Kubernetes
    /// needs to stop sending it new calls. 0 (the default) outside a
    /// cluster; the Helm chart sets 5000. At most 60000.
    pub drain_delay_ms: u64,
    /// Which client identities may call which RPC; empty: the service's
    /// default (docs/OPERATIONS.md lists each). When set it replaces the
    /// default as a whole.
    pub allow: Allowlist,
}

impl ServeSettings {
    /// Checks what would only fail later, when the configuration loads
    /// (before a database opens or a port is bound): the metrics address;
    /// the TLS files (all or none); `[allow]` keys naming services and
    /// methods of the API ([`Allowlist::check_names`]); and no
    /// contradiction: `insecure` with `[tls]` (which one is meant?), or
    /// `insecure` with `[allow]` (without TLS no caller has a name, so
    /// the allowlist could not be enforced).
    pub fn validate(&self) -> Result<(), String> {
        if !self.metrics_listen.is_empty() {
            crate::check_listen("metrics_listen", &self.metrics_listen)?;
        }
        self.tls.validate()?;
        if self.drain_delay_ms > 60_000 {
            return Err(format!(
                "drain_delay_ms {} is over 60000 (a minute)",
                self.drain_delay_ms
            ));
        }
        if self.insecure && self.tls.is_set() {
            return Err(
                "insecure = true and [tls] are both set: set [tls] to serve and dial \
                 with mutual TLS, or insecure = true (and no [tls]) to go without"
                    .into(),
            );
        }
        if self.insecure && !self.allow.0.is_empty() {
            return Err(
                "[allow] is set but insecure = true: without TLS no caller has a \
                 name, so the allowlist would not be enforced; set [tls], or drop [allow]"
                    .into(),
            );
        }
        self.allow.check_names()
    }

    /// The allowlist a port enforces: `[allow]` when set (it replaces
    /// the defaults as a whole: nothing is merged), else `default`, whose
    /// keys name every service the port serves. Checked before anything
    /// is opened or bound: TLS or `insecure` ([`ServeError::NoTls`]),
    /// and every `[allow]` key names a service of the port
    /// ([`ServeError::Allowlist`]).
    pub fn allowlist(&self, default: Allowlist) -> Result<Allowlist, ServeError> {
        self.require_tls_or_insecure()?;
        if self.allow.0.is_empty() {
            return Ok(default);
        }
        let mut served: Vec<&str> = default
            .0
            .keys()
            .map(|k| k.split_once('/').map_or(k.as_str(), |(s, _)| s))
            .collect();
        served.dedup();
        self.allow
            .validate(&served)
            .map_err(ServeError::Allowlist)?;
        Ok(self.allow.clone())
    }

    /// Before serving: TLS, or `insecure` said explicitly. (Checked when
    /// a service starts to serve, not at load: `--print-config`, key
    /// generation and the ceremony serve nothing.) Errors:
    /// [`ServeError::NoTls`].
    pub fn require_tls_or_insecure(&self) -> Result<(), ServeError> {
        if !self.tls.is_set() && !self.insecure {
            return Err(ServeError::NoTls);
        }
        Ok(())
    }

    /// What a service checks before it opens anything (a database, an
    /// HSM) or binds its port: [`ServeSettings::allowlist`], and that the
    /// `[tls]` files load as a server's. Errors: as those, and
    /// [`ServeError::Tls`] naming the file.
    pub fn preflight(&self, default: Allowlist) -> Result<Allowlist, ServeError> {
        let allow = self.allowlist(default)?;
        if self.tls.is_set() {
            ServerTls::load(&self.tls)?;
        }
        Ok(allow)
    }

    /// The client channels of this service (its certificate, when set).
    pub fn channels(&self) -> Result<crate::channel::Channels, crate::channel::ChannelError> {
        crate::channel::Channels::new(&self.tls)
    }
}

/// How long a gRPC server's drain may take once its listener closed:
/// calls still running then (a health `Watch` stream with no deadline,
/// say) are cut, so a rollout is never held up by one client. With the
/// chart's 5 s drain delay this fits Kubernetes' default 30 s grace.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// `shutdown`, then the drain delay: resolves `delay` after `shutdown`
/// did, marking the process not ready ([`crate::metrics::mark_draining`])
/// at once, so a load balancer stops sending new work while the
/// listeners still accept what is already on its way.
pub async fn delayed_shutdown(
    shutdown: impl std::future::Future<Output = ()>,
    delay: std::time::Duration,
) {
    shutdown.await;
    crate::metrics::mark_draining();
    if !delay.is_zero() {
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "not ready; closing the listeners after the drain delay"
        );
        tokio::time::sleep(delay).await;
    }
}

/// The flags every service has for [`ServeSettings`]; flatten into its
/// clap arguments (they serialize as overrides).
#[derive(clap::Args, Serialize, Debug, Default)]
pub struct ServeArgs {
    /// JSON log lines.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub log_json: bool,
    /// Prometheus endpoint address (`/metrics`).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Without TLS: serve (gRPC services) and dial peers in plain TCP.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

/// The flags of every gRPC service (store, verifier, signer, Provider
/// API): flatten into its clap arguments with `#[command(flatten)]` and
/// `#[serde(flatten)]`; the configuration flags are not settings and are
/// skipped when the flags serialize as overrides.
#[derive(clap::Args, Serialize, Debug, Default)]
pub struct GrpcArgs {
    #[command(flatten)]
    #[serde(skip)]
    pub config: crate::ConfigArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub serve: ServeArgs,
    /// gRPC address (`IP:port`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

/// Why a service could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "no [tls] files: the split fleet authenticates every caller; set tls.cert_file, \
         tls.key_file and tls.ca_file, or insecure = true (--insecure) to serve and dial \
         without TLS"
    )]
    NoTls,
    #[error("binding {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("allowlist: {0}")]
    Allowlist(String),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The gRPC services one port serves, and their names.
pub struct GrpcRoutes {
    routes: tonic::service::Routes,
    names: Vec<&'static str>,
}

impl Default for GrpcRoutes {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcRoutes {
    pub fn new() -> Self {
        GrpcRoutes {
            routes: tonic::service::Routes::default(),
            names: Vec::new(),
        }
    }

    /// Adds a generated tonic server.
    pub fn service<S>(mut self, svc: S) -> Self
    where
        S: tower_service::Service<
                http::Request<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes = self.routes.add_service(svc);
        self
    }

    /// The names of the services added so far.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }
}

/// A bound gRPC port, ready to serve.
pub struct GrpcServer {
    name: &'static str,
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    allow: Allowlist,
    metrics: Option<TcpListener>,
    drain_delay: std::time::Duration,
    drain_timeout: std::time::Duration,
}

impl GrpcServer {
    /// Binds `listen` (and `metrics_listen`) for the service `name`
    /// (`poz-store`), loads its TLS files, and prints `listening ADDR` on
    /// stdout (supervisors and tests read it). `default_allow` applies
    /// when the settings name no allowlist; its keys name the port's
    /// services ([`ServeSettings::allowlist`]). Errors:
    /// [`ServeError::NoTls`] (neither TLS nor `insecure`),
    /// [`ServeError::Allowlist`], [`ServeError::Tls`],
    /// [`ServeError::Bind`].
    pub async fn bind(
        name: &'static str,
        listen: &str,
        settings: &ServeSettings,
        default_allow: Allowlist,
    ) -> Result<GrpcServer, ServeError> {
        let allow = settings.allowlist(default_allow)?;
        let bind = |addr: String| async move {
            TcpListener::bind(&addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })
        };
        let tls = if settings.tls.is_set() {
            std::sync::LazyLock::force(&crate::metrics::TLS_HANDSHAKE_FAILURES);
            Some(Arc::new(ServerTls::load(&settings.tls)?))
        } else {
            None
        };
        let listener = bind(listen.to_string()).await?;
        let metrics = if settings.metrics_listen.is_empty() {
            None
        } else {
            Some(bind(settings.metrics_listen.clone()).await?)
        };
        let server = GrpcServer {
            name,
            listener,
            tls,
            allow,
            metrics,
            drain_delay: std::time::Duration::from_millis(settings.drain_delay_ms),
            drain_timeout: DRAIN_TIMEOUT,
        };
        let addr = server.local_addr();
        if server.tls.is_some() {
            tracing::info!(%addr, "{name} listening (mutual TLS, per-RPC allowlist)");
        } else {
            tracing::warn!(%addr, "{name} listening WITHOUT TLS: any caller that reaches this port is served");
        }
        if let Some(m) = &server.metrics {
            if let Ok(a) = m.local_addr() {
                tracing::info!(addr = %a, "metrics at http://{a}/metrics");
            }
        }
        println!("listening {addr}");
        Ok(server)
    }

    /// A server on a listener the caller bound (pozd's in-process ports,
    /// tests): no TLS, no allowlist, no metrics endpoint of its own.
    pub fn plain(name: &'static str, listener: TcpListener) -> GrpcServer {
        GrpcServer {
            name,
            listener,
            tls: None,
            allow: Allowlist::default(),
            metrics: None,
            drain_delay: std::time::Duration::ZERO,
            drain_timeout: DRAIN_TIMEOUT,
        }
    }

    /// Another drain timeout than [`DRAIN_TIMEOUT`] (tests).
    pub fn with_drain_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves `routes` until SIGTERM or Ctrl-C, then drains.
    pub async fn serve(self, routes: GrpcRoutes) -> Result<(), ServeError> {
        self.serve_until(routes, crate::shutdown_signal()).await
    }

    /// Serves `routes` until `shutdown`, then drains: health turns
    /// NOT_SERVING, the listener closes, calls in flight finish.
    /// Errors: [`ServeError::Allowlist`] when the allowlist names a
    /// service this port does not serve, [`ServeError::Reflection`],
    /// [`ServeError::Transport`].
    pub async fn serve_until(
        self,
        routes: GrpcRoutes,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let GrpcServer {
            name,
            listener,
            tls,
            allow,
            metrics,
            drain_delay,
            drain_timeout,
        } = self;
        allow
            .validate(routes.names())
            .map_err(ServeError::Allowlist)?;
        let (reporter, health) = tonic_health::server::health_reporter();
        for n in routes.names() {
            reporter
                .set_service_status(*n, tonic_health::ServingStatus::Serving)
                .await;
        }
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let listed: Vec<&str> = routes
            .names()
            .iter()
            .copied()
            .chain(OPEN_SERVICES)
            .collect();
        let reflection = || {
            let mut b = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(poz_proto::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(
                    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                )
                .include_reflection_service(false);
            for n in &listed {
                b = b.with_service_name(*n);
            }
            b
        };
        let routes = routes
            .service(health)
            .service(reflection().build_v1()?)
            .service(reflection().build_v1alpha()?);
        let stop = tokio_util::sync::CancellationToken::new();
        if let Some(m) = metrics {
            let stop = stop.clone();
            tokio::spawn(async move {
                if let Err(e) = crate::metrics::serve(m, stop.cancelled_owned()).await {
                    tracing::warn!(error = %e, "metrics endpoint stopped");
                }
            });
        }
        let served: Vec<&'static str> = routes.names().to_vec();
        let served_names = served.clone();
        // Set when the listener closes: the drain's deadline runs from it.
        let (closing_tx, mut closing_rx) = tokio::sync::watch::channel(false);
        // The metrics endpoint (`stop`) closes only when the server has
        // finished: `/healthz` answers while the process runs.
        let drain = async move {
            shutdown.await;
            tracing::info!("{name}: draining");
            crate::metrics::mark_draining();
            // Every name a health check may ask about turns
            // NOT_SERVING, so load balancers stop sending calls,
            // while the listener still accepts for the drain delay.
            for n in served.into_iter().chain([""]) {
                reporter
                    .set_service_status(n, tonic_health::ServingStatus::NotServing)
                    .await;
            }
            tokio::time::sleep(drain_delay).await;
            let _ = closing_tx.send(true);
        };
        let deadline = async move {
            // A server that ended before any drain never sends: wait on.
            if closing_rx.wait_for(|c| *c).await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(drain_timeout).await;
        };
        // With TLS the allowlist is enforced; without it (pozd on
        // loopback, `insecure = true`) no caller has a name to check.
        let enforce = tls.is_some();
        let layer = tower::ServiceBuilder::new()
            .layer(crate::metrics::Metered::server(&served_names))
            .layer(crate::telemetry::ServerSpans)
            .option_layer(enforce.then(|| Authorize::new(allow, name)));
        crate::metrics::mark_serving();
        let server = tonic::transport::Server::builder()
            .layer(layer)
            .add_routes(routes.routes)
            .serve_with_incoming_shutdown(crate::peer::incoming(listener, tls), drain);
        let result = tokio::select! {
            r = server => r,
            _ = deadline => {
                tracing::warn!(
                    timeout_ms = drain_timeout.as_millis() as u64,
                    "{name}: calls still running after the drain timeout are cut"
                );
                Ok(())
            }
        };
        stop.cancel();
        result?;
        tracing::info!("{name} stopped");
        Ok(())
    }
}
