//! `pozctl auth challenge|prove|verify` (SPEC §20): a challenge made by
//! the relying party, signed by two keys of trust group 2 of the login
//! vectors' record, is accepted (0); one key alone is refused when
//! proving, and the committed refusal vectors are refused by `verify`
//! (1); an unreadable file is a usage error (2).
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::private::{KdfParams, KeyFile};
use poz::Codec;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vector(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../poz/vectors")
        .join(name)
}

fn pozctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pozctl"))
        .env("POZ_PASSPHRASE", "pw")
        .args(args)
        .output()
        .unwrap()
}

fn key_file(dir: &Path, seed: u8) -> String {
    let k = poz::sample::key(seed);
    let params = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };
    let kf = KeyFile::create(&k, b"pw", params).unwrap();
    let p = dir.join(format!("k{seed}.key"));
    std::fs::write(&p, kf.to_bytes()).unwrap();
    p.to_str().unwrap().to_owned()
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

#[test]
fn prove_then_verify_is_accepted() {
    let d = tempfile::tempdir().unwrap();
    let rec = vector("auth-holder.poz");
    let rec = rec.to_str().unwrap();
    let ch = d.path().join("c.bin");
    let pr = d.path().join("p.bin");
    let (ch, pr) = (ch.to_str().unwrap(), pr.to_str().unwrap());
    let o = pozctl(&[
        "auth",
        "challenge",
        "--relying-party",
        "https://shop.example",
        "--out",
        ch,
    ]);
    assert_eq!(code(&o), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let (k70, k71) = (key_file(d.path(), 70), key_file(d.path(), 71));
    let o = pozctl(&[
        "auth", "prove", ch, "--record", rec, "--group", "2", "--key", &k70, "--key", &k71,
        "--out", pr,
    ]);
    assert_eq!(code(&o), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("https://shop.example"));
    let o = pozctl(&["auth", "verify", rec, ch, pr, "--json"]);
    assert_eq!(code(&o), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["accepted"], true);
    assert_eq!(v["sum"], 100);
    assert_eq!(v["group_name"], "devices");
    assert_eq!(v["revocation_services"].as_array().unwrap().len(), 1);
    // The relying party is told to consult the revocation service.
    assert!(String::from_utf8_lossy(&o.stderr).contains("revocation services"));

    // One key (50) is refused at proving time, and nothing is written.
    let lone = d.path().join("lone.bin");
    let o = pozctl(&[
        "auth",
        "prove",
        ch,
        "--record",
        rec,
        "--group",
        "2",
        "--key",
        &k70,
        "--out",
        lone.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("50 of 100"));
    assert!(!lone.exists());
}

#[test]
fn committed_refusals_exit_1_and_unreadable_files_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vector("auth.json")).unwrap()).unwrap();
    let rec = vector("auth-holder.poz");
    let rec = rec.to_str().unwrap();
    for c in v["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let ch = d.path().join(format!("{name}.c"));
        let pr = d.path().join(format!("{name}.p"));
        std::fs::write(&ch, hex::decode(c["challenge"].as_str().unwrap()).unwrap()).unwrap();
        std::fs::write(&pr, hex::decode(c["proof"].as_str().unwrap()).unwrap()).unwrap();
        let now = c["now_ms"].as_u64().unwrap().to_string();
        let o = pozctl(&[
            "auth",
            "verify",
            rec,
            ch.to_str().unwrap(),
            pr.to_str().unwrap(),
            "--now-ms",
            &now,
        ]);
        let accepted = c["result"]["accepted"].as_bool().unwrap();
        assert_eq!(
            code(&o),
            Some(if accepted { 0 } else { 1 }),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        if !accepted {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.starts_with("refused:"), "{name}: {err}");
        }
    }
    let missing = d.path().join("missing");
    let o = pozctl(&[
        "auth",
        "verify",
        rec,
        missing.to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), Some(2));
}
