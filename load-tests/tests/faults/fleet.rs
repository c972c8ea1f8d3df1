//! The split fleet across namespaces: Postgres and Redis in theirs, and
//! poz-store, poz-verifier, poz-signer (its identity key inside a SoftHSM2
//! token of the run's own), poz-provider-api,
//! two poz-query-gw and one poz-submit-gw each in its own, with mutual
//! TLS between the services as in production (one throwaway CA, each
//! certificate naming its service and carrying its namespace's address).
//! Every service listens on a fixed address of its namespace, so a
//! restart comes back where its peers look for it.

use crate::net::{Host, Net};
use poz::codec::Codec;
use poz::sample;
use poz::SigningKey;
use poz::{Hash32, Record};
use poz_kit::allow::identity;
use poz_testkit::tls::{toml_table, Authority};
use poz_testkit::ServiceProcess;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The services, in start order.
pub const SERVICES: [&str; 7] = [
    "store", "verifier", "signer", "api", "query1", "query2", "submit",
];

/// gRPC port of the four gRPC services.
const GRPC: u16 = 7000;

/// The provider's domain.
pub const PROVIDER_DOMAIN: &str = "social.example";

/// One person: a sole-owner record (its key is [`person_key`]) and its
/// domain.
pub struct Person {
    pub genesis: Record,
    pub domain: String,
}

/// Person `n`'s key (sample key 100 + n).
pub fn person_key(n: usize) -> SigningKey {
    sample::key(100 + n as u8)
}

/// A throwaway Postgres cluster inside its namespace, run as `postgres`.
pub struct Postgres {
    host: Host,
    bin: PathBuf,
    dir: PathBuf,
}

fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.retain(|p| p.join("pg_ctl").exists());
    versions.sort();
    if let Some(p) = versions.pop() {
        return p;
    }
    let which = crate::net::run(&["sh", "-c", "command -v pg_ctl"])
        .expect("Postgres is not installed (deploy/test.sh installs Debian's postgresql)");
    PathBuf::from(which.trim()).parent().unwrap().to_path_buf()
}

impl Postgres {
    fn start_new(host: Host) -> Postgres {
        let bin = pg_bin();
        let dir = PathBuf::from(format!("/tmp/pozf-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        crate::net::run(&["useradd", "--system", "--no-create-home", "postgres"]).ok();
        crate::net::run(&["chown", "postgres", &dir.display().to_string()]).unwrap();
        crate::net::run(&["chmod", "755", &dir.display().to_string()]).unwrap();
        let data = dir.join("data");
        crate::net::run(&[
            "runuser",
            "-u",
            "postgres",
            "--",
            &bin.join("initdb").display().to_string(),
            "-D",
            &data.display().to_string(),
            "-A",
            "trust",
            "-U",
            "postgres",
        ])
        .unwrap();
        let hba = data.join("pg_hba.conf");
        let mut text = std::fs::read_to_string(&hba).unwrap();
        text.push_str("host all all 0.0.0.0/0 trust\n");
        std::fs::write(&hba, text).unwrap();
        let pg = Postgres { host, bin, dir };
        pg.start();
        pg
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<String, String> {
        let ctl = self.bin.join("pg_ctl").display().to_string();
        let data = self.dir.join("data").display().to_string();
        let mut all = vec![
            "ip",
            "netns",
            "exec",
            &self.host.ns,
            "runuser",
            "-u",
            "postgres",
            "--",
            &ctl,
            "-D",
            &data,
        ];
        all.extend_from_slice(args);
        crate::net::run(&all)
    }

    /// Starts the cluster (waiting until it accepts connections).
    pub fn start(&self) {
        let log = self.dir.join("log").display().to_string();
        let opts = format!(
            "-p 5432 -k {} -c listen_addresses={} -c max_connections=300 -c fsync=off",
            self.dir.display(),
            self.host.ip
        );
        self.pg_ctl(&["-l", &log, "-w", "-t", "60", "-o", &opts, "start"])
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log()));
    }

    /// Stops it with `mode` (fast: clients cut, checkpoint; immediate:
    /// no checkpoint, recovery from WAL at the next start).
    pub fn stop(&self, mode: &str) {
        self.pg_ctl(&["-m", mode, "-w", "stop"])
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log()));
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// The URL the services (and the checks) use.
    pub fn url(&self) -> String {
        format!("postgres://postgres@{}:5432/postgres", self.host.ip)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A throwaway redis-server in its namespace (nothing saved).
pub struct Redis {
    host: Host,
    child: Option<std::process::Child>,
}

impl Redis {
    fn start_new(host: Host) -> Redis {
        let mut r = Redis { host, child: None };
        r.start();
        r
    }

    pub fn start(&mut self) {
        let bin = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("redis-server is not installed (deploy/test.sh installs it)");
        let child = self
            .host
            .command(bin)
            .args(["--port", "6379", "--bind", &self.host.ip.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < until {
            if std::net::TcpStream::connect((self.host.ip, 6379)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not start in 10 s");
    }

    /// SIGKILL.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}:6379/0", self.host.ip)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One service: its host, its configuration file and its process.
/// The signer's HSM: a SoftHSM2 token with a file object store in the
/// run's directory (user PIN 1234), holding one Ed25519 identity key
/// generated inside it.
pub struct Hsm {
    conf: PathBuf,
    tokens: PathBuf,
    away: PathBuf,
    keys_away: Option<poz_testkit::softhsm::KeysAway>,
    pub label: String,
}

impl Hsm {
    /// Initialises the token (Debian's softhsm2-util).
    fn new(dir: &Path) -> Hsm {
        let root = dir.join("softhsm");
        let tokens = root.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = root.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let label = "fleet-hsm".to_string();
        let out = std::process::Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args(["--init-token", "--free", "--label", &label])
            .args(["--so-pin", "5678", "--pin", "1234"])
            .output()
            .expect("softhsm2-util (Debian's softhsm2; deploy/test.sh installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Hsm {
            away: root.join("away"),
            keys_away: None,
            conf,
            tokens,
            label,
        }
    }

    /// The token's key objects taken away under the signer (every call
    /// on them fails in the module; `poz_testkit::softhsm` says why the
    /// objects and not the token).
    pub fn lose(&mut self) {
        let token = poz_testkit::softhsm::token_dir(&self.tokens, &self.label);
        self.keys_away = Some(poz_testkit::softhsm::KeysAway::take(&token, &self.away));
    }

    /// The key objects back.
    pub fn restore(&mut self) {
        if let Some(k) = self.keys_away.take() {
            k.bring_back();
        }
    }
}

pub struct Service {
    pub host: Host,
    bin: PathBuf,
    config: PathBuf,
    /// Environment beyond the log level (the signer's SOFTHSM2_CONF).
    env: Vec<(&'static str, PathBuf)>,
    pub process: Option<ServiceProcess>,
}

impl Service {
    /// Starts it (it must not be running), waiting for `listening`.
    pub fn start(&mut self) {
        assert!(self.process.is_none(), "{} is running", self.host.name);
        let mut cmd = self.host.command(&self.bin);
        cmd.arg("--config").arg(&self.config);
        cmd.env("RUST_LOG", "warn");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.process = Some(ServiceProcess::spawn(cmd));
    }

    /// SIGKILL, reaped.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// What it wrote to stderr (the running or last process).
    pub fn stderr(&self) -> String {
        self.process
            .as_ref()
            .map(|p| p.stderr())
            .unwrap_or_default()
    }
}

/// Everything the driver needs to reach the fleet.
#[derive(Clone)]
pub struct Endpoints {
    /// (plain, noise) of each query gateway.
    pub query: Vec<(std::net::SocketAddr, std::net::SocketAddr)>,
    pub query_key: [u8; 32],
    pub submit: std::net::SocketAddr,
    pub submit_key: [u8; 32],
    /// The Provider API's `https://` URL and the account system's
    /// certificate to call it with.
    pub api: String,
    pub account: poz_kit::tls::TlsFiles,
}

/// The whole fleet; everything stops on drop (services first, the
/// network last).
pub struct Fleet {
    pub services: BTreeMap<&'static str, Service>,
    pub hsm: Hsm,
    pub redis: Redis,
    pub pg: Postgres,
    pub provider_id: Hash32,
    pub people: Vec<Person>,
    pub endpoints: Endpoints,
    /// Held for drop: the network goes last, then the files.
    _net: Net,
    _dir: tempfile::TempDir,
}

impl Fleet {
    /// Builds the network, starts Postgres and Redis, loads the sample
    /// provider (`social.example`) and `people` sole-owner records
    /// (`pN.faults.example`) into the store's database, and starts every
    /// service.
    pub async fn start(people: usize) -> Fleet {
        let mut net = Net::new();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let pg = Postgres::start_new(net.host("pg", 10));
        let redis = Redis::start_new(net.host("redis", 11));
        let octets = [20u8, 21, 22, 23, 30, 31, 40];
        let hosts: BTreeMap<&str, Host> = SERVICES
            .iter()
            .zip(octets)
            .map(|(s, o)| (*s, net.host(s, o)))
            .collect();

        let bin_name = |s: &str| match s {
            "store" => "poz-store",
            "verifier" => "poz-verifier",
            "signer" => "poz-signer",
            "api" => "poz-provider-api",
            "submit" => "poz-submit-gw",
            _ => "poz-query-gw",
        };
        // The binaries are copied once: a restart runs the build the run
        // began with, even if the target directory is rebuilt meanwhile
        // (it is shared between checkouts on a development machine).
        let bins = d.join("bin");
        std::fs::create_dir_all(&bins).unwrap();
        for s in SERVICES {
            let bin = bins.join(bin_name(s));
            if !bin.exists() {
                std::fs::copy(poz_testkit::workspace_bin(bin_name(s)), &bin).unwrap();
            }
        }

        // The signer's token and its identity key, generated inside it by
        // the signer itself; the provider's IDENTITY zone names that key.
        let hsm = Hsm::new(d);
        let pin = d.join("pin");
        std::fs::write(&pin, "1234\n").unwrap();
        let token = format!(
            "backend = \"pkcs11\"\npkcs11_module = \"/usr/lib/softhsm/libsofthsm2.so\"\ntoken_label = \"{}\"\npin_file = \"{}\"\n",
            hsm.label,
            pin.display()
        );
        let keygen = d.join("keygen.toml");
        // (The signer's configuration wants its audit log even to make a
        // key, though making one signs nothing.)
        std::fs::write(
            &keygen,
            format!("{token}audit_database_url = \"{}\"\n", pg.url()),
        )
        .unwrap();
        let out = std::process::Command::new(bins.join("poz-signer"))
            .env("SOFTHSM2_CONF", &hsm.conf)
            .arg("--config")
            .arg(&keygen)
            .args(["--generate-key", "identity"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8(out.stdout).unwrap();
        let public = printed
            .trim()
            .rsplit(' ')
            .next()
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .and_then(|b| poz::PublicKey::ed25519_from_bytes(&b))
            .unwrap_or_else(|| panic!("no public key in {printed:?}"));

        // The records, loaded before the services start.
        let (_, provider) = sample::provider_with_identity_key(&public, PROVIDER_DOMAIN).unwrap();
        let store = poz_store::Store::open(&pg.url(), poz_store::StoreOptions::default())
            .await
            .unwrap();
        let (provider_id, _) = store
            .import_record(&provider.to_bytes(), &[PROVIDER_DOMAIN.into()])
            .await
            .unwrap();
        let ppl = create_people(&store, people).await;
        store.close().await;

        // Mutual TLS: one CA, a certificate per service naming it.
        let ca = Authority::new(d, "fleet-ca");
        let tls = |name: &str, ident: &str| {
            let ip = hosts[name].ip;
            toml_table(&ca.issue_for(ident, name, ca.ca_file(), &[ip.into()]))
        };
        let url = |name: &str| format!("https://{}:{GRPC}", hosts[name].ip);
        let listen = |name: &str| format!("{}:{GRPC}", hosts[name].ip);
        let write = |name: &str, text: String| {
            let p = d.join(format!("{name}.toml"));
            std::fs::write(&p, text).unwrap();
            p
        };
        let mut configs: BTreeMap<&str, PathBuf> = BTreeMap::new();
        configs.insert(
            "store",
            write(
                "store",
                format!(
                    "listen = \"{}\"\ndatabase_url = \"{}\"\n{}",
                    listen("store"),
                    pg.url(),
                    tls("store", "poz-store")
                ),
            ),
        );
        configs.insert(
            "verifier",
            write(
                "verifier",
                format!(
                    "listen = \"{}\"\n{}",
                    listen("verifier"),
                    tls("verifier", "poz-verifier")
                ),
            ),
        );
        configs.insert(
            "signer",
            write(
                "signer",
                format!(
                    "listen = \"{}\"\n{token}audit_database_url = \"{}\"\n{}",
                    listen("signer"),
                    pg.url(),
                    tls("signer", "poz-signer")
                ),
            ),
        );
        configs.insert(
            "api",
            write(
                "api",
                format!(
                    "listen = \"{}\"\nrecord_id = \"{}\"\nstore = \"{}\"\nverifier = \"{}\"\nsigner = \"{}\"\nbatch_size = 50\n{}",
                    listen("api"),
                    provider_id.to_hex(),
                    url("store"),
                    url("verifier"),
                    url("signer"),
                    tls("api", identity::PROVIDER_API)
                ),
            ),
        );
        let secrets = d.join("secrets");
        std::fs::write(&secrets, format!("{}\n", hex::encode([3u8; 32]))).unwrap();
        let noise = |name: &str| {
            let key = poz::noise::StaticKeypair::generate();
            let f = d.join(format!("{name}-noise.key"));
            std::fs::write(&f, hex::encode(key.secret())).unwrap();
            (key.public, f)
        };
        // The edge's own limits are raised: the driver is one address
        // and its load is the test, not an abuser.
        let edge = format!(
            "redis_url = \"{}\"\nchallenge_secrets_file = \"{}\"\nrate_per_ip = 100000\nburst_per_ip = 100000\nmax_connections_per_ip = 10000\n",
            redis.url(),
            secrets.display()
        );
        let (query_key, query_key_file) = noise("query");
        for q in ["query1", "query2"] {
            let ip = hosts[q].ip;
            configs.insert(
                q,
                write(
                    q,
                    format!(
                        "listen_plain = \"{ip}:7074\"\nlisten_noise = \"{ip}:7075\"\nstore = \"{}\"\ncache_ttl_ms = 0\nnoise_key_file = \"{}\"\ngateway_id = \"{q}\"\n{edge}{}",
                        url("store"),
                        query_key_file.display(),
                        tls(q, identity::QUERY_GW)
                    ),
                ),
            );
        }
        let (submit_key, submit_key_file) = noise("submit");
        configs.insert(
            "submit",
            write(
                "submit",
                format!(
                    "listen = \"{}:7076\"\nstore = \"{}\"\nverifier = \"{}\"\nprovider_api = \"{}\"\nbinding_requests = \"issue\"\nprovider_record = \"{}\"\nnoise_key_file = \"{}\"\ngateway_id = \"submit\"\n{edge}{}",
                    hosts["submit"].ip,
                    url("store"),
                    url("verifier"),
                    url("api"),
                    provider_id.to_hex(),
                    submit_key_file.display(),
                    tls("submit", identity::SUBMIT_GW)
                ),
            ),
        );
        let mut services = BTreeMap::new();
        for s in SERVICES {
            let env = match s {
                "signer" => vec![("SOFTHSM2_CONF", hsm.conf.clone())],
                _ => Vec::new(),
            };
            let mut svc = Service {
                host: hosts[s].clone(),
                bin: bins.join(bin_name(s)),
                config: configs[s].clone(),
                env,
                process: None,
            };
            svc.start();
            services.insert(s, svc);
        }
        let q = |name: &str| {
            let ip = hosts[name].ip;
            (
                std::net::SocketAddr::from((ip, 7074)),
                std::net::SocketAddr::from((ip, 7075)),
            )
        };
        let endpoints = Endpoints {
            query: vec![q("query1"), q("query2")],
            query_key,
            submit: std::net::SocketAddr::from((hosts["submit"].ip, 7076)),
            submit_key,
            api: url("api"),
            account: ca.issue(identity::ACCOUNT_SYSTEM, "account", ca.ca_file()),
        };
        Fleet {
            services,
            hsm,
            redis,
            pg,
            provider_id,
            people: ppl,
            endpoints,
            _net: net,
            _dir: dir,
        }
    }

    pub fn host(&self, service: &str) -> &Host {
        &self.services[service].host
    }

    /// Every service's stderr, for a failure message.
    pub fn stderrs(&self) -> String {
        let mut s = String::new();
        for (name, svc) in &self.services {
            s.push_str(&format!("--- {name}\n{}\n", svc.stderr()));
        }
        s
    }

    /// Opens the store's database directly (the checks read it).
    pub async fn store(&self) -> poz_store::Store {
        poz_store::Store::open(&self.pg.url(), poz_store::StoreOptions::default())
            .await
            .unwrap()
    }
}

/// `people` sole-owner records (person `n`'s key is [`person_key`]),
/// created in `store` under the domains `p{n}.faults.example`.
async fn create_people(store: &poz_store::Store, people: usize) -> Vec<Person> {
    let mut ppl = Vec::new();
    for n in 0..people {
        let genesis = sample::sole_owner_genesis(&person_key(n)).unwrap();
        let domain = format!("p{n}.faults.example");
        store
            .create_record(&genesis.to_bytes(), std::slice::from_ref(&domain), "")
            .await
            .unwrap();
        ppl.push(Person { genesis, domain });
    }
    ppl
}

/// pozd, the whole fleet in one process on SQLite with software keys
/// (the README's main job), serving [`PROVIDER_DOMAIN`] on loopback with
/// the harness's people: for the soak. Its answer cache is off, as the
/// split fleet's is, so that a lookup right after an acknowledged
/// revision must show it.
pub struct Pozd {
    pub process: ServiceProcess,
    pub provider_id: Hash32,
    pub people: Vec<Person>,
    pub endpoints: Endpoints,
    store_url: String,
    _dir: tempfile::TempDir,
}

impl Pozd {
    /// The first start makes the demo provider; the people's records are
    /// then created in its database while it is stopped, and it starts
    /// again on the same ports.
    pub async fn start(people: usize) -> Pozd {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let bin = dir.path().join("pozd");
        std::fs::copy(poz_testkit::workspace_bin("pozd"), &bin).unwrap();
        let spawn = || {
            let mut cmd = std::process::Command::new(&bin);
            cmd.arg("--data")
                .arg(&data)
                .args(["--domain", PROVIDER_DOMAIN, "--cache-ttl-ms", "0"])
                .args(["--plain", "127.0.0.1:0", "--noise", "127.0.0.1:0"])
                .args(["--submit", "127.0.0.1:0"])
                .env("RUST_LOG", "warn");
            ServiceProcess::spawn_until(cmd, poz_testkit::START_TIMEOUT, |l| {
                l.contains("--noise-key")
            })
        };
        let mut first = spawn();
        assert!(first.terminate().success(), "{}", first.stderr());
        let store_url = format!("sqlite://{}?mode=rwc", data.join("store.db").display());
        let store = poz_store::Store::open(&store_url, poz_store::StoreOptions::default())
            .await
            .unwrap();
        let ppl = create_people(&store, people).await;
        store.close().await;
        let process = spawn();
        let banner = poz_testkit::PozdBanner::parse(process.printed());
        // The Provider API is plain gRPC on loopback; the channel builder
        // wants certificate files all the same (unused for http://).
        let ca = Authority::new(dir.path(), "unused-ca");
        let endpoints = Endpoints {
            query: vec![(banner.plain, banner.noise)],
            query_key: banner.noise_key,
            submit: banner.submit,
            submit_key: banner.submit_key,
            api: banner.api.clone(),
            account: ca.issue(identity::ACCOUNT_SYSTEM, "account", ca.ca_file()),
        };
        Pozd {
            process,
            provider_id: Hash32::from_hex(&banner.record_id).unwrap(),
            people: ppl,
            endpoints,
            store_url,
            _dir: dir,
        }
    }

    /// A store over its SQLite database (for the checks).
    pub async fn store(&self) -> poz_store::Store {
        poz_store::Store::open(&self.store_url, poz_store::StoreOptions::default())
            .await
            .unwrap()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for s in self.services.values_mut() {
            s.kill();
        }
        self.redis.stop();
    }
}
