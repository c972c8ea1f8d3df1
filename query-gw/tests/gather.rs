//! IDENTITY lookups that arrive while the store is busy go to it together,
//! in one LookupBindings call per group, and each client still gets its
//! own answer: found, revoked or not found, with its own request id.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod support;

use poz::codec::Codec;
use poz::gate::{Gate, Port};
use poz::noise::StaticKeypair;
use poz::pow::{Challenger, LoadTargets, PowConfig, Secrets};
use poz::wire::{ErrorDetail, IdentityAnswer, IdentityQuery, MessageType, Status};
use poz::zone::ZoneType;
use poz_edge::{Discipline, Edge, LoadMeter};
use poz_proto::v1 as pb;
use poz_query_gw::StoreLookup;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use support::{frame, raw_plain, store_with_provider};
use tokio::sync::watch;

/// The store's gRPC service, holding every request until `open` is true:
/// the test decides when the store answers.
#[derive(Clone)]
struct Held<S> {
    inner: S,
    open: watch::Receiver<bool>,
}

impl<S, B> tower::Service<http::Request<B>> for Held<S>
where
    S: tower::Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The clone that was made ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let mut open = self.open.clone();
        Box::pin(async move {
            let _ = open.wait_for(|o| *o).await;
            inner.call(req).await
        })
    }
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_that_queue_behind_a_busy_store_go_together_and_each_gets_its_own_answer() {
    let s = store_with_provider().await;
    let p = &s.provider;
    let id = p.id();
    let k = poz::sample::provider_keys();
    let bulk = poz::sample::bulk_bindings(p, 200, &[&k.device_a, &k.device_b]).unwrap();
    let bytes: Vec<Vec<u8>> = bulk.iter().map(|e| e.to_bytes()).collect();
    s.store
        .put_entries(&id, ZoneType::IDENTITY, &bytes, "")
        .await
        .unwrap();
    // user7 is revoked.
    let mut rev = poz::workflow::new_revocation(
        bulk[7].identity_digest(&id),
        poz::sample::T0 + 3_000,
        poz::entries::RevocationReason::ACCOUNT_CLOSED,
    );
    poz::workflow::sign_entry(p, ZoneType::IDENTITY, &mut rev, &k.device_a).unwrap();
    s.store
        .put_entries(&id, ZoneType::IDENTITY, &[rev.to_bytes()], "")
        .await
        .unwrap();

    // The same store behind a held gRPC server.
    let (open_tx, open) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store_addr = listener.local_addr().unwrap();
    let svc = poz_store::grpc::StoreReader {
        store: s.store.clone(),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(tower::layer::layer_fn(move |inner| Held {
                inner,
                open: open.clone(),
            }))
            .add_service(pb::store_read_server::StoreReadServer::new(svc))
            .serve_with_incoming(poz_kit::incoming(listener)),
    );

    // One call out at a time, at most 64 lookups in it.
    let channel = poz_kit::Channels::default()
        .lazy(&format!("http://{store_addr}"))
        .unwrap();
    let lookup = StoreLookup::new(channel).gathering(64, 1);
    let pow = PowConfig::default();
    let edge = Edge::new(
        Discipline {
            max_connections_per_ip: 1_000,
            rate_per_ip: 10_000,
            burst_per_ip: 10_000,
            max_lookups: 1_000,
            ..Discipline::default()
        },
        StaticKeypair::generate(),
        Gate::new(Challenger::new(pow, Secrets(vec![[7; 32]])), 10_000),
        lookup.clone(),
        Arc::new(LoadMeter::new(pow, LoadTargets::default())),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(edge.serve(l, Port::Plain, std::future::pending()));

    // Lookup n asks for user n (200 of them: found, user7 revoked), then
    // unknown handles, then an unknown domain.
    let ask = |n: u16| {
        let (domain, handle) = match n {
            0..200 => ("social.example", format!("user{n}")),
            200..250 => ("social.example", format!("nobody{n}")),
            _ => ("nowhere.example", "alice".to_string()),
        };
        let q = IdentityQuery {
            domain: domain.into(),
            handle,
        };
        tokio::spawn(async move {
            raw_plain(addr, &frame(MessageType::IDENTITY, n, q.to_bytes()))
                .await
                .unwrap()
        })
    };
    // The first lookup goes alone and is held at the store; the other 259
    // queue behind it.
    let first = ask(0);
    wait_until("the first call is out", || lookup.gather_stats().calls == 1).await;
    let rest: Vec<_> = (1..260).map(ask).collect();
    wait_until("259 lookups queued", || lookup.gather_stats().queued == 259).await;
    open_tx.send(true).unwrap();

    let mut answers = vec![first.await.unwrap()];
    for r in rest {
        answers.push(r.await.unwrap());
    }
    for (n, r) in answers.iter().enumerate() {
        assert_eq!(r.request_id as usize, n);
        match n {
            0..200 => {
                assert_eq!(r.status, Status::OK, "{n}");
                let a = IdentityAnswer::from_bytes(&r.payload).unwrap();
                assert_eq!(a.binding, bulk[n], "{n}");
                assert_eq!(a.revocation.is_some(), n == 7, "{n}");
            }
            200..250 => {
                assert_eq!(r.status, Status::NOT_FOUND, "{n}");
                let why = ErrorDetail::from_bytes(&r.payload).unwrap().message;
                assert!(why.contains("no binding"), "{n}: {why}");
            }
            _ => {
                assert_eq!(r.status, Status::NOT_FOUND, "{n}");
                let why = ErrorDetail::from_bytes(&r.payload).unwrap().message;
                assert!(why.contains("no record"), "{n}: {why}");
            }
        }
    }
    // One call for the first; the 259 that queued in groups of 64.
    assert_eq!(
        lookup.gather_stats(),
        poz_query_gw::lookup::GatherStats {
            calls: 1 + 5,
            lookups: 260,
            queued: 0
        }
    );
}

/// A store that cannot be reached: every lookup, gathered or not, is
/// UNAVAILABLE with the retry hint, never a dropped connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_unavailable_with_a_retry_hint() {
    // A port that was free a moment ago: nothing listens there.
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let channel = poz_kit::Channels::default()
        .lazy(&format!("http://{gone}"))
        .unwrap();
    let pow = PowConfig::default();
    let edge = Edge::new(
        Discipline::default(),
        StaticKeypair::generate(),
        Gate::new(Challenger::new(pow, Secrets(vec![[7; 32]])), 10_000),
        StoreLookup::new(channel),
        Arc::new(LoadMeter::new(pow, LoadTargets::default())),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(edge.serve(l, Port::Plain, std::future::pending()));
    let identity = IdentityQuery {
        domain: "social.example".into(),
        handle: "alice".into(),
    }
    .to_bytes();
    let master = poz::wire::DomainQuery {
        domain: "social.example".into(),
    }
    .to_bytes();
    let asks: Vec<_> = (0..8u16)
        .map(|n| {
            let (t, q) = if n % 2 == 0 {
                (MessageType::IDENTITY, identity.clone())
            } else {
                (MessageType::MASTER, master.clone())
            };
            tokio::spawn(async move { raw_plain(addr, &frame(t, n, q)).await.unwrap() })
        })
        .collect();
    for (n, a) in asks.into_iter().enumerate() {
        let r = a.await.unwrap();
        assert_eq!((r.status, r.request_id as usize), (Status::UNAVAILABLE, n));
        let d = ErrorDetail::from_bytes(&r.payload).unwrap();
        assert_eq!(d.retry_after_ms, poz_query_gw::lookup::STORE_RETRY_MS);
    }
}
