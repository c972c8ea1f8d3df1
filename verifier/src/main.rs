//! `poz-verifier`: the stateless verifier as a gRPC service.
#![forbid(unsafe_code)]

use clap::Parser;
use poz_proto::v1::verifier_server::VerifierServer;
use poz_verifier::VerifierService;

#[derive(Parser, Debug)]
#[command(
    name = "poz-verifier",
    version,
    about = "The POZ verifier (stateless gRPC)"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "POZ_VERIFIER_LISTEN", default_value = "127.0.0.1:50052")]
    listen: String,
    /// JSON log lines.
    #[arg(long, env = "POZ_LOG_JSON")]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    poz_kit::init_tracing(args.log_json);
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "poz-verifier listening");
    println!("listening {}", listener.local_addr()?);
    let (health, reflection) = poz_kit::health_and_reflection(&["poz.v1.Verifier"]).await?;
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(
            VerifierServer::new(VerifierService)
                .max_decoding_message_size(poz_kit::MAX_GRPC_MESSAGE),
        )
        .serve_with_incoming_shutdown(poz_kit::incoming(listener), poz_kit::shutdown_signal())
        .await?;
    Ok(())
}
