//! The signer against a real SoftHSM2 token (Debian's `softhsm2`; the
//! README's test command installs it). Each test initialises its own token
//! (its own label), so tests never share key material. The tests pass
//! under `cargo test` (threads of one process, sharing the module's one
//! context) as under nextest (a process per test).
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use cryptoki::object::{Attribute, AttributeInfo, AttributeType};
use poz::sample::{self, T0};
use poz::zone::{EntryKind, SignedEntry, ZoneType};
use poz::{workflow, Codec, Hash32, Record};
use poz_proto::v1 as pb;
use poz_proto::v1::signer_server::Signer;
use poz_signer::{KeyStore, Pkcs11KeyStore, SignatureAuditLog, SignerService, TokenConfig};
use poz_store::{Store, StoreOptions};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tonic::{Code, Request};
use zeroize::Zeroizing;

/// The SoftHSM2 module: `POZ_PKCS11_MODULE`, else Debian's paths.
fn module() -> PathBuf {
    if let Some(p) = std::env::var_os("POZ_PKCS11_MODULE") {
        return p.into();
    }
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("SoftHSM2 is not installed (apt-get install softhsm2; deploy/test.sh does it)")
}

/// The process's SoftHSM2 configuration, made once: SoftHSM2 reads
/// `SOFTHSM2_CONF` when the module is initialised, and the module is
/// initialised once per process (every key store shares its context), so
/// every test of this process keeps its token in one directory (under
/// Cargo's target tmp, one per process; those of finished runs are
/// removed). Child processes (the `poz-signer` binary) inherit it.
fn softhsm_conf() -> &'static PathBuf {
    static CONF: OnceLock<PathBuf> = OnceLock::new();
    CONF.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        if let Ok(entries) = std::fs::read_dir(&root) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("softhsm-") {
                    if !std::path::Path::new("/proc").join(pid).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let dir = root.join(format!("softhsm-{}", std::process::id()));
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        std::env::set_var("SOFTHSM2_CONF", &conf);
        conf
    })
}

/// A fresh token (user PIN 1234, a label of its own), initialised through
/// the process's context of the module on its free slot (SoftHSM2 then
/// offers a new free slot). `_dir` is the test's own directory (PIN
/// files, audit databases).
fn fresh_token(_dir: &std::path::Path) -> TokenConfig {
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    softhsm_conf();
    let label = format!("poz-test-{}", NEXT.fetch_add(1, Ordering::SeqCst));
    let ctx = poz_signer::pkcs11::module(&module()).unwrap();
    let so_pin = AuthPin::new("5678".into());
    // One slot scan or initialisation at a time in the process, key
    // stores opening in other tests included: two would race for the free
    // slot, and SoftHSM2 aborts when two threads rescan at once.
    let slot = poz_signer::pkcs11::with_slot_list(|| {
        let slot = ctx
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| !ctx.get_token_info(*s).unwrap().token_initialized())
            .expect("SoftHSM2 offers a free slot");
        ctx.init_token(slot, &so_pin, &label).unwrap();
        slot
    });
    let session = ctx.open_rw_session(slot).unwrap();
    session.login(UserType::So, Some(&so_pin)).unwrap();
    session.init_pin(&AuthPin::new("1234".into())).unwrap();
    session.logout().unwrap();
    TokenConfig {
        module: module(),
        token_label: label,
        pin: Zeroizing::new("1234".into()),
        sessions: 2,
    }
}

/// Generates keys labelled `labels` in the token, then reopens it (a key
/// store's list is fixed when it opens, as the service's is).
fn token_with_keys(cfg: &TokenConfig, labels: &[&str]) -> Pkcs11KeyStore {
    {
        let s = Pkcs11KeyStore::open(cfg).unwrap();
        for l in labels {
            s.generate(l).unwrap();
        }
    }
    Pkcs11KeyStore::open(cfg).unwrap()
}

fn audit_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}?mode=rwc", dir.join("audit.db").display())
}

/// The store over the test's audit database: it creates the schema (the
/// signer runs no migrations) and reads the audit rows back.
async fn audit_store(dir: &std::path::Path) -> Store {
    Store::open(&audit_url(dir), StoreOptions::default())
        .await
        .unwrap()
}

/// The signer's audit log over the test's database, migrated first.
async fn audit_log(dir: &std::path::Path) -> SignatureAuditLog {
    drop(audit_store(dir).await);
    SignatureAuditLog::open(&audit_url(dir)).await.unwrap()
}

#[test]
fn keys_are_generated_and_used_inside_the_token_and_never_leave_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fresh_token(dir.path());
    let store = token_with_keys(&cfg, &["identity-1"]);
    assert_eq!(store.keys().len(), 1);
    let key = store.keys()[0].clone();
    assert_eq!(key.label, "identity-1");

    // Signs inside the token; the signature verifies under the POZ rule.
    let digest = poz::hash::tagged_hash("test", &[b"hello"]);
    let sig = store.sign(&key.public.id(), &digest).unwrap();
    let check = poz::keys::Signature {
        key_idx: 0,
        sig_type: poz::keys::SigType::ED25519,
        data: sig.to_vec(),
    };
    assert!(key.public.verify(&digest, &check));

    // The private value cannot be read: sensitive, never extractable.
    let h = store.private_handle(&key.public.id()).unwrap();
    store.with_session(|s| {
        let info = s.get_attribute_info(h, &[AttributeType::Value]).unwrap();
        assert!(matches!(info[0], AttributeInfo::Sensitive), "{info:?}");
        assert!(s
            .get_attributes(h, &[AttributeType::Value])
            .unwrap()
            .is_empty());
        let flags = s
            .get_attributes(
                h,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::NeverExtractable,
                    AttributeType::Token,
                ],
            )
            .unwrap();
        for want in [
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::NeverExtractable(true),
            Attribute::Token(true),
        ] {
            assert!(
                flags
                    .iter()
                    .any(|a| format!("{a:?}") == format!("{want:?}")),
                "{want:?} not in {flags:?}"
            );
        }
    });

    // The key survives a reopen (a token object), and an unknown key ID
    // is refused.
    drop(store);
    let again = Pkcs11KeyStore::open(&cfg).unwrap();
    assert_eq!(again.keys()[0].public, key.public);
    assert!(again.sign(&Hash32([7; 32]), &digest).is_err());
}

/// A provider whose identity zone is delegated to the HSM key (grant 100)
/// and to a software device (grant 100, used for the authority section).
fn provider_with_hsm_identity_key(hsm: &poz::PublicKey) -> Record {
    let k = sample::provider_keys();
    let rec = sample::sole_owner_genesis(&k.master).unwrap();
    let mut rec = workflow::draft(&rec, T0 + 1).unwrap();
    workflow::set_delegation_key(&mut rec, ZoneType::IDENTITY, hsm.clone(), 0, 100, 100).unwrap();
    workflow::set_delegation_key(
        &mut rec,
        ZoneType::IDENTITY,
        k.device_a.public(),
        0,
        100,
        100,
    )
    .unwrap();
    workflow::set_delegation_key(&mut rec, ZoneType::FEED, k.zones.public(), 0, 100, 100).unwrap();
    workflow::sign_draft(&mut rec, &k.master).unwrap();
    workflow::apply(&mut rec).unwrap();
    workflow::set_authority(
        &mut rec,
        ZoneType::IDENTITY,
        "social.example",
        Hash32::ZERO,
        T0 + 2,
        &[&k.device_a],
    )
    .unwrap();
    rec
}

fn hash(h: &Hash32) -> Option<pb::Hash> {
    Some(pb::Hash {
        value: h.0.to_vec(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_is_enforced_and_every_signature_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fresh_token(dir.path());
    let hsm = Arc::new(token_with_keys(&cfg, &["identity-hsm"]));
    let hsm_key = hsm.keys()[0].public.clone();
    let audit = audit_store(dir.path()).await;
    let svc = SignerService::new(hsm.clone(), audit_log(dir.path()).await);
    let rec = provider_with_hsm_identity_key(&hsm_key);
    let id = rec.id();

    let listed = svc
        .list_keys(Request::new(pb::ListKeysRequest {}))
        .await
        .unwrap();
    assert_eq!(listed.get_ref().keys[0].public_key, hsm_key.bytes());

    // Three bindings signed in the HSM; each verifies with the provider.
    let vr = poz::verify::verify_and_accept(rec.clone()).unwrap();
    let mut returned = Vec::new();
    for n in 0..3u8 {
        let mut b =
            workflow::new_binding(&rec, sample::user_id(n), &format!("u{n}"), T0 + 5, 0).unwrap();
        let r = svc
            .sign_entry(Request::new(pb::SignEntryRequest {
                issuer_record: rec.to_bytes(),
                zone_type: ZoneType::IDENTITY.0 as u32,
                entry: b.to_bytes(),
                key_id: hash(&hsm_key.id()),
            }))
            .await
            .unwrap()
            .into_inner();
        b.add_signature(poz::keys::Signature::from_bytes(&r.signature).unwrap());
        poz::verify::verify_binding(&vr, &b, T0 + 10).unwrap();
        returned.push((r.audit_id, r.signature));
    }

    // Outside policy: the HSM key is not a feed delegation key, nor a
    // master key. Refused, and nothing signed or audited.
    let feed = SignedEntry::new(
        EntryKind::GRANT,
        poz::entries::FeedEntry {
            name: "main".into(),
            feed_service: Hash32([1; 32]),
        }
        .to_bytes(),
    );
    let e = svc
        .sign_entry(Request::new(pb::SignEntryRequest {
            issuer_record: rec.to_bytes(),
            zone_type: ZoneType::FEED.0 as u32,
            entry: feed.to_bytes(),
            key_id: hash(&hsm_key.id()),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("not one of the keys"),
        "{}",
        e.message()
    );
    let draft = workflow::draft(&rec, T0 + 20).unwrap();
    let e = svc
        .sign_master_draft(Request::new(pb::SignMasterDraftRequest {
            draft: draft.to_bytes(),
            key_id: hash(&hsm_key.id()),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // A binding claiming another issuer, garbage, a key not held.
    let mut foreign = workflow::new_binding(&rec, sample::user_id(9), "x", T0 + 5, 0).unwrap();
    let mut body = poz::entries::IdentityBinding::from_bytes(&foreign.body).unwrap();
    body.issuer = Hash32([3; 32]);
    foreign.body = body.to_bytes();
    for (req, code) in [
        (
            pb::SignEntryRequest {
                issuer_record: rec.to_bytes(),
                zone_type: 1,
                entry: foreign.to_bytes(),
                key_id: hash(&hsm_key.id()),
            },
            Code::FailedPrecondition,
        ),
        (
            pb::SignEntryRequest {
                issuer_record: vec![1, 2, 3],
                zone_type: 1,
                entry: foreign.to_bytes(),
                key_id: hash(&hsm_key.id()),
            },
            Code::InvalidArgument,
        ),
        (
            pb::SignEntryRequest {
                issuer_record: rec.to_bytes(),
                zone_type: 1,
                entry: foreign.to_bytes(),
                key_id: hash(&Hash32([5; 32])),
            },
            Code::NotFound,
        ),
    ] {
        let e = svc.sign_entry(Request::new(req)).await.unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
    }

    // A batch of 50 bindings: one HSM signature over the batch root; each
    // binding then verifies with its audit path. A batch with one binding
    // of another issuer is refused whole.
    let mut batch = sample::bulk_bindings(&rec, 50, &[]).unwrap();
    let r = svc
        .sign_batch_root(Request::new(pb::SignBatchRootRequest {
            issuer_record: rec.to_bytes(),
            zone_type: 1,
            entries: batch.iter().map(|e| e.to_bytes()).collect(),
            key_id: hash(&hsm_key.id()),
        }))
        .await
        .unwrap()
        .into_inner();
    let root_sig = poz::keys::Signature::from_bytes(&r.signature).unwrap();
    let (idx, tree, _) =
        workflow::batch_signing_target(&rec, ZoneType::IDENTITY, &batch, &hsm_key.id()).unwrap();
    workflow::attach_batch_signature(&mut batch, idx, &tree, root_sig.data.try_into().unwrap());
    assert!(poz::verify::verify_bindings(&vr, &batch, T0 + 10)
        .iter()
        .all(|v| v.is_ok()));
    returned.push((r.audit_id, r.signature));
    let mut mixed: Vec<Vec<u8>> = batch.iter().map(|e| e.to_bytes()).collect();
    mixed.push(foreign.to_bytes());
    let e = svc
        .sign_batch_root(Request::new(pb::SignBatchRootRequest {
            issuer_record: rec.to_bytes(),
            zone_type: 1,
            entries: mixed,
            key_id: hash(&hsm_key.id()),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // A group of 20 bindings, each signed on its own across the token's
    // sessions and audited in one commit; each verifies singly. A group
    // with one binding of another issuer is refused whole.
    let group: Vec<SignedEntry> = (0..20u8)
        .map(|n| {
            workflow::new_binding(&rec, sample::user_id(n), &format!("g{n}"), T0 + 5, 0).unwrap()
        })
        .collect();
    let r = svc
        .sign_entries(Request::new(pb::SignEntriesRequest {
            issuer_record: rec.to_bytes(),
            zone_type: 1,
            entries: group.iter().map(|e| e.to_bytes()).collect(),
            key_id: hash(&hsm_key.id()),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.signatures.len(), group.len());
    for (mut b, s) in group.clone().into_iter().zip(r.signatures) {
        b.add_signature(poz::keys::Signature::from_bytes(&s.signature).unwrap());
        poz::verify::verify_binding(&vr, &b, T0 + 10).unwrap();
        returned.push((s.audit_id, s.signature));
    }
    let mut mixed: Vec<Vec<u8>> = group.iter().map(|e| e.to_bytes()).collect();
    mixed.insert(7, foreign.to_bytes());
    let e = svc
        .sign_entries(Request::new(pb::SignEntriesRequest {
            issuer_record: rec.to_bytes(),
            zone_type: 1,
            entries: mixed,
            key_id: hash(&hsm_key.id()),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("entries[7]"), "{}", e.message());

    // The audit log: exactly one row per signature, matching what was
    // returned.
    let rows = audit.signature_audit(&id).await.unwrap();
    assert_eq!(rows.len(), 24);
    let mut got: Vec<(u64, Vec<u8>)> = rows
        .iter()
        .map(|(i, r)| (*i, r.signature.clone()))
        .collect();
    got.sort();
    returned.sort();
    assert_eq!(got, returned);
    for (_, row) in &rows {
        assert_eq!(row.key_id, hsm_key.id());
        assert_eq!(row.record_id, id);
        assert_eq!(row.zone_type, ZoneType::IDENTITY.0);
    }
    let whats: Vec<&str> = rows.iter().map(|(_, r)| r.what.as_str()).collect();
    assert_eq!(whats.iter().filter(|w| **w == "entry").count(), 23);
    assert_eq!(whats.iter().filter(|w| **w == "batch-root").count(), 1);
}

/// The `poz-signer` binary: generates a key in the token, starts from a
/// configuration file with the PIN in a file, serves ListKeys, stops on
/// SIGTERM; and refuses to start without an audit database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_generates_a_key_serves_and_refuses_bad_configuration() {
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let cfg = fresh_token(dir.path());
    let pin = dir.path().join("pin");
    std::fs::write(&pin, "1234\n").unwrap();
    let conf = dir.path().join("signer.toml");
    std::fs::write(
        &conf,
        format!(
            "listen = \"127.0.0.1:0\"\npkcs11_module = \"{}\"\ntoken_label = \"{}\"\npin_file = \"{}\"\naudit_database_url = \"sqlite://{}?mode=rwc\"\n",
            cfg.module.display(),
            cfg.token_label,
            pin.display(),
            dir.path().join("audit.db").display()
        ),
    )
    .unwrap();
    // The store migrates the audit database; the signer only inserts.
    drop(audit_store(dir.path()).await);
    let bin = env!("CARGO_BIN_EXE_poz-signer");
    let out = Command::new(bin)
        .args([
            "--config".as_ref(),
            conf.as_os_str(),
            "--generate-key".as_ref(),
            "id-1".as_ref(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.starts_with("generated id-1: key id "), "{printed}");

    let out = Command::new(bin)
        .env("POZ_SIGNER_CONFIG", &conf)
        .env("POZ_SIGNER_AUDIT_DATABASE_URL", "")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("audit_database_url is required"));

    // Tied to this process: it exits when the test ends however it ends.
    let mut cmd = Command::new(bin);
    cmd.env("POZ_SIGNER_CONFIG", &conf).arg("--insecure");
    let mut signer = poz_testkit::ServiceProcess::spawn(cmd);
    let mut client = pb::signer_client::SignerClient::connect(signer.url())
        .await
        .unwrap();
    let keys = client
        .list_keys(pb::ListKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].label, "id-1");
    let key_id = hex(&keys[0].key_id.as_ref().unwrap().value);
    assert!(printed.contains(&key_id), "{printed} vs {key_id}");
    // SIGTERM: a graceful stop.
    let status = signer.terminate();
    assert!(status.success(), "{status:?}; stderr:\n{}", signer.stderr());
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The provider ceremony (`poz-signer --ceremony`) against a fresh token:
/// the keys it names are generated inside the token; the record it writes
/// verifies from genesis and every one of its signatures is by a token
/// key and in the audit log; each Noise gateway gets its own key file
/// (owner-only) matching the record; the record then issues a binding
/// through the signer with its HSM identity key. A second run never
/// overwrites the record; an inconsistent plan is refused before any key
/// is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ceremony_makes_a_provider_record_signed_inside_the_token() {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    let dir = tempfile::tempdir().unwrap();
    let cfg = fresh_token(dir.path());
    let pin = dir.path().join("pin");
    std::fs::write(&pin, "1234\n").unwrap();
    let audit_db = dir.path().join("audit.db");
    let conf = dir.path().join("signer.toml");
    std::fs::write(
        &conf,
        format!(
            "pkcs11_module = \"{}\"\ntoken_label = \"{}\"\npin_file = \"{}\"\naudit_database_url = \"sqlite://{}?mode=rwc\"\n",
            cfg.module.display(),
            cfg.token_label,
            pin.display(),
            audit_db.display()
        ),
    )
    .unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        r#"
domain = "provider.example"
master_keys = ["master-1", "master-2", "master-3"]
master_threshold = 2
identity_keys = ["identity-1"]
service_keys = ["service-1"]

[[query_hosts]]
hostname = "q1.provider.example"
port = 7075
noise = true

[[query_hosts]]
hostname = "q1.provider.example"
port = 7074
priority = 20

[[submit_hosts]]
hostname = "s1.provider.example"
port = 7076
noise = true

[[https_hosts]]
hostname = "www.provider.example"
port = 443
ca_key = "service-1"
"#,
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let bin = env!("CARGO_BIN_EXE_poz-signer");
    let run = |plan: &std::path::Path| {
        Command::new(bin)
            .arg("--config")
            .arg(&conf)
            .arg("--ceremony")
            .arg(plan)
            .arg("--out")
            .arg(&out_dir)
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap()
    };
    // The signer runs no migrations: on a database the store has not
    // migrated, the ceremony stops before any key is generated or file
    // written.
    let out = run(&plan);
    assert!(!out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("signature_audit"), "{said}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("generated "));
    assert!(!out_dir.join("record.poz").exists());
    assert!(Pkcs11KeyStore::open(&cfg).unwrap().keys().is_empty());

    drop(audit_store(dir.path()).await);
    let out = run(&plan);
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed.matches("generated ").count(), 5, "{printed}");

    let bytes = std::fs::read(out_dir.join("record.poz")).unwrap();
    let rec = Record::from_bytes(&bytes).unwrap();
    let report = poz::verify_record(&rec);
    assert!(report.is_valid() && report.is_complete(), "{report:?}");
    assert_eq!(rec.master.serial, 2);

    // Every key of the record is a token key, and the token holds exactly
    // the five the plan names.
    let hsm = Pkcs11KeyStore::open(&cfg).unwrap();
    let mut labels: Vec<&str> = hsm.keys().iter().map(|k| k.label.as_str()).collect();
    labels.sort();
    assert_eq!(
        labels,
        [
            "identity-1",
            "master-1",
            "master-2",
            "master-3",
            "service-1"
        ]
    );
    let token_ids: Vec<Hash32> = hsm.keys().iter().map(|k| k.public.id()).collect();
    assert_eq!(rec.keys.keys.len(), 5);
    for i in 0..rec.keys.keys.len() {
        let k = rec.keys.get(i as u8).unwrap();
        assert!(
            token_ids.contains(&k.id()),
            "record key {i} is not in the token"
        );
    }
    assert_eq!(rec.master.master_keys.len(), 3);
    // Two of three masters reach the threshold; one does not.
    assert!(rec.master.master_keys.iter().all(|m| m.value == 50));

    // The audit log holds every signature of the ceremony: 3 genesis, 3
    // serial 2, 2 authority sections, 3 service entries.
    let audit = Store::open(
        &format!("sqlite://{}?mode=rwc", audit_db.display()),
        StoreOptions::default(),
    )
    .await
    .unwrap();
    let rows = audit.signature_audit(&rec.id()).await.unwrap();
    let mut whats: Vec<&str> = rows.iter().map(|(_, r)| r.what.as_str()).collect();
    whats.sort();
    assert_eq!(
        whats,
        [
            "ceremony-authority",
            "ceremony-authority",
            "ceremony-entry",
            "ceremony-entry",
            "ceremony-entry",
            "ceremony-genesis",
            "ceremony-genesis",
            "ceremony-genesis",
            "ceremony-master-draft",
            "ceremony-master-draft",
            "ceremony-master-draft",
        ]
    );
    for (_, row) in &rows {
        assert!(token_ids.contains(&row.key_id));
    }
    let audited: Vec<Vec<u8>> = rows.iter().map(|(_, r)| r.signature.clone()).collect();
    let serial2_sigs: Vec<Vec<u8>> = rec
        .master
        .signatures
        .iter()
        .map(|s| s.data.clone())
        .collect();
    for s in &serial2_sigs {
        assert!(
            audited.iter().any(|a| a == s),
            "a master signature is not audited"
        );
    }

    // One key file per Noise gateway, owner-only, matching the record.
    let services = rec.zones.get(&ZoneType::SERVICE).unwrap();
    let mut noise_hosts = 0;
    for e in &services.entries {
        let s = poz::entries::ServiceEntry::from_bytes(&e.body).unwrap();
        for h in &s.pool {
            let path = out_dir
                .join("noise")
                .join(format!("{}-{}.key", h.hostname, h.port));
            match h.server_key {
                Some(public) => {
                    noise_hosts += 1;
                    let meta = std::fs::metadata(&path).unwrap();
                    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
                    let secret = std::fs::read_to_string(&path).unwrap();
                    let secret: [u8; 32] = (0..32)
                        .map(|i| u8::from_str_radix(&secret.trim()[2 * i..2 * i + 2], 16).unwrap())
                        .collect::<Vec<u8>>()
                        .try_into()
                        .unwrap();
                    let kp = poz::noise::StaticKeypair::from_secret(secret);
                    assert_eq!(kp.public, public, "{}", path.display());
                }
                None => assert!(!path.exists()),
            }
        }
    }
    assert_eq!(noise_hosts, 2);

    // The record at work: the signer issues a binding with the HSM identity
    // key, and it verifies against the ceremony's record.
    let identity = hsm
        .keys()
        .iter()
        .find(|k| k.label == "identity-1")
        .unwrap()
        .public
        .clone();
    let service_key = hsm
        .keys()
        .iter()
        .find(|k| k.label == "service-1")
        .unwrap()
        .public
        .clone();
    let svc = SignerService::new(Arc::new(hsm), audit_log(dir.path()).await);
    let mut b = workflow::new_binding(
        &rec,
        sample::user_id(1),
        "alice",
        rec.master.timestamp + 10,
        0,
    )
    .unwrap();
    let r = svc
        .sign_entry(Request::new(pb::SignEntryRequest {
            issuer_record: bytes.clone(),
            zone_type: 1,
            entry: b.to_bytes(),
            key_id: hash(&identity.id()),
        }))
        .await
        .unwrap()
        .into_inner();
    b.add_signature(poz::keys::Signature::from_bytes(&r.signature).unwrap());
    let vr = poz::verify::verify_and_accept(rec.clone()).unwrap();
    poz::verify::verify_binding(&vr, &b, rec.master.timestamp + 20).unwrap();
    // The HTTPS host names the HSM service key as its CA key (ca_key in
    // the plan), and the signer signs its certificate with it.
    let named = poz::ca::ca_keys_for_host(&vr, "www.provider.example");
    assert_eq!(named.len(), 1);
    assert_eq!(named[0].key, service_key);
    let host_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = svc
        .sign_certificate(Request::new(pb::SignCertificateRequest {
            issuer_record: bytes.clone(),
            host: "www.provider.example".into(),
            subject_public_key_info: host_key.public_key_der(),
            days: 30,
            key_id: hash(&service_key.id()),
        }))
        .await
        .unwrap()
        .into_inner();
    poz_client::ca::check_cert(
        &cert.certificate,
        "www.provider.example",
        &[*service_key.verify_key().unwrap()],
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    )
    .unwrap();
    // A second key store on the same token while this one is open (the
    // module's context is shared by the process).
    let second = Pkcs11KeyStore::open(&cfg).unwrap();
    assert_eq!(second.keys().len(), 5);
    drop(svc);

    // Never overwritten; a bad plan is refused before any key is made.
    let again = run(&plan);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwrites"));
    assert_eq!(std::fs::read(out_dir.join("record.poz")).unwrap(), bytes);
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "domain = \"p.example\"\nmaster_keys = [\"m9\"]\nmaster_threshold = 2\nidentity_keys = [\"i9\"]\nservice_keys = [\"s9\"]\n",
    )
    .unwrap();
    let refused = run(&bad);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("master_threshold 2 is not 1..=1"),
        "{refused:?}"
    );
    let hsm = Pkcs11KeyStore::open(&cfg).unwrap();
    assert_eq!(hsm.keys().len(), 5, "no key made for a refused plan");
}

/// Issue 12 §8: two key stores in one process (two tokens of one module,
/// and the same token twice) sign at once from several threads: the
/// module's context is shared, nothing initialises it twice, nothing
/// crashes.
#[test]
fn key_stores_of_one_process_share_the_module() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg_a, cfg_b) = (fresh_token(dir.path()), fresh_token(dir.path()));
    let a = Arc::new(token_with_keys(&cfg_a, &["a-1"]));
    let b = Arc::new(token_with_keys(&cfg_b, &["b-1"]));
    // The same token opened again while the first store is open: one
    // login for both.
    let a_again = Arc::new(
        Pkcs11KeyStore::open(&TokenConfig {
            sessions: 1,
            ..cfg_a.clone()
        })
        .unwrap(),
    );
    assert_eq!(a_again.keys()[0].public, a.keys()[0].public);
    let threads: Vec<_> = [a.clone(), b.clone(), a_again.clone()]
        .into_iter()
        .flat_map(|s| [s.clone(), s])
        .enumerate()
        .map(|(n, s)| {
            std::thread::spawn(move || {
                let key = s.keys()[0].public.clone();
                for i in 0..20u8 {
                    let d = poz::hash::tagged_hash("test", &[&[n as u8, i]]);
                    let sig = s.sign(&key.id(), &d).unwrap();
                    let check = poz::keys::Signature {
                        key_idx: 0,
                        sig_type: poz::keys::SigType::ED25519,
                        data: sig.to_vec(),
                    };
                    assert!(key.verify(&d, &check));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_ne!(a.keys()[0].public, b.keys()[0].public);
    // A wrong token label is a typed refusal, not a crash.
    let e = Pkcs11KeyStore::open(&TokenConfig {
        token_label: "no-such-token".into(),
        ..cfg_a.clone()
    })
    .err()
    .unwrap();
    assert!(matches!(e, poz_signer::KeyStoreError::NoToken(_)), "{e}");
}

/// Issue 12 §8: a crash of the test process left two `poz-signer`
/// children running. A service spawned with `poz_kit::tie_to_parent`
/// exits when the process that spawned it dies, even by SIGKILL (no
/// `Drop` runs): a helper process (this test binary, re-run in a helper
/// role) spawns the signer, prints its PID and waits; the helper is
/// SIGKILLed; the signer must go.
#[test]
fn a_spawned_service_dies_with_the_process_that_spawned_it() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    const HELPER: &str = "POZ_TEST_SERVICE_HELPER_CONFIG";
    let bin = env!("CARGO_BIN_EXE_poz-signer");
    if let Some(conf) = std::env::var_os(HELPER) {
        // The helper role: spawn, report, wait to be killed (never reaps:
        // it is SIGKILLed first).
        let mut cmd = Command::new(bin);
        cmd.env("POZ_SIGNER_CONFIG", conf).arg("--insecure");
        let signer = poz_testkit::ServiceProcess::spawn(cmd);
        println!("service pid {}", signer.id());
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = fresh_token(dir.path());
    drop(token_with_keys(&cfg, &["k"]));
    let pin = dir.path().join("pin");
    std::fs::write(&pin, "1234\n").unwrap();
    let conf = dir.path().join("signer.toml");
    std::fs::write(
        &conf,
        format!(
            "listen = \"127.0.0.1:0\"\npkcs11_module = \"{}\"\ntoken_label = \"{}\"\npin_file = \"{}\"\naudit_database_url = \"sqlite://{}?mode=rwc\"\n",
            cfg.module.display(),
            cfg.token_label,
            pin.display(),
            dir.path().join("audit.db").display()
        ),
    )
    .unwrap();
    // The store migrates the audit database; the signer only inserts.
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(audit_store(dir.path()));
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_spawned_service_dies_with_the_process_that_spawned_it",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER, &conf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut pid = None;
    for line in BufReader::new(helper.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        // libtest may print "test NAME ... " on the same line first.
        if let Some(p) = line.split("service pid ").nth(1) {
            pid = Some(p.trim().to_string());
            break;
        }
    }
    let pid = pid.expect("the helper reports the service's PID");
    let alive = |pid: &str| {
        // Gone, or a zombie waiting for a reaper: no longer running.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
                .unwrap_or(false),
            Err(_) => false,
        }
    };
    assert!(alive(&pid), "the service runs while its parent lives");
    helper.kill().unwrap(); // SIGKILL: no Drop, no cleanup in the helper
    helper.wait().unwrap();
    // Generous: the service exits as soon as it reads end of file.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while alive(&pid) && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !alive(&pid),
        "poz-signer {pid} outlived the process that spawned it"
    );
}

/// A provider whose Service Zone names the HSM key by `ca_key_idx` for
/// host `tls.social.example`, and the software key 13 for
/// `other.social.example` (POZ-as-CA, SPEC §21). The Service Zone is
/// delegated to key 13, which signs its entries.
fn provider_with_hsm_ca_key(hsm: &poz::PublicKey) -> Record {
    use poz::entries::{Encryption, PoolHost, ServiceEntry, ServiceType, Transport};
    let k = sample::provider_keys();
    let mut rec = provider_with_hsm_identity_key(hsm);
    let mut draft = workflow::draft(&rec, T0 + 3).unwrap();
    workflow::set_delegation_key(&mut draft, ZoneType::SERVICE, k.zones.public(), 0, 100, 100)
        .unwrap();
    workflow::sign_draft(&mut draft, &k.master).unwrap();
    workflow::apply(&mut draft).unwrap();
    rec = draft;
    workflow::set_authority(
        &mut rec,
        ZoneType::SERVICE,
        "",
        Hash32::ZERO,
        T0 + 4,
        &[&k.zones],
    )
    .unwrap();
    let host = |name: &str, ca: u8| PoolHost {
        hostname: name.into(),
        port: 443,
        transport: Transport::TCP,
        encryption: Encryption::TLS,
        server_key: None,
        ca_key_idx: ca,
        priority: 10,
        weight: 100,
    };
    let hsm_idx = rec.keys.index_of(&hsm.id()).unwrap();
    let zones_idx = rec.keys.index_of(&k.zones.public().id()).unwrap();
    let body = ServiceEntry {
        service_type: ServiceType::REVOCATION,
        name: "live".into(),
        pool: vec![
            host("tls.social.example", hsm_idx),
            host("other.social.example", zones_idx),
        ],
    };
    let mut e = SignedEntry::new(EntryKind::GRANT, body.to_bytes());
    let (idx, digest) =
        workflow::entry_signing_target(&rec, ZoneType::SERVICE, &e, &k.zones.public().id())
            .unwrap();
    e.add_signature(k.zones.sign(idx, &digest));
    workflow::insert_entry(&mut rec, ZoneType::SERVICE, e).unwrap();
    rec
}

/// SignCertificate against `svc` holding `key`: the certificate passes the
/// POZ-as-CA check for its host and carries the host's key; two audit
/// rows (issuer certificate, host certificate); every refusal signs and
/// audits nothing.
async fn certificates_are_signed_within_policy(
    svc: &SignerService,
    audit: &Store,
    key: &poz::PublicKey,
    rec: &Record,
) {
    let host_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ask = |host: &str, spki: Vec<u8>, days: u32, key_id: Hash32| pb::SignCertificateRequest {
        issuer_record: rec.to_bytes(),
        host: host.into(),
        subject_public_key_info: spki,
        days,
        key_id: hash(&key_id),
    };
    let r = svc
        .sign_certificate(Request::new(ask(
            "TLS.social.example.",
            host_key.public_key_der(),
            30,
            key.id(),
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(u32::from(rec.keys.index_of(&key.id()).unwrap()), r.key_idx);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let vk = *key.verify_key().unwrap();
    poz_client::ca::check_cert(&r.certificate, "tls.social.example", &[vk], now).unwrap();
    assert_eq!(
        poz_client::ca::check_cert(&r.certificate, "other.social.example", &[vk], now),
        Err(poz_client::ca::CaError::WrongHost(
            "other.social.example".into()
        ))
    );
    // 30 days from now: expired in 31.
    assert_eq!(
        poz_client::ca::check_cert(
            &r.certificate,
            "tls.social.example",
            &[vk],
            now + 31 * 86_400
        ),
        Err(poz_client::ca::CaError::Expired)
    );
    {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, c) = X509Certificate::from_der(&r.certificate).unwrap();
        assert_eq!(c.public_key().raw, host_key.public_key_der());
    }
    let rows = audit.signature_audit(&rec.id()).await.unwrap();
    // One row each (the log orders rows of one commit by their IDs, not
    // by signing order).
    let row = |what: &str| {
        let mut found = rows.iter().filter(|(_, row)| row.what == what);
        let one = found
            .next()
            .unwrap_or_else(|| panic!("no {what} row: {rows:?}"));
        assert!(found.next().is_none(), "two {what} rows: {rows:?}");
        one
    };
    let certs = [row("ca-certificate"), row("certificate")];
    assert_eq!(certs[1].0, r.audit_id);
    for (_, row) in &certs {
        assert_eq!(row.key_id, key.id());
        assert_eq!(row.zone_type, ZoneType::SERVICE.0);
    }
    // The host certificate's row: SHA3-256 of its TBSCertificate, and
    // the certificate's own signature.
    {
        use sha3::Digest;
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, c) = X509Certificate::from_der(&r.certificate).unwrap();
        let tbs: [u8; 32] = sha3::Sha3_256::digest(c.tbs_certificate.as_ref()).into();
        assert_eq!(certs[1].1.digest, Hash32(tbs));
        let sig = poz::keys::Signature::from_bytes(&certs[1].1.signature).unwrap();
        assert_eq!(sig.data, c.signature_value.data.to_vec());
    }

    // Refusals: nothing signed, nothing audited.
    let zones = sample::provider_keys().zones.public().id();
    let refusals = [
        (
            ask(
                "nowhere.social.example",
                host_key.public_key_der(),
                30,
                key.id(),
            ),
            Code::PermissionDenied,
            "names no CA key",
        ),
        (
            ask(
                "other.social.example",
                host_key.public_key_der(),
                30,
                key.id(),
            ),
            Code::PermissionDenied,
            "not key",
        ),
        (
            ask("127.0.0.1", host_key.public_key_der(), 30, key.id()),
            Code::InvalidArgument,
            "not a DNS host name",
        ),
        (
            ask(
                "tls.social.example..",
                host_key.public_key_der(),
                30,
                key.id(),
            ),
            Code::InvalidArgument,
            "not a DNS host name",
        ),
        (
            ask("tls.social.example", host_key.public_key_der(), 0, key.id()),
            Code::InvalidArgument,
            "days 0",
        ),
        (
            ask(
                "tls.social.example",
                host_key.public_key_der(),
                826,
                key.id(),
            ),
            Code::InvalidArgument,
            "days 826",
        ),
        (
            ask(
                "tls.social.example",
                vec![0x30, 0x03, 1, 2, 3],
                30,
                key.id(),
            ),
            Code::InvalidArgument,
            "public key is refused",
        ),
        (
            ask("tls.social.example", host_key.public_key_der(), 30, zones),
            Code::NotFound,
            "not held",
        ),
    ];
    for (req, code, says) in refusals {
        let host = req.host.clone();
        let e = svc.sign_certificate(Request::new(req)).await.unwrap_err();
        assert_eq!(e.code(), code, "{host}: {e:?}");
        assert!(e.message().contains(says), "{host}: {}", e.message());
    }
    let mut trailing = host_key.public_key_der();
    trailing.push(0);
    let e = svc
        .sign_certificate(Request::new(ask(
            "tls.social.example",
            trailing,
            30,
            key.id(),
        )))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let mut tampered = rec.to_bytes();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let e = svc
        .sign_certificate(Request::new(pb::SignCertificateRequest {
            issuer_record: tampered,
            ..ask(
                "tls.social.example",
                host_key.public_key_der(),
                30,
                key.id(),
            )
        }))
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::InvalidArgument | Code::FailedPrecondition),
        "{e:?}"
    );
    assert_eq!(
        audit.signature_audit(&rec.id()).await.unwrap().len(),
        rows.len()
    );
}

/// POZ-as-CA through the signer with the key inside SoftHSM2 (CKM_EDDSA
/// over the TBSCertificate).
#[tokio::test]
async fn a_certificate_is_signed_by_the_hsm_key_the_service_zone_names() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fresh_token(dir.path());
    let hsm = Arc::new(token_with_keys(&cfg, &["ca-hsm"]));
    let key = hsm.keys()[0].public.clone();
    let audit = audit_store(dir.path()).await;
    let svc = SignerService::new(hsm.clone(), audit_log(dir.path()).await);
    let rec = provider_with_hsm_ca_key(&key);
    certificates_are_signed_within_policy(&svc, &audit, &key, &rec).await;
}

/// The same with a software key (the embedded default's key store).
#[tokio::test]
async fn a_certificate_is_signed_by_a_software_key_the_service_zone_names() {
    let dir = tempfile::tempdir().unwrap();
    let soft = poz::SigningKey::from_seed(&[0x5c; 32]);
    let key = soft.public();
    let keys = Arc::new(poz_signer::SoftwareKeyStore::new(vec![("ca".into(), soft)]));
    let audit = audit_store(dir.path()).await;
    let svc = SignerService::new(keys, audit_log(dir.path()).await);
    let rec = provider_with_hsm_ca_key(&key);
    certificates_are_signed_within_policy(&svc, &audit, &key, &rec).await;
}

/// The HSM lost under the store (issue 16): the token's key objects
/// taken away (their files out of the token's directory) make every
/// signing call fail in the module, and the store answers
/// `TokenUnreachable` (UNAVAILABLE), never a wrong signature and never a
/// hang; once they are back the same store signs again without a
/// restart: it reopens its sessions, logs in and finds its key again
/// (SoftHSM2 gives the returning object a new handle, so a store that
/// kept its old handles would fail for good; `poz_testkit::softhsm` says
/// why the objects, not the token, are taken away).
#[test]
fn a_lost_token_fails_calls_until_it_is_back_and_the_store_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fresh_token(dir.path());
    let store = token_with_keys(&cfg, &["lost"]);
    let key = store.keys()[0].public.id();
    let digest = Hash32([9; 32]);
    let good = store.sign(&key, &digest).unwrap();
    let before = store.private_handle(&key).unwrap();

    // Away means outside the token directory.
    let tokens = softhsm_conf().parent().unwrap().join("tokens");
    let home = poz_testkit::softhsm::token_dir(&tokens, &cfg.token_label);
    let away = tokens.with_file_name(format!("away-{}", cfg.token_label));
    let keys = poz_testkit::softhsm::KeysAway::take(&home, &away);
    assert_eq!(keys.count(), 2, "the key pair's two objects");
    let mut lost = Vec::new();
    for _ in 0..3 {
        match store.sign(&key, &digest) {
            Err(e) => lost.push(e.to_string()),
            Ok(sig) => panic!("signed with the key away: {}", hex(&sig)),
        }
        std::thread::sleep(poz_signer::pkcs11::REOPEN_BACKOFF);
    }
    assert!(
        lost.iter().all(|e| e.starts_with("HSM unreachable")),
        "{lost:?}"
    );

    keys.bring_back();
    std::thread::sleep(poz_signer::pkcs11::REOPEN_BACKOFF);
    let back = store
        .sign(&key, &digest)
        .expect("the store signs again once the key is back");
    // Ed25519 is deterministic: the same key over the same digest.
    assert_eq!(back, good);
    assert_eq!(store.sign_many(&key, &[digest; 3]).unwrap(), vec![good; 3]);
    assert_ne!(store.private_handle(&key).unwrap(), before, "a new handle");
}
