//! The Provider API over real gRPC with the real store (SQLite), verifier
//! and signer (software key) on loopback: a bulk issue of 10,000 bindings
//! broken off in the middle and resumed with the same idempotency keys
//! ends with exactly 10,000 valid bindings; single issue, duplicates,
//! get, list and revoke.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::sample::T0;
use poz::verify::{verify_and_accept, verify_binding, verify_bindings};
use poz::zone::SignedEntry;
use poz::{Codec, Hash32};
use poz_proto::v1 as pb;
use tonic::Code;

mod support;
use support::{fleet, Fleet};

fn subject(i: u64) -> Hash32 {
    poz::hash::tagged_hash("test subject", &[&i.to_be_bytes()])
}

fn request(i: u64) -> pb::IssueBindingRequest {
    pb::IssueBindingRequest {
        handle: format!("user{i}"),
        subject: Some(pb::Hash {
            value: subject(i).0.to_vec(),
        }),
        expires_at: 0,
        idempotency_key: format!("k{i}"),
    }
}

/// Every binding of the provider in the store, by paging.
async fn all_bindings(f: &Fleet) -> Vec<SignedEntry> {
    let id = f.provider.id();
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let page = f.store.list_bindings(&id, &after, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.0.clone();
        out.extend(page.into_iter().map(|(_, e, _)| e));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_issue_broken_off_and_resumed_issues_each_binding_once() {
    const N: u64 = 10_000;
    let f = fleet(1_000).await;

    // First attempt: stream everything, but break the connection once at
    // least 4,000 are acknowledged.
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let feeder = tokio::spawn(async move {
        for i in 0..N {
            if tx.send(request(i)).await.is_err() {
                break;
            }
        }
    });
    let mut progress = f
        .api
        .clone()
        .bulk_issue(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut acknowledged = 0;
    while let Some(p) = progress.message().await.unwrap() {
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        acknowledged = p.committed;
        if acknowledged >= 4_000 {
            break;
        }
    }
    drop(progress);
    feeder.abort();
    assert!((4_000..N).contains(&acknowledged), "{acknowledged}");
    // Let the server notice the break and finish any chunk in flight.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let stored_before = f.store.count_bindings(&f.provider.id()).await.unwrap();
    assert!(
        stored_before >= acknowledged && stored_before < N,
        "{stored_before}"
    );

    // Resume: the same 10,000 requests with the same keys.
    let reqs: Vec<_> = (0..N).map(request).collect();
    let mut progress = f
        .api
        .clone()
        .bulk_issue(tokio_stream::iter(reqs))
        .await
        .unwrap()
        .into_inner();
    let mut keys = std::collections::HashSet::new();
    let mut last = pb::BulkIssueProgress::default();
    while let Some(p) = progress.message().await.unwrap() {
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        keys.extend(p.committed_keys.iter().cloned());
        last = p;
    }
    assert_eq!((last.received, last.committed), (N, N));
    assert_eq!(keys.len() as u64, N, "every key acknowledged once");

    // Exactly N bindings, each valid against the provider's record, each
    // for the subject its request named.
    assert_eq!(f.store.count_bindings(&f.provider.id()).await.unwrap(), N);
    let bindings = all_bindings(&f).await;
    assert_eq!(bindings.len() as u64, N);
    let vp = verify_and_accept(f.provider.clone()).unwrap();
    let now = T0 + 1_000_000_000_000;
    for v in verify_bindings(&vp, &bindings, now) {
        let b = v.unwrap().binding;
        let i: u64 = b.handle.strip_prefix("user").unwrap().parse().unwrap();
        assert_eq!(b.subject, subject(i));
    }
    // Each batch can be listed and audited: its entries prove to the root
    // the signer's audit log recorded, leaves 0..n complete and in order.
    let digest = bindings[17].identity_digest(&f.provider.id());
    let (root, _) = bindings[17].signatures[0]
        .entry_message(&f.provider.id(), poz::zone::ZoneType::IDENTITY, &digest)
        .unwrap();
    let batch = f.store.batch(&f.provider.id(), &root).await.unwrap();
    let n = poz::zone::audit_batch(
        &f.provider.id(),
        poz::zone::ZoneType::IDENTITY,
        &f.provider.keys,
        &root,
        &batch,
    )
    .unwrap();
    assert!(n > 1 && n as usize == batch.len(), "{n}");
    let audit = f.store.signature_audit(&f.provider.id()).await.unwrap();
    assert!(audit
        .iter()
        .any(|(_, row)| row.what == "batch-root" && row.digest == root));
    assert!(matches!(
        poz::zone::audit_batch(
            &f.provider.id(),
            poz::zone::ZoneType::IDENTITY,
            &f.provider.keys,
            &root,
            &batch[1..]
        ),
        Err(poz::zone::BatchAuditError::OutOfOrder { .. })
    ));
    assert!(matches!(
        poz::zone::audit_batch(
            &f.provider.id(),
            poz::zone::ZoneType::IDENTITY,
            &f.provider.keys,
            &root,
            &batch[..batch.len() - 1]
        ),
        Err(poz::zone::BatchAuditError::Incomplete { .. })
    ));

    // A binding whose audit path or batch root signature is altered fails.
    for alter in [73usize, 10] {
        let mut bad = bindings[17].clone();
        bad.signatures[0].data[alter] ^= 1;
        assert!(verify_binding(&vp, &bad, now).is_err(), "byte {alter}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_issue_duplicates_get_list_and_revoke() {
    let f = fleet(100).await;
    let mut api = f.api.clone();
    let a = api.issue_binding(request(1)).await.unwrap().into_inner();
    // Retrying returns the same binding; another subject for the handle is
    // refused.
    let again = api.issue_binding(request(1)).await.unwrap().into_inner();
    assert_eq!(a.entry, again.entry);
    let mut other = request(1);
    other.subject = Some(pb::Hash { value: vec![9; 32] });
    assert_eq!(
        api.issue_binding(other).await.unwrap_err().code(),
        Code::AlreadyExists
    );
    let mut short = request(2);
    short.subject = Some(pb::Hash { value: vec![1; 3] });
    assert_eq!(
        api.issue_binding(short).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let vp = verify_and_accept(f.provider.clone()).unwrap();
    let e = SignedEntry::from_bytes(&a.entry).unwrap();
    verify_binding(&vp, &e, T0 + 1_000_000_000_000).unwrap();

    api.issue_binding(request(2)).await.unwrap();
    let got = api
        .get_binding(pb::GetProviderBindingRequest {
            handle: "user2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!got.entry.is_empty());
    let page = api
        .list_bindings(pb::ListBindingsRequest {
            after_handle: String::new(),
            limit: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (page.bindings.len(), page.next_after.as_str()),
        (1, "user1")
    );

    let rev = api
        .revoke_binding(pb::RevokeBindingRequest {
            handle: "user1".into(),
            reason: 3,
            idempotency_key: "r1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!rev.revocation.is_empty());
    let (_, revocation) = f.store.binding(&f.provider.id(), "user1").await.unwrap();
    assert!(revocation.is_some());
    assert_eq!(
        api.revoke_binding(pb::RevokeBindingRequest {
            handle: "user1".into(),
            reason: 3,
            idempotency_key: "r1".into(),
        })
        .await
        .unwrap_err()
        .code(),
        Code::FailedPrecondition
    );
    assert_eq!(
        api.revoke_binding(pb::RevokeBindingRequest {
            handle: "nobody".into(),
            reason: 0,
            idempotency_key: String::new(),
        })
        .await
        .unwrap_err()
        .code(),
        Code::NotFound
    );
}

/// 300 IssueBinding calls at once (group commit): 200 handles, 50 retries
/// of some with the same subject and 50 claims of others for another
/// subject. Each handle is signed and stored exactly once; a retry gets
/// the same binding; of two subjects racing for a handle exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_single_issues_sign_and_store_each_handle_once() {
    let f = fleet(100).await;
    let mut calls = tokio::task::JoinSet::new();
    let mut spawn = |tag: &'static str, r: pb::IssueBindingRequest| {
        let mut api = f.api.clone();
        calls.spawn(async move {
            let handle = r.handle.clone();
            let subject = r.subject.clone().unwrap().value;
            (tag, handle, subject, api.issue_binding(r).await)
        });
    };
    for i in 0..200 {
        spawn("first", request(i));
    }
    for i in 0..50 {
        let mut retry = request(i);
        retry.idempotency_key = format!("retry{i}");
        spawn("retry", retry);
    }
    for i in 50..100 {
        let mut other = request(i);
        other.subject = Some(pb::Hash {
            value: subject(1_000 + i).0.to_vec(),
        });
        spawn("other", other);
    }
    // Handle -> (subject, returned entry) of each successful call.
    type Wins = Vec<(Vec<u8>, Vec<u8>)>;
    let mut won: std::collections::HashMap<String, Wins> = Default::default();
    while let Some(r) = calls.join_next().await {
        let (tag, handle, subject, result) = r.unwrap();
        match result {
            Ok(b) => won
                .entry(handle)
                .or_default()
                .push((subject, b.into_inner().entry)),
            Err(e) => {
                assert_eq!(e.code(), Code::AlreadyExists, "{tag} {handle}: {e:?}");
                assert!(tag != "retry", "a same-subject retry was refused: {e:?}");
            }
        }
    }
    assert_eq!(won.len(), 200, "every handle was issued");
    let vp = verify_and_accept(f.provider.clone()).unwrap();
    for (handle, wins) in &won {
        // Everyone who succeeded for a handle got the one stored binding.
        let (stored, _) = f.store.binding(&f.provider.id(), handle).await.unwrap();
        for (subject, entry) in wins {
            assert_eq!(entry, &stored.to_bytes(), "{handle}");
            let b = poz::entries::IdentityBinding::from_bytes(&stored.body).unwrap();
            assert_eq!(&b.subject.0.to_vec(), subject, "{handle}");
        }
        verify_binding(&vp, &stored, T0 + 1_000_000_000_000).unwrap();
    }
    let retried = (0..50)
        .filter(|i| won[&format!("user{i}")].len() == 2)
        .count();
    assert_eq!(retried, 50, "each retry succeeded with the first binding");
    assert_eq!(f.store.count_bindings(&f.provider.id()).await.unwrap(), 200);
    let audit = f.store.signature_audit(&f.provider.id()).await.unwrap();
    assert_eq!(
        audit.len(),
        200,
        "one signature per stored binding, none wasted"
    );
}

fn ask(handle: &str, subject: u64, key: &str) -> pb::IssueBindingRequest {
    pb::IssueBindingRequest {
        handle: handle.into(),
        subject: Some(pb::Hash {
            value: self::subject(subject).0.to_vec(),
        }),
        expires_at: 0,
        idempotency_key: key.into(),
    }
}

/// Issue 12 §2, §3: the handle rules over IssueBinding and over BulkIssue,
/// where each refused item names its rule and the others are issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_rules_refuse_each_item_by_name() {
    let f = fleet(100).await;
    let mut api = f.api.clone();
    api.issue_binding(ask("alice", 1, "a")).await.unwrap();
    api.issue_binding(ask("mary", 1, "m")).await.unwrap();
    // IssueBinding: the second live binding, and a look-alike.
    for (handle, code, rule) in [
        ("alice", Code::AlreadyExists, "binding-unique"),
        ("rnary", Code::AlreadyExists, "handle-confusable"),
        ("Alice", Code::InvalidArgument, "handle-case"),
        ("\u{430}lice", Code::InvalidArgument, "handle-charset"),
        ("alice\u{200B}", Code::InvalidArgument, "handle-format"),
        ("\u{202E}ecila", Code::InvalidArgument, "handle-bidi"),
        ("al\u{131}ce", Code::InvalidArgument, "handle-charset"),
    ] {
        let e = api.issue_binding(ask(handle, 2, "x")).await.unwrap_err();
        assert_eq!(e.code(), code, "{handle:?}: {}", e.message());
        assert!(
            e.message().starts_with(&format!("{rule}:")),
            "{handle:?}: {}",
            e.message()
        );
    }
    // BulkIssue (what `pozctl identity import` streams): the same rules,
    // item by item, including two look-alikes within one chunk.
    let items = vec![
        ask("alice", 2, "b-alice"),
        ask("Alice", 2, "b-Alice"),
        ask("\u{202E}ecila", 2, "b-bidi"),
        ask("nora", 3, "b-nora"),
        ask("n0ra", 4, "b-n0ra"),
        ask("oscar", 5, "b-oscar"),
        ask("mary", 1, "b-retry"),
    ];
    let mut progress = api
        .bulk_issue(tokio_stream::iter(items))
        .await
        .unwrap()
        .into_inner();
    let mut errors = std::collections::HashMap::new();
    let mut committed = std::collections::HashSet::new();
    while let Some(p) = progress.message().await.unwrap() {
        for e in p.errors {
            errors.insert(e.idempotency_key, e.message);
        }
        committed.extend(p.committed_keys);
    }
    let rule_of = |k: &str| errors[k].split(':').next().unwrap_or_default().to_string();
    assert_eq!(rule_of("b-alice"), "binding-unique");
    assert_eq!(rule_of("b-Alice"), "handle-case");
    assert_eq!(rule_of("b-bidi"), "handle-bidi");
    assert_eq!(rule_of("b-n0ra"), "handle-confusable");
    assert_eq!(errors.len(), 4, "{errors:?}");
    let want: std::collections::HashSet<String> = ["b-nora", "b-oscar", "b-retry"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(committed, want);
    assert!(f.store.binding(&f.provider.id(), "n0ra").await.is_err());
}

/// Issue 12 §9: a revoked handle is reserved, for its old holder too,
/// until the operator frees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_handle_is_reserved_until_freed() {
    let f = fleet(100).await;
    let mut api = f.api.clone();
    api.issue_binding(ask("carol", 1, "c1")).await.unwrap();
    api.revoke_binding(pb::RevokeBindingRequest {
        handle: "carol".into(),
        reason: 3,
        idempotency_key: String::new(),
    })
    .await
    .unwrap();
    for subject in [2, 1] {
        let e = api
            .issue_binding(ask("carol", subject, "c2"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{}", e.message());
        assert!(
            e.message().starts_with("handle-reserved:"),
            "{}",
            e.message()
        );
    }
    let freed = api
        .free_handle(pb::FreeHandleRequest {
            handle: "carol".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(freed.freed, 1);
    let b = api
        .issue_binding(ask("carol", 2, "c3"))
        .await
        .unwrap()
        .into_inner();
    let e = SignedEntry::from_bytes(&b.entry).unwrap();
    let binding = poz::entries::IdentityBinding::from_bytes(&e.body).unwrap();
    assert_eq!(binding.subject, subject(2));
}
