//! `pozctl audit`'s arguments; the audit itself is in `crate::audit`.

use crate::cmd::remote::TargetArgs;
use anyhow::Result;
use clap::Args;
use std::process::ExitCode;

// `pozctl audit`'s arguments (its help text is on `Cmd::Audit`).
#[derive(Args)]
pub struct Audit {
    /// The provider's domain (or a record name: 64 hex digits).
    domain: String,
    /// Check only the batches numbered above this one: the number the
    /// last audit ended at (0, the default: from the first batch).
    #[arg(long, default_value_t = 0, value_name = "BATCH")]
    since: u64,
    /// List every binding of this handle (live, expired, revoked), each
    /// verified, instead of auditing the batches.
    #[arg(long, conflicts_with = "since")]
    handle: Option<String>,
    /// The zone whose batches to audit (identity, email, auth, service, feed).
    #[arg(long, default_value = "identity")]
    zone: String,
    /// Batches and entries asked per page (1..=1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=1000))]
    page: u16,
    #[command(flatten)]
    target: TargetArgs,
}

pub fn run(a: Audit) -> Result<ExitCode> {
    let zone = crate::cmd::parse_zone(&a.zone)?;
    crate::audit::run(
        &a.target.target(),
        &crate::audit::AuditArgs {
            domain: &a.domain,
            since: a.since,
            handle: a.handle.as_deref(),
            zone,
            page: a.page,
        },
    )
}
