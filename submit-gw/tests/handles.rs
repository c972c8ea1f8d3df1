//! Which handle may be issued to whom, over 7076 (SPEC §8.4): the inputs
//! of issue 12 §2, §3 and §9 against the whole fleet in process (store on
//! SQLite, verifier, signer, Provider API) behind submit gateways with the
//! `ascii` and `unicode` handle policies. A second live binding of a
//! handle, look-alike handles, a revoked handle asked for again, junk
//! signatures padding one request, too many pending requests and another
//! provider's domain each get their documented answer naming the rule.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod support;

use poz::codec::Codec;
use poz::gate::{Gate, Port};
use poz::handle::HandlePolicy;
use poz::noise::StaticKeypair;
use poz::pow::{Challenger, LoadTargets, PowConfig, Secrets};
use poz::sample;
use poz::wire::{Status, SubmissionState, SubmitRequest, SubmitSigned};
use poz::zone::ZoneType;
use poz::{Hash32, Record};
use poz_client::{Client, ClientConfig, ClientError, Endpoint, Security};
use poz_edge::{Discipline, Edge, LoadMeter};
use poz_proto::v1 as pb;
use poz_submit_gw::{BindingRequests, Policy, SignedSubmissions, Submissions};
use std::sync::Arc;

struct Setup {
    /// `issue`, ascii policy, no provider record configured.
    ascii: Endpoint,
    /// `issue`, unicode policy, this provider's record configured.
    unicode: Endpoint,
    /// `queue`, ascii policy.
    queue: Endpoint,
    provider: Record,
    provider_id: Hash32,
    subject: Record,
    other: Record,
    api: String,
    store: poz_store::Store,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let support::Published {
        store,
        provider,
        provider_id: id,
        subject,
        other,
        dir,
    } = support::published().await;
    let k = sample::provider_keys();
    let keys = poz_signer::SoftwareKeyStore::new(vec![("device-a".into(), k.device_a)]);
    // The Provider API is the loosest of the gateways' policies; the
    // ascii gateway refuses more before it asks.
    let fleet = poz_provider::inprocess::start_with_policy(
        store.clone(),
        Arc::new(keys),
        id,
        100,
        HandlePolicy::Unicode,
    )
    .await
    .unwrap();
    let ch = |u: &str| poz_kit::Channels::default().lazy(u).unwrap();
    let key = StaticKeypair::generate();
    let mut eps = Vec::new();
    for (policy, handles, pinned) in [
        (Policy::Issue, HandlePolicy::Ascii, false),
        (Policy::Issue, HandlePolicy::Unicode, true),
        (Policy::Queue, HandlePolicy::Ascii, false),
    ] {
        let pow = PowConfig::default();
        let mut requests =
            BindingRequests::new(ch(&fleet.store), Some(ch(&fleet.provider_api)), policy)
                .with_handle_policy(handles);
        if pinned {
            requests = requests.with_provider_record(id);
        }
        let edge = Edge::new(
            Discipline::default(),
            key.clone(),
            Gate::new(Challenger::new(pow, Secrets(vec![[2; 32]])), 1_000),
            Submissions {
                signed: SignedSubmissions::new(ch(&fleet.store), ch(&fleet.verifier))
                    .with_handle_policy(handles),
                requests: Some(requests),
                hosting: None,
            },
            Arc::new(LoadMeter::new(pow, LoadTargets::default())),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        eps.push(Endpoint {
            addr: l.local_addr().unwrap(),
            security: Security::Noise(key.public),
        });
        tokio::spawn(edge.serve(l, Port::NoiseSubmit, std::future::pending()));
    }
    Setup {
        ascii: eps[0],
        unicode: eps[1],
        queue: eps[2],
        provider,
        provider_id: id,
        subject,
        other,
        api: fleet.provider_api,
        store,
        _dir: dir,
    }
}

fn client() -> Client {
    Client::new(ClientConfig {
        attempts: 1,
        ..ClientConfig::default()
    })
}

/// The tour record's request for `handle`, signed by its keys `signers`.
fn ask(subject: &Record, handle: &str, signers: &[u8]) -> SubmitRequest {
    let mut req = SubmitRequest {
        domain: "social.example".into(),
        handle: handle.into(),
        subject: subject.id(),
        proof: Vec::new(),
    };
    let digest = req.digest();
    for i in signers {
        req.proof.push(sample::key(i + 1).sign(*i, &digest));
    }
    req
}

/// The second person's request (sole key 91, index 0).
fn ask_other(other: &Record, handle: &str) -> SubmitRequest {
    let mut req = SubmitRequest {
        domain: "social.example".into(),
        handle: handle.into(),
        subject: other.id(),
        proof: Vec::new(),
    };
    let digest = req.digest();
    req.proof.push(sample::key(91).sign(0, &digest));
    req
}

fn refusal<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (Status, String) {
    match r {
        Err(ClientError::Status {
            status, message, ..
        }) => (status, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn binding(s: &Setup, subject: Hash32, handle: &str, at: u64) -> SubmitSigned {
    let k = sample::provider_keys();
    // A handle the format refuses (bidi, format characters) cannot be
    // made into a binding by the library; a client can still send the
    // bytes, unsigned.
    let entry =
        sample::issue(&s.provider, subject, handle, at, 0, &[&k.device_a]).unwrap_or_else(|_| {
            let raw = poz::entries::IdentityBinding {
                issuer: s.provider.id(),
                subject,
                handle: handle.into(),
                issued_at: at,
                expires_at: 0,
            };
            poz::SignedEntry::new(poz::EntryKind::GRANT, raw.to_bytes())
        });
    SubmitSigned::Entry {
        domain: "social.example".into(),
        zone_type: ZoneType::IDENTITY,
        entry,
    }
}

/// The status and rule name of a refusal.
type Refused = (Status, &'static str);

/// The five look-alikes of `alice` from issue 12 §3, with the rule each
/// is refused by under `ascii` and under `unicode` (status, rule).
const LOOK_ALIKES: [(&str, Refused, Refused); 5] = [
    (
        "Alice",
        (Status::BAD_REQUEST, "handle-case"),
        (Status::BAD_REQUEST, "handle-case"),
    ),
    (
        "\u{430}lice",
        (Status::BAD_REQUEST, "handle-charset"),
        (Status::BAD_REQUEST, "handle-mixed-script"),
    ),
    (
        "alice\u{200B}",
        (Status::BAD_REQUEST, "handle-format"),
        (Status::BAD_REQUEST, "handle-format"),
    ),
    (
        "\u{202E}ecila",
        (Status::BAD_REQUEST, "handle-bidi"),
        (Status::BAD_REQUEST, "handle-bidi"),
    ),
    (
        "al\u{131}ce",
        (Status::BAD_REQUEST, "handle-charset"),
        (Status::CONFLICT, "handle-confusable"),
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_live_binding_per_handle_and_no_look_alikes_over_submit_signed() {
    let s = setup().await;
    let c = client();
    let t = sample::T0 + 100;
    let alice = binding(&s, sample::user_id(1), "alice", t);
    assert_eq!(
        c.submit_signed(&[s.ascii], &alice).await.unwrap().state,
        SubmissionState::COMMITTED
    );
    // Issue 12 §2: a second live binding of alice, to another subject.
    let (status, message) = refusal(
        c.submit_signed(&[s.ascii], &binding(&s, sample::user_id(2), "alice", t + 1))
            .await,
    );
    assert_eq!(status, Status::CONFLICT, "{message}");
    assert!(message.starts_with("binding-unique:"), "{message}");
    // The holder renewing it is fine.
    assert_eq!(
        c.submit_signed(&[s.ascii], &binding(&s, sample::user_id(1), "alice", t + 2))
            .await
            .unwrap()
            .state,
        SubmissionState::COMMITTED
    );
    // Issue 12 §3, over SUBMIT_SIGNED kind 2, under both policies.
    for (handle, ascii, unicode) in LOOK_ALIKES {
        for (ep, (want, rule)) in [(s.ascii, ascii), (s.unicode, unicode)] {
            let (status, message) = refusal(
                c.submit_signed(&[ep], &binding(&s, sample::user_id(2), handle, t + 3))
                    .await,
            );
            assert_eq!(status, want, "{handle:?}: {message}");
            assert!(
                message.starts_with(&format!("{rule}:")),
                "{handle:?}: {message}"
            );
        }
    }
    // A handle of one script under unicode: issued.
    assert_eq!(
        c.submit_signed(
            &[s.unicode],
            &binding(&s, sample::user_id(3), "андрей", t + 4)
        )
        .await
        .unwrap()
        .state,
        SubmissionState::COMMITTED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alikes_over_submit_request_name_their_rule() {
    let s = setup().await;
    let c = client();
    let issued = c
        .submit_request(&[s.ascii], &ask(&s.subject, "alice", &[0, 1, 2]))
        .await
        .unwrap();
    assert_eq!(issued.state, SubmissionState::ISSUED);
    for (handle, ascii, unicode) in LOOK_ALIKES {
        for (ep, (want, rule)) in [(s.ascii, ascii), (s.unicode, unicode)] {
            let r = c.submit_request(&[ep], &ask_other(&s.other, handle)).await;
            if want == Status::CONFLICT {
                // Held by another subject: a refused ticket, the rule in
                // SUBMIT_STATUS.
                let ticket = r.unwrap();
                assert_eq!(ticket.state, SubmissionState::REFUSED, "{handle:?}");
                let st = c.submit_status(&[ep], ticket.submission_id).await.unwrap();
                assert!(
                    st.message.starts_with(&format!("{rule}:")),
                    "{}",
                    st.message
                );
            } else {
                let (status, message) = refusal(r);
                assert_eq!(status, want, "{handle:?}: {message}");
                // Bidi and format characters are refused when the
                // payload is decoded (SPEC §8.4.1), so the rule follows
                // the field's name there.
                assert!(
                    message.starts_with(&format!("{rule}:"))
                        || message.contains(&format!("submit_request.handle: {rule}:")),
                    "{handle:?}: {message}"
                );
            }
        }
    }
    // The second live binding of alice over SUBMIT_REQUEST: refused with
    // the same rule as over SUBMIT_SIGNED.
    let taken = c
        .submit_request(&[s.ascii], &ask_other(&s.other, "alice"))
        .await
        .unwrap();
    assert_eq!(taken.state, SubmissionState::REFUSED);
    let st = c
        .submit_status(&[s.ascii], taken.submission_id)
        .await
        .unwrap();
    assert!(st.message.starts_with("binding-unique:"), "{}", st.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_handle_stays_reserved_until_the_operator_frees_it() {
    let s = setup().await;
    let c = client();
    let mine = c
        .submit_request(&[s.ascii], &ask(&s.subject, "carol", &[0, 1, 2]))
        .await
        .unwrap();
    assert_eq!(mine.state, SubmissionState::ISSUED);
    let mut api = pb::provider_api_client::ProviderApiClient::connect(s.api.clone())
        .await
        .unwrap();
    api.revoke_binding(pb::RevokeBindingRequest {
        handle: "carol".into(),
        reason: 3, // account-closed
        idempotency_key: String::new(),
    })
    .await
    .unwrap();
    // Issue 12 §9: another record holder asks for carol: refused.
    let theirs = c
        .submit_request(&[s.ascii], &ask_other(&s.other, "carol"))
        .await
        .unwrap();
    assert_eq!(theirs.state, SubmissionState::REFUSED);
    let st = c
        .submit_status(&[s.ascii], theirs.submission_id)
        .await
        .unwrap();
    assert!(st.message.starts_with("handle-reserved:"), "{}", st.message);
    // The old holder asking again with another proof: the same ticket,
    // and no new binding (carol's newest binding is still the revoked one).
    let again = c
        .submit_request(&[s.ascii], &ask(&s.subject, "carol", &[3]))
        .await
        .unwrap();
    assert_eq!(again.submission_id, mine.submission_id);
    let (b, revocation) = s.store.binding(&s.provider_id, "carol").await.unwrap();
    assert!(revocation.is_some());
    assert_eq!(
        poz::entries::IdentityBinding::from_bytes(&b.body)
            .unwrap()
            .subject,
        s.subject.id()
    );
    // The Provider API refuses it too, by the same rule.
    let e = api
        .issue_binding(pb::IssueBindingRequest {
            handle: "carol".into(),
            subject: Some(pb::Hash {
                value: s.other.id().0.to_vec(),
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists);
    assert!(
        e.message().starts_with("handle-reserved:"),
        "{}",
        e.message()
    );
    // The operator frees it; the other's request, asked again, is issued.
    let freed = api
        .free_handle(pb::FreeHandleRequest {
            handle: "carol".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(freed.freed, 1);
    let e = api
        .free_handle(pb::FreeHandleRequest {
            handle: "carol".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let theirs = c
        .submit_request(&[s.ascii], &ask_other(&s.other, "carol"))
        .await
        .unwrap();
    assert_eq!(theirs.state, SubmissionState::ISSUED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_one_ticket_and_pending_requests_are_capped() {
    let s = setup().await;
    let c = client();
    // Issue 12 §9: a valid request padded with a junk signature (key
    // indices 200..=249 are none of the subject's) is refused, and makes
    // no ticket.
    let good = ask(&s.subject, "hank", &[0, 1, 2]);
    for junk in [200u8, 225, 249] {
        let mut padded = good.clone();
        padded
            .proof
            .push(sample::key(7).sign(junk, &padded.digest()));
        let (status, message) = refusal(c.submit_request(&[s.queue], &padded).await);
        assert_eq!(status, Status::UNAUTHORIZED, "{message}");
        assert!(message.contains(&format!("key {junk}")), "{message}");
    }
    assert_eq!(
        refusal(c.submit_status(&[s.queue], good.submission_id()).await).0,
        Status::NOT_FOUND
    );
    // The same ask with two different valid proofs: one ticket.
    let a = c.submit_request(&[s.queue], &good).await.unwrap();
    let b = c
        .submit_request(&[s.queue], &ask(&s.subject, "hank", &[3]))
        .await
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(a.submission_id, good.submission_id());
    assert_eq!(a.state, SubmissionState::PENDING);
    // At most 8 pending per subject (the store's default).
    for i in 1..8 {
        let t = c
            .submit_request(&[s.queue], &ask(&s.subject, &format!("hank{i}"), &[3]))
            .await
            .unwrap();
        assert_eq!(t.state, SubmissionState::PENDING);
    }
    let (status, message) = refusal(
        c.submit_request(&[s.queue], &ask(&s.subject, "hank8", &[3]))
            .await,
    );
    assert_eq!(status, Status::RATE_LIMITED, "{message}");
    // Another subject is not held back.
    assert_eq!(
        c.submit_request(&[s.queue], &ask_other(&s.other, "hank8"))
            .await
            .unwrap()
            .state,
        SubmissionState::PENDING
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_another_records_domain_is_refused() {
    let s = setup().await;
    let c = client();
    let mut req = ask(&s.subject, "ivan", &[0, 1, 2]);
    req.domain = "other.example".into();
    let digest = req.digest();
    req.proof = [0u8, 1, 2]
        .iter()
        .map(|i| sample::key(i + 1).sign(*i, &digest))
        .collect();
    // Configured (unicode gateway) or asked of the Provider API (ascii
    // gateway): refused at once, nothing recorded or issued.
    for ep in [s.ascii, s.unicode] {
        let (status, message) = refusal(c.submit_request(&[ep], &req).await);
        assert_eq!(status, Status::BAD_REQUEST, "{message}");
        assert!(
            message.contains("not a domain of this provider"),
            "{message}"
        );
    }
    assert_eq!(
        refusal(c.submit_status(&[s.ascii], req.submission_id()).await).0,
        Status::NOT_FOUND
    );
    assert!(s.store.binding(&s.provider_id, "ivan").await.is_err());
    let (status, message) = refusal(c.submit_request(&[s.queue], &req).await);
    assert_eq!(status, Status::BAD_REQUEST, "{message}");
}
