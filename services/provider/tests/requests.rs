//! The binding-request queue over real gRPC (issue 18): requests filed as
//! the submit gateway files them (pending submissions in the store) are
//! listed by ListBindingRequests and decided by DecideBindingRequest:
//! approve issues a binding that verifies against the provider's record,
//! refuse records the reason; the same decision again is the same answer,
//! the other decision is FAILED_PRECONDITION; a refusal without a reason,
//! a bad ID and an unknown ID are refused.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod support;

use poz::verify::{verify_and_accept, verify_binding};
use poz::wire::SubmitRequest;
use poz::zone::SignedEntry;
use poz::{Codec, Hash32};
use poz_proto::v1 as pb;
use tonic::Code;

/// Files a pending request for `handle` -> `subject` at `domain` in the
/// store, as the submit gateway does once the proof holds.
async fn file(store: &poz_store::Store, domain: &str, handle: &str, subject: Hash32) -> [u8; 16] {
    let ask = SubmitRequest {
        domain: domain.into(),
        handle: handle.into(),
        subject,
        proof: Vec::new(),
    };
    let id = ask.submission_id();
    store
        .put_submission(&poz_store::Submission {
            id,
            state: 1,
            request: ask.to_bytes(),
            entry: None,
            message: String::new(),
        })
        .await
        .unwrap();
    id
}

fn decide(id: [u8; 16], approve: bool, reason: &str) -> pb::DecideBindingRequestRequest {
    pb::DecideBindingRequestRequest {
        submission_id: id.to_vec(),
        approve,
        reason: reason.into(),
        expires_at: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_listed_approved_and_refused_once() {
    let f = support::fleet(64).await;
    let mut api = f.api.clone();
    let dana = poz::hash::tagged_hash("test subject", &[b"dana"]);
    let erin = poz::hash::tagged_hash("test subject", &[b"erin"]);
    let a = file(&f.store, "social.example", "dana", dana).await;
    let b = file(&f.store, "social.example", "erin", erin).await;

    let listed = api
        .list_binding_requests(pb::ListBindingRequestsRequest {
            after: Vec::new(),
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner();
    let mut handles: Vec<&str> = listed.requests.iter().map(|r| r.handle.as_str()).collect();
    handles.sort();
    assert_eq!(handles, ["dana", "erin"]);
    assert!(listed.next_after.is_empty());
    assert!(listed
        .requests
        .iter()
        .all(|r| r.state == 1 && r.asked_at > 0));

    // Approve: issued, and the binding verifies against the provider.
    let issued = api
        .decide_binding_request(decide(a, true, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((issued.state, issued.handle.as_str()), (2, "dana"));
    let entry = SignedEntry::from_bytes(issued.entry.as_deref().unwrap()).unwrap();
    let vr = verify_and_accept(f.provider.clone()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let b_ok = verify_binding(&vr, &entry, now).unwrap();
    assert_eq!(b_ok.binding.subject, dana);
    // Again: the same binding, nothing issued twice.
    let again = api
        .decide_binding_request(decide(a, true, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.entry, issued.entry);
    // The other way: refused.
    let e = api
        .decide_binding_request(decide(a, false, "changed my mind"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // Refuse: a reason is required, then recorded; again is the same.
    let e = api
        .decide_binding_request(decide(b, false, "  "))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // A reason the asker could not read (SUBMIT_STATUS carries one line):
    // refused, and nothing decided.
    for bad in ["line1\nline2", "tab\there"] {
        let e = api
            .decide_binding_request(decide(b, false, bad))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("control characters"), "{e:?}");
    }
    let refused = api
        .decide_binding_request(decide(b, false, "handle reserved for staff"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refused.state, 3);
    assert!(
        refused.message.contains("handle reserved for staff"),
        "{refused:?}"
    );
    let again = api
        .decide_binding_request(decide(b, false, "handle reserved for staff"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.message, refused.message);
    let e = api
        .decide_binding_request(decide(b, true, ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // What SUBMIT_STATUS reads.
    assert_eq!(f.store.submission(&b).await.unwrap().state, 3);

    // Nothing is pending now.
    let listed = api
        .list_binding_requests(pb::ListBindingRequestsRequest {
            after: Vec::new(),
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.requests.is_empty(), "{listed:?}");

    // A bad ID, an unknown one, a bad page size.
    let e = api
        .decide_binding_request(pb::DecideBindingRequestRequest {
            submission_id: vec![1; 3],
            ..decide([0; 16], true, "")
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = api
        .decide_binding_request(decide([7; 16], true, ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = api
        .list_binding_requests(pb::ListBindingRequestsRequest {
            after: Vec::new(),
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
}

/// Pages: at most `limit` each, `next_after` naming where the next starts.
/// A holder asking again for a handle whose binding the provider has
/// since revoked is not answered "issued" with the revoked binding: the
/// ask is pending again, and approving it is refused `handle-reserved`
/// (SPEC §8.4.3) until the operator frees the handle; then a new binding
/// is issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_again_for_a_revoked_handle_is_not_issued_with_the_old_binding() {
    let f = support::fleet(64).await;
    let mut api = f.api.clone();
    let dana = poz::hash::tagged_hash("test subject", &[b"dana"]);
    let a = file(&f.store, "social.example", "dana", dana).await;
    let issued = api
        .decide_binding_request(decide(a, true, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(issued.state, 2);
    api.revoke_binding(pb::RevokeBindingRequest {
        handle: "dana".into(),
        reason: 0,
        idempotency_key: String::new(),
    })
    .await
    .unwrap();

    // The same ask again (a new SUBMIT_REQUEST): pending, not issued.
    assert_eq!(file(&f.store, "social.example", "dana", dana).await, a);
    let again = f.store.submission(&a).await.unwrap();
    assert_eq!((again.state, again.entry.as_ref()), (1, None));
    let refused = api
        .decide_binding_request(decide(a, true, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refused.state, 3, "{refused:?}");
    assert!(refused.entry.is_none());
    assert!(
        refused.message.starts_with("handle-reserved:"),
        "{}",
        refused.message
    );

    // Freed by the operator: asked again, issued anew.
    api.free_handle(pb::FreeHandleRequest {
        handle: "dana".into(),
    })
    .await
    .unwrap();
    file(&f.store, "social.example", "dana", dana).await;
    let reissued = api
        .decide_binding_request(decide(a, true, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reissued.state, 2, "{reissued:?}");
    assert_ne!(reissued.entry, issued.entry);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_pages() {
    let f = support::fleet(64).await;
    let mut api = f.api.clone();
    for i in 0..5u8 {
        let s = poz::hash::tagged_hash("test subject", &[&[i]]);
        file(&f.store, "social.example", &format!("user{i}"), s).await;
    }
    let mut after = Vec::new();
    let mut seen = Vec::new();
    loop {
        let page = api
            .list_binding_requests(pb::ListBindingRequestsRequest {
                after: after.clone(),
                limit: 2,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.requests.len() <= 2);
        seen.extend(page.requests.iter().map(|r| r.submission_id.clone()));
        if page.next_after.is_empty() {
            break;
        }
        after = page.next_after;
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!((seen.len(), sorted), (5, seen));
}

/// The allowlist rows the Provider API's default (and the chart) gives
/// the queue's methods name real methods of the API: a misspelt row
/// would be refused at start only in a deployment with TLS.
#[test]
fn the_queue_methods_have_allowlist_rows_that_name_them() {
    let rows = poz_kit::Allowlist::of(&[
        ("poz.v1.ProviderApi/ListBindingRequests", &["poz-operator"]),
        ("poz.v1.ProviderApi/DecideBindingRequest", &["poz-operator"]),
    ]);
    assert_eq!(rows.check_names(), Ok(()));
}
