//! `pozctl mirrors`: the servers the fleet's MIRRORS answer names for a
//! domain, set over the store's gRPC API (StoreRead, then StoreWrite).

use super::{parse_host, refuse};
use crate::grpc;
use anyhow::{Context, Result};
use clap::Args;
use poz::entries::PoolHost;
use poz::Codec;
use std::process::ExitCode;

// `pozctl mirrors`'s arguments (its help text is on `Cmd::Mirrors`).
#[derive(Args)]
pub struct Mirrors {
    /// The domain whose record the mirrors carry.
    domain: String,
    /// The store's gRPC address: http://HOST:PORT, or https://HOST:PORT
    /// with --tls-cert, --tls-key and --tls-ca.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    store: String,
    /// HOST:PORT[:ENCRYPTION[:SERVER_KEY_HEX]][@PRIORITY/WEIGHT][#CA_KEY_IDX]
    /// (ENCRYPTION = none, tls, noise_nk), in the order to answer. Repeat.
    #[arg(long = "host")]
    hosts: Vec<String>,
    #[command(flatten)]
    tls: grpc::TlsArgs,
}

pub fn run(a: Mirrors) -> Result<ExitCode> {
    let Mirrors {
        domain,
        store,
        hosts,
        tls,
    } = a;
    let hosts = hosts
        .iter()
        .map(|h| parse_host(h))
        .collect::<Result<Vec<_>>>()?;
    set_mirrors(&store, &tls, &domain, &hosts)?;
    outln!("{domain}: {} mirror(s) set", hosts.len());
    Ok(ExitCode::SUCCESS)
}

/// Resolves the domain at the store, then replaces its record's mirrors.
/// A store that refuses this client's certificate is a refusal (exit 1).
fn set_mirrors(store: &str, tls: &grpc::TlsArgs, domain: &str, hosts: &[PoolHost]) -> Result<()> {
    use poz_proto::v1 as pb;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let channel = grpc::channel("--store", store, tls)?;
        let refused = |s: &tonic::Status| {
            grpc::refusal(&format!("the store at {store}"), s)
                .map(|r| refuse(format!("{domain}: {r}")))
        };
        let head = match pb::store_read_client::StoreReadClient::new(channel.clone())
            .get_head(pb::GetHeadRequest {
                record: Some(pb::RecordRef {
                    by: Some(pb::record_ref::By::Domain(domain.to_ascii_lowercase())),
                }),
            })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable && refused(&s).is_none() => {
                return Err(grpc::unreachable(&s))
                    .with_context(|| format!("connecting to the store at {store}"))
            }
            Err(s) => {
                return Err(refused(&s).unwrap_or_else(|| {
                    anyhow::Error::new(s).context(format!("{domain}: resolving the record"))
                }))
            }
        };
        pb::store_write_client::StoreWriteClient::new(channel)
            .set_mirrors(pb::SetMirrorsRequest {
                record_id: head.record_id,
                hosts: hosts.iter().map(|h| h.to_bytes()).collect(),
            })
            .await
            .map_err(|s| {
                refused(&s).unwrap_or_else(|| {
                    anyhow::Error::new(s).context(format!("{domain}: SetMirrors"))
                })
            })?;
        Ok(())
    })
}
