//! Issue 13: one Noise lookup through the split services is one trace.
//! A real OTLP/gRPC receiver runs in the test; `poz-store` and
//! `poz-query-gw` run as their own processes, exporting only because the
//! standard `OTEL_*` variables point at it. An IDENTITY lookup over
//! Noise (7075) must leave the gateway's request span and the store's
//! server span in one trace, the store's under the gateway's.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_server::{TraceService, TraceServiceServer},
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use poz::codec::Codec;
use poz::wire::{IdentityAnswer, IdentityQuery, MessageType};
use poz::Record;
use poz_client::{Client, ClientConfig, Endpoint, Security};
use poz_testkit::ServiceProcess;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// One exported span.
#[derive(Clone, Debug)]
struct Seen {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Seen>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    self.0.lock().unwrap().push(Seen {
                        service: service.clone(),
                        name: s.name,
                        trace_id: s.trace_id,
                        span_id: s.span_id,
                        parent_span_id: s.parent_span_id,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noise_lookup_is_one_trace_from_the_gateway_through_the_store() {
    let receiver = Receiver::default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];

    // The sample provider, with alice's binding, in a SQLite store file.
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
    let provider = poz::sample::provider().unwrap();
    {
        let store = poz_store::Store::open(&db, poz_store::StoreOptions::default())
            .await
            .unwrap();
        let genesis = Record::new(provider.keys.clone(), provider.history[0].clone());
        store
            .create_record(&genesis.to_bytes(), &["social.example".into()], "")
            .await
            .unwrap();
        store
            .advance_head(&provider.to_bytes(), 1, "")
            .await
            .unwrap();
        store.close().await;
    }
    let mut cmd = Command::new(poz_testkit::workspace_bin("poz-store"));
    cmd.args([
        "--insecure",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &db,
    ])
    .env_remove("OTEL_SERVICE_NAME")
    .envs(otel);
    let store = ServiceProcess::spawn(cmd);

    let key = poz::noise::StaticKeypair::generate();
    let key_file = dir.path().join("noise.key");
    std::fs::write(&key_file, hex::encode(key.secret())).unwrap();
    let secrets = dir.path().join("secrets");
    std::fs::write(&secrets, format!("{}\n", hex::encode([3u8; 32]))).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_poz-query-gw"));
    cmd.args([
        "--insecure",
        "--listen-plain",
        "127.0.0.1:0",
        "--listen-noise",
        "127.0.0.1:0",
        "--store",
        &store.url(),
    ])
    .env("POZ_QUERY_GW_NOISE_KEY_FILE", &key_file)
    .env("POZ_QUERY_GW_CHALLENGE_SECRETS_FILE", &secrets)
    // Every lookup asks the store: no answer cache.
    .env("POZ_QUERY_GW_CACHE_TTL_MS", "0")
    .env_remove("OTEL_SERVICE_NAME")
    .envs(otel);
    let gw = ServiceProcess::spawn(cmd);
    // "listening plain ADDR noise ADDR key HEX"
    let noise = gw
        .addr()
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()
        .unwrap();

    let client = Client::new(ClientConfig {
        attempts: 1,
        max_pow_difficulty: 12,
        ..ClientConfig::default()
    });
    let eps = [Endpoint {
        addr: noise,
        security: Security::Noise(key.public),
    }];
    let q = IdentityQuery {
        domain: "social.example".into(),
        handle: "alice".into(),
    };
    let a = IdentityAnswer::from_bytes(
        &client
            .request_any(&eps, MessageType::IDENTITY, &q.to_bytes())
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(a.revocation.is_none());

    // Wait (at most 30 s) for the gateway's request span and a store
    // server span of LookupBindings in the same trace.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let spans = receiver.0.lock().unwrap().clone();
        let request = spans
            .iter()
            .find(|s| s.service == "poz-query-gw" && s.name == "poz.request");
        if let Some(request) = request {
            let in_trace: Vec<&Seen> = spans
                .iter()
                .filter(|s| s.trace_id == request.trace_id)
                .collect();
            let store_server = in_trace
                .iter()
                .find(|s| s.service == "poz-store" && s.name == "poz.v1.StoreRead/LookupBindings");
            if let Some(server) = store_server {
                // The chain: poz.request → poz.gather → client call →
                // the store's server span, each the parent of the next.
                let by_id = |id: &[u8]| in_trace.iter().find(|s| s.span_id == id).copied();
                let client_span = by_id(&server.parent_span_id).expect("the store's parent span");
                assert_eq!(client_span.service, "poz-query-gw");
                assert_eq!(client_span.name, "poz.v1.StoreRead/LookupBindings");
                let gather = by_id(&client_span.parent_span_id).expect("the gather span");
                assert_eq!(gather.name, "poz.gather");
                assert_eq!(gather.parent_span_id, request.span_id);
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no gateway-to-store trace among {spans:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
