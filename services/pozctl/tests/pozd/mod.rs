//! pozd for pozctl's tests over real sockets (journey, audit, login): the
//! whole fleet in one process on free loopback ports, started from the
//! workspace's binary, with the variables its `export POZ_…` banner line
//! gives (the README journey uses the same line).
#![allow(dead_code)] // each test binary uses its own part of it

use poz_testkit::ServiceProcess;
use std::path::Path;
use std::process::Command;

/// A free loopback TCP port (bound once, then let go).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// pozd on free ports with `data` and `extra` flags; the process and
/// the (name, value) pairs of its `export` line.
pub fn start(data: &Path, extra: &[&str]) -> (ServiceProcess, Vec<(String, String)>) {
    let mut cmd = Command::new(poz_testkit::workspace_bin("pozd"));
    cmd.arg("--data")
        .arg(data)
        .args(["--plain", &format!("127.0.0.1:{}", free_port())])
        .args(["--noise", &format!("127.0.0.1:{}", free_port())])
        .args(["--submit", &format!("127.0.0.1:{}", free_port())])
        .args(extra);
    let p = ServiceProcess::spawn_until(cmd, poz_testkit::START_TIMEOUT, |line| {
        line.trim_start().starts_with("export POZ_")
    });
    let export = p
        .printed()
        .iter()
        .find_map(|l| l.trim().strip_prefix("export "))
        .unwrap()
        .to_owned();
    let vars = export
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    (p, vars)
}

/// The value of `k` in pozd's `export` line.
pub fn var<'a>(vars: &'a [(String, String)], k: &str) -> &'a str {
    &vars.iter().find(|(n, _)| n == k).unwrap().1
}
