//! IDENTITY lookups that arrive while the store is busy go to it together,
//! in one LookupBindings call per group, and each client still gets its
//! own answer: found, revoked or not found, with its own request id.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod support;

use poz::codec::Codec;
use poz::gate::{Gate, Port};
use poz::noise::StaticKeypair;
use poz::pow::{CapacityPolicy, Challenger, LoadTargets, PowConfig, Secrets};
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

/// `store` served over gRPC behind [`Held`]: its address, and the switch
/// that opens it (closed at first).
async fn held_store(store: &poz_store::Store) -> (std::net::SocketAddr, watch::Sender<bool>) {
    let (open_tx, open) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store_addr = listener.local_addr().unwrap();
    let svc = poz_store::grpc::StoreReader {
        store: store.clone(),
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
    (store_addr, open_tx)
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
    let (store_addr, open_tx) = held_store(&s.store).await;

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

/// Issue 15, capacity-driven proof of work. Honest load the gateway keeps
/// up with pays none, however many connections it opens; an overload it
/// cannot serve (the store held, so every slot is taken and lookups wait
/// for one) raises the difficulty a step per tick, and a client that does
/// not solve is asked to; once the store answers again and the queue has
/// drained, calm brings it back to base step by step. The meter is driven
/// by the held store, and the tuner ticked here with its own clock (one
/// second a tick): nothing depends on how fast this machine is. The p99
/// budget is off here (it is the one timing signal; unit-tested in
/// `poz::pow`), and so are the caps (the defaults).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_load_pays_no_pow_and_an_overload_the_gateway_cannot_serve_raises_it() {
    const SLOTS: usize = 8;
    let s = store_with_provider().await;
    let (store_addr, open_tx) = held_store(&s.store).await;
    open_tx.send(true).unwrap();
    let channel = poz_kit::Channels::default()
        .lazy(&format!("http://{store_addr}"))
        .unwrap();
    let lookup = StoreLookup::new(channel).gathering(64, 1);
    let pow = PowConfig::default();
    let meter = Arc::new(
        LoadMeter::new(pow, LoadTargets::default()).with_policy(CapacityPolicy {
            p99_budget_ms: 0.0,
            ..CapacityPolicy::default()
        }),
    );
    let edge = Edge::new(
        Discipline {
            max_connections_per_ip: 1_000,
            rate_per_ip: 10_000,
            burst_per_ip: 10_000,
            max_lookups: SLOTS,
            // Nothing is shed while the store is held: the overload shows
            // as requests waiting for a slot.
            queue_wait: Duration::from_secs(600),
            ..Discipline::default()
        },
        StaticKeypair::generate(),
        Gate::new(Challenger::new(pow, Secrets(vec![[7; 32]])), 10_000),
        lookup.clone(),
        meter.clone(),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(edge.serve(l, Port::Plain, std::future::pending()));
    let alice = |n: u16| {
        let q = IdentityQuery {
            domain: "social.example".into(),
            handle: "alice".into(),
        };
        frame(MessageType::IDENTITY, n, q.to_bytes())
    };
    let ask = |n: u16| {
        let f = alice(n);
        tokio::spawn(async move { raw_plain(addr, &f).await.unwrap() })
    };
    let mut clock = std::time::Instant::now();
    let mut tick = {
        let meter = meter.clone();
        move || {
            clock += Duration::from_secs(1);
            meter.tune_local(clock)
        }
    };

    // Honest load: 25 waves of a full set of slots each, 200 new
    // connections, every lookup answered at once. No proof, ever.
    for wave in 0..25u16 {
        let answers: Vec<_> = (0..SLOTS as u16).map(|i| ask(wave * 100 + i)).collect();
        for a in answers {
            assert_eq!(a.await.unwrap().status, Status::OK);
        }
        assert_eq!(tick(), 0, "wave {wave}");
    }
    assert_eq!((meter.shed_total(), meter.waiting()), (0, 0));

    // The store stops answering: every slot is taken, and the gateway,
    // still keeping up (nothing waits yet), asks nothing.
    open_tx.send(false).unwrap();
    let held: Vec<_> = (0..SLOTS as u16).map(|i| ask(5_000 + i)).collect();
    wait_until("every slot taken", || meter.in_flight() == SLOTS as u64).await;
    assert_eq!(tick(), 0, "busy is not overload");
    // More than it can serve: lookups wait for a slot. A step a tick.
    let waiting: Vec<_> = (0..2 * SLOTS as u16).map(|i| ask(6_000 + i)).collect();
    wait_until("lookups waiting for a slot", || {
        meter.waiting() == 2 * SLOTS as u64
    })
    .await;
    assert_eq!(tick(), pow.step);
    assert_eq!(tick(), 2 * pow.step);
    assert_eq!(tick(), 3 * pow.step);
    let r = raw_plain(addr, &alice(7_000)).await.unwrap();
    assert_eq!(
        r.status,
        Status::POW_REQUIRED,
        "a client that does not solve"
    );
    // Capped.
    for _ in 0..10 {
        tick();
    }
    assert_eq!(meter.difficulty(), pow.cap);

    // The store answers again: everyone who waited is served (none shed),
    // and once the queue has drained the difficulty comes back a step per
    // five calm seconds (the default pace), to base.
    open_tx.send(true).unwrap();
    for a in held.into_iter().chain(waiting) {
        assert_eq!(a.await.unwrap().status, Status::OK);
    }
    assert_eq!(
        (meter.in_flight(), meter.waiting(), meter.shed_total()),
        (0, 0, 0)
    );
    let mut seen = vec![meter.difficulty()];
    for _ in 0..60 {
        let d = tick();
        if seen.last() != Some(&d) {
            seen.push(d);
        }
        if d == pow.base {
            break;
        }
    }
    assert_eq!(seen, [24, 20, 16, 12, 8, 4, 0]);
    let r = raw_plain(addr, &alice(7_001)).await.unwrap();
    assert_eq!(r.status, Status::OK);
}
