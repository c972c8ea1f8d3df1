//! The POZ fleet inside Kubernetes, with kube-rs where it earns its
//! place (docs/OPERATIONS.md, "Discovery and leader election"):
//!
//! - [`discovery`]: `k8s://SERVICE.NAMESPACE:PORT` peer URLs. Watches the
//!   Service's `discovery.k8s.io/v1` EndpointSlices and publishes its
//!   ready addresses to the kit's balancer ([`poz_kit::balance`]), so a
//!   gRPC client spreads its calls over every ready pod instead of
//!   pinning them to the one its ClusterIP connection landed on. A
//!   service's `main` calls [`install`] once; every
//!   `poz_kit::Channels::lazy("k8s://…")` of the process then uses it.
//! - [`elector`]: Lease leader election (`coordination.k8s.io/v1`) for
//!   the fleet's singleton work: one holder at a time, renewed, released
//!   on shutdown, taken over when it expires.
//!
//! Outside Kubernetes (pozd, bare processes) neither is used: `http://`
//! and `https://` peers stay static, and [`Elector::from_env`] without
//! `POD_NAME`/`POD_NAMESPACE` is always leader.
#![forbid(unsafe_code)]

pub mod discovery;
pub mod elector;

pub use discovery::{ready_addresses, KubeDiscovery};
pub use elector::{every_while_leader, Elector, LeaseSettings};

/// Why the cluster side could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No Kubernetes API to talk to: no in-cluster service account (or
    /// kubeconfig) could be loaded.
    #[error("Kubernetes API configuration: {0}")]
    Config(String),
    /// A request to the Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
}

/// Installs the EndpointSlice discovery ([`KubeDiscovery`], with the
/// in-cluster service account) as the process's source of `k8s://`
/// peers. Nothing is contacted until the first `k8s://` channel is
/// built, so a process that only dials `http://` peers is unaffected.
/// Returns whether this call installed it (the first one does).
pub fn install() -> bool {
    poz_kit::install_discovery(std::sync::Arc::new(KubeDiscovery::in_cluster()))
}

/// What a service's `main` calls with its peer URLs: when any is
/// `k8s://`, connects to the Kubernetes API now (the pod's service
/// account, or a kubeconfig) and installs discovery through it, so a
/// process that cannot reach the API refuses to start rather than turn
/// ready and answer UNAVAILABLE to every call; otherwise installs the
/// lazy in-cluster discovery ([`install`]). Errors:
/// [`ClusterError::Config`], naming the peer.
pub async fn install_for(peers: &[&str]) -> Result<(), ClusterError> {
    let Some(first) = peers.iter().find(|p| p.starts_with("k8s://")) else {
        install();
        return Ok(());
    };
    let client = kube::Client::try_default().await.map_err(|e| {
        ClusterError::Config(format!(
            "{e}; the peer {first} is a k8s:// URL, which needs the Kubernetes API (a pod's \
             service account); outside Kubernetes give http(s)://HOST:PORT"
        ))
    })?;
    poz_kit::install_discovery(std::sync::Arc::new(KubeDiscovery::with_client(client)));
    Ok(())
}
