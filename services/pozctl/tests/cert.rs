//! `pozctl cert issue` (SPEC §21): a certificate for a host that the
//! sample provider's Service Zone names with `ca_key_idx` 0 (sample key
//! 10), signed by that key, is issued and passes the POZ-as-CA check;
//! another record key, a host without a CA key, and a bad `--days` are
//! refused.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::private::{KdfParams, KeyFile};
use poz::Codec;
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

fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    // A small base64 decoder keeps the test free of another dependency.
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in b64.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
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
