//! What the kit's test files share: a verifier that answers with one
//! fixed error (the tests are about who reaches it and how the port
//! behaves, not what it says), a server running it until stopped, and a
//! TLS client without a certificate.
#![allow(dead_code, clippy::unwrap_used)]

use poz_kit::{Allowlist, GrpcRoutes, GrpcServer, ServeError, ServeSettings};
use poz_proto::v1 as pb;

/// Answers every call INVALID_ARGUMENT "reached the verifier".
#[derive(Default)]
pub struct Fixed;

#[tonic::async_trait]
impl pb::verifier_server::Verifier for Fixed {
    async fn verify_record(
        &self,
        _: tonic::Request<pb::VerifyRecordRequest>,
    ) -> Result<tonic::Response<pb::VerifyRecordResponse>, tonic::Status> {
        Err(tonic::Status::invalid_argument("reached the verifier"))
    }
    async fn verify_update(
        &self,
        _: tonic::Request<pb::VerifyUpdateRequest>,
    ) -> Result<tonic::Response<pb::VerifyRecordResponse>, tonic::Status> {
        Err(tonic::Status::invalid_argument("reached the verifier"))
    }
    async fn verify_entries(
        &self,
        _: tonic::Request<pb::VerifyEntriesRequest>,
    ) -> Result<tonic::Response<pb::VerifyEntriesResponse>, tonic::Status> {
        Err(tonic::Status::invalid_argument("reached the verifier"))
    }
}

/// A `poz-verifier` port on 127.0.0.1 with `settings` and no default
/// allowlist.
pub async fn bind(settings: &ServeSettings) -> GrpcServer {
    GrpcServer::bind(
        "poz-verifier",
        "127.0.0.1:0",
        settings,
        Allowlist::default(),
    )
    .await
    .unwrap()
}

/// A bound server serving [`Fixed`] until [`Running::stop`].
pub struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl Running {
    pub fn start(server: GrpcServer) -> Running {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(server.serve_until(
            GrpcRoutes::new().service(pb::verifier_server::VerifierServer::new(Fixed)),
            async {
                let _ = stopped.await;
            },
        ));
        Running { stop, served }
    }

    /// Stops it and waits for its drain; the server must end cleanly.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.served.await.unwrap().unwrap();
    }

    /// Stops it and hands back the task, for a test that bounds the wait.
    pub fn stop_and_join(self) -> tokio::task::JoinHandle<Result<(), ServeError>> {
        let _ = self.stop.send(());
        self.served
    }
}

/// A TLS client trusting `ca`, offering h2, presenting no certificate.
pub fn no_client_auth(ca: &rcgen::Certificate) -> tokio_rustls::rustls::ClientConfig {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let mut c = tokio_rustls::rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    c.alpn_protocols = vec![b"h2".to_vec()];
    c
}
