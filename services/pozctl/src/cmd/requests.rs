//! `pozctl requests list|approve|refuse`: a provider's operator decides
//! the binding requests people filed over 7076 under the `queue` policy
//! (Provider API ListBindingRequests / DecideBindingRequest, SPEC §14.5;
//! docs/OPERATIONS.md, "The binding-request queue").

use super::refuse;
use crate::grpc;
use anyhow::{Context, Result};
use clap::Subcommand;
use poz_proto::v1 as pb;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum RequestsCmd {
    /// The requests waiting for a decision, oldest page first.
    List {
        #[command(flatten)]
        api: ApiArgs,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Issue the binding a request asks for (idempotent).
    Approve {
        /// The submission ID (32 hex digits).
        submission: String,
        /// The binding's expiry, ms since the epoch (default: none).
        #[arg(long)]
        expires: Option<u64>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Refuse a request; the asker reads the reason (SUBMIT_STATUS).
    Refuse {
        submission: String,
        /// Why (1..=200 bytes).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// `pozctl identity revoke-handle`: the provider revokes a handle's
/// binding through its Provider API (RevokeBinding): signed by the
/// signer under the deny threshold, verified and committed, so every
/// lookup and every copy checked against the provider's record says
/// revoked from then on.
pub fn revoke_handle(handle: &str, reason: &str, api: &ApiArgs) -> Result<ExitCode> {
    let reason = poz::entries::RevocationReason::from_name(reason)
        .ok_or_else(|| anyhow::anyhow!("unknown reason {reason:?} (unspecified, key-compromise, superseded, account-closed, policy)"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let channel = grpc::channel("--api", &api.api, &api.tls)?;
        let r = pb::provider_api_client::ProviderApiClient::new(channel)
            .revoke_binding(pb::RevokeBindingRequest {
                handle: handle.into(),
                reason: u32::from(reason.0),
                idempotency_key: String::new(),
            })
            .await;
        match r {
            Ok(_) => {
                outln!("revoked the binding of {handle:?} ({reason})");
                Ok(ExitCode::SUCCESS)
            }
            Err(s) => Err(grpc::failure("the Provider API", &api.api, &s)),
        }
    })
}

#[derive(clap::Args)]
pub struct ApiArgs {
    /// The Provider API's gRPC endpoint: http://HOST:PORT, or
    /// https://HOST:PORT with --tls-cert, --tls-key and --tls-ca.
    #[arg(long, default_value = "http://127.0.0.1:50054")]
    api: String,
    #[command(flatten)]
    tls: grpc::TlsArgs,
}

/// A submission ID in hex, or a ticket file holding one.
fn sid_arg(s: &str) -> Result<Vec<u8>> {
    // A file by that name is read first: a ticket file may have any
    // name, 32 characters long included.
    let text = if std::path::Path::new(s).is_file() {
        std::fs::read_to_string(s).with_context(|| format!("reading {s}"))?
    } else {
        s.to_owned()
    };
    hex::decode(text.trim())
        .ok()
        .filter(|v| v.len() == 16)
        .ok_or_else(|| {
            anyhow::anyhow!("{s:?} is not a submission ID (32 hex digits) or a ticket file")
        })
}

fn state_of(s: u32) -> poz::wire::SubmissionState {
    poz::wire::SubmissionState(s.min(255) as u8)
}

fn subject(r: &pb::BindingRequest) -> String {
    r.subject
        .as_ref()
        .map(|h| hex::encode(&h.value))
        .unwrap_or_default()
}

pub fn run(cmd: RequestsCmd) -> Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (api, tls) = match &cmd {
            RequestsCmd::List { api, .. }
            | RequestsCmd::Approve { api, .. }
            | RequestsCmd::Refuse { api, .. } => (api.api.clone(), &api.tls),
        };
        let channel = grpc::channel("--api", &api, tls)?;
        let mut c = pb::provider_api_client::ProviderApiClient::new(channel);
        let failed = |s: tonic::Status| -> anyhow::Error {
            match s.code() {
                // The store's words are "submission ID": say what that
                // means to whoever decides requests.
                tonic::Code::NotFound if s.message().starts_with("submission ") => refuse(format!(
                    "no binding request {} at the Provider API at {api} (`pozctl requests list` shows the pending ones)",
                    s.message().trim_start_matches("submission ")
                )),
                _ => grpc::failure("the Provider API", &api, &s),
            }
        };
        match cmd {
            RequestsCmd::List { json, .. } => {
                let mut after = Vec::new();
                let mut n = 0usize;
                loop {
                    let page = c
                        .list_binding_requests(pb::ListBindingRequestsRequest {
                            after: after.clone(),
                            limit: 1000,
                        })
                        .await
                        .map_err(failed)?
                        .into_inner();
                    for r in &page.requests {
                        n += 1;
                        if json {
                            outln!(
                                "{}",
                                serde_json::json!({
                                    "submission": hex::encode(&r.submission_id),
                                    "handle": r.handle,
                                    "subject": subject(r),
                                    "asked_at": r.asked_at,
                                })
                            );
                        } else {
                            outln!(
                                "{}  {:?} -> {}  asked {}",
                                hex::encode(&r.submission_id),
                                r.handle,
                                subject(r),
                                crate::render::time(r.asked_at)
                            );
                        }
                    }
                    if page.next_after.is_empty() {
                        break;
                    }
                    after = page.next_after;
                }
                if !json {
                    outln!("{n} pending");
                }
                Ok(ExitCode::SUCCESS)
            }
            RequestsCmd::Approve {
                submission,
                expires,
                ..
            } => {
                let r = c
                    .decide_binding_request(pb::DecideBindingRequestRequest {
                        submission_id: sid_arg(&submission)?,
                        approve: true,
                        reason: String::new(),
                        expires_at: expires.unwrap_or(0),
                    })
                    .await
                    .map_err(failed)
                    .context("approving")?
                    .into_inner();
                outln!(
                    "{submission}: {:?} -> {}: {}",
                    r.handle,
                    subject(&r),
                    crate::render::decision(state_of(r.state), &r.message)
                );
                // An approval that could not issue (the handle is taken)
                // ends refused: that is a refusal of this command too.
                Ok(if r.state == 2 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                })
            }
            RequestsCmd::Refuse {
                submission, reason, ..
            } => {
                let r = c
                    .decide_binding_request(pb::DecideBindingRequestRequest {
                        submission_id: sid_arg(&submission)?,
                        approve: false,
                        reason,
                        expires_at: 0,
                    })
                    .await
                    .map_err(failed)
                    .context("refusing")?
                    .into_inner();
                outln!(
                    "{submission}: {}",
                    crate::render::decision(state_of(r.state), &r.message)
                );
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}
