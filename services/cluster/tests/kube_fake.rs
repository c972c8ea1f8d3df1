//! Discovery and leader election against a fake Kubernetes API server
//! (tests/fake_api): EndpointSlices added, turning not-ready and removed
//! change which real gRPC server answers; no endpoint fails fast with
//! UNAVAILABLE; TLS to a pod IP checks the Service's name; a lease that
//! expires changes hands; two electors never lead at once.
//!
//! Every wait is bounded in rounds and time; nothing asserts speed.
#![allow(clippy::unwrap_used)]

mod fake_api;

use fake_api::{slice, FakeApi};
use poz_cluster::{Elector, KubeDiscovery, LeaseSettings};
use poz_kit::Channels;
use poz_proto::v1 as pb;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A verifier that answers every call with its own name (response
/// metadata `x-served-by`): the tests count who answered.
struct Named(&'static str);

fn served(name: &'static str) -> tonic::Response<pb::VerifyRecordResponse> {
    let mut r = tonic::Response::new(pb::VerifyRecordResponse::default());
    r.metadata_mut()
        .insert("x-served-by", name.parse().unwrap());
    r
}

#[tonic::async_trait]
impl pb::verifier_server::Verifier for Named {
    async fn verify_record(
        &self,
        _: tonic::Request<pb::VerifyRecordRequest>,
    ) -> Result<tonic::Response<pb::VerifyRecordResponse>, tonic::Status> {
        Ok(served(self.0))
    }
    async fn verify_update(
        &self,
        _: tonic::Request<pb::VerifyUpdateRequest>,
    ) -> Result<tonic::Response<pb::VerifyRecordResponse>, tonic::Status> {
        Ok(served(self.0))
    }
    async fn verify_entries(
        &self,
        _: tonic::Request<pb::VerifyEntriesRequest>,
    ) -> Result<tonic::Response<pb::VerifyEntriesResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(self.0))
    }
}

/// Listeners on each of `ips` with one port number (a Service's
/// endpoints share the port; the loopback range gives each pod its own
/// address). Bounded: 50 tries for a port free on every address.
async fn same_port(ips: &[&str]) -> (u16, Vec<tokio::net::TcpListener>) {
    for _ in 0..50 {
        let first = tokio::net::TcpListener::bind((ips[0], 0)).await.unwrap();
        let port = first.local_addr().unwrap().port();
        let mut all = vec![first];
        for ip in &ips[1..] {
            match tokio::net::TcpListener::bind((*ip, port)).await {
                Ok(l) => all.push(l),
                Err(_) => break,
            }
        }
        if all.len() == ips.len() {
            return (port, all);
        }
    }
    panic!("no port free on all of {ips:?}");
}

fn serve(listener: tokio::net::TcpListener, name: &'static str) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(pb::verifier_server::VerifierServer::new(Named(name)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    })
}

async fn who(channel: &poz_kit::Channel) -> Result<String, tonic::Status> {
    let mut c = pb::verifier_client::VerifierClient::new(channel.clone());
    let r = c.verify_record(pb::VerifyRecordRequest::default()).await?;
    Ok(r.metadata()
        .get("x-served-by")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_string())
}

/// Who answered `n` calls, by name.
async fn round(channel: &poz_kit::Channel, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let name = who(channel)
            .await
            .unwrap_or_else(|s| format!("error {:?}", s.code()));
        *seen.entry(name).or_insert(0) += 1;
    }
    seen
}

/// Rounds of 20 calls until `done` holds for one (at most 100 rounds
/// or 20 s); returns that round.
async fn until(
    channel: &poz_kit::Channel,
    what: &str,
    done: impl Fn(&BTreeMap<String, usize>) -> bool,
) -> BTreeMap<String, usize> {
    let start = Instant::now();
    let mut last = BTreeMap::new();
    for _ in 0..100 {
        last = round(channel, 20).await;
        if done(&last) {
            return last;
        }
        if start.elapsed() > Duration::from_secs(20) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: never; last round {last:?}");
}

fn only(names: &[&str]) -> impl Fn(&BTreeMap<String, usize>) -> bool {
    let want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    move |seen| seen.keys().cloned().collect::<Vec<_>>() == want
}

fn channels(fake: &FakeApi) -> Channels {
    Channels::default().with_discovery(Arc::new(KubeDiscovery::with_client(fake.client())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_follow_endpoints_added_turning_not_ready_and_removed() {
    let fake = FakeApi::start().await;
    let (port, ls) = same_port(&["127.0.0.1", "127.0.0.2", "127.0.0.3"]).await;
    let mut ls = ls.into_iter();
    let _servers = [
        serve(ls.next().unwrap(), "a"),
        serve(ls.next().unwrap(), "b"),
        serve(ls.next().unwrap(), "c"),
    ];
    let svc = "poz-verifier";
    fake.apply_slice(
        "poz",
        slice("v-1", svc, port, &[("127.0.0.1", true, false)]),
    );
    // Another Service's slice in the namespace is not ours.
    fake.apply_slice(
        "poz",
        slice("other-1", "other", port, &[("127.0.0.3", true, false)]),
    );
    let ch = channels(&fake)
        .lazy(&format!("k8s://{svc}.poz:{port}"))
        .unwrap();
    until(&ch, "only a answers", only(&["a"])).await;

    // b turns ready: calls spread over both.
    fake.apply_slice(
        "poz",
        slice(
            "v-1",
            svc,
            port,
            &[("127.0.0.1", true, false), ("127.0.0.2", true, false)],
        ),
    );
    until(&ch, "a and b both answer", only(&["a", "b"])).await;

    // b turns not-ready: it drains; every call goes to a.
    fake.apply_slice(
        "poz",
        slice(
            "v-1",
            svc,
            port,
            &[("127.0.0.1", true, false), ("127.0.0.2", false, false)],
        ),
    );
    until(&ch, "b drained", only(&["a"])).await;
    assert_eq!(round(&ch, 50).await.keys().collect::<Vec<_>>(), ["a"]);

    // c arrives in a second slice; the first slice is deleted; b in the
    // second slice is terminating (still serving, but leaving).
    fake.apply_slice(
        "poz",
        slice(
            "v-2",
            svc,
            port,
            &[("127.0.0.3", true, false), ("127.0.0.2", true, true)],
        ),
    );
    fake.delete_slice("poz", "v-1");
    until(&ch, "only c answers", only(&["c"])).await;
    assert_eq!(round(&ch, 50).await.keys().collect::<Vec<_>>(), ["c"]);

    // Every endpoint gone: a call fails UNAVAILABLE at once rather than
    // waiting for one (well within the 30 s call timeout).
    fake.delete_slice("poz", "v-2");
    let start = Instant::now();
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), who(&ch)).await {
            Ok(Err(s)) => break s,
            Ok(Ok(_)) => {
                assert!(start.elapsed() < Duration::from_secs(20), "still answered");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => panic!("a call with no endpoint hung for 10 s"),
        }
    };
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(status.message().contains("no ready endpoint"), "{status:?}");
    // And comes back when an endpoint does.
    fake.apply_slice(
        "poz",
        slice("v-3", svc, port, &[("127.0.0.2", true, false)]),
    );
    until(&ch, "b answers again", only(&["b"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_endpoints_fails_fast_with_unavailable() {
    let fake = FakeApi::start().await;
    let ch = channels(&fake).lazy("k8s://poz-signer.poz:50053").unwrap();
    for _ in 0..3 {
        let r = tokio::time::timeout(Duration::from_secs(10), who(&ch))
            .await
            .expect("a call with no endpoint must not hang");
        let status = r.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(
            status.message().contains("k8s://poz-signer.poz:50053"),
            "{status:?}"
        );
    }
    // Without a discovery source, k8s:// is refused when the channel is
    // built, naming what is missing.
    let Err(e) = Channels::default().lazy("k8s://poz-signer.poz:50053") else {
        panic!("k8s:// without a discovery source")
    };
    let e = e.to_string();
    assert!(
        e.contains("k8s:// peers are for services in Kubernetes"),
        "{e}"
    );
    let Err(e) = channels(&fake).lazy("k8s://poz-signer:50053") else {
        panic!("k8s:// without a namespace")
    };
    assert!(e.to_string().contains("SERVICE.NAMESPACE:PORT"), "{e}");
}

/// A CA and certificates (DNS SANs only: no IP SAN, so only the
/// Service's name can match).
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    dir: tempfile::TempDir,
}

impl Ca {
    fn new() -> Ca {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        Ca { cert, key, dir }
    }

    fn issue(&self, names: &[&str], file: &str) -> poz_kit::tls::TlsFiles {
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let d = self.dir.path();
        std::fs::write(d.join(format!("{file}.crt")), cert.pem()).unwrap();
        std::fs::write(d.join(format!("{file}.key")), key.serialize_pem()).unwrap();
        poz_kit::tls::TlsFiles {
            cert_file: Some(d.join(format!("{file}.crt"))),
            key_file: Some(d.join(format!("{file}.key"))),
            ca_file: Some(d.join("ca.pem")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_pod_ip_checks_the_certificate_for_the_service_name() {
    let fake = FakeApi::start().await;
    let ca = Ca::new();
    let (port, ls) = same_port(&["127.0.0.1", "127.0.0.2"]).await;
    let mut ls = ls.into_iter();
    // Pod 1 holds the verifier's certificate; pod 2 one of another
    // Service (a pod IP reused, a wrong Secret mounted).
    let mut servers = Vec::new();
    for (files, name) in [
        (
            ca.issue(&["poz-verifier", "poz-verifier.poz.svc"], "verifier"),
            "verifier",
        ),
        (ca.issue(&["poz-signer.poz.svc"], "signer"), "impostor"),
    ] {
        let l = ls.next().unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let settings = poz_kit::ServeSettings {
            tls: files,
            ..poz_kit::ServeSettings::default()
        };
        let server = poz_kit::GrpcServer::bind(
            "poz-verifier",
            &addr.to_string(),
            &settings,
            poz_kit::Allowlist::of(&[("poz.v1.Verifier", &["poz-provider-api"])]),
        )
        .await
        .unwrap();
        let name: &'static str = name;
        servers.push(tokio::spawn(
            server.serve_until(
                poz_kit::GrpcRoutes::new()
                    .service(pb::verifier_server::VerifierServer::new(Named(name))),
                std::future::pending(),
            ),
        ));
    }
    let client = Channels::new(&ca.issue(&["poz-provider-api"], "api"))
        .unwrap()
        .with_discovery(Arc::new(KubeDiscovery::with_client(fake.client())));
    fake.apply_slice(
        "poz",
        slice("v-1", "poz-verifier", port, &[("127.0.0.1", true, false)]),
    );
    let ch = client
        .lazy(&format!("k8s://poz-verifier.poz:{port}"))
        .unwrap();
    until(&ch, "the verifier answers over TLS", only(&["verifier"])).await;
    // Only the impostor: its certificate does not name
    // poz-verifier.poz.svc, so no call reaches it.
    fake.apply_slice(
        "poz",
        slice("v-1", "poz-verifier", port, &[("127.0.0.2", true, false)]),
    );
    let seen = until(&ch, "the impostor is refused", |seen| {
        !seen.contains_key("verifier")
    })
    .await;
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["error Unavailable"],
        "{seen:?}"
    );
}

fn fast(name: &str, identity: &str) -> LeaseSettings {
    LeaseSettings {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1200),
        retry_period: Duration::from_millis(100),
        ..LeaseSettings::new(name, "poz", identity)
    }
}

fn holder(fake: &FakeApi, name: &str) -> Option<String> {
    fake.lease("poz", name)?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_string)
}

/// Samples `electors` every 10 ms for `period`: never two leaders.
/// Returns how many samples had exactly one.
async fn never_two(electors: &[&Elector], period: Duration) -> usize {
    let start = Instant::now();
    let mut one = 0;
    for _ in 0..10_000 {
        if start.elapsed() > period {
            break;
        }
        let leading = electors.iter().filter(|e| e.is_leader()).count();
        assert!(leading <= 1, "{leading} electors lead at once");
        one += usize::from(leading == 1);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    one
}

/// Waits (at most 20 s) until `e` leads.
async fn leads(e: &Elector, what: &str) {
    let start = Instant::now();
    while !e.is_leader() {
        assert!(start.elapsed() < Duration::from_secs(20), "{what}: never");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_electors_never_both_lead_and_hand_over_on_shutdown_and_on_expiry() {
    let fake = FakeApi::start().await;
    // Both start at once: both find no Lease and create it; one create
    // is refused (409) and that one follows.
    let a = Elector::start(fake.client(), fast("poz-store", "pod-a"));
    let b = Elector::start(fake.client(), fast("poz-store", "pod-b"));
    let one = never_two(&[&a, &b], Duration::from_secs(3)).await;
    assert!(one > 0, "nobody led in 3 s");
    let (first, second) = if a.is_leader() { (a, b) } else { (b, a) };
    assert!(first.is_leader());
    let first_id = holder(&fake, "poz-store").unwrap();

    // The leader shuts down: it releases, and the other takes over
    // without waiting for the lease to expire.
    first.shutdown().await;
    let after = fake.lease("poz", "poz-store").unwrap();
    assert!(
        after["spec"]["holderIdentity"]
            .as_str()
            .is_none_or(str::is_empty),
        "released: {after}"
    );
    leads(&second, "the other takes over after a release").await;
    let second_id = holder(&fake, "poz-store").unwrap();
    assert_ne!(first_id, second_id);

    // A third candidate joins; the leader then dies without releasing
    // (dropped: its renewals stop). The third leads only once the lease
    // has expired, and never together with anyone.
    let c = Elector::start(fake.client(), fast("poz-store", "pod-c"));
    assert!(never_two(&[&second, &c], Duration::from_secs(1)).await > 0);
    assert!(second.is_leader() && !c.is_leader());
    drop(second);
    leads(&c, "the third takes over an expired lease").await;
    assert_eq!(holder(&fake, "poz-store").as_deref(), Some("pod-c"));
    let lease = fake.lease("poz", "poz-store").unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 2, "{lease}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_held_by_another_is_taken_only_once_it_expires() {
    let fake = FakeApi::start().await;
    let now = k8s_now();
    fake.put_lease(
        "poz",
        serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "poz-store"},
            "spec": {"holderIdentity": "pod-gone", "leaseDurationSeconds": 2,
                     "acquireTime": now, "renewTime": now, "leaseTransitions": 4}
        }),
    );
    let e = Elector::start(fake.client(), fast("poz-store", "pod-new"));
    // While the other's lease holds (2 s from when this candidate first
    // saw it), this one does not lead: sampled for 1 s.
    let start = Instant::now();
    for _ in 0..100 {
        if start.elapsed() > Duration::from_secs(1) {
            break;
        }
        assert!(!e.is_leader(), "led while another's lease held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(holder(&fake, "poz-store").as_deref(), Some("pod-gone"));
    leads(&e, "the expired lease is taken").await;
    let lease = fake.lease("poz", "poz-store").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "pod-new");
    assert_eq!(lease["spec"]["leaseTransitions"], 5, "{lease}");
    // It keeps it: renewals go on.
    let renewed = lease["spec"]["renewTime"].clone();
    let start = Instant::now();
    loop {
        let now = fake.lease("poz", "poz-store").unwrap();
        if now["spec"]["renewTime"] != renewed {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never renewed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(e.is_leader());
    e.shutdown().await;
}

/// Outside Kubernetes: always the leader.
#[tokio::test]
async fn without_a_pod_identity_the_elector_always_leads() {
    // The test process has no POD_NAME/POD_NAMESPACE (nextest gives each
    // test its own process; plain `cargo test` inherits the shell's).
    if std::env::var_os("POD_NAME").is_some() {
        return;
    }
    let e = Elector::from_env("poz-store").await.unwrap();
    assert!(e.is_leader());
    let mut ran = 0;
    let rx = e.subscribe();
    let work = poz_cluster::every_while_leader(rx, Duration::from_millis(1), || {
        ran += 1;
        std::future::ready(())
    });
    let _ = tokio::time::timeout(Duration::from_millis(200), work).await;
    assert!(ran > 0);
}

fn k8s_now() -> String {
    k8s_openapi::chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}
