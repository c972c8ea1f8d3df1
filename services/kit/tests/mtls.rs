//! The runner's mutual TLS over real sockets: certificates from files,
//! per-RPC allowlists answered with PERMISSION_DENIED, health open to
//! any TLS caller, and a certificate replaced on disk used for the next
//! connection without a restart.
#![allow(clippy::unwrap_used)]

mod support;

use poz_kit::allow::identity;
use poz_kit::{Allowlist, Channels, GrpcServer, ServeSettings};
use poz_proto::v1 as pb;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};
use std::path::{Path, PathBuf};

/// A CA that issues the fleet's certificates, written as PEM files.
struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
    dir: PathBuf,
}

impl Authority {
    fn new(dir: &Path, name: &str) -> Authority {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        Authority {
            cert,
            key,
            dir: dir.to_path_buf(),
        }
    }

    fn ca_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    /// Issues a certificate for `name` (DNS SAN, plus 127.0.0.1) into
    /// `<file>.crt` and `<file>.key`.
    fn issue(&self, name: &str, file: &str) -> poz_kit::tls::TlsFiles {
        self.issue_names(&[name], file)
    }

    /// Issues a certificate whose SANs are the DNS `names` and 127.0.0.1.
    fn issue_names(&self, names: &[&str], file: &str) -> poz_kit::tls::TlsFiles {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut p = CertificateParams::new(names).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        let (c, k) = (
            self.dir.join(format!("{file}.crt")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        poz_kit::tls::TlsFiles {
            cert_file: Some(c),
            key_file: Some(k),
            ca_file: None,
        }
    }
}

fn with_ca(mut f: poz_kit::tls::TlsFiles, ca: &Path) -> poz_kit::tls::TlsFiles {
    f.ca_file = Some(ca.to_path_buf());
    f
}

async fn call(channels: &Channels, url: &str) -> Result<(), tonic::Status> {
    let mut c = pb::verifier_client::VerifierClient::new(channels.lazy(url).unwrap());
    c.verify_record(pb::VerifyRecordRequest::default())
        .await
        .map(|_| ())
}

#[tokio::test]
async fn callers_are_named_by_their_certificates_and_refused_per_rpc() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new(dir.path(), "fleet-ca");
    let ca_file = ca.ca_file("fleet-ca");
    let server_files = with_ca(ca.issue("poz-verifier", "verifier"), &ca_file);
    let settings = ServeSettings {
        tls: server_files,
        ..ServeSettings::default()
    };
    let allow = Allowlist::of(&[("poz.v1.Verifier", &[identity::PROVIDER_API])]);
    let server = GrpcServer::bind("poz-verifier", "127.0.0.1:0", &settings, allow)
        .await
        .unwrap();
    let url = format!("https://{}", server.local_addr());
    let running = support::Running::start(server);

    // On the allowlist: the call reaches the service.
    let api = Channels::new(&with_ca(ca.issue(identity::PROVIDER_API, "api"), &ca_file)).unwrap();
    let e = call(&api, &url).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (tonic::Code::InvalidArgument, "reached the verifier")
    );

    // A fleet certificate, but not on this RPC's allowlist.
    let query = Channels::new(&with_ca(ca.issue(identity::QUERY_GW, "query"), &ca_file)).unwrap();
    let e = call(&query, &url).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert_eq!(
        e.message(),
        "poz-query-gw may not call poz.v1.Verifier/VerifyRecord"
    );

    // A fleet certificate that names no DNS or URI SAN (only an IP): the
    // caller is told what is missing, not that it has no certificate.
    let nameless = Channels::new(&with_ca(ca.issue_names(&[], "nameless"), &ca_file)).unwrap();
    let e = call(&nameless, &url).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("names no DNS or URI SAN"), "{e:?}");

    // Paths that no service of the port has: the metric labels never
    // take the caller's text (review of issue 13: a caller could grow
    // the series without bound).
    // (And a method of no service called by a caller the allowlist
    // refuses: PERMISSION_DENIED before any handler, still unnamed.)
    for (path, caller) in [
        ("/poz.v1.Junk4711/Anything", &api),
        ("/poz.v1.Verifier/Nope4711", &api),
        ("/poz.v1.Verifier/Refused4711", &nameless),
    ] {
        let mut grpc = tonic::client::Grpc::new(caller.lazy(&url).unwrap());
        grpc.ready().await.unwrap();
        let e = grpc
            .unary(
                tonic::Request::new(()),
                http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::<(), ()>::default(),
            )
            .await
            .unwrap_err();
        let want = if path.contains("Nope") {
            tonic::Code::Unimplemented
        } else {
            tonic::Code::PermissionDenied
        };
        assert_eq!(e.code(), want, "{path}: {e:?}");
    }

    // A certificate from another CA does not complete the handshake.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Authority::new(other_dir.path(), "other-ca");
    let stranger = Channels::new(&with_ca(
        other.issue(identity::PROVIDER_API, "stranger"),
        &ca_file,
    ))
    .unwrap();
    // The server rejects its chain with the TLS alert unknown_ca.
    let e = call(&stranger, &url).await.unwrap_err();
    assert!(format!("{e:?}").contains("UnknownCA"), "{e:?}");

    // No client certificate at all: TLS completes, the RPC is refused,
    // health stays open.
    let anon = support::no_client_auth(&ca.cert);
    let endpoint = tonic::transport::Endpoint::from_shared(url.replace("https", "http")).unwrap();
    let anon = std::sync::Arc::new(anon);
    let channel = endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: http::Uri| {
        let anon = anon.clone();
        async move {
            let tcp =
                tokio::net::TcpStream::connect((uri.host().unwrap(), uri.port_u16().unwrap()))
                    .await?;
            let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let s = tokio_rustls::TlsConnector::from(anon)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
        }
    }));
    let e = pb::verifier_client::VerifierClient::new(channel.clone())
        .verify_record(pb::VerifyRecordRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert_eq!(e.message(), "a client certificate is required");
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "poz.v1.Verifier".into(),
        })
        .await
        .unwrap();
    assert_eq!(health.into_inner().status, 1, "SERVING");

    // Every outcome is counted by method and status.
    let text = poz_kit::metrics::encode();
    for code in ["INVALID_ARGUMENT", "PERMISSION_DENIED"] {
        let line = format!(
            "poz_grpc_server_calls_total{{service=\"poz.v1.Verifier\",method=\"VerifyRecord\",code=\"{code}\"}}"
        );
        assert!(text.contains(&line), "{line} not in\n{text}");
    }
    assert!(
        text.contains("poz_grpc_server_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(
        !text.contains("4711"),
        "a caller's path became a label:\n{text}"
    );
    for line in [
        "poz_grpc_server_calls_total{service=\"unknown\",method=\"unknown\",code=\"PERMISSION_DENIED\"} 1",
        "poz_grpc_server_calls_total{service=\"poz.v1.Verifier\",method=\"unknown\",code=\"UNIMPLEMENTED\"} 1",
        "poz_grpc_server_calls_total{service=\"poz.v1.Verifier\",method=\"unknown\",code=\"PERMISSION_DENIED\"} 1",
        // The stranger's handshake.
        "poz_tls_handshake_failures_total{reason=\"error\"}",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }

    running.stop().await;
}

/// The names on the certificate the server at `addr` presents to a new
/// connection.
async fn presented(addr: std::net::SocketAddr, ca: &Authority) -> Vec<String> {
    let c = support::no_client_auth(&ca.cert);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let s = tokio_rustls::TlsConnector::from(std::sync::Arc::new(c))
        .connect(name, tcp)
        .await
        .unwrap();
    let leaf = s.get_ref().1.peer_certificates().unwrap()[0].clone();
    poz_kit::tls::identities(&leaf)
}

#[tokio::test]
async fn a_certificate_replaced_on_disk_is_used_for_the_next_connection() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new(dir.path(), "fleet-ca");
    let ca_file = ca.ca_file("fleet-ca");
    let files = with_ca(ca.issue("poz-verifier-old", "verifier"), &ca_file);
    let settings = ServeSettings {
        tls: files.clone(),
        ..ServeSettings::default()
    };
    let server = support::bind(&settings).await;
    let addr = server.local_addr();
    let running = support::Running::start(server);
    assert_eq!(presented(addr, &ca).await, ["poz-verifier-old"]);

    // Replace the files as a Secret volume update does: new files
    // renamed over the old ones, while the server runs.
    let renewed = ca.issue("poz-verifier-new", "renewed");
    std::fs::rename(renewed.key_file.unwrap(), files.key_file.as_ref().unwrap()).unwrap();
    std::fs::rename(
        renewed.cert_file.unwrap(),
        files.cert_file.as_ref().unwrap(),
    )
    .unwrap();
    assert_eq!(presented(addr, &ca).await, ["poz-verifier-new"]);

    // A half-written file keeps the last good certificate.
    std::fs::write(
        files.cert_file.as_ref().unwrap(),
        "-----BEGIN CERTIFICATE-----\nAAAA",
    )
    .unwrap();
    assert_eq!(presented(addr, &ca).await, ["poz-verifier-new"]);

    running.stop().await;
}

/// The services a port lists over reflection `v1` and `v1alpha`, as a
/// stock client (grpcurl) asks for them.
async fn listed(url: &str) -> (Vec<String>, Vec<String>) {
    use tonic_reflection::pb::{v1, v1alpha};
    let channel = Channels::default().lazy(url).unwrap();
    let mut c = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let req = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = c
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let a = answers.message().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(l)) =
        a.message_response
    else {
        panic!("{a:?}")
    };
    let mut one: Vec<String> = l.service.into_iter().map(|s| s.name).collect();
    one.sort();
    let mut c = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut answers = c
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let a = answers.message().await.unwrap().unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(l)) =
        a.message_response
    else {
        panic!("{a:?}")
    };
    let mut alpha: Vec<String> = l.service.into_iter().map(|s| s.name).collect();
    alpha.sort();
    (one, alpha)
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_exactly_what_the_port_serves() {
    let settings = ServeSettings {
        insecure: true,
        ..ServeSettings::default()
    };
    let server = support::bind(&settings).await;
    let url = format!("http://{}", server.local_addr());
    let running = support::Running::start(server);
    let want = [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "poz.v1.Verifier",
    ];
    let (one, alpha) = listed(&url).await;
    assert_eq!(one, want);
    assert_eq!(alpha, want);
    running.stop().await;
}

/// Review of issue 13: a key that is not the certificate's was reported
/// without naming either file.
#[test]
fn a_key_that_is_not_the_certificates_names_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new(dir.path(), "fleet-ca");
    let ca_file = ca.ca_file("fleet-ca");
    let one = ca.issue("poz-verifier", "one");
    let two = ca.issue("poz-verifier", "two");
    let mixed = poz_kit::tls::TlsFiles {
        cert_file: one.cert_file.clone(),
        key_file: two.key_file.clone(),
        ca_file: Some(ca_file),
    };
    let e = match poz_kit::tls::ServerTls::load(&mixed) {
        Ok(_) => panic!("a mismatched key loaded"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("one.crt") && e.contains("two.key"), "{e}");
    assert!(e.contains("do not make a pair"), "{e}");
}

/// Review of issue 13: one address opening connections that never
/// handshake could take every pending-handshake slot and stall the port
/// for everyone. Beyond 32 in progress from one address, its new
/// connections are closed unread; another address still gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_every_pending_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new(dir.path(), "fleet-ca");
    let ca_file = ca.ca_file("fleet-ca");
    let settings = ServeSettings {
        tls: with_ca(ca.issue("poz-verifier", "verifier"), &ca_file),
        ..ServeSettings::default()
    };
    let server = support::bind(&settings).await;
    let addr = server.local_addr();
    let running = support::Running::start(server);
    // 40 idle connections from 127.0.0.1: 32 wait in the handshake, the
    // other 8 are closed unread (they read end of file or a reset).
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let mut closed = 0;
    for s in &mut idle {
        use tokio::io::AsyncReadExt;
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(std::time::Duration::from_millis(300), s.read(&mut b)).await;
        if matches!(r, Ok(Ok(0)) | Ok(Err(_))) {
            closed += 1;
        }
    }
    assert_eq!(closed, 8, "connections closed unread");
    // Another address completes its handshake at once.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let c = support::no_client_auth(&ca.cert);
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(c)).connect(name, tcp),
    )
    .await
    .expect("the handshake from another address waited")
    .unwrap();
    let text = poz_kit::metrics::encode();
    assert!(
        text.contains("poz_tls_handshake_failures_total{reason=\"per_ip\"} 8"),
        "{text}"
    );
    drop(idle);
    running.stop().await;
}

/// Review of issue 13: a health `Watch` stream with no deadline held the
/// drain open until the client let go. The drain now ends at its
/// timeout, the stream cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_stream_does_not_hold_the_drain_past_its_timeout() {
    let settings = ServeSettings {
        insecure: true,
        ..ServeSettings::default()
    };
    let server = support::bind(&settings)
        .await
        .with_drain_timeout(std::time::Duration::from_millis(300));
    let url = format!("http://{}", server.local_addr());
    let running = support::Running::start(server);
    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut watch = tonic_health::pb::health_client::HealthClient::new(channel)
        .watch(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, 1, "SERVING");
    let served = running.stop_and_join();
    // The watcher is told NOT_SERVING, keeps its stream open, and the
    // server still stops (bounded wait, far above the 300 ms timeout).
    let next = watch.message().await.unwrap().unwrap();
    assert_eq!(next.status, 2, "NOT_SERVING");
    tokio::time::timeout(std::time::Duration::from_secs(15), served)
        .await
        .expect("the drain waited for the open stream")
        .unwrap()
        .unwrap();
    drop(watch);
}

/// `tls::rejection` reads the server's verdict on a client certificate
/// at the TLS layer (pozctl asks it when a call only saw "connection
/// closed"): another CA's certificate gets the alert, the fleet's gets
/// none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_client_certificate_is_told_by_its_alert() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new(dir.path(), "fleet-ca");
    let ca_file = ca.ca_file("fleet-ca");
    let settings = ServeSettings {
        tls: with_ca(ca.issue("poz-verifier", "verifier"), &ca_file),
        ..ServeSettings::default()
    };
    let server = support::bind(&settings).await;
    let url = format!("https://{}", server.local_addr());
    let running = support::Running::start(server);
    let other_dir = tempfile::tempdir().unwrap();
    let other = Authority::new(other_dir.path(), "other-ca");
    let wait = std::time::Duration::from_secs(5);
    let stranger = with_ca(other.issue("poz-operator", "stranger"), &ca_file);
    let alert = poz_kit::tls::rejection(&stranger, &url, wait).await;
    assert_eq!(alert.as_deref(), Some("received fatal alert: UnknownCA"));
    let member = with_ca(ca.issue("poz-operator", "member"), &ca_file);
    assert_eq!(
        poz_kit::tls::rejection(&member, &url, std::time::Duration::from_millis(500)).await,
        None
    );
    running.stop().await;
}
