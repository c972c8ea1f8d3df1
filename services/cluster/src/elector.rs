//! Lease leader election (`coordination.k8s.io/v1` Lease), for work one
//! replica of a Deployment must do alone.
//!
//! The protocol is client-go's `leaderelection`:
//! - a candidate reads the Lease; if it has no holder, or its record
//!   (holder, renew time, transitions) has not changed for the holder's
//!   `leaseDurationSeconds` *as measured by this process's monotonic
//!   clock since it last saw the record change* (no trust in the other
//!   pod's wall clock), it writes itself in as holder;
//! - every write is a replace carrying the `resourceVersion` it read, so
//!   of two candidates writing at once the API server accepts one and
//!   answers the other 409 Conflict: one holder at a time;
//! - the holder renews every `retry_period`; if it cannot renew for
//!   `renew_deadline` (shorter than the lease duration) it stops leading
//!   *before* another can take over (a candidate waits the full lease
//!   duration after the last renewal it saw);
//! - on shutdown ([`Elector::shutdown`]) the holder stops leading, then
//!   clears the holder and sets a 1 s duration, so a successor takes over
//!   at its next try instead of after the lease expires.
//!
//! The fleet's singleton work under a lease: the store's sweep of
//! pending binding requests past `pending_ttl_ms` (Lease `poz-store`,
//! docs/OPERATIONS.md "Discovery and leader election").
//!
//! RBAC: `get`, `create`, `update` on `leases` (API group
//! `coordination.k8s.io`) in the pod's namespace.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::chrono::Utc;
use kube::api::PostParams;
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// The timings and names of one election.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// The Lease object's name.
    pub name: String,
    /// Its namespace (the pod's: `POD_NAMESPACE`).
    pub namespace: String,
    /// This candidate's identity, written as the holder (the pod's
    /// name: `POD_NAME`).
    pub identity: String,
    /// How long a lease holds without renewal before another candidate
    /// may take it (default 15 s; written as `leaseDurationSeconds`,
    /// whole seconds, at least 1).
    pub lease_duration: Duration,
    /// How long the holder keeps leading without a successful renewal
    /// (default 10 s); must be shorter than `lease_duration`.
    pub renew_deadline: Duration,
    /// How often a candidate tries to acquire, and the holder renews
    /// (default 2 s).
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// Settings with client-go's default timings: a 15 s lease, renewed
    /// every 2 s, given up after 10 s without a renewal.
    pub fn new(name: &str, namespace: &str, identity: &str) -> Self {
        LeaseSettings {
            name: name.to_string(),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// Whether this process leads, kept up to date by a background task.
pub struct Elector {
    leader: watch::Receiver<bool>,
    /// Keeps an always-leader elector's channel open.
    _always: Option<watch::Sender<bool>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("leader", &*self.leader.borrow())
            .finish()
    }
}

impl Elector {
    /// Outside Kubernetes (pozd, one bare process): always the leader.
    pub fn always_leader() -> Self {
        let (tx, rx) = watch::channel(true);
        Elector {
            leader: rx,
            _always: Some(tx),
            stop: None,
            task: None,
        }
    }

    /// In Kubernetes when the pod's identity is in the environment
    /// (`POD_NAME` and `POD_NAMESPACE`, from the downward API): an
    /// election on the Lease `lease` in the pod's namespace through the
    /// in-cluster service account. Without them: [`Elector::always_leader`].
    /// Errors: the pod's identity is set but the API configuration does
    /// not load ([`crate::ClusterError`]): refusing to start beats every
    /// replica doing the singleton work, or none.
    pub async fn from_env(lease: &str) -> Result<Self, crate::ClusterError> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (Some(pod), Some(namespace)) = (var("POD_NAME"), var("POD_NAMESPACE")) else {
            tracing::info!("no POD_NAME/POD_NAMESPACE: not in Kubernetes, always the leader");
            return Ok(Self::always_leader());
        };
        let client = kube::Client::try_default()
            .await
            .map_err(|e| crate::ClusterError::Config(e.to_string()))?;
        Ok(Self::start(
            client,
            LeaseSettings::new(lease, &namespace, &pod),
        ))
    }

    /// Starts competing for the Lease of `settings` through `client`.
    /// Must be called within a Tokio runtime.
    pub fn start(client: kube::Client, settings: LeaseSettings) -> Self {
        let (tx, rx) = watch::channel(false);
        let (stop_tx, stop_rx) = oneshot::channel();
        let api: kube::Api<Lease> = kube::Api::namespaced(client, &settings.namespace);
        let task = tokio::spawn(run(api, settings, tx, stop_rx));
        Elector {
            leader: rx,
            _always: None,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    /// Whether this process leads now.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow() && (self._always.is_some() || self.leader.has_changed().is_ok())
    }

    /// A receiver of "am I leader": `true` while this process leads.
    /// Once the elector is gone its channel closes (`changed()` fails):
    /// treat that as not leading.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leader.clone()
    }

    /// Stops competing: stops leading (subscribers see `false`) and, if
    /// this process held the Lease, releases it so a successor takes
    /// over at its next try. Waits for the release (one API call, bounded
    /// by the retry period).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Elector {
    /// Dropped without [`Elector::shutdown`]: the task stops without
    /// releasing (as a crash would); the Lease expires.
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Runs `work` every `period` while `leader` says this process leads
/// (checked before each run; a closed channel counts as not leading).
/// Returns only if `leader`'s elector is gone. A run in progress is not
/// interrupted when leadership is lost, so the work must be safe to
/// overlap once with a successor's (idempotent, transactional).
pub async fn every_while_leader<F, Fut>(
    mut leader: watch::Receiver<bool>,
    period: Duration,
    mut work: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if leader.has_changed().is_err() {
            return;
        }
        if *leader.borrow_and_update() {
            work().await;
        }
    }
}

/// The record a candidate watches for change: holder, renew time and
/// transitions (what the holder rewrites at each renewal).
type Record = (Option<String>, Option<MicroTime>, Option<i32>);

fn record(l: &Lease) -> Record {
    let s = l.spec.clone().unwrap_or_default();
    (s.holder_identity, s.renew_time, s.lease_transitions)
}

/// The election loop: try every `retry_period`; lead while renewals
/// succeed within `renew_deadline`; on stop, release if leading.
async fn run(
    api: kube::Api<Lease>,
    s: LeaseSettings,
    leader: watch::Sender<bool>,
    mut stop: oneshot::Receiver<()>,
) {
    // The last record seen and when (this process's clock) it changed.
    let mut observed: Option<(Record, Instant)> = None;
    // When the last successful acquire or renew was started.
    let mut renewed: Option<Instant> = None;
    loop {
        let leading = *leader.borrow();
        // A leader must renew before this; a candidate tries for at most
        // one retry period.
        let deadline = match (leading, renewed) {
            (true, Some(r)) => r + s.renew_deadline,
            _ => Instant::now() + s.retry_period.max(Duration::from_millis(10)),
        };
        let started = Instant::now();
        let attempt =
            tokio::time::timeout_at(deadline, try_acquire_or_renew(&api, &s, &mut observed));
        let outcome = tokio::select! {
            _ = &mut stop => break,
            r = attempt => r,
        };
        match outcome {
            Ok(Ok(true)) => {
                renewed = Some(started);
                if !leading {
                    tracing::info!(lease = %s.name, identity = %s.identity, "acquired the lease: leading");
                }
                leader.send_replace(true);
            }
            Ok(Ok(false)) => {
                if leading {
                    tracing::warn!(lease = %s.name, "the lease was taken by another: no longer leading");
                }
                leader.send_replace(false);
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = %s.name, error = %e, "lease request failed");
            }
            Err(_) => {
                tracing::warn!(lease = %s.name, "lease request timed out");
            }
        }
        // Not renewed within the deadline: stop before anyone else may
        // start (they wait the whole lease duration).
        if *leader.borrow() && renewed.is_none_or(|r| Instant::now() >= r + s.renew_deadline) {
            tracing::warn!(lease = %s.name, "could not renew the lease in time: no longer leading");
            leader.send_replace(false);
        }
        let next = Instant::now() + s.retry_period;
        let wake = if *leader.borrow() {
            renewed.map_or(next, |r| next.min(r + s.renew_deadline))
        } else {
            next
        };
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    // Stopping: no longer leading from this moment, then release.
    if leader.send_replace(false) {
        let released = tokio::time::timeout(
            s.retry_period.max(Duration::from_secs(1)),
            release(&api, &s),
        )
        .await;
        match released {
            Ok(Ok(())) => tracing::info!(lease = %s.name, "released the lease"),
            Ok(Err(e)) => {
                tracing::warn!(lease = %s.name, error = %e, "could not release the lease; it will expire")
            }
            Err(_) => {
                tracing::warn!(lease = %s.name, "releasing the lease timed out; it will expire")
            }
        }
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(r) if r.code == 409)
}

/// One round: `Ok(true)` when this candidate holds the lease after it
/// (acquired or renewed), `Ok(false)` when another does (or won a race).
async fn try_acquire_or_renew(
    api: &kube::Api<Lease>,
    s: &LeaseSettings,
    observed: &mut Option<(Record, Instant)>,
) -> Result<bool, kube::Error> {
    let now = MicroTime(Utc::now());
    let Some(current) = api.get_opt(&s.name).await? else {
        // Every field of the v1_30 LeaseSpec is set.
        let spec = LeaseSpec {
            holder_identity: Some(s.identity.clone()),
            lease_duration_seconds: Some(s.duration_seconds()),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(0),
        };
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(s.name.clone()),
                namespace: Some(s.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(created) => {
                *observed = Some((record(&created), Instant::now()));
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        };
    };
    let rec = record(&current);
    let seen_at = match observed {
        Some((r, at)) if *r == rec => *at,
        _ => {
            let at = Instant::now();
            *observed = Some((rec.clone(), at));
            at
        }
    };
    let spec = current.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let mine = holder.as_deref() == Some(s.identity.as_str());
    if let (Some(_), false) = (&holder, mine) {
        let secs = spec
            .lease_duration_seconds
            .unwrap_or(s.duration_seconds())
            .max(1);
        let lasts = Duration::from_secs(u64::try_from(secs).unwrap_or(1));
        if Instant::now() < seen_at + lasts {
            return Ok(false);
        }
    }
    let transitions = spec.lease_transitions.unwrap_or(0);
    // Fields this code does not know (newer API versions) are kept.
    let mut spec = spec;
    if !mine {
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(transitions.saturating_add(1));
    } else {
        spec.lease_transitions = Some(transitions);
    }
    spec.holder_identity = Some(s.identity.clone());
    spec.lease_duration_seconds = Some(s.duration_seconds());
    spec.renew_time = Some(now);
    let mut next = current.clone();
    next.spec = Some(spec);
    // The replace carries the resourceVersion read above: a concurrent
    // writer makes it fail with 409 Conflict.
    match api.replace(&s.name, &PostParams::default(), &next).await {
        Ok(written) => {
            *observed = Some((record(&written), Instant::now()));
            Ok(true)
        }
        Err(e) if is_conflict(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the lease up if this candidate holds it: no holder, a 1 s
/// duration.
async fn release(api: &kube::Api<Lease>, s: &LeaseSettings) -> Result<(), kube::Error> {
    let Some(current) = api.get_opt(&s.name).await? else {
        return Ok(());
    };
    let spec = current.spec.clone().unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(s.identity.as_str()) {
        return Ok(());
    }
    let mut spec = spec;
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(MicroTime(Utc::now()));
    let mut next = current.clone();
    next.spec = Some(spec);
    match api.replace(&s.name, &PostParams::default(), &next).await {
        Ok(_) => Ok(()),
        // Someone else wrote it meanwhile: it is not ours to release.
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(e),
    }
}
