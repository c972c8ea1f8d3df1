//! The query gateway over real sockets, answering from a real store over
//! gRPC: every query type, plain and Noise, verified by the client; port
//! contracts; adaptive proof of work; per-address rate limits.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod support;

use poz::codec::Codec;
use poz::gate::{Gate, Port};
use poz::noise::StaticKeypair;
use poz::pow::{Challenger, Load, LoadTargets, PowConfig, Secrets};
use poz::wire::{
    DomainQuery, IdentityAnswer, IdentityQuery, MessageType, MirrorsAnswer, SerialAnswer, Status,
    ZoneAnswer, ZoneQuery,
};
use poz::zone::ZoneType;
use poz_client::{Client, ClientConfig, ClientError, Endpoint, Security};
use poz_edge::{Discipline, Edge, LoadMeter};
use poz_query_gw::StoreLookup;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::{frame, raw_plain, store_with_provider};

struct Gateway {
    plain: SocketAddr,
    noise: SocketAddr,
    key: StaticKeypair,
    edge: Arc<Edge<StoreLookup>>,
    load: Arc<LoadMeter>,
}

async fn gateway(store_url: &str, discipline: Discipline, pow: PowConfig) -> Gateway {
    let key = StaticKeypair::generate();
    let targets = LoadTargets {
        new_connections_per_s: 1.0,
        in_flight: 1_000.0,
        p99_latency_ms: 10_000.0,
    };
    let load = Arc::new(LoadMeter::new(pow, targets));
    let channel = poz_kit::Channels::default().lazy(store_url).unwrap();
    let edge = Edge::new(
        discipline,
        key.clone(),
        Gate::new(Challenger::new(pow, Secrets(vec![[7; 32]])), 10_000),
        StoreLookup::new(channel),
        load.clone(),
    );
    let mut addrs = Vec::new();
    for port in [Port::Plain, Port::NoiseQuery] {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap());
        tokio::spawn(edge.clone().serve(l, port, std::future::pending()));
    }
    Gateway {
        plain: addrs[0],
        noise: addrs[1],
        key,
        edge,
        load,
    }
}

fn client() -> Client {
    Client::new(ClientConfig {
        attempts: 1,
        max_pow_difficulty: 12,
        ..ClientConfig::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_type_plain_and_noise_verified_by_the_client() {
    let s = store_with_provider().await;
    let g = gateway(&s.url, Discipline::default(), PowConfig::default()).await;
    let c = client();
    let now = poz::sample::T0 + 10_000;
    for ep in [
        Endpoint {
            addr: g.plain,
            security: Security::Plain,
        },
        Endpoint {
            addr: g.noise,
            security: Security::Noise(g.key.public),
        },
    ] {
        let eps = [ep];
        // MASTER, verified from genesis and pinned to the record ID.
        let vr = c
            .master(&eps, "social.example", Some(s.provider.id()))
            .await
            .unwrap();
        assert_eq!(vr.record.master.serial, s.provider.master.serial);
        assert!(!vr.record.zones.contains_key(&ZoneType::IDENTITY));
        // CHAIN for alice: the chain and the binding verify.
        let (_, b) = c
            .chain(&eps, "social.example", "alice", Some(s.provider.id()))
            .await
            .unwrap();
        assert_eq!(b.binding.handle, "alice");
        // SERIAL agrees with what was verified.
        let serial = c.serial(&eps, "social.example").await.unwrap();
        assert_eq!(serial.record_id, s.provider.id());
        assert_eq!(serial.serial, vr.record.master.serial);
        let _: SerialAnswer = serial;
        // IDENTITY: alice's binding, which verifies against the MASTER.
        let q = IdentityQuery {
            domain: "social.example".into(),
            handle: "alice".into(),
        };
        let a = IdentityAnswer::from_bytes(
            &c.request_any(&eps, MessageType::IDENTITY, &q.to_bytes())
                .await
                .unwrap(),
        )
        .unwrap();
        assert!(a.revocation.is_none());
        poz::verify::verify_binding(&vr, &a.binding, now).unwrap();
        // ZONE: the service zone page by page, every entry once.
        let mut after = poz::Hash32::ZERO;
        let mut seen = 0;
        loop {
            let q = ZoneQuery {
                domain: "social.example".into(),
                zone_type: ZoneType::SERVICE,
                after,
                limit: 1,
            };
            let z = ZoneAnswer::from_bytes(
                &c.request_any(&eps, MessageType::ZONE, &q.to_bytes())
                    .await
                    .unwrap(),
            )
            .unwrap();
            for e in &z.entries {
                assert!(vr.record.zones[&ZoneType::SERVICE].entries.contains(e));
            }
            seen += z.entries.len();
            if z.next.is_zero() {
                break;
            }
            after = z.next;
        }
        assert_eq!(seen, vr.record.zones[&ZoneType::SERVICE].entries.len());
        // MIRRORS: none recorded, then what the operator set, in order.
        let q = DomainQuery {
            domain: "social.example".into(),
        };
        let mirrors = || async {
            MirrorsAnswer::from_bytes(
                &c.request_any(&eps, MessageType::MIRRORS, &q.to_bytes())
                    .await
                    .unwrap(),
            )
            .unwrap()
            .hosts
        };
        s.store.set_mirrors(&s.provider.id(), &[]).await.unwrap();
        assert!(mirrors().await.is_empty());
        let pool: Vec<_> = ["m1.example", "m2.example"]
            .iter()
            .map(|name| poz::entries::PoolHost {
                hostname: name.to_string(),
                port: 7075,
                transport: poz::entries::Transport::TCP,
                encryption: poz::entries::Encryption::NOISE_NK,
                server_key: Some([5; 32]),
                ca_key_idx: poz::entries::NO_CA_KEY,
                priority: 10,
                weight: 1,
            })
            .collect();
        let hosts: Vec<Vec<u8>> = pool.iter().rev().map(|h| h.to_bytes()).collect();
        s.store.set_mirrors(&s.provider.id(), &hosts).await.unwrap();
        assert_eq!(
            mirrors().await,
            pool.iter().rev().cloned().collect::<Vec<_>>()
        );
        // Unknown domain and handle: NOT_FOUND.
        for (t, payload) in [
            (
                MessageType::MASTER,
                DomainQuery {
                    domain: "nobody.example".into(),
                }
                .to_bytes(),
            ),
            (
                MessageType::IDENTITY,
                IdentityQuery {
                    domain: "social.example".into(),
                    handle: "nobody".into(),
                }
                .to_bytes(),
            ),
        ] {
            match c.request_any(&eps, t, &payload).await {
                Err(ClientError::Status { status, .. }) => assert_eq!(status, Status::NOT_FOUND),
                other => panic!("{t}: {other:?}"),
            }
        }
    }

    // Port contracts: a submission on 7074 is WRONG_PORT; plaintext on the
    // Noise port is closed without an answer; a garbage payload is
    // BAD_REQUEST naming the field.
    let r = raw_plain(g.plain, &frame(MessageType::SUBMIT_STATUS, 9, vec![0; 32]))
        .await
        .unwrap();
    assert_eq!((r.status, r.request_id), (Status::WRONG_PORT, 9));
    let master = frame(
        MessageType::MASTER,
        10,
        DomainQuery {
            domain: "social.example".into(),
        }
        .to_bytes(),
    );
    assert!(raw_plain(g.noise, &master).await.is_none());
    let r = raw_plain(g.plain, &frame(MessageType::IDENTITY, 11, vec![200]))
        .await
        .unwrap();
    assert_eq!((r.status, r.request_id), (Status::BAD_REQUEST, 11));
    // CHALLENGE is answered on both query ports (plain shown).
    let r = raw_plain(g.plain, &frame(MessageType::CHALLENGE, 12, Vec::new()))
        .await
        .unwrap();
    assert_eq!(r.status, Status::OK);
    assert!(
        g.edge
            .counters
            .answered
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 14
    );
}

/// Overload raises the difficulty by the documented function; the client
/// solves the proof and is answered; a request without one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_raises_the_difficulty_and_the_client_pays_it() {
    let s = store_with_provider().await;
    let pow = PowConfig {
        base: 0,
        cap: 10,
        step: 4,
        window_ms: 60_000,
    };
    let g = gateway(&s.url, Discipline::default(), pow).await;
    assert_eq!(g.load.difficulty(), 0);
    // Four times the target rate of new connections: 0 + ceil(4 × 2) = 8.
    let d = g.load.set_from(&Load {
        new_connections_per_s: 4.0,
        in_flight: 0.0,
        p99_latency_ms: 0.0,
    });
    assert_eq!(d, 8);
    let q = DomainQuery {
        domain: "social.example".into(),
    }
    .to_bytes();
    let r = raw_plain(g.plain, &frame(MessageType::SERIAL, 3, q.clone()))
        .await
        .unwrap();
    assert_eq!(r.status, Status::POW_REQUIRED);
    let c = client();
    let eps = [Endpoint {
        addr: g.plain,
        security: Security::Plain,
    }];
    c.master(&eps, "social.example", Some(s.provider.id()))
        .await
        .unwrap();
    // Far over: capped at 10.
    let d = g.load.set_from(&Load {
        new_connections_per_s: 1e9,
        in_flight: 0.0,
        p99_latency_ms: 0.0,
    });
    assert_eq!(d, 10);
    // Real connections measured by the meter: a burst of lookups is more
    // than 1 new connection per second, the target here.
    g.load.set_from(&Load::default());
    for _ in 0..5 {
        c.serial(&eps, "social.example").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    c.serial(&eps, "social.example").await.unwrap();
    let local = g.load.local();
    assert!(local.new_connections_per_s >= 5.0, "{local:?}");
    assert!(g.load.set_from(&local) > 0);
}

/// An address over its token bucket gets RATE_LIMITED with the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_over_its_rate_is_told_when_to_retry() {
    let s = store_with_provider().await;
    let discipline = Discipline {
        rate_per_ip: 1,
        burst_per_ip: 3,
        ..Discipline::default()
    };
    let g = gateway(&s.url, discipline, PowConfig::default()).await;
    let q = DomainQuery {
        domain: "social.example".into(),
    }
    .to_bytes();
    let mut statuses = Vec::new();
    let mut retry = 0;
    for i in 0..5u16 {
        let r = raw_plain(g.plain, &frame(MessageType::SERIAL, i, q.clone()))
            .await
            .unwrap();
        if r.status == Status::RATE_LIMITED {
            let e = poz::wire::ErrorDetail::from_bytes(&r.payload).unwrap();
            retry = e.retry_after_ms;
            assert_eq!(r.request_id, i);
        }
        statuses.push(r.status);
    }
    assert_eq!(&statuses[..3], &[Status::OK; 3]);
    assert_eq!(&statuses[3..], &[Status::RATE_LIMITED; 2]);
    assert!((1..=1_000).contains(&retry), "{retry}");
}

/// SPEC §15: RATE_LIMITED does not consume a proof. A request refused
/// for its address's rate is retried with the same proof after the hint
/// and admitted; the proof is then spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_request_keeps_its_proof() {
    let s = store_with_provider().await;
    let pow = PowConfig {
        base: 6,
        ..PowConfig::default()
    };
    let discipline = Discipline {
        rate_per_ip: 1,
        burst_per_ip: 1,
        ..Discipline::default()
    };
    let g = gateway(&s.url, discipline, pow).await;
    assert_eq!(g.load.difficulty(), 6);
    let r = raw_plain(g.plain, &frame(MessageType::CHALLENGE, 1, Vec::new()))
        .await
        .unwrap();
    assert_eq!(r.status, Status::OK);
    let c = poz::wire::Challenge::from_bytes(&r.payload).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let sol = poz::pow::solve(&c.challenge, c.difficulty, now, 0, 1 << 24).unwrap();
    let mut req = poz::wire::Request::new(
        MessageType::SERIAL,
        2,
        DomainQuery {
            domain: "social.example".into(),
        }
        .to_bytes(),
    );
    req.pow = Some(sol);
    let r = raw_plain(g.plain, &req.to_bytes()).await.unwrap();
    assert_eq!((r.status, r.request_id), (Status::RATE_LIMITED, 2));
    let wait = poz::wire::ErrorDetail::from_bytes(&r.payload)
        .unwrap()
        .retry_after_ms;
    tokio::time::sleep(Duration::from_millis(wait as u64 + 100)).await;
    let r = raw_plain(g.plain, &req.to_bytes()).await.unwrap();
    assert_eq!((r.status, r.request_id), (Status::OK, 2));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let r = raw_plain(g.plain, &req.to_bytes()).await.unwrap();
    assert_eq!((r.status, r.request_id), (Status::POW_REQUIRED, 2));
    let p = poz::wire::PowRequired::from_bytes(&r.payload).unwrap();
    assert_eq!(p.reason, poz::wire::PowReason::REPLAYED);
}

/// The answer cache: a revocation committed in the store is served at
/// most `ttl` late, never later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_are_at_most_the_ttl_old() {
    let s = store_with_provider().await;
    let key = StaticKeypair::generate();
    let pow = PowConfig::default();
    let channel = poz_kit::Channels::default().lazy(&s.url).unwrap();
    let edge = Edge::new(
        Discipline::default(),
        key,
        Gate::new(Challenger::new(pow, Secrets(vec![[7; 32]])), 10_000),
        StoreLookup::with_cache(channel, Duration::from_millis(400), 1_000),
        Arc::new(LoadMeter::new(pow, LoadTargets::default())),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(edge.serve(l, Port::Plain, std::future::pending()));
    let q = IdentityQuery {
        domain: "social.example".into(),
        handle: "alice".into(),
    }
    .to_bytes();
    let ask = |id: u16| {
        let q = q.clone();
        async move {
            let r = raw_plain(addr, &frame(MessageType::IDENTITY, id, q))
                .await
                .unwrap();
            assert_eq!((r.status, r.request_id), (Status::OK, id));
            IdentityAnswer::from_bytes(&r.payload).unwrap()
        }
    };
    assert!(ask(1).await.revocation.is_none());
    // Revoke alice in the store (device a alone has deny 100).
    let alice = s.provider.zones[&ZoneType::IDENTITY].entries[0].clone();
    let mut rev = poz::workflow::new_revocation(
        alice.identity_digest(&s.provider.id()),
        poz::sample::T0 + 3_000,
        poz::entries::RevocationReason::KEY_COMPROMISE,
    );
    poz::workflow::sign_entry(
        &s.provider,
        ZoneType::IDENTITY,
        &mut rev,
        &poz::sample::provider_keys().device_a,
    )
    .unwrap();
    let started = std::time::Instant::now();
    s.store
        .put_entries(&s.provider.id(), ZoneType::IDENTITY, &[rev.to_bytes()], "")
        .await
        .unwrap();
    // Within the TTL the cached answer may still be served (with this
    // request's id); after it, the revocation is there.
    let soon = ask(2).await;
    if started.elapsed() < Duration::from_millis(300) {
        assert!(soon.revocation.is_none(), "served from the cache");
    }
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(ask(3).await.revocation, Some(rev));
}
