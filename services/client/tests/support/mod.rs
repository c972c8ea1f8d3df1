//! A minimal POZ server for tests: the sans-I/O gate and catalog from
//! `poz`, on real loopback sockets bound to port 0. The production
//! gateways (query-gw, submit-gw) come later; this loop exists so the
//! client, discovery and interop tests talk to a real server.
#![allow(dead_code, clippy::unwrap_used)]

use poz::codec::Codec;
use poz::gate::{Admission, Gate, Port};
use poz::noise::{length_prefixed, split_message, NkResponder, StaticKeypair, MAX_MESSAGE};
use poz::pow::{Challenger, PowConfig, Secrets};
use poz::serve::Catalog;
use poz::wire::{Request, Response, Status};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct TestServer {
    pub plain: SocketAddr,
    pub noise: SocketAddr,
    pub submit: SocketAddr,
    pub key: StaticKeypair,
    pub catalog: Arc<RwLock<Catalog>>,
    pub difficulty: Arc<AtomicU8>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

struct Shared {
    gate: Mutex<Gate>,
    catalog: Arc<RwLock<Catalog>>,
    difficulty: Arc<AtomicU8>,
    key: StaticKeypair,
}

impl Shared {
    fn respond(&self, port: Port, frame: &[u8]) -> Response {
        let d = self.difficulty.load(Ordering::Relaxed);
        let admission = self.gate.lock().unwrap().admit(port, frame, now_ms(), d);
        match admission {
            Admission::Respond(r) => r,
            Admission::Admit(req) if port == Port::NoiseSubmit => Response::error(
                Status::UNAVAILABLE,
                req.request_id,
                0,
                "submissions are not served by the test server",
            ),
            Admission::Admit(req) => self.catalog.read().unwrap().answer(&req),
        }
    }
}

/// Reads until `check` says a whole frame arrived; None on EOF, timeout
/// or a frame error (the server then answers the error or closes).
async fn read_plain(s: &mut TcpStream) -> Result<Vec<u8>, Option<Response>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match Request::check(&buf) {
            Ok(Some(n)) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Ok(None) => {}
            Err(e) => {
                return Err(Some(Response::error(
                    e.status(),
                    e.request_id(),
                    0,
                    &e.to_string(),
                )))
            }
        }
        let n = match tokio::time::timeout(Duration::from_secs(2), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Err(None),
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn serve_plain(shared: Arc<Shared>, mut s: TcpStream) {
    let resp = match read_plain(&mut s).await {
        Ok(frame) => shared.respond(Port::Plain, &frame),
        Err(Some(r)) => r,
        Err(None) => return,
    };
    let _ = s.write_all(&resp.to_bytes()).await;
    let _ = s.shutdown().await;
}

async fn serve_noise(shared: Arc<Shared>, mut s: TcpStream, port: Port) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let msg = loop {
        if let Some((m, _)) = split_message(&buf) {
            break m.to_vec();
        }
        if buf.len() > MAX_MESSAGE + 2 {
            return;
        }
        match tokio::time::timeout(Duration::from_secs(2), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    };
    let Ok(mut responder) = NkResponder::new(&shared.key) else {
        return;
    };
    // Not Noise (e.g. plaintext on 7075): nothing can be answered
    // privately, so the connection is closed.
    let Ok(frame) = responder.read_request(&msg) else {
        return;
    };
    let resp = shared.respond(port, &frame);
    let Ok(msgs) = responder.write_response(&resp.to_bytes()) else {
        return;
    };
    for m in msgs {
        if s.write_all(&length_prefixed(&m)).await.is_err() {
            return;
        }
    }
    let _ = s.shutdown().await;
}

pub async fn start(catalog: Catalog, difficulty: u8) -> TestServer {
    let key = StaticKeypair::generate();
    let catalog = Arc::new(RwLock::new(catalog));
    let difficulty = Arc::new(AtomicU8::new(difficulty));
    let shared = Arc::new(Shared {
        gate: Mutex::new(Gate::new(
            Challenger::new(PowConfig::default(), Secrets(vec![[0x5E; 32]])),
            100_000,
        )),
        catalog: catalog.clone(),
        difficulty: difficulty.clone(),
        key: key.clone(),
    });
    let mut tasks = Vec::new();
    let mut addrs = Vec::new();
    for port in [Port::Plain, Port::NoiseQuery, Port::NoiseSubmit] {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addrs.push(l.local_addr().unwrap());
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    match port {
                        Port::Plain => serve_plain(shared, s).await,
                        p => serve_noise(shared, s, p).await,
                    }
                });
            }
        }));
    }
    TestServer {
        plain: addrs[0],
        noise: addrs[1],
        submit: addrs[2],
        key,
        catalog,
        difficulty,
        tasks,
    }
}

/// A DNS record for `dns`.
pub fn rec(name: &str, data: hickory_proto::rr::RData) -> hickory_proto::rr::Record {
    use std::str::FromStr;
    hickory_proto::rr::Record::from_rdata(
        hickory_proto::rr::Name::from_str(name).unwrap(),
        60,
        data,
    )
}

/// A real DNS server (hickory, in process) answering `records` for
/// `origin`, on UDP and TCP of one ephemeral loopback port.
pub async fn dns(
    origin: &str,
    records: Vec<hickory_proto::rr::Record>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use hickory_server::authority::{Catalog as DnsCatalog, ZoneType};
    use hickory_server::store::in_memory::InMemoryAuthority;
    use std::str::FromStr;
    let origin = hickory_proto::rr::Name::from_str(origin).unwrap();
    let mut auth = InMemoryAuthority::empty(origin.clone(), ZoneType::Primary, false);
    for r in records {
        auth.upsert_mut(r, 0);
    }
    let mut catalog = DnsCatalog::new();
    catalog.upsert(origin.into(), Box::new(Arc::new(auth)));
    let mut server = hickory_server::ServerFuture::new(catalog);
    // UDP and TCP on one port number: the UDP port is ephemeral, and the
    // same TCP port may be taken (by a parallel test), so retry the pair.
    let (udp, tcp) = {
        let mut pair = None;
        for _ in 0..50 {
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()).await {
                pair = Some((udp, tcp));
                break;
            }
        }
        pair.expect("a port free for both UDP and TCP")
    };
    let addr = udp.local_addr().unwrap();
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(5));
    let task = tokio::spawn(async move {
        let _ = server.block_until_done().await;
    });
    (addr, task)
}

/// Serves the sample provider under `social.example` with one more
/// POZ_QUERY service: host `q7.social.example` on this server's Noise port
/// with this server's key, priority 1. Returns the record ID.
pub fn serve_provider_with_private_host(s: &TestServer) -> poz::Hash32 {
    use poz::entries::{Encryption, PoolHost, ServiceEntry, ServiceType, Transport, NO_CA_KEY};
    use poz::zone::{EntryKind, SignedEntry, ZoneType};
    let mut p = poz::sample::provider().unwrap();
    let svc = ServiceEntry {
        service_type: ServiceType::POZ_QUERY,
        name: "private".into(),
        pool: vec![PoolHost {
            hostname: "q7.social.example".into(),
            port: s.noise.port(),
            transport: Transport::TCP,
            encryption: Encryption::NOISE_NK,
            server_key: Some(s.key.public),
            ca_key_idx: NO_CA_KEY,
            priority: 1,
            weight: 10,
        }],
    };
    let mut e = SignedEntry::new(EntryKind::GRANT, svc.to_bytes());
    poz::workflow::sign_entry(
        &p,
        ZoneType::SERVICE,
        &mut e,
        &poz::sample::provider_keys().zones,
    )
    .unwrap();
    poz::workflow::insert_entry(&mut p, ZoneType::SERVICE, e).unwrap();
    let id = p.id();
    s.catalog
        .write()
        .unwrap()
        .insert("social.example", poz::serve::ServedRecord::new(p, vec![]));
    id
}

/// DNS for `social.example`: SRV to q1 on the server's plain port, A
/// records for q1 and q7 (127.0.0.1), and the TXT pin of `id`.
pub async fn social_dns(
    s: &TestServer,
    id: poz::Hash32,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use hickory_proto::rr::rdata::{A, SRV, TXT};
    use hickory_proto::rr::{Name, RData};
    use std::str::FromStr;
    dns(
        "social.example.",
        vec![
            rec(
                "_poz._tcp.social.example.",
                RData::SRV(SRV::new(
                    10,
                    60,
                    s.plain.port(),
                    Name::from_str("q1.social.example.").unwrap(),
                )),
            ),
            rec("q1.social.example.", RData::A(A::new(127, 0, 0, 1))),
            rec("q7.social.example.", RData::A(A::new(127, 0, 0, 1))),
            rec(
                "_poz.social.example.",
                RData::TXT(TXT::new(vec![format!("v=poz0 id={}", id.to_hex())])),
            ),
        ],
    )
    .await
}

/// A throwaway CA and a leaf certificate it issued for one host.
pub struct TestCa {
    pub ca_pem: String,
    leaf_der: Vec<u8>,
    leaf_key_der: Vec<u8>,
}

impl TestCa {
    /// A server identity made elsewhere (a POZ-as-CA host certificate):
    /// its certificate and PKCS#8 key; no CA certificate to hand out.
    pub fn from_leaf(leaf_der: Vec<u8>, leaf_key_der: Vec<u8>) -> TestCa {
        TestCa {
            ca_pem: String::new(),
            leaf_der,
            leaf_key_der,
        }
    }
}

pub fn test_ca(host: &str) -> TestCa {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![host.to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    TestCa {
        ca_pem: ca.pem(),
        leaf_der: leaf.der().to_vec(),
        leaf_key_der: leaf_key.serialize_der(),
    }
}

/// An HTTPS server answering every request with `body` as JSON.
pub async fn https(ca: &TestCa, body: String) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![tokio_rustls::rustls::pki_types::CertificateDer::from(
                ca.leaf_der.clone(),
            )],
            tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(ca.leaf_key_der.clone().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let body = body.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(n) if n > 0 => req.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let ok = req.starts_with(b"GET /.well-known/poz ");
                let resp = if ok {
                    format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
                } else {
                    "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        .to_string()
                };
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, task)
}
