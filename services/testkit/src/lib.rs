//! The one harness the fleet's integration tests start service binaries
//! with (a dev-dependency only, never linked into a service).
//!
//! A [`ServiceProcess`] is spawned tied to the test process
//! (`poz_kit::tie_to_parent`: its stdin is a pipe this struct holds, and
//! the service exits when that pipe closes, so it dies with the test
//! however the test ends, SIGKILL included). It waits for the service's
//! `listening ADDR` line on stdout, with a timeout, keeps what the service
//! printed, keeps its stderr (in a file) for failure messages, and kills and reaps
//! it on drop.
//!
//! Failures panic with the service's stderr: this crate exists for tests,
//! where a panic is the failure report.
#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used)] // test support: a panic is how a test fails

pub mod softhsm;
pub mod tls;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long [`ServiceProcess::spawn`] waits for the `listening` line. A
/// cold binary under a loaded 2-core test machine (migrations, key
/// derivation) has been seen to take seconds; a minute means a hang.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running service binary, stopped (SIGKILL) and reaped on drop.
pub struct ServiceProcess {
    child: Child,
    addr: String,
    printed: Vec<String>,
    lines: Receiver<String>,
    /// The service's stderr: a file, not a pipe. A service writing to a
    /// pipe whose reader has died (this test process, killed) gets EPIPE,
    /// and a failed `eprintln!` panics: the service's stdin watcher would
    /// die before it exits the service. Removed on drop.
    stderr: tempfile::NamedTempFile,
}

impl ServiceProcess {
    /// Spawns `cmd` and waits up to [`START_TIMEOUT`] for its first line
    /// starting `listening `; [`addr`](Self::addr) is what follows.
    ///
    /// Panics (with the service's stderr) when it exits or prints
    /// something else first, or the timeout passes.
    pub fn spawn(cmd: Command) -> ServiceProcess {
        let mut p = ServiceProcess::spawn_until(cmd, START_TIMEOUT, |_| true);
        let first = p.printed.first().cloned().unwrap_or_default();
        match first.strip_prefix("listening ") {
            Some(addr) => {
                p.addr = addr.trim().to_string();
                p
            }
            None => panic!(
                "{}: first line {first:?} is not `listening ADDR`; stderr:\n{}",
                p.program(),
                p.stderr()
            ),
        }
    }

    /// Spawns `cmd` and reads its stdout until a line for which `ready`
    /// is true (that line included in [`printed`](Self::printed)), for
    /// services whose banner is more than one line. If a line starting
    /// `listening ` came by, [`addr`](Self::addr) is what follows it.
    ///
    /// Panics (with the service's stderr) when it exits first or
    /// `timeout` passes.
    pub fn spawn_until(
        mut cmd: Command,
        timeout: Duration,
        mut ready: impl FnMut(&str) -> bool,
    ) -> ServiceProcess {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let stderr = tempfile::NamedTempFile::new().unwrap();
        let mut child = poz_kit::tie_to_parent(&mut cmd)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr.reopen().unwrap()))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {program}: {e}"));
        // A reader on its own thread: a service that fills a pipe nobody
        // reads would block, and a timeout needs a channel.
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = ServiceProcess {
            child,
            addr: String::new(),
            printed: Vec::new(),
            lines,
            stderr,
        };
        let until = Instant::now() + timeout;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match p.lines.recv_timeout(left) {
                Ok(line) => {
                    if p.addr.is_empty() {
                        if let Some(a) = line.strip_prefix("listening ") {
                            p.addr = a.trim().to_string();
                        }
                    }
                    let done = ready(&line);
                    p.printed.push(line);
                    if done {
                        return p;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{program} was not ready after {timeout:?}; printed {:?}; stderr:\n{}",
                    p.printed,
                    p.stderr()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = p.child.wait();
                    panic!(
                        "{program} exited ({status:?}) before it was ready; printed {:?}; stderr:\n{}",
                        p.printed,
                        p.stderr()
                    )
                }
            }
        }
    }

    fn program(&self) -> String {
        format!("service pid {}", self.child.id())
    }

    /// What followed `listening ` on stdout (a gRPC service's `IP:PORT`;
    /// a gateway's own words), or empty when no such line came.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://` and [`addr`](Self::addr): a gRPC endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The stdout lines read so far, in order.
    pub fn printed(&self) -> &[String] {
        &self.printed
    }

    /// The next stdout line, waiting up to `timeout`; `None` at its end
    /// or the timeout.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(timeout).ok()?;
        self.printed.push(line.clone());
        Some(line)
    }

    /// What the service wrote to stderr so far (lossy UTF-8).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.stderr.path()).unwrap_or_default()).into_owned()
    }

    /// The process ID.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Asks the service to stop with SIGTERM (its stdin still open, so
    /// the signal is what stops it) and waits for it to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        // `Child::wait` closes stdin before it waits, which would stop the
        // service as a vanished parent (exit 0 without draining): hold it.
        let _alive = self.child.stdin.take();
        let sent = Command::new("kill")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success(), "kill {}: {sent:?}", self.child.id());
        self.child.wait().unwrap()
    }

    /// Closes the service's stdin, as the end of this test process would,
    /// and waits for it to exit (a tied service exits with 0).
    pub fn close_stdin(&mut self) -> ExitStatus {
        drop(self.child.stdin.take());
        self.child.wait().unwrap()
    }

    /// SIGKILL, then reaps it: a crash, no cleanup in the service.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Whether the service has exited (reaping it if so).
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of another workspace package's binary (`poz-store`) beside
/// this test's: `CARGO_BIN_EXE_*` names only the test's own package's
/// binaries. A workspace build (`cargo nextest run --workspace`, the
/// test command) builds them all; a test run for one package alone may
/// not, and this panics saying which to build.
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/<test> → target/debug/<name>
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = dir.join(name);
    assert!(
        bin.is_file(),
        "{} is not built: run the workspace's tests, or `cargo build -p {name}` first",
        bin.display()
    );
    bin
}

/// What pozd's start banner says, read from its printed lines: the
/// addresses it bound (a port 0 on its command line resolved), its two
/// Noise server keys, the demo record's ID and the Provider API's URL.
/// Tests start pozd on port 0 and read the ports here: a port found free
/// by binding and letting go can be taken by another test before pozd
/// binds it (seen: "Address already in use" in CI).
#[derive(Clone, Debug)]
pub struct PozdBanner {
    /// Plaintext lookups (7074).
    pub plain: std::net::SocketAddr,
    /// Noise NK lookups (7075) and its server key.
    pub noise: std::net::SocketAddr,
    pub noise_key: [u8; 32],
    /// Noise NK submissions (7076) and its server key.
    pub submit: std::net::SocketAddr,
    pub submit_key: [u8; 32],
    /// The demo provider's record ID (64 hex digits).
    pub record_id: String,
    /// The in-process Provider API (`http://127.0.0.1:PORT`).
    pub api: String,
}

impl PozdBanner {
    /// Reads the banner from `printed`; panics naming the line it could
    /// not read.
    pub fn parse(printed: &[String]) -> PozdBanner {
        let line = |label: &str| -> Vec<String> {
            let l = printed
                .iter()
                .map(|l| l.trim())
                .find(|l| l.starts_with(label))
                .unwrap_or_else(|| panic!("no {label:?} line in pozd's banner: {printed:?}"));
            l[label.len()..]
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        let addr = |words: &[String]| -> std::net::SocketAddr { words[0].parse().unwrap() };
        let key = |words: &[String]| -> [u8; 32] {
            hex::decode(words.last().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        };
        let (plain, noise, submit) = (
            line("plaintext lookups"),
            line("Noise NK lookups"),
            line("Noise NK submits"),
        );
        let record_id = printed
            .iter()
            .find_map(|l| l.split("(record ").nth(1))
            .and_then(|r| r.split(')').next())
            .expect("no `(record ID)` in pozd's banner")
            .to_owned();
        PozdBanner {
            plain: addr(&plain),
            noise: addr(&noise),
            noise_key: key(&noise),
            submit: addr(&submit),
            submit_key: key(&submit),
            record_id,
            api: line("Provider API")[0].clone(),
        }
    }
}
