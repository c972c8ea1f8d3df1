//! Trace export and W3C context across a gRPC hop, end to end: a real
//! OTLP/gRPC receiver in the test, the kit's exporter configured only by
//! the standard `OTEL_*` variables, and a call from a kit channel to a
//! kit server landing client and server spans in one trace.
#![allow(clippy::unwrap_used)]

mod support;

use opentelemetry_proto::tonic::collector::trace::v1::{
    trace_service_server::{TraceService, TraceServiceServer},
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use poz_kit::{Allowlist, Channels, GrpcRoutes, GrpcServer, ServeSettings};
use poz_proto::v1 as pb;
use std::sync::{Arc, Mutex};

/// One exported span: (service.name, span name, trace id, span id,
/// parent span id).
type Seen = (String, String, Vec<u8>, Vec<u8>, Vec<u8>);

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Seen>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    self.0.lock().unwrap().push((
                        service.clone(),
                        s.name,
                        s.trace_id,
                        s.span_id,
                        s.parent_span_id,
                    ));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_a_kit_channel_and_server_is_one_trace_exported_over_otlp() {
    let receiver = Receiver::default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = l.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(receiver.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    // Only the standard variables configure the export.
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"));
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "50");
    std::env::remove_var("OTEL_SERVICE_NAME");
    let telemetry = poz_kit::telemetry::init("poz-kit-test", false).unwrap();
    assert!(telemetry.exporting());

    let settings = ServeSettings {
        insecure: true,
        ..ServeSettings::default()
    };
    let server = GrpcServer::bind("poz-test", "127.0.0.1:0", &settings, Allowlist::default())
        .await
        .unwrap();
    let url = format!("http://{}", server.local_addr());
    tokio::spawn(server.serve_until(
        GrpcRoutes::new().service(pb::verifier_server::VerifierServer::new(support::Fixed)),
        std::future::pending(),
    ));
    {
        use tracing::Instrument;
        let mut c =
            pb::verifier_client::VerifierClient::new(Channels::default().lazy(&url).unwrap());
        async {
            let _ = c.verify_record(pb::VerifyRecordRequest::default()).await;
        }
        .instrument(tracing::info_span!("test.lookup"))
        .await;
    }
    // The batch processor exports every 50 ms; wait up to 20 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let spans = loop {
        let spans = receiver.0.lock().unwrap().clone();
        let names: Vec<&str> = spans.iter().map(|s| s.1.as_str()).collect();
        if names.contains(&"test.lookup")
            && names.contains(&"poz.v1.Verifier/VerifyRecord")
            && spans
                .iter()
                .filter(|s| s.1 == "poz.v1.Verifier/VerifyRecord")
                .count()
                == 2
        {
            break spans;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "spans seen: {spans:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let root = spans.iter().find(|s| s.1 == "test.lookup").unwrap();
    assert!(root.0.contains("poz-kit-test"), "service.name: {}", root.0);
    let rpc: Vec<&Seen> = spans
        .iter()
        .filter(|s| s.1 == "poz.v1.Verifier/VerifyRecord")
        .collect();
    // Client and server span of the call, in the caller's trace: the
    // client span's parent is the caller's span, the server span's
    // parent is the client span (carried by `traceparent`).
    assert!(rpc.iter().all(|s| s.2 == root.2), "{spans:?}");
    let client = rpc
        .iter()
        .find(|s| s.4 == root.3)
        .expect("client span under the caller");
    assert!(
        rpc.iter().any(|s| s.4 == client.3),
        "server span under the client span: {spans:?}"
    );
    drop(telemetry);
}
