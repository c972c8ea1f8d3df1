//! `pozctl cert issue` (SPEC §21): a certificate for a host that the
//! sample provider's Service Zone names with `ca_key_idx` 0 (sample key
//! 10), signed by that key, is issued and passes the POZ-as-CA check;
//! another record key, a host without a CA key, and a bad `--days` are
//! refused.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::private::{KdfParams, KeyFile};
use poz::Codec;

mod fleet;
use std::path::Path;
use std::process::{Command, Output};

fn pozctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pozctl"))
        .env("POZ_PASSPHRASE", "pw")
        .args(args)
        .output()
        .unwrap()
}

fn key_file(dir: &Path, seed: u8) -> String {
    let params = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };
    let kf = KeyFile::create(&poz::sample::key(seed), b"pw", params).unwrap();
    let p = dir.join(format!("k{seed}.key"));
    std::fs::write(&p, kf.to_bytes()).unwrap();
    p.to_str().unwrap().to_owned()
}

fn pem_der(text: &str) -> Vec<u8> {
    pem::parse(text).unwrap().into_contents()
}

#[test]
fn issue_for_the_named_key_and_refuse_the_rest() {
    let d = tempfile::tempdir().unwrap();
    let rec = d.path().join("provider.poz");
    std::fs::write(&rec, poz::sample::provider().unwrap().to_bytes()).unwrap();
    let rec = rec.to_str().unwrap();
    let (k10, k13) = (key_file(d.path(), 10), key_file(d.path(), 13));
    let path = |n: &str| d.path().join(n).to_str().unwrap().to_owned();
    let (crt, key) = (path("host.crt"), path("host.key"));
    let issue = |k: &str, host: &str, days: &str, crt: &str, key: &str| {
        pozctl(&[
            "cert",
            "issue",
            "--record",
            rec,
            "--key",
            k,
            "--host",
            host,
            "--days",
            days,
            "--out-cert",
            crt,
            "--out-key",
            key,
            "--json",
        ])
    };

    let o = issue(&k10, "Revoke.Social.Example.", "30", &crt, &key);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(out["host"], "revoke.social.example");
    assert_eq!(out["ca_key_idx"], 0);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let pem = std::fs::read_to_string(&crt).unwrap();
    let vr = poz::verify::verify_and_accept(poz::sample::provider().unwrap()).unwrap();
    let v = poz_client::ca::PozCaVerifier::new(&vr);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let der = pem_der(&pem);
    let keys = v.keys_for("revoke.social.example");
    assert_eq!(
        poz_client::ca::check_cert(&der, "revoke.social.example", keys, now),
        Ok(())
    );
    assert_eq!(
        poz_client::ca::check_cert(&der, "revoke.social.example", keys, now + 31 * 86_400),
        Err(poz_client::ca::CaError::Expired)
    );

    // The key file exists now: not overwritten.
    let o = issue(&k10, "revoke.social.example", "30", &crt, &key);
    assert_eq!(o.status.code(), Some(2));

    // Key 13 is a record key, but not the one the host names.
    let o = issue(
        &k13,
        "revoke.social.example",
        "30",
        &path("b.crt"),
        &path("b.key"),
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("names key(s) 0"));
    assert!(!Path::new(&path("b.key")).exists());

    // q1.social.example has no CA key.
    let o = issue(
        &k10,
        "q1.social.example",
        "30",
        &path("c.crt"),
        &path("c.key"),
    );
    assert_eq!(o.status.code(), Some(1));

    // --days out of range is usage.
    let o = issue(
        &k10,
        "revoke.social.example",
        "0",
        &path("d.crt"),
        &path("d.key"),
    );
    assert_eq!(o.status.code(), Some(2));
}

/// `pozctl cert issue --api`: the provider's certificate signed by its
/// signer through the Provider API (IssueCertificate → SignCertificate),
/// audited; the host key is made by pozctl and never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_certificate_is_issued_through_its_signer() {
    let d = tempfile::tempdir().unwrap();
    let provider = poz::sample::provider().unwrap();
    let k = poz::sample::provider_keys();
    // Key 10 (the master key) is the CA key the Service Zone names for
    // revoke.social.example and mx.social.example (ca_key_idx 0).
    let (store, id, f) = fleet::fleet_of(
        d.path(),
        &provider,
        vec![("master".into(), k.master), ("device-a".into(), k.device_a)],
    )
    .await;
    let path = |n: &str| d.path().join(n).to_str().unwrap().to_owned();
    let api = f.provider_api.clone();
    let issue = move |host: &str, days: &str, crt: String, key: String| {
        let args: Vec<String> = [
            "cert",
            "issue",
            "--api",
            &api,
            "--host",
            host,
            "--days",
            days,
            "--out-cert",
            &crt,
            "--out-key",
            &key,
            "--json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            pozctl(&a)
        })
    };
    let o = issue("Revoke.Social.Example.", "30", path("h.crt"), path("h.key"))
        .await
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(out["host"], "revoke.social.example");
    assert_eq!(out["ca_key_idx"], 0);
    let der = pem_der(&std::fs::read_to_string(path("h.crt")).unwrap());
    let vr = poz::verify::verify_and_accept(provider.clone()).unwrap();
    let v = poz_client::ca::PozCaVerifier::new(&vr);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let keys = v.keys_for("revoke.social.example");
    assert_eq!(
        poz_client::ca::check_cert(&der, "revoke.social.example", keys, now),
        Ok(())
    );
    // The key pozctl wrote (0600) is the certificate's.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path("h.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let host_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(path("h.key")).unwrap()).unwrap();
    {
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, c) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(c.public_key().raw, host_key.public_key_der());
    }
    // The signer audited both signatures under the provider's record.
    let rows = store.signature_audit(&id).await.unwrap();
    let mut whats: Vec<(&str, u64)> = rows.iter().map(|(i, r)| (r.what.as_str(), *i)).collect();
    whats.sort();
    assert_eq!(whats[0].0, "ca-certificate");
    assert_eq!(whats[1].0, "certificate");
    assert_eq!(whats.len(), 2);
    assert_eq!(out["audit_id"], whats[1].1);

    // feed.social.example names no CA key: refused (exit 1), nothing
    // written, nothing signed.
    let o = issue("feed.social.example", "30", path("f.crt"), path("f.key"))
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("names no CA key"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!Path::new(&path("f.key")).exists());
    // An IP address, or a name with a second trailing dot, is never a
    // certificate's host: a usage error, nothing sent or signed.
    for bad in ["127.0.0.1", "revoke.social.example.."] {
        let o = issue(bad, "30", path("i.crt"), path("i.key"))
            .await
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{bad}: {o:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("not a DNS host name"),
            "{bad}: {o:?}"
        );
    }
    assert_eq!(store.signature_audit(&id).await.unwrap().len(), 2);
    // --api and --record/--key are one or the other.
    let o = pozctl(&[
        "cert",
        "issue",
        "--api",
        &f.provider_api,
        "--record",
        &path("r.poz"),
        "--host",
        "revoke.social.example",
        "--out-cert",
        &path("x.crt"),
        "--out-key",
        &path("x.key"),
    ]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}
