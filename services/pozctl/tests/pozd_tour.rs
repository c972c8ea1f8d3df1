//! The README's main job: `pozd` on a fresh data directory creates the
//! demo provider and prints the pozctl commands that query it; each
//! printed command, run as printed (pozctl from this build), exits 0 with
//! a verified answer. A restart serves the same record. (`pozd` is built
//! with the workspace; deploy/test.sh builds everything before testing.)
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz_testkit::{PozdBanner, ServiceProcess};
use std::path::PathBuf;
use std::process::Command;

struct Pozd {
    process: ServiceProcess,
    printed: Vec<String>,
}

/// pozd on `ports` (plain, noise, submit; 0: a free port).
fn start(bin: &std::path::Path, data: &std::path::Path, ports: (u16, u16, u16)) -> Pozd {
    let (plain, noise, submit) = ports;
    // Tied to this process: pozd exits when the test ends however it ends
    // (a failed assertion included), not only through `stop`.
    let mut cmd = Command::new(bin);
    cmd.arg("--data")
        .arg(data)
        .args(["--plain", &format!("127.0.0.1:{plain}")])
        .args(["--noise", &format!("127.0.0.1:{noise}")])
        .args(["--submit", &format!("127.0.0.1:{submit}")]);
    // Its banner ends with the pozctl command that names --noise-key.
    let process = ServiceProcess::spawn_until(cmd, poz_testkit::START_TIMEOUT, |line| {
        line.contains("--noise-key")
    });
    let printed = process.printed().to_vec();
    Pozd { process, printed }
}

fn stop(mut p: Pozd) {
    // SIGTERM, its stdin held: the signal must be what stops it.
    let status = p.process.terminate();
    assert!(
        status.success(),
        "{status:?}; stderr:\n{}",
        p.process.stderr()
    );
}

#[test]
fn pozd_serves_its_demo_provider_to_the_printed_pozctl_commands() {
    let pozctl = PathBuf::from(env!("CARGO_BIN_EXE_pozctl"));
    let pozd = pozctl.with_file_name("pozd");
    assert!(
        pozd.exists(),
        "{} is missing: build the workspace (cargo build --workspace)",
        pozd.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let p = start(&pozd, &data, (0, 0, 0));
    let banner = PozdBanner::parse(&p.printed);
    let (plain, noise, submit) = (
        banner.plain.port(),
        banner.noise.port(),
        banner.submit.port(),
    );
    let serving = p.printed[0].clone();
    assert!(
        serving.starts_with("pozd: serving demo.example (record "),
        "{serving}"
    );
    let commands: Vec<String> = p
        .printed
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("pozctl "))
        .map(|l| l.to_string())
        .collect();
    assert_eq!(commands.len(), 3, "{:?}", p.printed);
    let mut outputs = Vec::new();
    for c in &commands {
        let args: Vec<&str> = c.split_whitespace().skip(1).collect();
        let out = Command::new(&pozctl).args(&args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{c}: {out:?}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push(text);
    }
    assert!(
        outputs[0].contains("VERIFIED record for demo.example"),
        "{}",
        outputs[0]
    );
    assert!(
        outputs[1].contains("VERIFIED binding \"alice@demo.example\""),
        "{}",
        outputs[1]
    );
    assert!(
        outputs[2].contains("VERIFIED binding \"bob@demo.example\""),
        "{}",
        outputs[2]
    );
    // The demo provider's web host names its service key as CA key: a
    // certificate for it comes from the signer through the Provider API
    // (OPERATIONS, "The signer"; SPEC §21).
    let out = Command::new(&pozctl)
        .args([
            "cert",
            "issue",
            "--api",
            &banner.api,
            "--host",
            "demo.example",
            "--days",
            "7",
        ])
        .arg("--out-cert")
        .arg(dir.path().join("demo.crt"))
        .arg("--out-key")
        .arg(dir.path().join("demo.key"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("certificate for demo.example signed by the provider's signer"),
        "{out:?}"
    );
    assert!(std::fs::read_to_string(dir.path().join("demo.crt"))
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    stop(p);

    // A restart serves the same record from the same data; port 0 takes
    // the ports the first start chose (the record names them).
    let p = start(&pozd, &data, (0, 0, 0));
    let again = PozdBanner::parse(&p.printed);
    assert_eq!(
        (again.plain.port(), again.noise.port(), again.submit.port()),
        (plain, noise, submit)
    );
    assert_eq!(p.printed[0], serving);
    let id = serving
        .split("(record ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap()
        .to_string();
    let out = Command::new(&pozctl)
        .args(["query", "demo.example", "--server"])
        .arg(format!("127.0.0.1:{plain}"))
        .args(["--record-id", &id, "--handle", "carol"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("VERIFIED binding \"carol@demo.example\"")
    );
    // Nothing pins the answer without --record-id: UNPINNED, exit 1.
    let out = Command::new(&pozctl)
        .args(["query", "demo.example", "--server"])
        .arg(format!("127.0.0.1:{plain}"))
        .args(["--handle", "carol"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("UNPINNED binding \"carol@demo.example\""),
        "{out:?}"
    );
    // An unknown handle is refused (exit 1).
    let out = Command::new(&pozctl)
        .args(["query", "demo.example", "--server"])
        .arg(format!("127.0.0.1:{plain}"))
        .args(["--record-id", &id, "--handle", "mallory"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    stop(p);
}
