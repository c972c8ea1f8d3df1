//! Issue 12 §10: when the Provider API went away during `pozctl identity
//! import` (pozd killed), the import ended with a raw transport dump ("h2
//! protocol error: error reading a body from connection … broken pipe").
//! It must say what happened, how many bindings were committed, and that
//! rerunning the same command resumes; and the rerun does resume, issuing
//! nothing twice. pozd is a real process, killed with SIGKILL mid-import.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz_client::{Client, ClientConfig, Endpoint, Security};
use poz_testkit::{PozdBanner, ServiceProcess};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LINES: u64 = 20_000;

/// A running pozd: the process and what its banner said.
struct Pozd {
    process: ServiceProcess,
    banner: PozdBanner,
}

/// pozd on `ports` (plain, noise, submit; 0 at first start: free ports,
/// read back from the banner for the restart).
fn start(bin: &Path, data: &Path, ports: [u16; 3]) -> Pozd {
    let mut cmd = Command::new(bin);
    cmd.arg("--data")
        .arg(data)
        .args(["--plain", &format!("127.0.0.1:{}", ports[0])])
        .args(["--noise", &format!("127.0.0.1:{}", ports[1])])
        .args(["--submit", &format!("127.0.0.1:{}", ports[2])])
        .args(["--cache-ttl-ms", "0"]);
    let process = ServiceProcess::spawn_until(cmd, poz_testkit::START_TIMEOUT, |line| {
        line.contains("--noise-key")
    });
    let banner = PozdBanner::parse(process.printed());
    assert!(banner.api.starts_with("http"), "{banner:?}");
    Pozd { process, banner }
}

fn import(pozctl: &Path, csv: &Path, api: &str) -> std::process::Child {
    Command::new(pozctl)
        .args(["identity", "import", "--quiet", "--api", api])
        .arg(csv)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_cut_off_by_the_server_says_so_and_the_rerun_resumes() {
    let pozctl = PathBuf::from(env!("CARGO_BIN_EXE_pozctl"));
    let pozd_bin = pozctl.with_file_name("pozd");
    assert!(pozd_bin.exists(), "{} is missing", pozd_bin.display());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let csv = dir.path().join("users.csv");
    let mut text = String::from("handle,user_record_hash\n");
    for i in 0..LINES {
        let h = poz::hash::tagged_hash("import test", &[&i.to_be_bytes()]);
        text.push_str(&format!("u{i},{}\n", h.to_hex()));
    }
    std::fs::write(&csv, &text).unwrap();

    let mut pozd = start(&pozd_bin, &data, [0, 0, 0]);
    let ports = [
        pozd.banner.plain.port(),
        pozd.banner.noise.port(),
        pozd.banner.submit.port(),
    ];
    let running = import(&pozctl, &csv, &pozd.banner.api);
    // Wait until the first lines are served (committed), then kill pozd:
    // the import is cut off mid-stream.
    let c = Client::new(ClientConfig {
        attempts: 1,
        ..ClientConfig::default()
    });
    let ep = [Endpoint {
        addr: pozd.banner.plain,
        security: Security::Plain,
    }];
    let until = Instant::now() + Duration::from_secs(120);
    while c.chain(&ep, "demo.example", "u0", None).await.is_err() {
        assert!(Instant::now() < until, "the import never committed u0");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pozd.process.kill(); // SIGKILL
    let out = tokio::task::spawn_blocking(move || running.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr.contains(&format!(
            "the connection to the Provider API at {} was lost",
            pozd.banner.api
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("Rerun the same command to resume"),
        "{stderr}"
    );
    for raw in ["h2 protocol", "broken pipe", "transport error"] {
        assert!(!stderr.contains(raw), "{raw} in {stderr}");
    }
    let reported: u64 = stderr
        .lines()
        .find_map(|l| l.split_once(&format!(" of {LINES} bindings")))
        .map(|(n, _)| n.trim().parse().unwrap())
        .expect("the count committed is said");
    assert!(reported < LINES, "{stderr}");

    // The same command against the restarted server resumes and ends.
    let mut pozd = start(&pozd_bin, &data, ports);
    let out = tokio::task::spawn_blocking({
        let (pozctl, csv, api) = (pozctl.clone(), csv.clone(), pozd.banner.api.clone());
        move || import(&pozctl, &csv, &api).wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("committed {LINES} of {LINES} bindings")),
        "{out:?}"
    );
    // Nothing issued twice: the demo's three bindings and one per line.
    let id = poz::Hash32::from_hex(&pozd.banner.record_id).unwrap();
    // Closing its stdin stops pozd (it was spawned tied to this process).
    pozd.process.close_stdin();
    let store = poz_store::Store::open(
        &format!("sqlite://{}?mode=rwc", data.join("store.db").display()),
        poz_store::StoreOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(store.count_bindings(&id).await.unwrap(), LINES + 3);
}
