//! A throwaway Postgres primary with streaming standbys, for the replica
//! and failover tests: Debian's server binaries
//! (`/usr/lib/postgresql/*/bin`), `initdb` on a free port in a temporary
//! directory, standbys made by `pg_basebackup -R`. Run as the `postgres`
//! user when the tests run as root (Postgres refuses root), as
//! deploy/test.sh does. Every server is stopped (immediate mode) and its
//! directory removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One server of the cluster.
pub struct Server {
    pub port: u16,
    pub data: PathBuf,
    stopped: bool,
}

impl Server {
    /// The URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

/// A primary and its standbys.
pub struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    as_postgres: bool,
    pub primary: Server,
    pub standbys: Vec<Server>,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn newest_bin() -> PathBuf {
    let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Debian's postgresql (the server binaries under /usr/lib/postgresql) is needed; deploy/test.sh installs it")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("pg_ctl").is_file())
        .collect();
    bins.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    bins.pop().expect("no /usr/lib/postgresql/*/bin/pg_ctl")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Cluster {
    /// Runs one of the server's tools (as `postgres` when root).
    fn output(&self, tool: &str, args: &[&str]) -> std::io::Result<std::process::Output> {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self.output(tool, args).unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start(&self, s: &Server) {
        let log = s.data.with_extension("log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                s.data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    /// A primary with `standbys` hot standbys streaming from it.
    /// `synchronous`: the primary waits for a standby's flush before a
    /// commit returns (`synchronous_standby_names = '*'`), as an HA setup
    /// that promises no acknowledged write is lost on failover must.
    pub fn start_new(standbys: usize, synchronous: bool) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("poz-pg-replicas")
            .tempdir()
            .unwrap();
        let as_postgres = is_root();
        if as_postgres {
            let _ = Command::new("useradd")
                .args(["--system", "--no-create-home", "postgres"])
                .output();
            let ok = Command::new("chown")
                .args(["postgres", dir.path().to_str().unwrap()])
                .status()
                .unwrap();
            assert!(ok.success());
        }
        let mut c = Cluster {
            bin: newest_bin(),
            as_postgres,
            primary: Server {
                port: free_port(),
                data: dir.path().join("primary"),
                stopped: false,
            },
            standbys: Vec::new(),
            dir,
        };
        c.run(
            "initdb",
            &[
                "-D",
                c.primary.data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
            ],
        );
        // fsync off: these servers are stopped (cleanly or as a crash of
        // the server), never lose the machine, and the OS keeps what
        // they wrote.
        let conf = format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             max_connections = 100\nwal_level = replica\nmax_wal_senders = 10\nhot_standby = on\n\
             fsync = off\n",
            c.primary.port,
            c.dir.path().display()
        );
        append(&c.primary.data.join("postgresql.conf"), &conf);
        c.start(&c.primary);
        for i in 0..standbys {
            let s = Server {
                port: free_port(),
                data: c.dir.path().join(format!("standby{i}")),
                stopped: false,
            };
            c.run(
                "pg_basebackup",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &c.primary.port.to_string(),
                    "-U",
                    "postgres",
                    "-D",
                    s.data.to_str().unwrap(),
                    "-R",
                    "-X",
                    "stream",
                ],
            );
            append(
                &s.data.join("postgresql.auto.conf"),
                &format!("port = {}\n", s.port),
            );
            c.start(&s);
            c.standbys.push(s);
        }
        if synchronous {
            // The primary's alone, after the base backups copied its
            // configuration: a promoted standby has no standby to wait
            // for (an HA manager such as pg_auto_failover sets this on
            // whichever node is primary).
            append(
                &c.primary.data.join("postgresql.conf"),
                "synchronous_standby_names = '*'\nsynchronous_commit = on\n",
            );
            c.run(
                "pg_ctl",
                &["-D", c.primary.data.to_str().unwrap(), "reload"],
            );
        }
        c
    }

    /// Stops a server: `fast` (clean) or `immediate` (as a crash).
    pub fn stop(&mut self, which: Which, mode: &str) {
        let data = self.server(which).data.clone();
        self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", mode, "-w", "stop"],
        );
        self.server_mut(which).stopped = true;
    }

    /// Starts a stopped server again.
    pub fn restart(&mut self, which: Which) {
        let s = self.server(which);
        self.start(s);
        self.server_mut(which).stopped = false;
    }

    /// Promotes a standby to primary (`pg_ctl promote`, waiting).
    pub fn promote(&self, standby: usize) {
        let data = self.standbys[standby].data.clone();
        self.run("pg_ctl", &["-D", data.to_str().unwrap(), "-w", "promote"]);
    }

    fn server(&self, w: Which) -> &Server {
        match w {
            Which::Primary => &self.primary,
            Which::Standby(i) => &self.standbys[i],
        }
    }

    fn server_mut(&mut self, w: Which) -> &mut Server {
        match w {
            Which::Primary => &mut self.primary,
            Which::Standby(i) => &mut self.standbys[i],
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum Which {
    Primary,
    Standby(usize),
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let servers: Vec<PathBuf> = std::iter::once(&self.primary)
            .chain(&self.standbys)
            .filter(|s| !s.stopped)
            .map(|s| s.data.clone())
            .collect();
        for data in servers {
            let d = data.to_str().unwrap_or_default().to_string();
            let _ = self.output("pg_ctl", &["-D", &d, "-m", "immediate", "-w", "stop"]);
        }
    }
}
