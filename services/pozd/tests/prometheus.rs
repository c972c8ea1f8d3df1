//! Issue 13: pozd's metrics, scraped by a real Prometheus server
//! (Debian's `prometheus`, which the test command installs), show the
//! lookups this test just made, counted by port, type and status.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::codec::Codec;
use poz::noise::{length_prefixed, split_message, NkInitiator};
use poz::wire::{DomainQuery, MessageType, Request, Response, Status};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when the test ends, however it ends.
struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free port for Prometheus (which cannot say which port 0 gave it).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn exchange(addr: SocketAddr, frame: &[u8], key: Option<&[u8; 32]>) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let Some(key) = key else {
        s.write_all(frame).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        return Response::from_bytes(&buf).unwrap();
    };
    let mut client = NkInitiator::new(key).unwrap();
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

fn master(domain: &str) -> Vec<u8> {
    Request::new(
        MessageType::MASTER,
        1,
        DomainQuery {
            domain: domain.into(),
        }
        .to_bytes(),
    )
    .to_bytes()
}

/// GET `path` from an HTTP server, the body as text.
fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    body.to_string()
}

/// The value of the series of `poz_edge_requests_total` with these
/// labels, as Prometheus last scraped it.
fn scraped(prom: SocketAddr, port: &str, status: &str) -> Option<f64> {
    let q = format!(
        "/api/v1/query?query=poz_edge_requests_total%7Bport%3D%22{port}%22%2Ctype%3D%22master%22%2Cstatus%3D%22{status}%22%7D"
    );
    let body: serde_json::Value = serde_json::from_str(&http_get(prom, &q)).unwrap();
    assert_eq!(body["status"], "success", "{body}");
    let result = body["data"]["result"].as_array()?;
    let v = result.first()?["value"][1].as_str()?;
    v.parse().ok()
}

#[test]
fn prometheus_scrapes_pozd_and_finds_its_lookups_counted_by_status() {
    let dir = tempfile::tempdir().unwrap();
    // Port 0 everywhere: pozd binds first and prints what it took.
    let mut pozd = Command::new(env!("CARGO_BIN_EXE_pozd"))
        .arg("--data")
        .arg(dir.path().join("data"))
        .args(["--plain", "127.0.0.1:0"])
        .args(["--noise", "127.0.0.1:0"])
        .args(["--submit", "127.0.0.1:0"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(["--pow-base", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(pozd.stdout.take().unwrap());
    let pozd = Killed(pozd);
    let mut printed = Vec::new();
    loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).unwrap() > 0, "pozd exited early");
        let end = line.contains("--noise-key");
        printed.push(line);
        if end {
            break;
        }
    }
    let banner = poz_testkit::PozdBanner::parse(&printed);
    let (plain, noise, noise_key) = (banner.plain, banner.noise, banner.noise_key);
    let metrics: SocketAddr = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("metrics"))
        .and_then(|m| m.trim().strip_prefix("http://"))
        .and_then(|m| m.strip_suffix("/metrics"))
        .expect("a `metrics http://ADDR/metrics` line")
        .parse()
        .unwrap();

    // 3 found and 2 not found on 7074, 1 found on 7075.
    for _ in 0..3 {
        let r = exchange(plain, &master("demo.example"), None);
        assert_eq!(r.status, Status::OK);
    }
    for _ in 0..2 {
        let r = exchange(plain, &master("nobody.example"), None);
        assert_eq!(r.status, Status::NOT_FOUND);
    }
    let r = exchange(noise, &master("demo.example"), Some(&noise_key));
    assert_eq!(r.status, Status::OK);
    // The endpoint itself, as Prometheus will read it.
    let text = http_get(metrics, "/metrics");
    assert!(
        text.contains(
            "poz_edge_requests_total{port=\"plain\",type=\"master\",status=\"NOT_FOUND\"} 2"
        ),
        "{text}"
    );

    // A real Prometheus, scraping every second.
    let prom_addr = free_addr();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: pozd\n    static_configs:\n      - targets: ['{metrics}']\n"
        ),
    )
    .unwrap();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian's package; the test command installs it)"),
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ready = TcpStream::connect(prom_addr).is_ok();
        let seen = ready.then(|| {
            (
                scraped(prom_addr, "plain", "OK"),
                scraped(prom_addr, "plain", "NOT_FOUND"),
                scraped(prom_addr, "noise-query", "OK"),
            )
        });
        if seen == Some((Some(3.0), Some(2.0), Some(1.0))) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not report the lookups: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(pozd);
}
