//! The `poz-query-gw` binary under a slow-sender flood: 400 connections
//! from 25 addresses, each sending one byte a second and reconnecting
//! whenever the gateway cuts it off. A normal client on another address
//! keeps getting answers, every slow connection is cut within the read
//! timeout, the gateway's memory stays bounded, and SIGTERM drains it.
//! Slow uploaders alone leave the proof-of-work difficulty at its base.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod support;

use poz::codec::Codec;
use poz::wire::{DomainQuery, MessageType};
use poz_client::{Client, ClientConfig, Endpoint, Security};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// One slow sender from `source`: connects, dribbles a valid frame a byte
/// a second; when the gateway closes the connection, notes how long it
/// lasted and starts again, until `until`.
async fn slow_sender(
    source: std::net::Ipv4Addr,
    gw: SocketAddr,
    frame: Vec<u8>,
    until: Instant,
    cut: Arc<AtomicUsize>,
    longest_ms: Arc<AtomicUsize>,
) {
    while Instant::now() < until {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(source.into(), 0)).unwrap();
        let Ok(mut s) = sock.connect(gw).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let opened = Instant::now();
        let mut closed = false;
        for b in frame.iter().take(frame.len() - 1) {
            if s.write_all(&[*b]).await.is_err() {
                closed = true;
                break;
            }
            // Wait a second, or notice the close sooner.
            let mut probe = [0u8; 1];
            match tokio::time::timeout(Duration::from_secs(1), s.read(&mut probe)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed = true;
                    break;
                }
                _ => {}
            }
            if Instant::now() >= until {
                break;
            }
        }
        if closed {
            cut.fetch_add(1, Ordering::Relaxed);
            longest_ms.fetch_max(opened.elapsed().as_millis() as usize, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_senders_do_not_stop_a_normal_client_and_memory_stays_bounded() {
    let s = support::store_with_provider().await;
    let dir = tempfile::tempdir().unwrap();
    let key = poz::noise::StaticKeypair::generate();
    std::fs::write(dir.path().join("noise.key"), hex::encode(key.secret())).unwrap();
    std::fs::write(
        dir.path().join("secrets"),
        format!("{}\n", hex::encode([9u8; 32])),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_poz-query-gw"));
    cmd.args([
        "--insecure",
        "--listen-plain",
        "127.0.0.1:0",
        "--listen-noise",
        "127.0.0.1:0",
    ])
    .args(["--store", &s.url])
    .env("POZ_QUERY_GW_NOISE_KEY_FILE", dir.path().join("noise.key"))
    .env(
        "POZ_QUERY_GW_CHALLENGE_SECRETS_FILE",
        dir.path().join("secrets"),
    )
    .env("POZ_QUERY_GW_READ_TIMEOUT_MS", "3000")
    .env("POZ_QUERY_GW_DRAIN_TIMEOUT_MS", "5000");
    // Tied to this process, its stdin held: the SIGTERM drain below must
    // be what stops it.
    let mut gw = poz_testkit::ServiceProcess::spawn(cmd);
    let line = gw.addr().to_string();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words[..1], ["plain"], "{line}");
    let plain: SocketAddr = words[1].parse().unwrap();
    let noise: SocketAddr = words[3].parse().unwrap();

    let c = Client::new(ClientConfig {
        attempts: 1,
        ..ClientConfig::default()
    });
    let eps = [
        Endpoint {
            addr: plain,
            security: Security::Plain,
        },
        Endpoint {
            addr: noise,
            security: Security::Noise(key.public),
        },
    ];
    for ep in &eps {
        c.master(
            std::slice::from_ref(ep),
            "social.example",
            Some(s.provider.id()),
        )
        .await
        .unwrap();
    }
    let baseline = rss_kib(gw.id());

    let frame = poz::wire::Request::new(
        MessageType::MASTER,
        1,
        DomainQuery {
            domain: "social.example".into(),
        }
        .to_bytes(),
    )
    .to_bytes();
    let until = Instant::now() + Duration::from_secs(8);
    let cut = Arc::new(AtomicUsize::new(0));
    let longest = Arc::new(AtomicUsize::new(0));
    let mut flood = Vec::new();
    for i in 0..400u32 {
        // 25 source addresses, 16 connections each: the per-address cap.
        let source = std::net::Ipv4Addr::new(127, 0, 1, 1 + (i % 25) as u8);
        let gw = if i % 2 == 0 { plain } else { noise };
        flood.push(tokio::spawn(slow_sender(
            source,
            gw,
            frame.clone(),
            until,
            cut.clone(),
            longest.clone(),
        )));
    }
    // The normal client, from 127.0.0.1, all through the flood.
    let mut answered = 0;
    let mut peak = baseline;
    while Instant::now() < until {
        for ep in &eps {
            c.master(
                std::slice::from_ref(ep),
                "social.example",
                Some(s.provider.id()),
            )
            .await
            .unwrap_or_else(|e| panic!("normal client refused during the flood: {e}"));
            answered += 1;
        }
        peak = peak.max(rss_kib(gw.id()));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for t in flood {
        t.await.unwrap();
    }
    eprintln!(
        "normal lookups answered {answered}; slow connections cut {}; longest held {} ms; RSS {baseline} KiB -> peak {peak} KiB",
        cut.load(Ordering::Relaxed),
        longest.load(Ordering::Relaxed)
    );
    assert!(answered >= 40, "{answered}");
    // Every slow connection is cut by the read timeout (3 s), none later.
    assert!(
        cut.load(Ordering::Relaxed) >= 400,
        "{}",
        cut.load(Ordering::Relaxed)
    );
    let longest = longest.load(Ordering::Relaxed);
    assert!(longest <= 4_500, "a slow sender was held {longest} ms");
    // 400 connections cost little; a gateway buffering without bound would
    // not stay within this.
    let growth = peak.saturating_sub(baseline);
    assert!(
        growth < 32 * 1024,
        "RSS grew {growth} KiB (from {baseline} KiB)"
    );

    // SIGTERM: drains and exits 0.
    let status = gw.terminate();
    let log = gw.stderr();
    assert!(status.success(), "{status:?}; stderr:\n{log}");
    assert!(log.contains("poz-query-gw stopped"), "{log}");
}

/// Issue 12 §5: a CHALLENGE (`00 13 07 07 00 00 00`) uploaded in three
/// pieces 0.8 s apart once raised every client's difficulty to 21 (the
/// upload counted as server latency). Several slow uploaders, plain and
/// Noise, each answered; throughout and after, every other client sees the
/// base difficulty and a MASTER without proof is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploaders_leave_the_difficulty_at_base() {
    let s = support::store_with_provider().await;
    let dir = tempfile::tempdir().unwrap();
    let key = poz::noise::StaticKeypair::generate();
    std::fs::write(dir.path().join("noise.key"), hex::encode(key.secret())).unwrap();
    std::fs::write(
        dir.path().join("secrets"),
        format!("{}\n", hex::encode([9u8; 32])),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_poz-query-gw"));
    cmd.args([
        "--insecure",
        "--listen-plain",
        "127.0.0.1:0",
        "--listen-noise",
        "127.0.0.1:0",
    ])
    .args(["--store", &s.url])
    .env("POZ_QUERY_GW_NOISE_KEY_FILE", dir.path().join("noise.key"))
    .env(
        "POZ_QUERY_GW_CHALLENGE_SECRETS_FILE",
        dir.path().join("secrets"),
    );
    let gw = poz_testkit::ServiceProcess::spawn(cmd);
    let words: Vec<&str> = gw.addr().split_whitespace().collect();
    let plain: SocketAddr = words[1].parse().unwrap();
    let noise: SocketAddr = words[3].parse().unwrap();

    let challenge: [u8; 7] = [0x00, 0x13, 0x07, 0x07, 0x00, 0x00, 0x00];
    let pause = Duration::from_millis(800);
    let mut uploads = Vec::new();
    for i in 0..6 {
        let public = key.public;
        uploads.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..2 {
                let r = if i % 2 == 0 {
                    support::raw_plain_pieces(
                        plain,
                        &[&challenge[..2], &challenge[2..5], &challenge[5..]],
                        pause,
                    )
                    .await
                } else {
                    support::raw_noise_pieces(noise, &public, &challenge, 3, pause).await
                };
                answers.push(r.map(|r| (r.status, r.request_id)));
            }
            answers
        }));
    }
    let master = support::frame(
        MessageType::MASTER,
        0x0101,
        DomainQuery {
            domain: "social.example".into(),
        }
        .to_bytes(),
    );
    // About every tuner tick (250 ms) while the uploads go on, and for
    // 1.5 s after the last (the old fault showed a second later).
    let mut after: Option<Instant> = None;
    let mut checks = 0;
    while after.is_none_or(|t| t.elapsed() < Duration::from_millis(1_500)) {
        if after.is_none() && uploads.iter().all(|u| u.is_finished()) {
            after = Some(Instant::now());
        }
        let r = support::raw_plain(
            plain,
            &support::frame(MessageType::CHALLENGE, 2, Vec::new()),
        )
        .await
        .unwrap();
        let c = poz::wire::Challenge::from_bytes(&r.payload).unwrap();
        assert_eq!(c.difficulty, 0, "a slow uploader raised the difficulty");
        let r = support::raw_plain(plain, &master).await.unwrap();
        assert_eq!(r.status, poz::wire::Status::OK, "MASTER without proof");
        checks += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for u in uploads {
        for a in u.await.unwrap() {
            assert_eq!(a, Some((poz::wire::Status::OK, 0x0707)));
        }
    }
    assert!(checks >= 2, "{checks}");
}
