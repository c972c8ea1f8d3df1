//! Keys kept in the record's own Private Key Map: create with
//! --embed-keys, sign drafts with --embedded, publish with export.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::Codec;
use std::path::Path;
use std::process::Command;

fn pozctl(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pozctl"))
        .args(args)
        .current_dir(dir)
        .env("POZ_PASSPHRASE", "pw")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn embedded_keys_sign_and_export_strips_them() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    for k in ["a", "b"] {
        assert_eq!(
            pozctl(p, &["key", "generate", "--out", &format!("{k}.key")]).0,
            0
        );
    }
    let (code, out) = pozctl(
        p,
        &[
            "create",
            "--out",
            "r.poz",
            "--key",
            "a.key:0:50",
            "--key",
            "b.key:0:50",
            "--embed-keys",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let rec = poz::Record::from_bytes(&std::fs::read(p.join("r.poz")).unwrap()).unwrap();
    assert!(rec.private_keys.is_some());

    assert_eq!(pozctl(p, &["draft", "r.poz", "--out", "d.poz"]).0, 0);
    let (code, out) = pozctl(p, &["sign", "d.poz", "--embedded"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signed serial 2 as key 0, 1"), "{out}");
    let (code, out) = pozctl(p, &["apply", "d.poz", "--out", "r.poz"]);
    assert_eq!(code, 0, "{out}");

    // A draft cannot be exported; the applied record can, without the map.
    assert_eq!(pozctl(p, &["export", "d.poz", "--out", "x.poz"]).0, 1);
    assert_eq!(pozctl(p, &["export", "r.poz", "--out", "pub.poz"]).0, 0);
    let published = poz::Record::from_bytes(&std::fs::read(p.join("pub.poz")).unwrap()).unwrap();
    assert!(published.private_keys.is_none());
    let (code, out) = pozctl(p, &["verify", "pub.poz"]);
    assert_eq!(code, 0, "{out}");

    // Wrong passphrase: a clear error, exit 2, nothing written.
    let out = Command::new(env!("CARGO_BIN_EXE_pozctl"))
        .args(["sign", "d.poz", "--embedded"])
        .current_dir(p)
        .env("POZ_PASSPHRASE", "wrong")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong passphrase"));
}

#[test]
fn garbage_files_get_clear_errors_not_panics() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("junk.poz"), b"POZ\0\0\0\0\x09x").unwrap();
    let (code, out) = pozctl(p, &["verify", "junk.poz"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL decode"), "{out}");
    let (code, out) = pozctl(p, &["inspect", "junk.poz"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("is not a valid POZ record"), "{out}");
    let (code, out) = pozctl(p, &["sign", "junk.poz", "--key", "missing.key"]);
    assert_eq!(code, 2, "{out}");
    assert!(!out.contains("panicked"), "{out}");
}
