//! Binding requests over 7076 (SUBMIT_REQUEST, SUBMIT_STATUS): the whole
//! fleet in process (store on SQLite, verifier, signer with the
//! provider's identity device keys, Provider API) behind a submit
//! gateway. A person whose record the store holds proves it with their
//! master keys; with the `issue` policy the binding is issued, verifies
//! against the provider, and SUBMIT_STATUS returns it; with `queue` it
//! stays pending. Bad proofs, unknown subjects, taken handles and unknown
//! submissions get their documented answers.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod support;

use poz::gate::{Gate, Port};
use poz::noise::StaticKeypair;
use poz::pow::{Challenger, LoadTargets, PowConfig, Secrets};
use poz::sample;
use poz::wire::{Status, SubmissionState, SubmitRequest};
use poz::Record;
use poz_client::{Client, ClientConfig, ClientError, Endpoint, Security};
use poz_edge::{Discipline, Edge, LoadMeter};
use poz_submit_gw::{BindingRequests, Policy, SignedSubmissions, Submissions};
use std::sync::Arc;

struct Setup {
    issue: Endpoint,
    queue: Endpoint,
    provider: Record,
    subject: Record,
    /// A second person, also published here (sole key: sample key 91).
    other: Record,
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
    let keys = poz_signer::SoftwareKeyStore::new(vec![
        ("device-a".into(), k.device_a),
        ("device-b".into(), k.device_b),
    ]);
    let fleet = poz_provider::inprocess::start(store, Arc::new(keys), id, 100)
        .await
        .unwrap();
    let ch = |u: &str| poz_kit::Channels::default().lazy(u).unwrap();
    let key = StaticKeypair::generate();
    let mut eps = Vec::new();
    for policy in [Policy::Issue, Policy::Queue] {
        let pow = PowConfig::default();
        let edge = Edge::new(
            Discipline::default(),
            key.clone(),
            Gate::new(Challenger::new(pow, Secrets(vec![[2; 32]])), 1_000),
            Submissions {
                signed: SignedSubmissions::new(ch(&fleet.store), ch(&fleet.verifier)),
                requests: Some(BindingRequests::new(
                    ch(&fleet.store),
                    Some(ch(&fleet.provider_api)),
                    policy,
                )),
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
        issue: eps[0],
        queue: eps[1],
        provider,
        subject,
        other,
        _dir: dir,
    }
}

/// A request for `handle` signed by the tour record's keys `signers`
/// (indices 0..4: alice 34, bob 33, carol 33 in group 0; recovery 100).
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

fn refusal<T: std::fmt::Debug>(r: Result<T, ClientError>) -> Status {
    match r {
        Err(ClientError::Status { status, .. }) => status,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proven_request_is_issued_or_queued_and_bad_ones_are_refused() {
    let s = setup().await;
    let c = Client::new(ClientConfig {
        attempts: 1,
        ..ClientConfig::default()
    });
    // Issue policy: the binding is issued and SUBMIT_STATUS returns it.
    let req = ask(&s.subject, "dave", &[0, 1, 2]);
    let ticket = c.submit_request(&[s.issue], &req).await.unwrap();
    assert_eq!(ticket.state, SubmissionState::ISSUED);
    let status = c
        .submit_status(&[s.issue], ticket.submission_id)
        .await
        .unwrap();
    assert_eq!(status.ticket, ticket);
    let entry = status.entry.expect("the issued binding");
    let vp = poz::verify::verify_and_accept(s.provider.clone()).unwrap();
    let b = poz::verify::verify_binding(&vp, &entry, sample::T0 + 1_000_000_000_000).unwrap();
    assert_eq!(b.binding.handle, "dave");
    assert_eq!(b.binding.subject, s.subject.id());
    // The same request again: the same ticket, nothing issued twice.
    assert_eq!(c.submit_request(&[s.issue], &req).await.unwrap(), ticket);

    // The recovery key alone also proves the record; but "dave" is taken
    // by... the same subject, so it is the same binding: issued.
    let again = c
        .submit_request(&[s.issue], &ask(&s.subject, "dave", &[3]))
        .await
        .unwrap();
    assert_eq!(again.state, SubmissionState::ISSUED);

    // Under threshold (alice and bob: 67 of 100): UNAUTHORIZED.
    assert_eq!(
        refusal(
            c.submit_request(&[s.issue], &ask(&s.subject, "erin", &[0, 1]))
                .await
        ),
        Status::UNAUTHORIZED
    );
    // A subject this provider does not know: NOT_FOUND.
    let stranger = sample::sole_owner_genesis(&sample::key(90)).unwrap();
    assert_eq!(
        refusal(
            c.submit_request(&[s.issue], &ask(&stranger, "erin", &[0]))
                .await
        ),
        Status::NOT_FOUND
    );
    // A handle already bound to another subject ("dave", asked for by the
    // second person): recorded as refused, with the reason.
    let mut other = SubmitRequest {
        domain: "social.example".into(),
        handle: "dave".into(),
        subject: s.other.id(),
        proof: Vec::new(),
    };
    let digest = other.digest();
    other.proof.push(sample::key(91).sign(0, &digest));
    let taken = c.submit_request(&[s.issue], &other).await.unwrap();
    assert_eq!(taken.state, SubmissionState::REFUSED);
    let st = c
        .submit_status(&[s.issue], taken.submission_id)
        .await
        .unwrap();
    assert!(st.entry.is_none());
    assert!(st.message.contains("another subject"), "{}", st.message);

    // Queue policy: pending, no entry yet.
    let queued = c
        .submit_request(&[s.queue], &ask(&s.subject, "frank", &[0, 1, 2]))
        .await
        .unwrap();
    assert_eq!(queued.state, SubmissionState::PENDING);
    let st = c
        .submit_status(&[s.queue], queued.submission_id)
        .await
        .unwrap();
    assert_eq!(st.ticket.state, SubmissionState::PENDING);
    assert!(st.entry.is_none());
    // An unknown submission: NOT_FOUND.
    assert_eq!(
        refusal(c.submit_status(&[s.queue], [7; 16]).await),
        Status::NOT_FOUND
    );
}
