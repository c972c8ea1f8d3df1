//! Login with the Auth Zone over real sockets (SPEC §20, issue 18): a
//! holder gives their record a trust group (`pozctl trust-group add`) and
//! publishes it to pozd (SUBMIT_SIGNED kind 3 on the submit port); the
//! relying party fetches it by its record name over the plaintext query
//! port (MASTER, verified from genesis, `--save`), makes a challenge, and
//! accepts the holder's proof against the record it fetched; a proof by
//! one member alone is refused, and so is one against a challenge for
//! another relying party. The record's fingerprint (SPEC §19) computed
//! from the fetched copy matches the holder's own.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod pozd;

use poz::private::{KdfParams, KeyFile};
use poz::Codec;
use std::path::Path;
use std::process::{Command, Output};

fn pozctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pozctl"))
        .current_dir(dir)
        .env("POZ_PASSPHRASE", "pw")
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A key file with cheap KDF settings.
fn key_file(dir: &Path, name: &str, seed: u8) {
    let params = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };
    let kf = KeyFile::create(&poz::sample::key(seed), b"pw", params).unwrap();
    std::fs::write(dir.join(name), kf.to_bytes()).unwrap();
}

#[test]
fn a_login_against_the_record_fetched_over_the_query_port() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (_p, vars) = pozd::start(&d.join("pozd-data"), &[]);

    // The holder: a record whose Auth Zone has trust group 7 of two
    // devices worth 50 each.
    key_file(d, "me.key", 31);
    key_file(d, "phone.key", 32);
    ok(&pozctl(
        d,
        &["create", "--out", "me.poz", "--key", "me.key:0:100"],
    ));
    ok(&pozctl(
        d,
        &[
            "draft",
            "me.poz",
            "--out",
            "me2.draft",
            "--delegate",
            "auth:me.key:0:100:100",
            "--delegate",
            "auth:phone.key:1:100:100",
        ],
    ));
    ok(&pozctl(d, &["sign", "me2.draft", "--key", "me.key"]));
    ok(&pozctl(d, &["apply", "me2.draft", "--out", "me.poz"]));
    ok(&pozctl(
        d,
        &[
            "trust-group",
            "add",
            "me.poz",
            "--group",
            "7",
            "--name",
            "devices",
            "--member",
            "0:50",
            "--member",
            "1:50",
            "--key",
            "me.key",
        ],
    ));
    ok(&pozctl(
        d,
        &[
            "publish",
            "me.poz",
            "--server",
            pozd::var(&vars, "POZ_SUBMIT"),
            "--noise-key",
            pozd::var(&vars, "POZ_SUBMIT_KEY"),
        ],
    ));
    let id = ok(&pozctl(d, &["inspect", "me.poz", "--id"]))
        .trim()
        .to_owned();

    // The relying party: the record by its record name, verified.
    let out = ok(&pozctl(
        d,
        &[
            "query",
            &id,
            "--server",
            pozd::var(&vars, "POZ_QUERY"),
            "--save",
            "fetched.poz",
        ],
    ));
    assert!(out.contains("VERIFIED record for "), "{out}");
    // Out of band (SPEC §19): the code the relying party computes from the
    // record it fetched over the socket is the one the holder reads aloud
    // from their own file, and a pair's code is the same on both sides.
    let holder_code = ok(&pozctl(d, &["fingerprint", "me.poz"]));
    assert_eq!(ok(&pozctl(d, &["fingerprint", "fetched.poz"])), holder_code);
    assert_eq!(
        holder_code.trim(),
        poz::fingerprint::Fingerprint::of(&poz::Hash32::from_hex(&id).unwrap()).to_string()
    );
    let provider = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../poz/vectors/valid-provider-all-zones.poz");
    let provider = provider.to_str().unwrap();
    assert_eq!(
        ok(&pozctl(d, &["fingerprint", "fetched.poz", provider])),
        ok(&pozctl(d, &["fingerprint", provider, "me.poz"]))
    );
    ok(&pozctl(
        d,
        &[
            "auth",
            "challenge",
            "--relying-party",
            "https://shop.example",
            "--out",
            "c.bin",
        ],
    ));
    ok(&pozctl(
        d,
        &[
            "auth",
            "prove",
            "c.bin",
            "--record",
            "me.poz",
            "--group",
            "7",
            "--key",
            "me.key",
            "--key",
            "phone.key",
            "--out",
            "p.bin",
        ],
    ));
    let out = ok(&pozctl(
        d,
        &["auth", "verify", "fetched.poz", "c.bin", "p.bin"],
    ));
    assert!(out.to_ascii_lowercase().contains("accepted"), "{out}");

    // One member alone is not enough: prove refuses to make it (1).
    let o = pozctl(
        d,
        &[
            "auth",
            "prove",
            "c.bin",
            "--record",
            "fetched.poz",
            "--group",
            "7",
            "--key",
            "phone.key",
            "--out",
            "one.bin",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    // A proof for another relying party's challenge is refused.
    ok(&pozctl(
        d,
        &[
            "auth",
            "challenge",
            "--relying-party",
            "https://other.example",
            "--out",
            "c2.bin",
        ],
    ));
    let o = pozctl(d, &["auth", "verify", "fetched.poz", "c2.bin", "p.bin"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
}
