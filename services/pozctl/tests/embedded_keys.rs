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
    // Issue 12 §6: inspect exited 2 on an undecodable record while
    // verify exited 1. Every command refuses it (1); 2 stays for usage
    // and I/O errors.
    let (code, out) = pozctl(p, &["inspect", "junk.poz"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("refused: junk.poz is not a valid POZ record"),
        "{out}"
    );
    let (code, out) = pozctl(p, &["sign", "junk.poz", "--key", "missing.key"]);
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("panicked"), "{out}");
    std::fs::write(p.join("junk.bin"), b"\x01\x02").unwrap();
    for args in [
        &["identity", "verify", "junk.bin", "--provider", "junk.poz"][..],
        &["export", "junk.poz", "--out", "x.poz"],
        &["draft", "junk.poz", "--out", "x.poz"],
    ] {
        let (code, out) = pozctl(p, args);
        assert_eq!(code, 1, "{args:?}: {out}");
    }
    // Usage and I/O: 2.
    let (code, out) = pozctl(p, &["inspect", "missing.poz"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("reading missing.poz"), "{out}");
    let (code, out) = pozctl(p, &["verify", "missing.poz"]);
    assert_eq!(code, 2, "{out}");
}

/// Issue 12 §9: `pozctl key generate` wrote key files -rw-r--r-- under a
/// 022 umask. Key files, and records carrying a Private Key Map, are 0600
/// from the start.
#[test]
fn secrets_are_written_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let mode = |f: &str| std::fs::metadata(p.join(f)).unwrap().permissions().mode() & 0o777;
    assert_eq!(pozctl(p, &["key", "generate", "--out", "k.key"]).0, 0);
    assert_eq!(mode("k.key"), 0o600);
    let (code, out) = pozctl(
        p,
        &[
            "create",
            "--out",
            "r.poz",
            "--key",
            "k.key:0:100",
            "--embed-keys",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(mode("r.poz"), 0o600);
}
