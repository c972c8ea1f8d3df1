//! pozd's three ports share one proof-of-work replay guard: a proof spent
//! on 7074 is refused on 7075 and 7076 (SPEC §15, issue 12 §4). And its
//! ports answer frame errors with the request id whenever it arrived
//! (SPEC §14.2, issue 12 §6).
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::codec::Codec;
use poz::noise::{length_prefixed, split_message, NkInitiator};
use poz::wire::{
    Challenge, DomainQuery, MessageType, PowReason, PowRequired, Request, Response, Status,
};
use poz_testkit::{PozdBanner, ServiceProcess};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

/// A running pozd, tied to this process and killed on drop (before its
/// data directory goes).
struct Pozd {
    _process: ServiceProcess,
    plain: SocketAddr,
    noise: SocketAddr,
    noise_key: [u8; 32],
    submit: SocketAddr,
    submit_key: [u8; 32],
    _dir: tempfile::TempDir,
}

fn start(pow_base: u8) -> Pozd {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pozd"));
    // Port 0: pozd binds first and says which ports it took.
    cmd.arg("--data")
        .arg(&data)
        .args(["--plain", "127.0.0.1:0"])
        .args(["--noise", "127.0.0.1:0"])
        .args(["--submit", "127.0.0.1:0"])
        .args(["--pow-base", &pow_base.to_string()]);
    // Its banner ends with the pozctl command that names --noise-key.
    let process = ServiceProcess::spawn_until(cmd, poz_testkit::START_TIMEOUT, |line| {
        line.contains("--noise-key")
    });
    let banner = PozdBanner::parse(process.printed());
    Pozd {
        _process: process,
        plain: banner.plain,
        noise: banner.noise,
        noise_key: banner.noise_key,
        submit: banner.submit,
        submit_key: banner.submit_key,
        _dir: dir,
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// A plain exchange, the request written in `pieces` 0.3 s apart.
fn plain(addr: SocketAddr, pieces: &[&[u8]]) -> Response {
    let mut s = connect(addr);
    for (i, p) in pieces.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
        s.write_all(p).unwrap();
    }
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    Response::from_bytes(&buf).unwrap()
}

fn noise(addr: SocketAddr, key: &[u8; 32], frame: &[u8]) -> Response {
    let mut client = NkInitiator::new(key).unwrap();
    let mut s = connect(addr);
    s.write_all(&length_prefixed(&client.write_request(frame).unwrap()))
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let mut rest = &buf[..];
    loop {
        let (m, used) = split_message(rest).expect("a whole response");
        if let Some(r) = client.read_message(m).unwrap() {
            return r;
        }
        rest = &rest[used..];
    }
}

fn replayed(r: &Response) -> bool {
    r.status == Status::POW_REQUIRED
        && PowRequired::from_bytes(&r.payload).unwrap().reason == PowReason::REPLAYED
}

#[test]
fn a_proof_spent_on_one_port_is_refused_on_the_others() {
    let p = start(8);
    let c = plain(
        p.plain,
        &[&Request::new(MessageType::CHALLENGE, 1, vec![]).to_bytes()],
    );
    let c = Challenge::from_bytes(&c.payload).unwrap();
    assert!(c.difficulty >= 8, "{}", c.difficulty);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let sol = poz::pow::solve(&c.challenge, c.difficulty, now, 0, 1 << 26).unwrap();
    let mut master = Request::new(
        MessageType::MASTER,
        2,
        DomainQuery {
            domain: "demo.example".into(),
        }
        .to_bytes(),
    );
    master.pow = Some(sol);
    // Spent on 7074.
    let r = plain(p.plain, &[&master.to_bytes()]);
    assert_eq!((r.status, r.request_id), (Status::OK, 2));
    // Refused on 7076, as a submission status query...
    let mut status = Request::new(MessageType::SUBMIT_STATUS, 3, vec![0; 16]);
    status.pow = Some(sol);
    let r = noise(p.submit, &p.submit_key, &status.to_bytes());
    assert!(replayed(&r), "7076: {:?}", r.status);
    assert_eq!(r.request_id, 3);
    // ... on 7075, and again on 7074.
    let r = noise(p.noise, &p.noise_key, &master.to_bytes());
    assert!(replayed(&r), "7075: {:?}", r.status);
    let r = plain(p.plain, &[&master.to_bytes()]);
    assert!(replayed(&r), "7074: {:?}", r.status);
}

#[test]
fn frame_errors_echo_the_request_id_on_every_port() {
    let p = start(0);
    let mut rest = vec![0x01, 0x12, 0x34, 0x00, 0x00, 0x0d, 12];
    rest.extend_from_slice(b"demo.example");
    let r = plain(p.plain, &[&[0x01], &rest]);
    assert_eq!(
        (r.status, r.request_id),
        (Status::UNSUPPORTED_VERSION, 0x1234)
    );
    let too_large = [0x00, 0x01, 0x43, 0x21, 0x00, 0xff, 0xff];
    let r = plain(p.plain, &[&too_large]);
    assert_eq!((r.status, r.request_id), (Status::TOO_LARGE, 0x4321));
    let r = noise(p.noise, &p.noise_key, &too_large);
    assert_eq!((r.status, r.request_id), (Status::TOO_LARGE, 0x4321));
    let r = noise(p.submit, &p.submit_key, &too_large);
    assert_eq!((r.status, r.request_id), (Status::TOO_LARGE, 0x4321));
    let challenge_with_a_byte = [0x00, 0x13, 0x07, 0x07, 0x00, 0x00, 0x01, 0x00];
    let r = plain(p.plain, &[&challenge_with_a_byte]);
    assert_eq!((r.status, r.request_id), (Status::BAD_REQUEST, 0x0707));
    let r = noise(p.noise, &p.noise_key, &challenge_with_a_byte);
    assert_eq!((r.status, r.request_id), (Status::BAD_REQUEST, 0x0707));
}
