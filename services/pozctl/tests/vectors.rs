//! `pozctl verify` on every committed record vector (SPEC §13): a valid
//! vector exits 0; an invalid one exits 1 (refused, never 2: the file was
//! read) and names the rule it breaks. Among them are the key-binding
//! vectors of SPEC §5.3 (issue 12 §1): a record whose service host's CA
//! key or trust-group member was swapped in the Public Key Map keeps its
//! record ID, and verify must still refuse it.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use std::path::PathBuf;
use std::process::Command;

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../poz/vectors")
}

#[test]
fn verify_accepts_valid_vectors_and_names_the_rule_of_invalid_ones() {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(vectors().join("index.json")).unwrap()).unwrap();
    let mut checked = 0;
    for v in index.as_array().unwrap() {
        if v["kind"] != "record" {
            continue;
        }
        let file = vectors().join(v["file"].as_str().unwrap());
        let out = Command::new(env!("CARGO_BIN_EXE_pozctl"))
            .args(["verify", file.to_str().unwrap(), "--allow-partial"])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let name = v["name"].as_str().unwrap();
        if v["valid"] == true {
            assert_eq!(out.status.code(), Some(0), "{name}: {text}");
        } else {
            assert_eq!(out.status.code(), Some(1), "{name}: {text}");
            let rule = v["breaks"].as_str().unwrap();
            if rule != "decode" {
                assert!(text.contains(rule), "{name}: {rule} not named in {text}");
            }
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} record vectors");
    for swapped in ["invalid-ca-key-swapped", "invalid-trust-member-key-swapped"] {
        assert!(
            index
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["name"] == swapped && v["breaks"] == "entry-signatures"),
            "{swapped} missing"
        );
    }
}

/// Issue 12 review: `pozctl inspect … | head -1` panicked (exit 101,
/// "failed printing to stdout: Broken pipe"). A reader that goes away
/// ends pozctl with 141, as SIGPIPE would, and no panic.
#[test]
fn a_closed_output_pipe_ends_pozctl_quietly() {
    let file = vectors().join("valid-provider-all-zones.poz");
    // The reader is gone before pozctl starts: its first write fails,
    // whenever it comes. (Closing the read end after spawning raced with
    // pozctl's write on a loaded machine: the JSON fits the pipe buffer,
    // and pozctl sometimes wrote it all first and exited 0.)
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_pozctl"))
        .args(["inspect", file.to_str().unwrap(), "--json"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
