//! EndpointSlice discovery for `k8s://SERVICE.NAMESPACE:PORT` peers.
//!
//! For each target a task watches the `discovery.k8s.io/v1`
//! EndpointSlices labelled `kubernetes.io/service-name=SERVICE` in
//! NAMESPACE (kube-runtime's watcher: a list, then a watch from its
//! resourceVersion, relisting with backoff when the watch breaks) and
//! publishes the union of their ready addresses as `IP:PORT` to the
//! kit's balancer ([`poz_kit::balance::Endpoints`]). An endpoint whose
//! `conditions.ready` is false (failing its readiness probe, or
//! terminating) or whose `conditions.terminating` is true is left out,
//! so it gets no new calls and drains; a slice deleted takes its
//! addresses with it.
//!
//! RBAC: `get`, `list`, `watch` on `endpointslices` (API group
//! `discovery.k8s.io`) in the peers' namespace.

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use poz_kit::balance::{Discovery, Endpoints, ServiceTarget};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, OnceCell};

/// The label an EndpointSlice carries naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// How long to wait before trying again to load the API configuration
/// (the service account token not mounted yet).
const CONFIG_RETRY: Duration = Duration::from_secs(5);

/// The ready addresses of one EndpointSlice, each with `port`: every
/// address of an endpoint that is not known to be unready
/// (`conditions.ready` absent counts as ready, as the API documents) and
/// not terminating. FQDN slices (no IPs) and addresses that do not
/// parse as IPs are skipped.
pub fn ready_addresses(slice: &EndpointSlice, port: u16) -> BTreeSet<SocketAddr> {
    if slice.address_type == "FQDN" {
        return BTreeSet::new();
    }
    slice
        .endpoints
        .iter()
        .filter(|e| {
            let c = e.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            ready && !terminating
        })
        .flat_map(|e| e.addresses.iter())
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

/// Where the API client comes from.
enum Source {
    /// Given (tests: a fake API server).
    Given(kube::Client),
    /// Inferred on first use: the in-cluster service account, or a
    /// kubeconfig (`kube::Client::try_default`).
    Infer(OnceCell<kube::Client>),
}

/// The EndpointSlice watch as the kit's [`Discovery`] source.
#[derive(Clone)]
pub struct KubeDiscovery {
    source: Arc<Source>,
}

impl KubeDiscovery {
    /// Discovery through the API server the pod's service account
    /// reaches (or the kubeconfig outside a pod), connected on first use.
    pub fn in_cluster() -> Self {
        KubeDiscovery {
            source: Arc::new(Source::Infer(OnceCell::new())),
        }
    }

    /// Discovery through `client`.
    pub fn with_client(client: kube::Client) -> Self {
        KubeDiscovery {
            source: Arc::new(Source::Given(client)),
        }
    }

    async fn client(&self) -> Result<kube::Client, crate::ClusterError> {
        match &*self.source {
            Source::Given(c) => Ok(c.clone()),
            Source::Infer(cell) => cell
                .get_or_try_init(|| async {
                    kube::Client::try_default()
                        .await
                        .map_err(crate::ClusterError::Api)
                })
                .await
                .cloned(),
        }
    }
}

impl Discovery for KubeDiscovery {
    fn watch(&self, target: &ServiceTarget) -> Endpoints {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(follow(self.clone(), target.clone(), tx));
        rx
    }
}

/// Follows `target`'s EndpointSlices, publishing on `tx` until every
/// receiver is gone (the channels using it were dropped).
async fn follow(
    source: KubeDiscovery,
    target: ServiceTarget,
    tx: watch::Sender<Option<BTreeSet<SocketAddr>>>,
) {
    let client = loop {
        tokio::select! {
            _ = tx.closed() => return,
            r = source.client() => match r {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(%target, error = %e, "endpoint discovery cannot reach the Kubernetes API; retrying");
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(CONFIG_RETRY) => {}
                    }
                }
            }
        }
    };
    let api: kube::Api<EndpointSlice> = kube::Api::namespaced(client, &target.namespace);
    let config =
        watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={}", target.service));
    let stream = watcher::watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    // Ready addresses by slice name; `relist` collects a fresh list
    // (after a watch broke) before it replaces them.
    let mut slices: BTreeMap<String, BTreeSet<SocketAddr>> = BTreeMap::new();
    let mut relist: Option<BTreeMap<String, BTreeSet<SocketAddr>>> = None;
    let name = |s: &EndpointSlice| s.metadata.name.clone().unwrap_or_default();
    loop {
        let event = tokio::select! {
            _ = tx.closed() => return,
            e = tokio_stream::StreamExt::next(&mut stream) => e,
        };
        match event {
            None => return,
            Some(Err(e)) => {
                // The watcher retries with backoff; the last set stays.
                tracing::warn!(%target, error = %e, "EndpointSlice watch failed; retrying");
                continue;
            }
            Some(Ok(Event::Init)) => {
                relist = Some(BTreeMap::new());
                continue;
            }
            Some(Ok(Event::InitApply(s))) => {
                if let Some(r) = relist.as_mut() {
                    r.insert(name(&s), ready_addresses(&s, target.port));
                }
                continue;
            }
            Some(Ok(Event::InitDone)) => {
                if let Some(r) = relist.take() {
                    slices = r;
                }
            }
            Some(Ok(Event::Apply(s))) => {
                slices.insert(name(&s), ready_addresses(&s, target.port));
            }
            Some(Ok(Event::Delete(s))) => {
                slices.remove(&name(&s));
            }
        }
        let set: BTreeSet<SocketAddr> = slices.values().flatten().copied().collect();
        tx.send_if_modified(|current| {
            if current.as_ref() == Some(&set) {
                return false;
            }
            tracing::info!(%target, endpoints = set.len(), "ready endpoints changed");
            *current = Some(set);
            true
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_ready_endpoints_that_are_not_terminating_are_dialled() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s-1", "labels": {SERVICE_NAME_LABEL: "poz-store"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": true, "terminating": true}},
                {"addresses": ["10.0.0.4"]},
                {"addresses": ["not-an-ip"], "conditions": {"ready": true}}
            ],
            "ports": [{"port": 50051}]
        }))
        .unwrap();
        let got: Vec<String> = ready_addresses(&slice, 50051)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(got, ["10.0.0.1:50051", "10.0.0.4:50051"]);
        let fqdn = EndpointSlice {
            address_type: "FQDN".into(),
            ..slice
        };
        assert!(ready_addresses(&fqdn, 1).is_empty());
    }
}
