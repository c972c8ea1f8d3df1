//! Which callers may call which RPCs: an allowlist of client identities
//! (certificate SANs) per gRPC service or per method, as Boulder keeps
//! one per RPC. A refused call gets PERMISSION_DENIED and a log line
//! naming the caller; the service's handler (and any key) is never
//! reached.

use crate::api::fleet_api;
pub use crate::api::OPEN_SERVICES;
use crate::peer::PeerInfo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The fleet's client identities: the DNS SAN each component's
/// certificate carries (docs/OPERATIONS.md, "Service identities"). The
/// default allowlists name these; a deployment with other names sets
/// `[allow]`.
pub mod identity {
    pub const PROVIDER_API: &str = "poz-provider-api";
    pub const SUBMIT_GW: &str = "poz-submit-gw";
    pub const QUERY_GW: &str = "poz-query-gw";
    /// The provider ceremony, run by an operator against the signer.
    pub const CEREMONY: &str = "poz-ceremony";
    /// The provider's account systems, callers of the Provider API.
    pub const ACCOUNT_SYSTEM: &str = "poz-account-system";
    /// An operator with pozctl.
    pub const OPERATOR: &str = "poz-operator";
}

/// Config table `[allow]`: keys are a gRPC service (`"poz.v1.Signer"`,
/// every method) or one method (`"poz.v1.Signer/SignEntry"`, which then
/// replaces the service's list for that method); values are the client
/// identities allowed. A service of the port that no key names is
/// refused to everyone (fail closed).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(transparent)]
pub struct Allowlist(pub BTreeMap<String, Vec<String>>);

/// The verdict on one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Why not, for the caller and the log.
    Refused(String),
}

impl Allowlist {
    /// An allowlist from `(service or service/method, identities)` pairs.
    pub fn of(entries: &[(&str, &[&str])]) -> Self {
        Allowlist(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
        )
    }

    /// Every key names a service of the fleet's API (`poz.v1`), or a
    /// method it has; every identity is a non-empty name. Checked when a
    /// configuration loads (`ServeSettings::validate`): a typo
    /// (`"poz.v1.Signer/SignEntri"`) would otherwise leave that method on
    /// the service's list, silently. Errors name the key and the choices.
    pub fn check_names(&self) -> Result<(), String> {
        let api = fleet_api();
        for (key, ids) in &self.0 {
            let (service, method) = match key.split_once('/') {
                Some((s, m)) => (s, Some(m)),
                None => (key.as_str(), None),
            };
            if OPEN_SERVICES.contains(&service) {
                return Err(format!(
                    "allow key {key:?}: health and reflection are open to every caller \
                     that completes TLS; they take no allowlist"
                ));
            }
            let Some(methods) = api.get(service) else {
                return Err(format!(
                    "allow key {key:?} names no service of the POZ API (services: {})",
                    api.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            };
            if let Some(m) = method {
                if !methods.iter().any(|x| x == m) {
                    return Err(format!(
                        "allow key {key:?}: {service} has no method {m:?} (methods: {})",
                        methods.join(", ")
                    ));
                }
            }
            if ids.is_empty() {
                return Err(format!(
                    "allow key {key:?} lists no identity: that would close it to every \
                     caller (and a service key with no method keys closes the whole service); \
                     name the identities, or leave the key out"
                ));
            }
            if let Some(bad) = ids
                .iter()
                .find(|id| id.trim().is_empty() || id.trim() != *id)
            {
                return Err(format!(
                    "allow key {key:?}: identity {bad:?} is empty or has surrounding spaces"
                ));
            }
        }
        Ok(())
    }

    /// [`Allowlist::check_names`], and every key names one of `served`
    /// (the services of this port): a key for another service would
    /// otherwise do nothing, silently.
    pub fn validate(&self, served: &[&str]) -> Result<(), String> {
        self.check_names()?;
        for key in self.0.keys() {
            let service = key.split_once('/').map_or(key.as_str(), |(s, _)| s);
            if !served.contains(&service) {
                return Err(format!(
                    "allow key {key:?} names no service of this port (serves {})",
                    served.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Decides a call to gRPC `path` (`/poz.v1.Signer/SignEntry`) from a
    /// peer. A plain-TCP peer is only possible when TLS is off, and then
    /// the allowlist is not enforced (see [`Authorize`]).
    pub fn decide(&self, path: &str, peer: Option<&PeerInfo>) -> Verdict {
        let trimmed = path.trim_start_matches('/');
        let service = trimmed.split_once('/').map_or(trimmed, |(s, _)| s);
        if OPEN_SERVICES.contains(&service) {
            return Verdict::Allowed;
        }
        let Some(list) = self.0.get(trimmed).or_else(|| self.0.get(service)) else {
            return Verdict::Refused(format!("no caller may call {service}"));
        };
        let ids: &[String] = peer
            .and_then(|p| p.identities.as_deref())
            .unwrap_or_default();
        if ids.is_empty() {
            return Verdict::Refused(if peer.is_some_and(|p| p.certificate) {
                "the client certificate names no DNS or URI SAN (the identity the allowlist \
                 checks)"
                    .into()
            } else {
                "a client certificate is required".into()
            });
        }
        if ids.iter().any(|id| list.contains(id)) {
            Verdict::Allowed
        } else {
            Verdict::Refused(format!("{} may not call {trimmed}", ids.join(", ")))
        }
    }
}

/// Tower layer enforcing an [`Allowlist`] on a gRPC server.
#[derive(Clone)]
pub struct Authorize {
    allow: Arc<Allowlist>,
    service: &'static str,
}

impl Authorize {
    /// `service`: the binary's name, for the log line.
    pub fn new(allow: Allowlist, service: &'static str) -> Self {
        Authorize {
            allow: Arc::new(allow),
            service,
        }
    }
}

impl<S> tower_layer::Layer<S> for Authorize {
    type Service = AuthorizeService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthorizeService {
            inner,
            allow: self.allow.clone(),
            service: self.service,
        }
    }
}

/// See [`Authorize`].
#[derive(Clone)]
pub struct AuthorizeService<S> {
    inner: S,
    allow: Arc<Allowlist>,
    service: &'static str,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, ResB> tower_service::Service<http::Request<B>> for AuthorizeService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<ResB>> + Send,
    S::Future: Send + 'static,
    ResB: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let peer = req.extensions().get::<PeerInfo>();
        // Plain TCP is only served when TLS is off (pozd on loopback, or
        // `insecure = true`): there is no identity to check.
        if peer.is_some_and(|p| p.identities.is_none()) {
            return Box::pin(self.inner.call(req));
        }
        match self.allow.decide(req.uri().path(), peer) {
            Verdict::Allowed => Box::pin(self.inner.call(req)),
            Verdict::Refused(why) => {
                let who = peer.map_or_else(|| "unknown peer".to_string(), |p| p.to_string());
                tracing::warn!(
                    service = self.service,
                    caller = %who,
                    rpc = req.uri().path(),
                    reason = %why,
                    "refused caller"
                );
                let status = tonic::Status::permission_denied(why);
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ids: &[&str]) -> PeerInfo {
        PeerInfo {
            remote_addr: None,
            identities: Some(ids.iter().map(|s| s.to_string()).collect::<Vec<_>>().into()),
            certificate: true,
        }
    }

    #[test]
    fn method_lists_replace_the_service_list_and_unknown_services_are_closed() {
        let a = Allowlist::of(&[
            ("poz.v1.Signer", &["poz-provider-api", "poz-submit-gw"]),
            ("poz.v1.Signer/ListKeys", &["poz-operator"]),
        ]);
        let sign = "/poz.v1.Signer/SignEntry";
        assert_eq!(
            a.decide(sign, Some(&peer(&["poz-provider-api"]))),
            Verdict::Allowed
        );
        assert_eq!(
            a.decide(sign, Some(&peer(&["x", "poz-submit-gw"]))),
            Verdict::Allowed
        );
        assert!(matches!(
            a.decide(sign, Some(&peer(&["poz-query-gw"]))),
            Verdict::Refused(r) if r == "poz-query-gw may not call poz.v1.Signer/SignEntry"
        ));
        // A certificate without a DNS or URI SAN, and no certificate.
        assert!(matches!(
            a.decide(sign, Some(&peer(&[]))),
            Verdict::Refused(r) if r.contains("names no DNS or URI SAN")
        ));
        let no_cert = PeerInfo {
            certificate: false,
            ..peer(&[])
        };
        assert!(matches!(
            a.decide(sign, Some(&no_cert)),
            Verdict::Refused(r) if r.contains("client certificate is required")
        ));
        assert!(matches!(a.decide(sign, None), Verdict::Refused(_)));
        let list = "/poz.v1.Signer/ListKeys";
        assert!(matches!(
            a.decide(list, Some(&peer(&["poz-provider-api"]))),
            Verdict::Refused(_)
        ));
        assert_eq!(
            a.decide(list, Some(&peer(&["poz-operator"]))),
            Verdict::Allowed
        );
        assert!(matches!(
            a.decide("/poz.v1.StoreWrite/PutEntries", Some(&peer(&["poz-operator"]))),
            Verdict::Refused(r) if r.contains("no caller may call poz.v1.StoreWrite")
        ));
        assert_eq!(
            a.decide("/grpc.health.v1.Health/Check", Some(&peer(&[]))),
            Verdict::Allowed
        );
        assert!(a.validate(&["poz.v1.Signer"]).is_ok());
        let e = a.validate(&["poz.v1.Verifier"]).unwrap_err();
        assert!(e.contains("poz.v1.Signer"), "{e}");
    }

    /// Review of issue 13: a method key with a typo was accepted, and the
    /// service's list then applied to that method.
    #[test]
    fn keys_must_name_a_service_or_method_of_the_api() {
        let ok = Allowlist::of(&[
            ("poz.v1.Signer/SignEntry", &["poz-provider-api"]),
            ("poz.v1.StoreWrite/SetMirrors", &["poz-operator"]),
            ("poz.v1.StoreRead", &["poz-query-gw"]),
        ]);
        assert_eq!(ok.check_names(), Ok(()));
        for (key, ids, says) in [
            (
                "poz.v1.Signer/SignEntri",
                &["a"][..],
                "has no method \"SignEntri\"",
            ),
            (
                "poz.v1.Signr",
                &["a"][..],
                "names no service of the POZ API",
            ),
            ("poz.v1.Signer/", &["a"][..], "has no method \"\""),
            ("grpc.health.v1.Health", &["a"][..], "take no allowlist"),
            ("poz.v1.Signer", &[""][..], "identity \"\" is empty"),
            (
                "poz.v1.Signer",
                &[" poz-operator"][..],
                "surrounding spaces",
            ),
            ("poz.v1.StoreRead", &[][..], "lists no identity"),
        ] {
            let e = Allowlist::of(&[(key, ids)]).check_names().unwrap_err();
            assert!(e.contains(says), "{key}: {e}");
            // And the method list names the real ones.
            if says.starts_with("has no method") {
                assert!(e.contains("SignEntry"), "{e}");
            }
        }
    }
}
