//! The driver's mixed load, from the root namespace, and its ledger of
//! everything acknowledged and every failure seen.
//!
//! Tasks, each one at a time and paced, until told to stop or a cap on
//! its operations is reached:
//! - lookups through each query gateway, plain and Noise NK: CHAIN of a
//!   handle the ledger holds as issued (the binding must verify and name
//!   the subject it was issued to) and MASTER of a person's record (its
//!   serial at least the last one acknowledged before the lookup began);
//! - SUBMIT_SIGNED revisions of each person's record through the submit
//!   gateway (a failed submission is sent again, the same bytes, until it
//!   is acknowledged);
//! - SUBMIT_REQUEST for a binding (the gateway's `issue` policy issues it
//!   at once);
//! - single issuance through the Provider API (IssueBinding with an
//!   idempotency key, retried with the same key);
//! - bulk imports through the Provider API (BulkIssue, rounds of keys; a
//!   broken stream resumes with the keys not yet committed).

use crate::fleet::{Endpoints, PROVIDER_DOMAIN};
use poz::codec::Codec;
use poz::wire::{Status, SubmissionState, SubmitRequest, SubmitSigned};
use poz::{workflow, Hash32, Record, SigningKey};
use poz_client::{Client, ClientConfig, ClientError, Endpoint, Security};
use poz_proto::v1 as pb;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An acknowledged revision: person, serial, the revision's hash.
#[derive(Clone, Debug)]
pub struct RevisionAck {
    pub person: usize,
    pub serial: u32,
    pub hash: Hash32,
}

/// An acknowledged binding: how it was issued, its handle, the subject
/// it was issued to and, where the acknowledgement carried it, the entry.
#[derive(Clone, Debug)]
pub struct BindingAck {
    pub how: &'static str,
    pub handle: String,
    pub subject: Hash32,
    pub entry: Option<Vec<u8>>,
}

/// What the driver saw.
#[derive(Default)]
pub struct Ledger {
    pub revisions: Vec<RevisionAck>,
    pub bindings: Vec<BindingAck>,
    /// Failures by label (`UNAVAILABLE+hint`, `connection`, `grpc
    /// Unavailable`, …).
    pub statuses: BTreeMap<String, u64>,
    /// Failures no document promises, each with its words.
    pub undocumented: Vec<String>,
    /// Answers that were wrong (did not verify, named another subject,
    /// an older serial than acknowledged, a refusal of a valid write).
    pub wrong: Vec<String>,
    /// The start of the latest successful operation of each kind.
    pub last_ok: BTreeMap<String, Instant>,
    /// Successful operations of each kind.
    pub ok: BTreeMap<String, u64>,
    /// Bulk streams broken and resumed; keys sent again on resuming.
    pub bulk_resumes: u64,
    pub bulk_resent: u64,
    /// Highest acknowledged serial per person.
    pub serials: BTreeMap<usize, u32>,
    /// Tasks of each kind still running: a kind whose tasks have all
    /// ended (the revisions, at their serial quota) is not waited for
    /// after a fault.
    pub running: BTreeMap<String, i64>,
}

pub type Shared = Arc<Mutex<Ledger>>;

fn lock(l: &Shared) -> std::sync::MutexGuard<'_, Ledger> {
    l.lock().unwrap_or_else(|p| p.into_inner())
}

fn ok(l: &Shared, kind: &str, started: Instant) {
    let mut g = lock(l);
    *g.ok.entry(kind.to_string()).or_default() += 1;
    let e = g.last_ok.entry(kind.to_string()).or_insert(started);
    if *e < started {
        *e = started;
    }
}

fn failed(l: &Shared, label: String, documented: bool, words: String) {
    let mut g = lock(l);
    *g.statuses.entry(label).or_default() += 1;
    if !documented {
        g.undocumented.push(words);
    }
}

fn wrong(l: &Shared, words: String) {
    lock(l).wrong.push(words);
}

/// A POZ client error: its label, and whether a client was promised it
/// (SPEC: UNAVAILABLE and RATE_LIMITED carry a retry hint; connection
/// errors and timeouts are the network's). `None`: a wrong answer.
fn classify(e: &ClientError) -> Option<(String, bool)> {
    Some(match e {
        ClientError::Connect { .. } | ClientError::Io { .. } => ("connection".into(), true),
        ClientError::Timeout { .. } => ("timeout".into(), true),
        ClientError::Status {
            status,
            retry_after_ms,
            ..
        } if *status == Status::UNAVAILABLE || *status == Status::RATE_LIMITED => {
            if *retry_after_ms > 0 {
                (format!("{status}+hint"), true)
            } else {
                (format!("{status} without hint"), false)
            }
        }
        ClientError::PowTooHard { .. } => ("POW_REQUIRED (too hard)".into(), true),
        ClientError::Status { status, .. } => (format!("{status}"), false),
        ClientError::Noise { .. } => ("noise".into(), false),
        ClientError::Exhausted(_) => ("exhausted".into(), true),
        ClientError::Invalid(_)
        | ClientError::Malformed { .. }
        | ClientError::Stale { .. }
        | ClientError::PinMismatch { .. }
        | ClientError::Discovery { .. } => return None,
        _ => ("other".into(), false),
    })
}

fn client_failed(l: &Shared, what: &str, e: &ClientError) {
    match classify(e) {
        Some((label, documented)) => failed(l, label, documented, format!("{what}: {e}")),
        None => wrong(l, format!("{what}: {e}")),
    }
}

/// A gRPC status from the Provider API: UNAVAILABLE and
/// RESOURCE_EXHAUSTED are its documented answers to trouble; a deadline
/// is this driver's own timeout.
fn grpc_failed(l: &Shared, what: &str, s: &tonic::Status) {
    use tonic::Code;
    let documented = matches!(
        s.code(),
        Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded | Code::Cancelled
    );
    failed(
        l,
        format!("grpc {:?}", s.code()),
        documented,
        format!("{what}: {s:?}"),
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The load's settings.
#[derive(Clone, Copy)]
pub struct Pace {
    /// Pause after each successful operation of each task.
    pub every: Duration,
    /// Pause after a failure before the same operation is tried again.
    pub retry: Duration,
    /// Pause after each acknowledged revision of one person.
    pub revision_every: Duration,
    /// Revisions per person at most (a record carries its history; a
    /// SUBMIT_SIGNED payload is at most 65,535 bytes).
    pub revisions: u32,
    /// Bindings per bulk round, and the pause between rounds.
    pub bulk: usize,
    pub bulk_every: Duration,
    /// Operations per task at most.
    pub cap: u64,
}

/// One person as the driver holds it.
pub struct Who {
    pub key: SigningKey,
    pub record: Record,
    pub domain: String,
}

/// The running load.
pub struct Driver {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub ledger: Shared,
}

fn client() -> Client {
    Client::new(ClientConfig {
        connect_timeout: Duration::from_secs(2),
        exchange_timeout: Duration::from_secs(5),
        attempts: 1,
        deadline: Duration::from_secs(6),
        max_pow_difficulty: 20,
        ..ClientConfig::default()
    })
}

/// How long one operation may take before the driver calls it a hang.
const HANG: Duration = Duration::from_secs(20);

impl Driver {
    pub fn start(ep: Endpoints, people: Vec<Who>, pace: Pace) -> Driver {
        let stop = Arc::new(AtomicBool::new(false));
        let ledger: Shared = Arc::default();
        let mut tasks = Vec::new();
        let people = Arc::new(people);
        for (g, (plain, noise)) in ep.query.iter().enumerate() {
            for (sec, addr, name) in [
                (Security::Plain, *plain, "plain"),
                (Security::Noise(ep.query_key), *noise, "noise"),
            ] {
                let kind = format!("lookup q{} {name}", g + 1);
                tasks.push(tokio::spawn(lookups(
                    Endpoint {
                        addr,
                        security: sec,
                    },
                    kind,
                    people.clone(),
                    ledger.clone(),
                    stop.clone(),
                    pace,
                )));
            }
        }
        let submit = Endpoint {
            addr: ep.submit,
            security: Security::Noise(ep.submit_key),
        };
        for (i, _) in people.iter().enumerate() {
            tasks.push(tokio::spawn(revisions(
                submit,
                i,
                people.clone(),
                ledger.clone(),
                stop.clone(),
                pace,
            )));
        }
        tasks.push(tokio::spawn(requests(
            submit,
            people.clone(),
            ledger.clone(),
            stop.clone(),
            pace,
        )));
        let channels = poz_kit::Channels::new(&ep.account).unwrap();
        let api = channels.lazy(&ep.api).unwrap();
        tasks.push(tokio::spawn(singles(
            api.clone(),
            people.clone(),
            ledger.clone(),
            stop.clone(),
            pace,
        )));
        tasks.push(tokio::spawn(bulks(
            api,
            people.clone(),
            ledger.clone(),
            stop.clone(),
            pace,
        )));
        Driver {
            stop,
            tasks,
            ledger,
        }
    }

    /// Stops every task and waits for them.
    pub async fn stop(self) -> Shared {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        self.ledger
    }
}

async fn lookups(
    ep: Endpoint,
    kind: String,
    people: Arc<Vec<Who>>,
    l: Shared,
    stop: Arc<AtomicBool>,
    pace: Pace,
) {
    let c = client();
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) && n < pace.cap {
        n += 1;
        let started = Instant::now();
        // CHAIN of an issued handle every other time, once there is one.
        let pick = {
            let g = lock(&l);
            if n % 2 == 0 && !g.bindings.is_empty() {
                let b = &g.bindings[(n as usize * 7919) % g.bindings.len()];
                Some((b.handle.clone(), b.subject))
            } else {
                None
            }
        };
        let result = if let Some((handle, subject)) = pick {
            let what = format!("{kind} CHAIN {handle}");
            match tokio::time::timeout(HANG, c.chain(&[ep], PROVIDER_DOMAIN, &handle, None)).await {
                Err(_) => Err(format!("{what}: no answer in {HANG:?}")),
                Ok(Ok((_, b))) if b.binding.subject != subject => {
                    wrong(
                        &l,
                        format!(
                            "{what}: names subject {}, issued to {subject}",
                            b.binding.subject
                        ),
                    );
                    Ok(false)
                }
                Ok(Ok(_)) => Ok(true),
                Ok(Err(e)) => {
                    client_failed(&l, &what, &e);
                    Ok(false)
                }
            }
        } else {
            let i = (n as usize / 2) % people.len();
            let floor = lock(&l).serials.get(&i).copied().unwrap_or(1);
            let what = format!("{kind} MASTER {}", people[i].domain);
            // A fresh client: the serial floor is the ledger's, not
            // what this client saw (which is checked as well below).
            match tokio::time::timeout(HANG, c.master(&[ep], &people[i].domain, None)).await {
                Err(_) => Err(format!("{what}: no answer in {HANG:?}")),
                Ok(Ok(vr)) if vr.record.master.serial < floor => {
                    wrong(
                        &l,
                        format!(
                            "{what}: serial {} after serial {floor} was acknowledged",
                            vr.record.master.serial
                        ),
                    );
                    Ok(false)
                }
                Ok(Ok(_)) => Ok(true),
                Ok(Err(e)) => {
                    client_failed(&l, &what, &e);
                    Ok(false)
                }
            }
        };
        match result {
            Ok(true) => {
                ok(&l, &kind, started);
                tokio::time::sleep(pace.every).await;
            }
            Ok(false) => tokio::time::sleep(pace.retry).await,
            Err(hang) => failed(&l, "hang".into(), false, hang),
        }
    }
}

/// The next revision of `rec`, signed by its sole owner.
fn next_revision(rec: &Record, key: &SigningKey) -> Record {
    let ts = now_ms().max(rec.master.timestamp + 1);
    let mut next = workflow::draft(rec, ts).unwrap();
    workflow::sign_draft(&mut next, key).unwrap();
    workflow::apply(&mut next).unwrap();
    next
}

async fn revisions(
    ep: Endpoint,
    i: usize,
    people: Arc<Vec<Who>>,
    l: Shared,
    stop: Arc<AtomicBool>,
    pace: Pace,
) {
    let c = client();
    let who = &people[i];
    let mut cur = who.record.clone();
    let mut next = next_revision(&cur, &who.key);
    let mut n: u64 = 0;
    *lock(&l).running.entry("revision".into()).or_default() += 1;
    while !stop.load(Ordering::Relaxed) && n < pace.cap && cur.master.serial < pace.revisions {
        n += 1;
        let started = Instant::now();
        let sub = SubmitSigned::Record {
            domain: who.domain.clone(),
            record: next.to_bytes(),
        };
        let what = format!("revision {} serial {}", who.domain, next.master.serial);
        match tokio::time::timeout(HANG, c.submit_signed(&[ep], &sub)).await {
            Err(_) => failed(&l, "hang".into(), false, format!("{what}: no answer")),
            Ok(Ok(t)) if t.state == SubmissionState::COMMITTED => {
                {
                    let mut g = lock(&l);
                    g.revisions.push(RevisionAck {
                        person: i,
                        serial: next.master.serial,
                        hash: next.master.current_master_hash,
                    });
                    g.serials.insert(i, next.master.serial);
                }
                ok(&l, "revision", started);
                cur = next;
                next = next_revision(&cur, &who.key);
                tokio::time::sleep(pace.revision_every).await;
                continue;
            }
            Ok(Ok(t)) => wrong(&l, format!("{what}: ticket state {}", t.state)),
            Ok(Err(e)) => client_failed(&l, &what, &e),
        }
        tokio::time::sleep(pace.retry).await;
    }
    *lock(&l).running.entry("revision".into()).or_default() -= 1;
}

async fn requests(
    ep: Endpoint,
    people: Arc<Vec<Who>>,
    l: Shared,
    stop: Arc<AtomicBool>,
    pace: Pace,
) {
    let c = client();
    let mut k: u64 = 0;
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) && n < pace.cap {
        n += 1;
        let who = &people[k as usize % people.len()];
        let subject = who.record.id();
        let mut ask = SubmitRequest {
            domain: PROVIDER_DOMAIN.into(),
            handle: format!("req{k}"),
            subject,
            proof: Vec::new(),
        };
        let idx = who.record.keys.index_of(&who.key.public().id()).unwrap();
        ask.proof.push(who.key.sign(idx, &ask.digest()));
        let started = Instant::now();
        let what = format!("SUBMIT_REQUEST {}", ask.handle);
        match tokio::time::timeout(HANG, c.submit_request(&[ep], &ask)).await {
            Err(_) => failed(&l, "hang".into(), false, format!("{what}: no answer")),
            Ok(Ok(t)) if t.state == SubmissionState::ISSUED => {
                lock(&l).bindings.push(BindingAck {
                    how: "request",
                    handle: ask.handle.clone(),
                    subject,
                    entry: None,
                });
                ok(&l, "request", started);
                k += 1;
                tokio::time::sleep(pace.every).await;
                continue;
            }
            Ok(Ok(t)) => wrong(&l, format!("{what}: ticket state {}", t.state)),
            Ok(Err(e)) => client_failed(&l, &what, &e),
        }
        tokio::time::sleep(pace.retry).await;
    }
}

fn hash_of(h: &Hash32) -> Option<pb::Hash> {
    Some(pb::Hash {
        value: h.0.to_vec(),
    })
}

async fn singles(
    api: poz_kit::Channel,
    people: Arc<Vec<Who>>,
    l: Shared,
    stop: Arc<AtomicBool>,
    pace: Pace,
) {
    let mut c = pb::provider_api_client::ProviderApiClient::new(api);
    let mut k: u64 = 0;
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) && n < pace.cap {
        n += 1;
        let subject = people[k as usize % people.len()].record.id();
        let handle = format!("one{k}");
        let mut req = tonic::Request::new(pb::IssueBindingRequest {
            handle: handle.clone(),
            subject: hash_of(&subject),
            expires_at: 0,
            idempotency_key: handle.clone(),
        });
        req.set_timeout(Duration::from_secs(10));
        let started = Instant::now();
        let what = format!("IssueBinding {handle}");
        match tokio::time::timeout(HANG, c.issue_binding(req)).await {
            Err(_) => failed(&l, "hang".into(), false, format!("{what}: no answer")),
            Ok(Ok(r)) => {
                lock(&l).bindings.push(BindingAck {
                    how: "single",
                    handle,
                    subject,
                    entry: Some(r.into_inner().entry),
                });
                ok(&l, "single", started);
                k += 1;
                tokio::time::sleep(pace.every).await;
                continue;
            }
            Ok(Err(s)) => grpc_failed(&l, &what, &s),
        }
        tokio::time::sleep(pace.retry).await;
    }
}

async fn bulks(
    api: poz_kit::Channel,
    people: Arc<Vec<Who>>,
    l: Shared,
    stop: Arc<AtomicBool>,
    pace: Pace,
) {
    let mut c = pb::provider_api_client::ProviderApiClient::new(api);
    let mut round: u64 = 0;
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) && n < pace.cap {
        // One round: every key until committed (or the load stops).
        let mut left: BTreeMap<String, Hash32> = (0..pace.bulk)
            .map(|i| {
                (
                    format!("b{round}-{i}"),
                    people[i % people.len()].record.id(),
                )
            })
            .collect();
        let mut first = true;
        while !left.is_empty() && !stop.load(Ordering::Relaxed) && n < pace.cap {
            n += 1;
            if !first {
                let mut g = lock(&l);
                g.bulk_resumes += 1;
                g.bulk_resent += left.len() as u64;
            }
            first = false;
            let reqs: Vec<pb::IssueBindingRequest> = left
                .iter()
                .map(|(k, s)| pb::IssueBindingRequest {
                    handle: k.clone(),
                    subject: hash_of(s),
                    expires_at: 0,
                    idempotency_key: k.clone(),
                })
                .collect();
            let started = Instant::now();
            let what = format!("BulkIssue round {round}");
            let mut req = tonic::Request::new(tokio_stream::iter(reqs));
            req.set_timeout(Duration::from_secs(60));
            let stream = match tokio::time::timeout(HANG, c.bulk_issue(req)).await {
                Err(_) => {
                    failed(&l, "hang".into(), false, format!("{what}: no answer"));
                    continue;
                }
                Ok(Err(s)) => {
                    grpc_failed(&l, &what, &s);
                    tokio::time::sleep(pace.retry).await;
                    continue;
                }
                Ok(Ok(s)) => s.into_inner(),
            };
            let mut stream = stream;
            loop {
                match tokio::time::timeout(HANG, stream.message()).await {
                    Err(_) => {
                        failed(&l, "hang".into(), false, format!("{what}: no progress"));
                        break;
                    }
                    Ok(Ok(Some(p))) => {
                        for key in &p.committed_keys {
                            if let Some(subject) = left.remove(key) {
                                lock(&l).bindings.push(BindingAck {
                                    how: "bulk",
                                    handle: key.clone(),
                                    subject,
                                    entry: None,
                                });
                            }
                        }
                        if !p.committed_keys.is_empty() {
                            ok(&l, "bulk", started);
                        }
                        for e in &p.errors {
                            wrong(
                                &l,
                                format!("{what}: {} refused: {}", e.idempotency_key, e.message),
                            );
                            left.remove(&e.idempotency_key);
                        }
                    }
                    Ok(Ok(None)) => break,
                    Ok(Err(s)) => {
                        grpc_failed(&l, &what, &s);
                        tokio::time::sleep(pace.retry).await;
                        break;
                    }
                }
            }
        }
        round += 1;
        tokio::time::sleep(pace.bulk_every).await;
    }
}
