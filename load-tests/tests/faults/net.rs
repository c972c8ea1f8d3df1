//! Network namespaces on a bridge, one per host of the fault harness, and
//! the faults made with them: partitions (nftables drop rules inside a
//! namespace), loss (nftables `numgen random`) and latency (`tc netem`,
//! where the kernel has it).
//!
//! Shape: a bridge `pzf<pid>` in the root namespace with `10.A.B.1/24`
//! (the driver's address), and a namespace `pozf-<pid>-<name>` per host,
//! its `eth0` a veth on that bridge with `10.A.B.<octet>/24`. A and B
//! come from this process's ID, so two runs on one machine use two
//! subnets. Everything is removed on drop, and a run removes what a
//! killed earlier run left (namespaces and bridges whose process is gone,
//! the processes in those namespaces killed first).

use std::net::Ipv4Addr;
use std::process::Command;

/// Runs a command, returning its stdout, or an error naming it with its
/// stderr.
pub fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn must(args: &[&str]) -> String {
    run(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Why this machine cannot run the harness (not root, no `ip netns`),
/// or `None` when it can.
pub fn unavailable() -> Option<String> {
    let uid = run(&["id", "-u"]).unwrap_or_default();
    if uid.trim() != "0" {
        return Some(format!(
            "not root (uid {}): network namespaces need root",
            uid.trim()
        ));
    }
    let probe = format!("pozf-probe-{}", std::process::id());
    if let Err(e) = run(&["ip", "netns", "add", &probe]) {
        return Some(format!("no network namespaces here: {e}"));
    }
    let _ = run(&["ip", "netns", "del", &probe]);
    None
}

/// Kills every process in namespace `ns` (SIGKILL) and deletes it.
fn remove_namespace(ns: &str) {
    for _ in 0..3 {
        let pids = run(&["ip", "netns", "pids", ns]).unwrap_or_default();
        if pids.trim().is_empty() {
            break;
        }
        for pid in pids.split_whitespace() {
            let _ = run(&["kill", "-9", pid]);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = run(&["ip", "netns", "del", ns]);
}

/// Removes namespaces, bridges and Postgres directories of earlier runs
/// whose process is gone.
fn remove_stale() {
    let alive = |pid: &str| std::path::Path::new("/proc").join(pid).exists();
    for line in run(&["ip", "netns", "list"]).unwrap_or_default().lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(rest) = name.strip_prefix("pozf-") {
            let pid = rest.split('-').next().unwrap_or("");
            if pid != "probe" && !alive(pid) {
                remove_namespace(name);
            }
        }
    }
    if let Ok(dirs) = std::fs::read_dir("/tmp") {
        for d in dirs.flatten() {
            let name = d.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("pozf-pg-") {
                if !alive(pid) {
                    let _ = std::fs::remove_dir_all(d.path());
                }
            }
        }
    }
    for line in run(&["ip", "-o", "link", "show", "type", "bridge"])
        .unwrap_or_default()
        .lines()
    {
        let name = line
            .split(':')
            .nth(1)
            .map(|s| s.trim().split('@').next().unwrap_or(""))
            .unwrap_or("");
        if let Some(pid) = name.strip_prefix("pzf") {
            if !alive(pid) {
                let _ = run(&["ip", "link", "del", name]);
            }
        }
    }
}

/// One host: a namespace and its address.
#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    pub ns: String,
    pub ip: Ipv4Addr,
}

impl Host {
    /// `ip netns exec NS` followed by `program`: a command run inside.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// Runs `args` inside this host's namespace.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["ip", "netns", "exec", &self.ns];
        all.extend_from_slice(args);
        run(&all)
    }
}

/// The bridge and the namespaces on it; removed on drop.
pub struct Net {
    pid: u32,
    bridge: String,
    subnet: [u8; 2],
    hosts: Vec<Host>,
}

impl Net {
    /// A bridge with the driver's address `10.A.B.1/24`.
    pub fn new() -> Net {
        remove_stale();
        let pid = std::process::id();
        let subnet = [100 + (pid % 100) as u8, ((pid / 100) % 250) as u8];
        let bridge = format!("pzf{pid}");
        let net = Net {
            pid,
            bridge: bridge.clone(),
            subnet,
            hosts: Vec::new(),
        };
        must(&["ip", "link", "add", &bridge, "type", "bridge"]);
        must(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", net.ip(1)),
            "dev",
            &bridge,
        ]);
        must(&["ip", "link", "set", &bridge, "up"]);
        net
    }

    /// `10.A.B.octet`.
    pub fn ip(&self, octet: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet[0], self.subnet[1], octet)
    }

    /// A new namespace `name` on the bridge at `10.A.B.octet`.
    pub fn host(&mut self, name: &str, octet: u8) -> Host {
        let ns = format!("pozf-{}-{name}", self.pid);
        let veth = format!("pzv{}-{octet}", self.pid);
        must(&["ip", "netns", "add", &ns]);
        let host = Host {
            name: name.to_string(),
            ns: ns.clone(),
            ip: self.ip(octet),
        };
        self.hosts.push(host.clone());
        must(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        must(&["ip", "link", "set", &veth, "master", &self.bridge]);
        must(&["ip", "link", "set", &veth, "up"]);
        must(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", host.ip),
            "dev",
            "eth0",
        ]);
        must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        host
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &self.hosts {
            remove_namespace(&h.ns);
        }
        let _ = run(&["ip", "link", "del", &self.bridge]);
    }
}

/// What a host's nftables table `pozf` drops, until dropped.
pub struct Rules {
    host: Host,
    /// The table, or the blackhole routes used instead where `nft` is
    /// missing.
    routes: Vec<Ipv4Addr>,
}

impl Rules {
    /// Drops every packet between `a` and each of `peers`, both ways,
    /// inside `a`'s namespace: a partition (connections in flight stall
    /// as they would behind a dead link). Without `nft`, blackhole routes
    /// to the peers (outgoing packets only, which stalls TCP the same).
    pub fn partition(a: &Host, peers: &[&Host]) -> Rules {
        if nft_available() {
            let mut rules = String::from(
                "table inet pozf {\n chain input { type filter hook input priority 0; policy accept;\n",
            );
            for p in peers {
                rules.push_str(&format!("  ip saddr {} drop\n", p.ip));
            }
            rules.push_str(
                " }\n chain output { type filter hook output priority 0; policy accept;\n",
            );
            for p in peers {
                rules.push_str(&format!("  ip daddr {} drop\n", p.ip));
            }
            rules.push_str(" }\n}\n");
            nft_load(a, &rules);
            Rules {
                host: a.clone(),
                routes: Vec::new(),
            }
        } else {
            let routes: Vec<Ipv4Addr> = peers.iter().map(|p| p.ip).collect();
            for ip in &routes {
                a.run(&["ip", "route", "add", "blackhole", &format!("{ip}/32")])
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            Rules {
                host: a.clone(),
                routes,
            }
        }
    }

    /// Drops `percent` % of the packets into and out of `a`, at random.
    /// `None` where `nft` is missing.
    pub fn loss(a: &Host, percent: u8) -> Option<Rules> {
        if !nft_available() {
            return None;
        }
        let rules = format!(
            "table inet pozf {{\n chain input {{ type filter hook input priority 0; policy accept;\n  iifname \"eth0\" numgen random mod 100 < {percent} drop\n }}\n chain output {{ type filter hook output priority 0; policy accept;\n  oifname \"eth0\" numgen random mod 100 < {percent} drop\n }}\n}}\n"
        );
        nft_load(a, &rules);
        Some(Rules {
            host: a.clone(),
            routes: Vec::new(),
        })
    }
}

impl Drop for Rules {
    fn drop(&mut self) {
        if self.routes.is_empty() {
            let _ = self.host.run(&["nft", "delete", "table", "inet", "pozf"]);
        }
        for ip in &self.routes {
            let _ = self
                .host
                .run(&["ip", "route", "del", "blackhole", &format!("{ip}/32")]);
        }
    }
}

fn nft_available() -> bool {
    run(&["nft", "--version"]).is_ok()
}

fn nft_load(h: &Host, rules: &str) {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), rules).unwrap();
    h.run(&["nft", "-f", &f.path().display().to_string()])
        .unwrap_or_else(|e| panic!("{e}\n{rules}"));
}

/// Added latency on `a`'s link with `tc netem`, until dropped; `Err`
/// with tc's words where the kernel has no netem (CONFIG_NET_SCH_NETEM).
pub struct Delay(Host);

impl Delay {
    pub fn add(a: &Host, ms: u32) -> Result<Delay, String> {
        a.run(&[
            "tc",
            "qdisc",
            "add",
            "dev",
            "eth0",
            "root",
            "netem",
            "delay",
            &format!("{ms}ms"),
        ])?;
        Ok(Delay(a.clone()))
    }
}

impl Drop for Delay {
    fn drop(&mut self) {
        let _ = self.0.run(&["tc", "qdisc", "del", "dev", "eth0", "root"]);
    }
}
