//! Every zone from the command line (issue 18): a record delegates the
//! Service, Email, Auth and Feed zones; `service add` publishes a MAIL, a
//! FEED and a REVOCATION service; `inbox add`, `feed add`, `trust-group
//! add` and `revocation-service add` name them. A reference to a service
//! of the wrong type, or to none, is refused before anything is signed
//! (exit 1, the file unchanged). The record verifies, `inspect` shows each
//! entry with the service it names, and a login with the new trust group
//! is accepted.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

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

/// A key file with cheap KDF settings (a test need not pay Argon2's
/// defaults for every key it opens).
fn key_file(dir: &Path, name: &str, seed: u8) {
    let params = KdfParams {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };
    let kf = KeyFile::create(&poz::sample::key(seed), b"pw", params).unwrap();
    std::fs::write(dir.join(name), kf.to_bytes()).unwrap();
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

/// The service hash `service add` printed.
fn service_hash(out: &str) -> String {
    out.split("service hash ").nth(1).unwrap().trim().to_owned()
}

#[test]
fn every_zone_entry_from_the_command_line() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    key_file(d, "me.key", 21);
    key_file(d, "laptop.key", 22);
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
            "service:me.key:0:100:100",
            "--delegate",
            "email:me.key:0:100:100",
            "--delegate",
            "auth:me.key:0:100:100",
            "--delegate",
            "feed:me.key:0:100:100",
            // The laptop's key joins the key map (index 1) as a second
            // Auth Zone signer, in a group of its own.
            "--delegate",
            "auth:laptop.key:1:100:100",
        ],
    ));
    ok(&pozctl(d, &["sign", "me2.draft", "--key", "me.key"]));
    ok(&pozctl(d, &["apply", "me2.draft", "--out", "me.poz"]));

    let service = |t: &str, name: &str, host: &str| {
        service_hash(&ok(&pozctl(
            d,
            &[
                "service", "add", "me.poz", "--type", t, "--name", name, "--host", host, "--key",
                "me.key",
            ],
        )))
    };
    let mail = service("mail", "primary", "mail1.example:25:tls@10/50");
    let feed = service("feed", "publish", "feed1.example:443:tls@10/50");
    let revocation = service("revocation", "live", "revoke.example:443:tls@10/100");

    // The wrong type, or no such service: refused, the record unchanged.
    let before = std::fs::read(d.join("me.poz")).unwrap();
    for (svc, says) in [
        (&feed, "is a feed service, not mail"),
        (&"ab".repeat(32), "is not a live service"),
    ] {
        let o = pozctl(
            d,
            &[
                "inbox",
                "add",
                "me.poz",
                "--name",
                "Main",
                "--service",
                svc,
                "--key",
                "me.key",
            ],
        );
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains(says), "{o:?}");
    }
    assert_eq!(std::fs::read(d.join("me.poz")).unwrap(), before);

    let out = ok(&pozctl(
        d,
        &[
            "inbox",
            "add",
            "me.poz",
            "--name",
            "Main",
            "--guid",
            "000102030405060708090a0b0c0d0e0f",
            "--service",
            &mail,
            "--key",
            "me.key",
        ],
    ));
    assert!(
        out.contains("inbox \"Main\" guid 000102030405060708090a0b0c0d0e0f added"),
        "{out}"
    );
    ok(&pozctl(
        d,
        &[
            "feed",
            "add",
            "me.poz",
            "--name",
            "main",
            "--service",
            &feed,
            "--key",
            "me.key",
        ],
    ));
    // Members worth less than 100 together could never log in.
    let o = pozctl(
        d,
        &[
            "trust-group",
            "add",
            "me.poz",
            "--group",
            "1",
            "--member",
            "1:60",
            "--key",
            "me.key",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    ok(&pozctl(
        d,
        &[
            "trust-group",
            "add",
            "me.poz",
            "--group",
            "1",
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
    // The same group again is the same entry: harmless. Another live
    // group 1 would make every login for it ambiguous-group (SPEC §20):
    // refused, naming the group there is, the file unchanged.
    let group_1 = |members: &[&str]| {
        let mut args = vec!["trust-group", "add", "me.poz", "--group", "1"];
        args.extend(["--name", "devices"]);
        for m in members {
            args.extend(["--member", m]);
        }
        args.extend(["--key", "me.key"]);
        pozctl(d, &args)
    };
    ok(&group_1(&["0:50", "1:50"]));
    let before = std::fs::read(d.join("me.poz")).unwrap();
    let o = group_1(&["0:100"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.contains("already has a live trust group 1 (\"devices\", entry "),
        "{said}"
    );
    assert_eq!(std::fs::read(d.join("me.poz")).unwrap(), before);
    let o = pozctl(
        d,
        &[
            "revocation-service",
            "add",
            "me.poz",
            "--service",
            &mail,
            "--key",
            "me.key",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "a MAIL service is no revocation service: {o:?}"
    );
    ok(&pozctl(
        d,
        &[
            "revocation-service",
            "add",
            "me.poz",
            "--service",
            &revocation,
            "--key",
            "me.key",
        ],
    ));

    ok(&pozctl(d, &["verify", "me.poz"]));
    let text = ok(&pozctl(d, &["inspect", "me.poz"]));
    for want in [
        format!("inbox \"Main\" guid 000102030405060708090a0b0c0d0e0f -> mail service \"primary\" (1 hosts) {mail}"),
        format!("feed \"main\" -> feed service \"publish\" (1 hosts) {feed}"),
        "trust group 1 \"devices\": key 0 = 50, key 1 = 50".to_owned(),
        format!("revocation service -> revocation service \"live\" (1 hosts) {revocation}"),
    ] {
        assert!(text.contains(&want), "{want}\n{text}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&ok(&pozctl(d, &["inspect", "me.poz", "--json"]))).unwrap();
    let refs: Vec<&serde_json::Value> = json["zones"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|z| z["entries"].as_array().unwrap())
        .filter_map(|e| e.get("service_ref"))
        .collect();
    assert_eq!(refs.len(), 3, "{json}");
    assert!(refs.iter().all(|r| r["ok"] == true), "{json}");

    // A login with the trust group just added: both members sign.
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
            "1",
            "--key",
            "me.key",
            "--key",
            "laptop.key",
            "--out",
            "p.bin",
        ],
    ));
    ok(&pozctl(d, &["auth", "verify", "me.poz", "c.bin", "p.bin"]));
}
