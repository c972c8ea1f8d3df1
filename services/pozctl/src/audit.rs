//! `pozctl audit`: a provider's issuance checked from outside, over the
//! public query ports only (SPEC §14.8). The provider's record is fetched
//! (MASTER) and verified from genesis, then either its batch log is paged
//! (BATCHES) and every batch checked (BATCH: every leaf once, proving to
//! the root; root signatures to the grant threshold), or one handle's
//! bindings are listed (HANDLE_HISTORY) and each verified.

use crate::net::{self, Pin, Target};
use anyhow::Result;
use poz::audit::{
    AuditError, BatchAudit, BatchLog, BatchQuery, BatchesAnswer, BatchesQuery, HistoryAnswer,
    HistoryQuery, MAX_BATCH_PAGE, MAX_HISTORY_PAGE,
};
use poz::codec::Codec;
use poz::entries::EntryBody;
use poz::keys::SigType;
use poz::verify::{verify_and_accept, verify_binding, Rule, VerifiedRecord};
use poz::wire::{MessageType, ZoneAnswer, MAX_ZONE_PAGE};
use poz::zone::{SignedEntry, ZoneType};
use poz::Hash32;
use poz_client::{Client, ClientError, Endpoint};
use std::process::ExitCode;

/// What `pozctl audit` was asked.
pub struct AuditArgs<'a> {
    pub domain: &'a str,
    /// Audit the batches numbered above this one (0: from the first).
    pub since: u64,
    /// List this handle's bindings instead of auditing batches.
    pub handle: Option<&'a str>,
    pub zone: ZoneType,
    /// Entries and batches per page asked (1..=1000).
    pub page: u16,
}

/// Why the audit stopped before its end: the server's refusal or an
/// answer that does not decode (exit as `net::exit_for`), or nothing
/// pins the record (exit 1).
enum Stop {
    Client(ClientError),
    Refused(String),
}

impl From<ClientError> for Stop {
    fn from(e: ClientError) -> Self {
        Stop::Client(e)
    }
}

fn undecodable(what: &str, e: poz::DecodeError) -> Stop {
    Stop::Client(ClientError::Invalid(format!("{what}: {e}")))
}

pub fn run(t: &Target, a: &AuditArgs<'_>) -> Result<ExitCode> {
    let rt = net::runtime()?;
    rt.block_on(async {
        let (eps, found, via) = net::endpoints(t, a.domain).await?;
        let pin = match poz::wire::record_name_id(a.domain) {
            Some(id) => Some(Pin {
                id,
                by: "its record name",
            }),
            None => net::pin_of(t, found)?,
        };
        let c = net::client(t);
        let outcome: Result<u64, Stop> = async {
            let Some(pin) = pin else {
                return Err(Stop::Refused(format!(
                    "nothing pins the record for {} (no _poz TXT or well-known pin, no --record-id): an audit of an unpinned record proves nothing; give --record-id ID",
                    a.domain
                )));
            };
            let provider = c.master(&eps, a.domain, Some(pin.id)).await?;
            if let Err(e) = net::check_record(&provider.record, provider.id, a.domain, None) {
                return Err(Stop::Refused(format!("{e} ({})", a.domain)));
            }
            outln!(
                "provider {} serial {} ({via}); {}: verified from genesis",
                provider.id,
                provider.record.master.serial,
                net::tied(Some(pin))
            );
            match a.handle {
                Some(h) => history(&c, &eps, a, &provider, h).await,
                None => batches(&c, &eps, a, &provider).await,
            }
        }
        .await;
        match outcome {
            Ok(0) => Ok(ExitCode::SUCCESS),
            Ok(failures) => {
                eprintln!("audit FAILED: {failures} problem(s) found");
                Ok(ExitCode::from(1))
            }
            Err(Stop::Refused(why)) => {
                eprintln!("refused: {why}");
                Ok(ExitCode::from(1))
            }
            Err(Stop::Client(e)) => {
                eprintln!("audit failed: {e}");
                Ok(ExitCode::from(net::exit_for(&e)))
            }
        }
    })
}

/// Pages the batch log from `a.since` and checks every batch; returns
/// the number of problems found.
async fn batches(
    c: &Client,
    eps: &[Endpoint],
    a: &AuditArgs<'_>,
    provider: &VerifiedRecord,
) -> Result<u64, Stop> {
    let mut log = BatchLog::after(a.since);
    let (mut after, mut checked, mut entries, mut failures) = (a.since, 0u64, 0u64, 0u64);
    // `--since N` says the auditor saw batch N before: the log must still
    // hold it. Without this a log that got shorter (or a stale --since)
    // would look like "nothing new" (issue 18 review).
    if a.since > 0 {
        let q = BatchesQuery {
            domain: a.domain.into(),
            zone_type: a.zone,
            after: a.since - 1,
            limit: 1,
        };
        let bytes = c
            .request_any(eps, MessageType::BATCHES, &q.to_bytes())
            .await?;
        let page = BatchesAnswer::from_bytes(&bytes).map_err(|e| undecodable("BATCHES", e))?;
        if page.batches.first().map(|b| b.seq) != Some(a.since) {
            failures += 1;
            outln!(
                "GAP the log no longer holds batch {} (--since): it ends before it, or was renumbered",
                a.since
            );
            if page.batches.is_empty() {
                // Nothing at or after --since: there is nothing to check,
                // and the summary says where the log does end.
                let end = log_end(c, eps, a, a.since - 1).await?;
                let ends = if end == 0 {
                    "the log holds no batch".to_owned()
                } else {
                    format!("the log ends at batch {end}, before batch {}", a.since)
                };
                outln!(
                    "checked 0 {} batch(es), 0 entries, after batch {}; {ends} (next audit: from the first batch, without --since)",
                    a.zone,
                    a.since
                );
                return Ok(failures);
            }
        }
    }
    loop {
        let q = BatchesQuery {
            domain: a.domain.into(),
            zone_type: a.zone,
            after,
            limit: a.page.min(MAX_BATCH_PAGE),
        };
        let bytes = c
            .request_any(eps, MessageType::BATCHES, &q.to_bytes())
            .await?;
        let page = BatchesAnswer::from_bytes(&bytes).map_err(|e| undecodable("BATCHES", e))?;
        for b in &page.batches {
            if let Err(e) = log.observe(b) {
                failures += 1;
                outln!("GAP {e}");
                // A log that goes back or repeats cannot be followed
                // further; one that skips can (the missing ones are named).
                if !matches!(e, AuditError::LogGap { .. }) {
                    return Ok(failures);
                }
                log = BatchLog::after(b.seq - 1);
                if let Err(e) = log.observe(b) {
                    outln!("GAP {e}");
                    return Ok(failures + 1);
                }
            }
            match batch(c, eps, a, provider, &b.root_digest).await? {
                Ok(v) => {
                    entries += u64::from(v.size);
                    outln!(
                        "batch {} root {}: {} leaves, all present; root signed by keys {:?} (group {}): OK",
                        b.seq,
                        b.root_digest,
                        v.size,
                        v.signers,
                        v.group
                    );
                }
                Err(e) => {
                    failures += 1;
                    outln!(
                        "batch {} root {}: FAILED {}: {e}",
                        b.seq,
                        b.root_digest,
                        e.code()
                    );
                }
            }
            checked += 1;
        }
        if page.next == 0 {
            break;
        }
        // A cursor that does not move on would page forever.
        if page.next <= after {
            failures += 1;
            outln!(
                "GAP the server's cursor {} does not move past {after}",
                page.next
            );
            break;
        }
        after = page.next;
    }
    outln!(
        "checked {checked} {} batch(es), {entries} entries, after batch {}; the log ends at batch {} (next audit: --since {})",
        a.zone,
        a.since,
        log.last(),
        log.last()
    );
    Ok(failures)
}

/// The highest batch number in the log (0: it holds none), given that it
/// holds none above `below`: a search by BATCHES pages of one batch,
/// about log2(`below`) questions (at most 64).
async fn log_end(c: &Client, eps: &[Endpoint], a: &AuditArgs<'_>, below: u64) -> Result<u64, Stop> {
    // `lo` is 0 or a batch the log holds; none is above `hi`.
    let (mut lo, mut hi) = (0u64, below);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let q = BatchesQuery {
            domain: a.domain.into(),
            zone_type: a.zone,
            after: mid,
            limit: 1,
        };
        let bytes = c
            .request_any(eps, MessageType::BATCHES, &q.to_bytes())
            .await?;
        let page = BatchesAnswer::from_bytes(&bytes).map_err(|e| undecodable("BATCHES", e))?;
        match page.batches.first() {
            // A server that answers outside the range it was asked about
            // would search forever: stop at what it said.
            Some(b) if b.seq > mid && b.seq <= hi => lo = b.seq,
            Some(_) => break,
            None => hi = mid,
        }
    }
    Ok(lo)
}

/// Pages one batch's entries into a [`BatchAudit`]; the audit's verdict.
async fn batch(
    c: &Client,
    eps: &[Endpoint],
    a: &AuditArgs<'_>,
    provider: &VerifiedRecord,
    root: &Hash32,
) -> Result<Result<poz::audit::BatchVerdict, AuditError>, Stop> {
    let mut audit = BatchAudit::new(provider.id, a.zone, *root);
    let mut after = Hash32::ZERO;
    loop {
        let q = BatchQuery {
            domain: a.domain.into(),
            zone_type: a.zone,
            root_digest: *root,
            after,
            limit: a.page.min(MAX_ZONE_PAGE),
        };
        let bytes = c
            .request_any(eps, MessageType::BATCH, &q.to_bytes())
            .await?;
        let page = ZoneAnswer::from_bytes(&bytes).map_err(|e| undecodable("BATCH", e))?;
        for e in &page.entries {
            if let Err(e) = audit.add(&provider.record.keys, e) {
                return Ok(Err(e));
            }
        }
        if page.next.is_zero() {
            break;
        }
        if page.next <= after {
            return Err(Stop::Client(ClientError::Invalid(
                "BATCH: the server's cursor does not move on".into(),
            )));
        }
        after = page.next;
    }
    Ok(audit.finish(&provider.record.master, &provider.record.keys))
}

/// The batch root digest a binding's batch signature proves to, if it has
/// one.
fn batch_root_of(provider: &Hash32, e: &SignedEntry) -> Option<(Hash32, u32)> {
    let digest = e.identity_digest(provider);
    e.signatures
        .iter()
        .filter(|s| s.sig_type == SigType::ED25519_BATCH)
        .find_map(|s| {
            let (root, _) = s.entry_message(provider, ZoneType::IDENTITY, &digest)?;
            let p = poz::batch::BatchProof::from_bytes(&s.data).ok()?;
            Some((root, p.leaf_index))
        })
}

/// "revoked 2026-… (reason)" from the revocation the answer carried.
fn revoked_text(revocation: &Option<SignedEntry>) -> String {
    let r = revocation.as_ref().and_then(|r| {
        match EntryBody::decode(ZoneType::IDENTITY, r.kind, &r.body) {
            Ok(EntryBody::Revocation(r)) => Some(r),
            _ => None,
        }
    });
    match r {
        Some(r) => format!(
            "revoked {} ({})",
            crate::render::time(r.revoked_at),
            r.reason
        ),
        None => "revoked".to_owned(),
    }
}

/// Lists every binding of `handle` and verifies each against the
/// provider's record; a batch-signed one must be in a batch the log
/// lists. Returns the number of problems found.
async fn history(
    c: &Client,
    eps: &[Endpoint],
    a: &AuditArgs<'_>,
    provider: &VerifiedRecord,
    handle: &str,
) -> Result<u64, Stop> {
    let now = crate::cmd::now_ms();
    let (mut after, mut listed, mut failures) = (Hash32::ZERO, 0u64, 0u64);
    let mut rows: Vec<(u64, String)> = Vec::new();
    loop {
        let q = HistoryQuery {
            domain: a.domain.into(),
            handle: handle.into(),
            after,
            limit: a.page.min(MAX_HISTORY_PAGE),
        };
        let bytes = c
            .request_any(eps, MessageType::HANDLE_HISTORY, &q.to_bytes())
            .await?;
        let page =
            HistoryAnswer::from_bytes(&bytes).map_err(|e| undecodable("HANDLE_HISTORY", e))?;
        for item in page.bindings {
            listed += 1;
            let digest = item.binding.identity_digest(&provider.id);
            let body = match EntryBody::decode(
                ZoneType::IDENTITY,
                item.binding.kind,
                &item.binding.body,
            ) {
                Ok(EntryBody::Binding(b)) => b,
                _ => {
                    failures += 1;
                    rows.push((0, format!("{digest}: FAILED: not an identity binding")));
                    continue;
                }
            };
            if body.handle != handle {
                failures += 1;
                rows.push((
                    body.issued_at,
                    format!(
                        "{digest}: FAILED: a binding of {:?} listed for {handle:?}",
                        body.handle
                    ),
                ));
                continue;
            }
            // The binding with its revocation in the provider's record, as
            // a CHAIN answer carries them: the revocation is checked to the
            // deny threshold with the record, the binding against it.
            let chain = poz::serve::chain_record(
                &provider.record,
                item.binding.clone(),
                item.revocation.clone(),
            );
            let state = match verify_and_accept(chain) {
                Err(report) => {
                    failures += 1;
                    let why: Vec<String> = report
                        .failures()
                        .map(|(r, d)| format!("{r}: {d}"))
                        .collect();
                    format!("FAILED: {}", why.join("; "))
                }
                Ok(vr) => match verify_binding(&vr, &item.binding, now) {
                    Ok(_) => "live".to_owned(),
                    Err(e) if e.rule == Rule::BindingRevoked => revoked_text(&item.revocation),
                    Err(e) if e.rule == Rule::BindingExpiry => "expired".to_owned(),
                    Err(e) if e.rule == Rule::BindingSuperseded => {
                        format!("superseded ({})", e.detail)
                    }
                    Err(e) => {
                        failures += 1;
                        format!("FAILED: {e}")
                    }
                },
            };
            let batch = match batch_root_of(&provider.id, &item.binding) {
                None => "signed on its own".to_owned(),
                Some((root, leaf)) => {
                    // Ask for the batch: the log must hold it, or the
                    // provider issued outside its public record.
                    let q = BatchQuery {
                        domain: a.domain.into(),
                        zone_type: ZoneType::IDENTITY,
                        root_digest: root,
                        after: Hash32::ZERO,
                        limit: 1,
                    };
                    match c.request_any(eps, MessageType::BATCH, &q.to_bytes()).await {
                        Ok(_) => format!("leaf {leaf} of batch root {root}"),
                        Err(ClientError::Status { status, .. })
                            if status == poz::wire::Status::NOT_FOUND =>
                        {
                            failures += 1;
                            format!("GAP: leaf {leaf} of batch root {root}, which the batch log does not list")
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            rows.push((
                body.issued_at,
                format!(
                    "{digest}: -> {} issued {} expires {}: {state}; {batch}",
                    body.subject,
                    crate::render::time(body.issued_at),
                    if body.expires_at == 0 {
                        "never".to_owned()
                    } else {
                        crate::render::time(body.expires_at)
                    },
                ),
            ));
        }
        if page.next.is_zero() {
            break;
        }
        if page.next <= after {
            return Err(Stop::Client(ClientError::Invalid(
                "HANDLE_HISTORY: the server's cursor does not move on".into(),
            )));
        }
        after = page.next;
    }
    // Oldest first: the order a reader follows a handle's story in.
    rows.sort();
    outln!("handle {handle:?}: {listed} binding(s), oldest first");
    for (_, line) in &rows {
        outln!("  {line}");
    }
    Ok(failures)
}
