//! pozd for pozctl's tests over real sockets (journey, audit, login): the
//! whole fleet in one process on free loopback ports, started from the
//! workspace's binary, with the variables its `export POZ_…` banner line
//! gives (the README journey uses the same line).
#![allow(dead_code)] // each test binary uses its own part of it

use poz_testkit::ServiceProcess;
use std::path::Path;
use std::process::Command;

/// pozd on free ports with `data` and `extra` flags; the process and
/// the (name, value) pairs of its `export` line.
pub fn start(data: &Path, extra: &[&str]) -> (ServiceProcess, Vec<(String, String)>) {
    let mut cmd = Command::new(poz_testkit::workspace_bin("pozd"));
    cmd.arg("--data")
        .arg(data)
        // Port 0: pozd binds before it writes the demo record, so the
        // ports it took are in the record and the banner (a port picked
        // here and let go could be taken by another test meanwhile).
        .args(["--plain", "127.0.0.1:0"])
        .args(["--noise", "127.0.0.1:0"])
        .args(["--submit", "127.0.0.1:0"])
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
