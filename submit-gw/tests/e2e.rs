//! The submit gateway over real sockets (Noise NK on its port), with the
//! real store (SQLite) and verifier over gRPC, next to a query gateway on
//! the same store: a submitted master-zone update is acknowledged only
//! once committed and is what a lookup returns afterwards; a stale or
//! forged update, a record of another domain and plaintext are refused;
//! a submitted entry lands in its zone.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::codec::Codec;
use poz::gate::{Gate, Port};
use poz::noise::StaticKeypair;
use poz::pow::{Challenger, LoadTargets, PowConfig, Secrets};
use poz::sample::{self, T0};
use poz::wire::{Status, SubmissionState, SubmitSigned};
use poz::zone::{EntryKind, SignedEntry, ZoneType};
use poz::{workflow, Record};
use poz_client::{Client, ClientConfig, ClientError, Endpoint, Security};
use poz_edge::{Discipline, Edge, LoadMeter};
use poz_proto::v1 as pb;
use poz_query_gw::StoreLookup;
use poz_submit_gw::{BindingRequests, Policy, SignedSubmissions, Submissions};
use std::net::SocketAddr;
use std::sync::Arc;

struct Fleet {
    /// The store and verifier, gRPC.
    grpc: String,
    submit: SocketAddr,
    query: SocketAddr,
    key: StaticKeypair,
    provider: Record,
    _dir: tempfile::TempDir,
}

async fn fleet() -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
    let store = poz_store::Store::open(&url, poz_store::StoreOptions::default())
        .await
        .unwrap();
    let provider = sample::provider().unwrap();
    let genesis = Record::new(provider.keys.clone(), provider.history[0].clone());
    store
        .create_record(&genesis.to_bytes(), &["social.example".into()], "")
        .await
        .unwrap();
    store
        .advance_head(&provider.to_bytes(), 1, "")
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::store_read_server::StoreReadServer::new(
                poz_store::grpc::StoreReader {
                    store: store.clone(),
                },
            ))
            .add_service(pb::store_write_server::StoreWriteServer::new(
                poz_store::grpc::StoreWriter { store },
            ))
            .add_service(pb::verifier_server::VerifierServer::new(
                poz_verifier::VerifierService::default(),
            ))
            .serve_with_incoming(poz_kit::incoming(listener)),
    );
    let channel = poz_kit::Channels::default()
        .lazy(&format!("http://{addr}"))
        .unwrap();
    let key = StaticKeypair::generate();
    let pow = PowConfig::default();
    let gate = || Gate::new(Challenger::new(pow, Secrets(vec![[1; 32]])), 10_000);
    let load = || Arc::new(LoadMeter::new(pow, LoadTargets::default()));
    let submit = Edge::new(
        Discipline::default(),
        key.clone(),
        gate(),
        Submissions {
            signed: SignedSubmissions::new(channel.clone(), channel.clone()),
            requests: Some(BindingRequests::new(channel.clone(), None, Policy::Queue)),
            hosting: None,
        },
        load(),
    );
    let query = Edge::new(
        Discipline::default(),
        key.clone(),
        gate(),
        StoreLookup::new(channel),
        load(),
    );
    let ls = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let lq = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (submit_addr, query_addr) = (ls.local_addr().unwrap(), lq.local_addr().unwrap());
    tokio::spawn(submit.serve(ls, Port::NoiseSubmit, std::future::pending()));
    tokio::spawn(query.serve(lq, Port::Plain, std::future::pending()));
    Fleet {
        grpc: format!("http://{addr}"),
        submit: submit_addr,
        query: query_addr,
        key,
        provider,
        _dir: dir,
    }
}

fn status_of(r: Result<poz::wire::SubmitTicket, ClientError>) -> Status {
    match r {
        Err(ClientError::Status { status, .. }) => status,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitted_update_is_committed_then_served_and_bad_ones_are_refused() {
    let f = fleet().await;
    let c = Client::new(ClientConfig {
        attempts: 1,
        ..ClientConfig::default()
    });
    let submit = [Endpoint {
        addr: f.submit,
        security: Security::Noise(f.key.public),
    }];
    let query = [Endpoint {
        addr: f.query,
        security: Security::Plain,
    }];
    let keys = sample::provider_keys();

    // Serial 3: a new identity device key, signed by the master key.
    let mut next = workflow::draft(&f.provider, T0 + 5_000).unwrap();
    workflow::set_delegation_key(
        &mut next,
        ZoneType::IDENTITY,
        sample::key(77).public(),
        0,
        50,
        100,
    )
    .unwrap();
    workflow::sign_draft(&mut next, &keys.master).unwrap();
    workflow::apply(&mut next).unwrap();
    let update = SubmitSigned::Record {
        domain: "social.example".into(),
        record: next.to_bytes(),
    };
    let ticket = c.submit_signed(&submit, &update).await.unwrap();
    assert_eq!(ticket.state, SubmissionState::COMMITTED);
    // Visible to a lookup afterwards.
    let served = c
        .master(&query, "social.example", Some(f.provider.id()))
        .await
        .unwrap();
    assert_eq!(served.record.master.serial, 3);
    assert_eq!(
        served.record.master.current_master_hash,
        next.master.current_master_hash
    );
    // The same submission again: the same ticket (idempotent).
    assert_eq!(c.submit_signed(&submit, &update).await.unwrap(), ticket);

    // Stale: the old serial 2 record again is not the head's successor.
    let stale = SubmitSigned::Record {
        domain: "social.example".into(),
        record: {
            let mut other = workflow::draft(&f.provider, T0 + 6_000).unwrap();
            workflow::sign_draft(&mut other, &keys.master).unwrap();
            workflow::apply(&mut other).unwrap();
            other.to_bytes()
        },
    };
    assert_eq!(
        status_of(c.submit_signed(&submit, &stale).await),
        Status::CONFLICT
    );
    // Forged: serial 4 signed by a key that is not a master key.
    let mut forged = workflow::draft(&next, T0 + 7_000).unwrap();
    forged
        .master
        .signatures
        .push(sample::key(99).sign(0, &poz::Hash32([5; 32])));
    forged.master.current_master_hash = poz::Hash32([6; 32]);
    let forged = SubmitSigned::Record {
        domain: "social.example".into(),
        record: forged.to_bytes(),
    };
    let s = status_of(c.submit_signed(&submit, &forged).await);
    assert!(
        matches!(s, Status::UNAUTHORIZED | Status::BAD_REQUEST),
        "{s}"
    );
    // Another record for this domain; an unknown domain.
    let tour = sample::tour_record().unwrap();
    let wrong = SubmitSigned::Record {
        domain: "social.example".into(),
        record: tour.to_bytes(),
    };
    assert_eq!(
        status_of(c.submit_signed(&submit, &wrong).await),
        Status::BAD_REQUEST
    );
    let unknown = SubmitSigned::Record {
        domain: "nobody.example".into(),
        record: next.to_bytes(),
    };
    assert_eq!(
        status_of(c.submit_signed(&submit, &unknown).await),
        Status::NOT_FOUND
    );
    // Nothing of that changed what is served.
    let served = c.serial(&query, "social.example").await.unwrap();
    assert_eq!(served.serial, 3);

    // A signed feed entry lands in the feed zone.
    let feed = poz::entries::FeedEntry {
        name: "second".into(),
        feed_service: poz::Hash32([2; 32]),
    };
    let mut e = SignedEntry::new(EntryKind::GRANT, feed.to_bytes());
    workflow::sign_entry(&next, ZoneType::FEED, &mut e, &keys.zones).unwrap();
    let sub = SubmitSigned::Entry {
        domain: "social.example".into(),
        zone_type: ZoneType::FEED,
        entry: e.clone(),
    };
    assert_eq!(
        c.submit_signed(&submit, &sub).await.unwrap().state,
        SubmissionState::COMMITTED
    );
    let q = poz::wire::ZoneQuery {
        domain: "social.example".into(),
        zone_type: ZoneType::FEED,
        after: poz::Hash32::ZERO,
        limit: 100,
    };
    let z = poz::wire::ZoneAnswer::from_bytes(
        &c.request_any(&query, poz::wire::MessageType::ZONE, &q.to_bytes())
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(z.entries.contains(&e));
    // An entry signed by a key without the zone's delegation: refused.
    let mut bad = SignedEntry::new(EntryKind::GRANT, feed.to_bytes());
    bad.add_signature(sample::key(55).sign(0, &poz::Hash32([1; 32])));
    let sub = SubmitSigned::Entry {
        domain: "social.example".into(),
        zone_type: ZoneType::FEED,
        entry: bad,
    };
    assert_eq!(
        status_of(c.submit_signed(&submit, &sub).await),
        Status::UNAUTHORIZED
    );

    // Port contract: a lookup on the submit port is WRONG_PORT.
    match c
        .request_any(
            &submit,
            poz::wire::MessageType::SERIAL,
            &poz::wire::DomainQuery {
                domain: "social.example".into(),
            }
            .to_bytes(),
        )
        .await
    {
        Err(ClientError::Status { status, .. }) => assert_eq!(status, Status::WRONG_PORT),
        other => panic!("{other:?}"),
    }
}

/// The `poz-submit-gw` binary: configured by flags and environment,
/// commits a submitted update, refuses a bad configuration, drains on
/// SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_commits_a_submission_and_stops_cleanly() {
    use std::process::Command;
    let f = fleet().await;
    let dir = tempfile::tempdir().unwrap();
    let key = StaticKeypair::generate();
    std::fs::write(dir.path().join("noise.key"), hex::encode(key.secret())).unwrap();
    std::fs::write(dir.path().join("secrets"), hex::encode([4u8; 32])).unwrap();
    let bin = env!("CARGO_BIN_EXE_poz-submit-gw");
    let refused = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--store", "127.0.0.1:1"])
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is not an http(s):// URL"),
        "{refused:?}"
    );
    // Tied to this process: it exits when the test ends however it ends.
    let mut cmd = Command::new(bin);
    cmd.args([
        "--insecure",
        "--listen",
        "127.0.0.1:0",
        "--store",
        &f.grpc,
        "--verifier",
        &f.grpc,
    ])
    .env("POZ_SUBMIT_GW_NOISE_KEY_FILE", dir.path().join("noise.key"))
    .env(
        "POZ_SUBMIT_GW_CHALLENGE_SECRETS_FILE",
        dir.path().join("secrets"),
    );
    let mut gw = poz_testkit::ServiceProcess::spawn(cmd);
    let addr: SocketAddr = gw.addr().parse().unwrap();
    let keys = sample::provider_keys();
    let mut next = workflow::draft(&f.provider, T0 + 5_000).unwrap();
    workflow::sign_draft(&mut next, &keys.master).unwrap();
    workflow::apply(&mut next).unwrap();
    let c = Client::new(ClientConfig {
        attempts: 1,
        ..ClientConfig::default()
    });
    let ticket = c
        .submit_signed(
            &[Endpoint {
                addr,
                security: Security::Noise(key.public),
            }],
            &SubmitSigned::Record {
                domain: "social.example".into(),
                record: next.to_bytes(),
            },
        )
        .await
        .unwrap();
    assert_eq!(ticket.state, SubmissionState::COMMITTED);
    let served = c
        .serial(
            &[Endpoint {
                addr: f.query,
                security: Security::Plain,
            }],
            "social.example",
        )
        .await
        .unwrap();
    assert_eq!(served.serial, 3);
    // SIGTERM: the drain, then a clean exit.
    let status = gw.terminate();
    assert!(status.success(), "{status:?}; stderr:\n{}", gw.stderr());
    assert!(
        gw.stderr().contains("poz-submit-gw stopped"),
        "{}",
        gw.stderr()
    );
}

/// One Noise NK exchange on 7076 with `frame` as the request, its message
/// sent in two writes 0.3 s apart: (status, request id).
async fn raw_noise(addr: SocketAddr, key: &[u8; 32], frame: &[u8]) -> (Status, u16) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut client = poz::noise::NkInitiator::new(key).unwrap();
    let msg = poz::noise::length_prefixed(&client.write_request(frame).unwrap());
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(&msg[..1]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    s.write_all(&msg[1..]).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let (m, _) = poz::noise::split_message(&buf).unwrap();
    let r = client.read_message(m).unwrap().unwrap();
    (r.status, r.request_id)
}

/// Issue 12 §6 on the submit port: frame errors inside Noise echo the
/// request id whenever it arrived; payload rules per type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_errors_on_the_submit_port_echo_the_request_id() {
    let f = fleet().await;
    let k = &f.key.public;
    let mut v1 = vec![0x01, 0x01, 0x12, 0x34, 0x00, 0x00, 0x0d, 12];
    v1.extend_from_slice(b"demo.example");
    let mut with_pow = vec![0x00, 0x22, 0x43, 0x21, 0x01];
    with_pow.extend_from_slice(&[0x5A; 32]);
    with_pow.extend_from_slice(&[0xff, 0xff]);
    let mut status_15 = vec![0x00, 0x22, 0x0c, 0x0c, 0x00, 0x00, 0x0f];
    status_15.extend_from_slice(&[0; 15]);
    let mut status_17 = vec![0x00, 0x22, 0x0d, 0x0d, 0x00, 0x00, 0x11];
    status_17.extend_from_slice(&[0; 17]);
    let cases: [(&[u8], Status, u16); 7] = [
        (&v1, Status::UNSUPPORTED_VERSION, 0x1234),
        (&[0x01], Status::UNSUPPORTED_VERSION, 0),
        (
            &[0x00, 0x01, 0x43, 0x21, 0x00, 0xff, 0xff],
            Status::TOO_LARGE,
            0x4321,
        ),
        (&with_pow, Status::TOO_LARGE, 0x4321),
        (
            &[0x00, 0x13, 0x07, 0x07, 0x00, 0x00, 0x01, 0x00],
            Status::WRONG_PORT,
            0x0707,
        ),
        (&status_15, Status::BAD_REQUEST, 0x0c0c),
        (&status_17, Status::BAD_REQUEST, 0x0d0d),
    ];
    for (frame, status, id) in cases {
        assert_eq!(
            raw_noise(f.submit, k, frame).await,
            (status, id),
            "{frame:02x?}"
        );
    }
}
