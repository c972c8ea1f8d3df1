//! `pozctl identity import`: a CSV of `handle,user-record-hash` streamed
//! into the Provider API's BulkIssue, with a progress bar.
//!
//! Every line gets an idempotency key derived from its handle and subject,
//! so running the same import again (after a break, a crash, a timeout)
//! issues nothing twice: lines already committed are acknowledged again
//! and only the rest are issued.

use crate::grpc::{self, TlsArgs};
use anyhow::{Context, Result};
use poz::Hash32;
use poz_proto::v1 as pb;
use std::path::Path;
use std::process::ExitCode;

/// One CSV line, checked.
struct Line {
    number: usize,
    handle: String,
    subject: Hash32,
}

/// Reads the CSV strictly: every line `handle,64 hex digits`; an optional
/// first line `handle,…` is a header; blank lines are skipped.
fn read_csv(path: &Path) -> Result<Vec<Line>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || (i == 0 && line.starts_with("handle,")) {
            continue;
        }
        let refuse = |why: &str| {
            crate::cmd::Refused(format!("{}:{}: {why}: {raw:?}", path.display(), i + 1))
        };
        let (handle, hash) = line
            .split_once(',')
            .ok_or_else(|| refuse("expected handle,user-record-hash"))?;
        let subject = Hash32::from_hex(hash.trim())
            .ok_or_else(|| refuse("the user record hash is not 64 hex digits"))?;
        let handle = handle.trim();
        if handle.is_empty() || handle.len() > 64 {
            return Err(refuse("a handle is 1..=64 bytes").into());
        }
        out.push(Line {
            number: i + 1,
            handle: handle.to_string(),
            subject,
        });
    }
    Ok(out)
}

/// What went wrong with the Provider API, in a sentence (a refusal of
/// this client is said by [`grpc::refusal`] instead).
fn interrupted(api: &str, status: &tonic::Status) -> String {
    use tonic::Code;
    match status.code() {
        // A connection that went away mid-stream (the server stopped or
        // was killed, the network broke) surfaces as one of these.
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled => {
            format!("the connection to the Provider API at {api} was lost (the server stopped or the network failed)")
        }
        Code::DeadlineExceeded => format!("the Provider API at {api} did not answer in time"),
        Code::ResourceExhausted => format!("the Provider API at {api} is overloaded"),
        code => format!(
            "the Provider API at {api} ended the import ({code:?}): {}",
            status.message()
        ),
    }
}

/// The transport's own words, for whoever debugs it (`POZ_DEBUG=1`).
fn debug_detail(status: &tonic::Status) {
    if std::env::var_os("POZ_DEBUG").is_some() {
        eprintln!("detail: {status}");
    }
}

fn key_of(l: &Line) -> String {
    let h = poz::hash::tagged_hash("pozctl import", &[l.handle.as_bytes(), &l.subject.0]);
    format!("import-{}", &h.to_hex()[..32])
}

pub fn import(csv: &Path, api: &str, tls: &TlsArgs, quiet: bool) -> Result<ExitCode> {
    let lines = read_csv(csv)?;
    let total = lines.len() as u64;
    let by_key: std::collections::HashMap<String, usize> =
        lines.iter().map(|l| (key_of(l), l.number)).collect();
    let requests: Vec<pb::IssueBindingRequest> = lines
        .iter()
        .map(|l| pb::IssueBindingRequest {
            handle: l.handle.clone(),
            subject: Some(pb::Hash {
                value: l.subject.0.to_vec(),
            }),
            expires_at: 0,
            idempotency_key: key_of(l),
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} committed, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut committed = 0u64;
    let mut errors = Vec::new();
    let broken: Option<tonic::Status> = rt.block_on(async {
        let channel = grpc::channel("--api", api, tls)?;
        if let Err(status) = grpc::reach(channel.clone(), api, tls).await {
            if grpc::refusal("", &status).is_some() {
                return anyhow::Ok(Some(status));
            }
            return Err(grpc::unreached(api, &status))
                .with_context(|| format!("connecting to the Provider API at {api}"));
        }
        let mut client = pb::provider_api_client::ProviderApiClient::new(channel);
        // The channel connects at this first call: UNAVAILABLE before
        // any answer means the Provider API was never reached.
        let mut progress = match client.bulk_issue(tokio_stream::iter(requests)).await {
            Ok(r) => r.into_inner(),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                return Err(grpc::unreachable(&status))
                    .with_context(|| format!("connecting to the Provider API at {api}"))
            }
            Err(status) => return anyhow::Ok(Some(status)),
        };
        loop {
            match progress.message().await {
                Ok(Some(p)) => {
                    committed = p.committed;
                    bar.set_position(committed);
                    errors.extend(p.errors);
                }
                Ok(None) => return Ok(None),
                Err(status) => return Ok(Some(status)),
            }
        }
    })?;
    bar.finish_and_clear();
    if let Some(refused) = broken
        .as_ref()
        .and_then(|s| grpc::refusal(&format!("the Provider API at {api}"), s))
    {
        // Not a break to resume after: a rerun is refused the same way
        // until the certificate's identity is on the allowlist.
        eprintln!("refused: {refused}");
        eprintln!(
            "{committed} of {total} bindings from {} were committed.",
            csv.display()
        );
        return Ok(ExitCode::from(1));
    }
    if let Some(status) = broken {
        // The raw transport error (an h2 dump) helps nobody here; what
        // does: what happened, what is done, what to do.
        eprintln!("error: the import stopped: {}", interrupted(api, &status));
        eprintln!(
            "{committed} of {total} bindings from {} were committed (as of the server's last progress report).",
            csv.display()
        );
        eprintln!(
            "Rerun the same command to resume: committed lines are acknowledged again, never issued twice."
        );
        debug_detail(&status);
        return Ok(ExitCode::from(2));
    }
    outln!(
        "committed {committed} of {total} bindings from {}",
        csv.display()
    );
    for e in errors.iter().take(20) {
        let line = by_key.get(&e.idempotency_key).copied().unwrap_or(0);
        outln!("line {line}: refused: {}", e.message);
    }
    if errors.len() > 20 {
        outln!("… and {} more refused", errors.len() - 20);
    }
    Ok(if errors.is_empty() && committed == total {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
