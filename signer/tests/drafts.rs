//! Issue 12 §9: a master-zone draft after genesis is signed only with the
//! chain that authorizes it, verified from genesis. A draft stripped of
//! its history would otherwise be authorized by its own master keys.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::sample::{self, T0};
use poz::{workflow, Codec, Record};
use poz_proto::v1 as pb;
use poz_proto::v1::signer_server::Signer;
use poz_signer::{
    check_draft_chain, AuditError, DraftRefused, SignatureAuditLog, SignerService, SoftwareKeyStore,
};
use poz_store::{Store, StoreOptions};
use std::sync::Arc;
use tonic::{Code, Request};

/// A sole-owner record at serial 2 (history: genesis), and its next
/// draft, serial 3.
fn serial_3_draft() -> Record {
    let owner = sample::key(10);
    let rec = sample::sole_owner_genesis(&owner).unwrap();
    let mut rec = workflow::draft(&rec, T0 + 1).unwrap();
    workflow::sign_draft(&mut rec, &owner).unwrap();
    workflow::apply(&mut rec).unwrap();
    workflow::draft(&rec, T0 + 2).unwrap()
}

#[tokio::test]
async fn a_draft_without_the_chain_from_genesis_is_refused_unsigned_and_unaudited() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("audit.db").display()
    );
    // The store creates the schema and reads the rows back; the signer
    // only inserts.
    let audit = Store::open(&url, StoreOptions::default()).await.unwrap();
    let owner = sample::key(10);
    let key_id = owner.public().id();
    let keys = Arc::new(SoftwareKeyStore::new(vec![("master".into(), owner)]));
    let svc = SignerService::new(keys, SignatureAuditLog::open(&url).await.unwrap());
    let honest = serial_3_draft();
    assert_eq!(honest.master.serial, 3);
    assert_eq!(check_draft_chain(&honest), Ok(()));

    // The input: the draft with its history removed.
    let mut no_history = honest.clone();
    no_history.history.clear();
    // A history that does not reach genesis (serial 2 only).
    let mut truncated = honest.clone();
    truncated.history.remove(0);
    // A history whose last revision is not the one before the draft.
    let mut gap = honest.clone();
    gap.history.pop();
    let cases = [
        (
            &no_history,
            DraftRefused::NoHistory { serial: 3 },
            "carries no zone history",
        ),
        (
            &gap,
            DraftRefused::NotNext { serial: 3, last: 1 },
            "does not follow",
        ),
    ];
    for (draft, typed, said) in cases {
        assert_eq!(check_draft_chain(draft), Err(typed));
        let e = sign(&svc, draft, &key_id).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains(said), "{}", e.message());
    }
    assert!(matches!(
        check_draft_chain(&truncated),
        Err(DraftRefused::ChainIncomplete(_))
    ));
    let e = sign(&svc, &truncated, &key_id).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("from genesis"), "{}", e.message());
    // A genesis draft carrying a history is refused too.
    let mut genesis = honest.clone();
    genesis.master.serial = 1;
    assert!(matches!(
        check_draft_chain(&genesis),
        Err(DraftRefused::GenesisWithHistory { revisions: 2 })
    ));

    // A draft stamped near u64::MAX (it would freeze the record: SPEC
    // §6.7) is refused before any key signs, whatever its chain.
    let owner_rec = {
        let owner = sample::key(10);
        let rec = sample::sole_owner_genesis(&owner).unwrap();
        let mut rec = workflow::draft(&rec, T0 + 1).unwrap();
        workflow::sign_draft(&mut rec, &owner).unwrap();
        workflow::apply(&mut rec).unwrap();
        rec
    };
    let far = workflow::draft(&owner_rec, u64::MAX - 1).unwrap();
    let e = sign(&svc, &far, &key_id).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().contains("more than 300000 ms after now"),
        "{}",
        e.message()
    );

    // Nothing was signed, so nothing was audited.
    for d in [&honest, &no_history, &truncated, &gap, &far] {
        assert!(audit.signature_audit(&d.id()).await.unwrap().is_empty());
    }
    // The honest draft, with its chain, is signed and audited once.
    sign(&svc, &honest, &key_id).await.unwrap();
    assert_eq!(audit.signature_audit(&honest.id()).await.unwrap().len(), 1);
}

async fn sign(
    svc: &SignerService,
    draft: &Record,
    key_id: &poz::Hash32,
) -> Result<pb::SignatureResponse, tonic::Status> {
    svc.sign_master_draft(Request::new(pb::SignMasterDraftRequest {
        draft: draft.to_bytes(),
        key_id: Some(pb::Hash {
            value: key_id.0.to_vec(),
        }),
    }))
    .await
    .map(|r| r.into_inner())
}

/// The signer never migrates: its audit log does not open on a database
/// the store has not migrated. And a signature whose audit row cannot be
/// written is withheld: the call fails UNAVAILABLE and returns no
/// signature.
#[tokio::test]
async fn a_signature_whose_audit_row_cannot_be_written_is_withheld() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("audit.db").display()
    );
    let e = SignatureAuditLog::open(&url).await.unwrap_err();
    assert!(matches!(e, AuditError::NotWritable(_)), "{e}");
    assert!(e.to_string().contains("migrated"), "{e}");

    let audit = Store::open(&url, StoreOptions::default()).await.unwrap();
    let log = SignatureAuditLog::open(&url).await.unwrap();
    audit.close().await;
    // The table goes away under the running signer (a revoked grant, a
    // restored database): every write fails from now on.
    {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut c = sqlx::AnyConnection::connect(&url).await.unwrap();
        sqlx::query("DROP TABLE signature_audit")
            .execute(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
    }
    let owner = sample::key(10);
    let key_id = owner.public().id();
    let keys = Arc::new(SoftwareKeyStore::new(vec![("master".into(), owner)]));
    let svc = SignerService::new(keys, log);
    let e = sign(&svc, &serial_3_draft(), &key_id).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("signature withheld"),
        "{}",
        e.message()
    );
}
