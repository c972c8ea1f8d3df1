//! Two `poz-query-gw` processes sharing one Redis (a throwaway
//! `redis-server` on a free port): load on one raises the difficulty of
//! both; with Redis stopped, each falls back to its own load, so the
//! loaded one stays protected and the idle one drops to the base. A proof
//! of work spent at one is refused at the other (once per fleet, SPEC
//! §15); with Redis stopped, each still refuses its own replays.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod support;

use poz::codec::Codec;
use poz::wire::{
    Challenge, DomainQuery, MessageType, PowReason, PowRequired, Request, Response, Status,
};
use poz_testkit::ServiceProcess;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A process spawned with `poz_kit::tie_to_parent`: it ends when its
/// stdin closes, so it dies with this test process however that ends.
/// Dropping it closes the pipe and reaps the process (killed if it has
/// not gone after 10 s).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn redis_server() -> (Killed, String) {
    let bin = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect(
            "redis-server is not installed (apt-get install redis-server; deploy/test.sh does it)",
        );
    for _ in 0..20 {
        let port = free_port();
        // redis-server cannot watch its stdin: a shell does it for it and
        // stops it when this process's end of the pipe closes.
        let child = poz_kit::tie_to_parent(&mut Command::new("sh"))
            .args([
                "-c",
                "\"$0\" \"$@\" & pid=$!; cat >/dev/null; kill $pid; wait $pid",
                bin,
            ])
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let child = Killed(child);
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (child, format!("redis://127.0.0.1:{port}/0"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("redis-server did not start");
}

fn gateway(
    store: &str,
    redis: &str,
    id: &str,
    dir: &std::path::Path,
) -> (ServiceProcess, SocketAddr) {
    gateway_with(store, redis, id, dir, &[])
}

/// A gateway with settings `env` over the defaults below.
fn gateway_with(
    store: &str,
    redis: &str,
    id: &str,
    dir: &std::path::Path,
    env: &[(&str, &str)],
) -> (ServiceProcess, SocketAddr) {
    let key = poz::noise::StaticKeypair::generate();
    let key_file = dir.join(format!("{id}.key"));
    std::fs::write(&key_file, hex::encode(key.secret())).unwrap();
    let secrets = dir.join("secrets");
    std::fs::write(&secrets, format!("{}\n", hex::encode([3u8; 32]))).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_poz-query-gw"));
    cmd.args([
        "--insecure",
        "--listen-plain",
        "127.0.0.1:0",
        "--listen-noise",
        "127.0.0.1:0",
    ])
    .args(["--store", store, "--redis-url", redis, "--gateway-id", id])
    .env("POZ_QUERY_GW_NOISE_KEY_FILE", &key_file)
    .env("POZ_QUERY_GW_CHALLENGE_SECRETS_FILE", &secrets)
    .env("POZ_QUERY_GW_TARGET_NEW_CONNECTIONS_PER_S", "5")
    .env("POZ_QUERY_GW_POW_CAP", "12")
    .env("POZ_QUERY_GW_RATE_PER_IP", "1000")
    .env("POZ_QUERY_GW_BURST_PER_IP", "1000")
    .env("POZ_QUERY_GW_LOAD_TTL_MS", "1500")
    .envs(env.iter().copied());
    let gw = ServiceProcess::spawn(cmd);
    // "listening plain ADDR noise ADDR"
    let plain = gw
        .addr()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    (gw, plain)
}

async fn difficulty(gw: SocketAddr) -> u8 {
    let r = support::raw_plain(gw, &support::frame(MessageType::CHALLENGE, 1, Vec::new()))
        .await
        .unwrap();
    assert_eq!(r.status, Status::OK);
    Challenge::from_bytes(&r.payload).unwrap().difficulty
}

/// Waits until `want` holds for the difficulty of `gw`, or panics.
async fn until_difficulty(gw: SocketAddr, what: &str, want: impl Fn(u8) -> bool) -> u8 {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let d = difficulty(gw).await;
        if want(d) {
            return d;
        }
        assert!(Instant::now() < until, "{what}: difficulty stayed {d}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_load_through_redis_and_fall_back_without_it() {
    let s = support::store_with_provider().await;
    let dir = tempfile::tempdir().unwrap();
    let (redis, url) = redis_server();
    let (_a, a) = gateway(&s.url, &url, "gw-a", dir.path());
    let (_b, b) = gateway(&s.url, &url, "gw-b", dir.path());
    assert_eq!(difficulty(a).await, 0);
    assert_eq!(difficulty(b).await, 0);

    // Synthetic load on A only: about 50 new connections a second, ten
    // times what a gateway is sized for (5/s here); the fleet of two is
    // sized for 10/s, so both see an overload of about 5.
    let load = tokio::spawn(async move {
        loop {
            let _ =
                support::raw_plain(a, &support::frame(MessageType::CHALLENGE, 2, Vec::new())).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let db = until_difficulty(b, "idle gateway B under the fleet's load", |d| d >= 8).await;
    let da = difficulty(a).await;
    assert!(da >= 8, "A {da}");
    eprintln!("shared: A {da}, B {db}");

    // Redis stops: each gateway falls back to its own load. A stays
    // protected by its own overload; B, idle, returns to the base.
    drop(redis);
    let db = until_difficulty(b, "B after Redis stopped", |d| d == 0).await;
    let da = until_difficulty(a, "A after Redis stopped", |d| d >= 8).await;
    eprintln!("local: A {da}, B {db}");
    load.abort();
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A MASTER lookup of `social.example` carrying a fresh proof for the
/// challenge `gw` hands out now.
async fn lookup_with_fresh_proof(gw: SocketAddr, id: u16) -> Vec<u8> {
    let r = support::raw_plain(gw, &support::frame(MessageType::CHALLENGE, id, Vec::new()))
        .await
        .unwrap();
    let c = Challenge::from_bytes(&r.payload).unwrap();
    assert!(c.difficulty > 0);
    let sol = poz::pow::solve(&c.challenge, c.difficulty, now_ms(), 0, 1 << 24).unwrap();
    let mut req = Request::new(
        MessageType::MASTER,
        id,
        DomainQuery {
            domain: "social.example".into(),
        }
        .to_bytes(),
    );
    req.pow = Some(sol);
    req.to_bytes()
}

fn replayed(r: &Response) -> bool {
    r.status == Status::POW_REQUIRED
        && PowRequired::from_bytes(&r.payload).unwrap().reason == PowReason::REPLAYED
}

/// Issue 12 §4: a proof spent on a MASTER lookup at one gateway was
/// admitted again at another sharing the challenge secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_is_spent_once_in_the_fleet_and_once_per_gateway_without_redis() {
    let s = support::store_with_provider().await;
    let dir = tempfile::tempdir().unwrap();
    let (redis, url) = redis_server();
    // Every request needs a proof, at a difficulty load does not change.
    let pow = [
        ("POZ_QUERY_GW_POW_BASE", "8"),
        ("POZ_QUERY_GW_POW_CAP", "8"),
        ("POZ_QUERY_GW_CACHE_TTL_MS", "0"),
    ];
    let (_a, a) = gateway_with(&s.url, &url, "gw-a", dir.path(), &pow);
    let (_b, b) = gateway_with(&s.url, &url, "gw-b", dir.path(), &pow);

    let lookup = lookup_with_fresh_proof(a, 7).await;
    let r = support::raw_plain(a, &lookup).await.unwrap();
    assert_eq!((r.status, r.request_id), (Status::OK, 7));
    let r = support::raw_plain(b, &lookup).await.unwrap();
    assert!(replayed(&r), "the other gateway: {:?}", r.status);
    assert_eq!(r.request_id, 7);
    let r = support::raw_plain(a, &lookup).await.unwrap();
    assert!(replayed(&r), "the same gateway: {:?}", r.status);

    // Two gateways racing on one proof: exactly one admits it (one atomic
    // SET NX in Redis), whichever gets there first.
    for id in 100..110u16 {
        let lookup = lookup_with_fresh_proof(a, id).await;
        let (ra, rb) = tokio::join!(
            support::raw_plain(a, &lookup),
            support::raw_plain(b, &lookup)
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let ok = [&ra, &rb].iter().filter(|r| r.status == Status::OK).count();
        let refused = [&ra, &rb].iter().filter(|r| replayed(r)).count();
        assert_eq!((ok, refused), (1, 1), "{:?} {:?}", ra.status, rb.status);
    }

    // Redis stops: each gateway's own guard still refuses a replay there.
    drop(redis);
    let lookup = lookup_with_fresh_proof(a, 9).await;
    let r = support::raw_plain(a, &lookup).await.unwrap();
    assert_eq!((r.status, r.request_id), (Status::OK, 9));
    let r = support::raw_plain(a, &lookup).await.unwrap();
    assert!(
        replayed(&r),
        "the same gateway without Redis: {:?}",
        r.status
    );
}
