//! Runs the README's tour verbatim: every command line between the tour
//! markers, in order, in one shell, in a fresh directory. A line whose
//! comment says "refused" must exit 1; every other line must exit 0.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use std::path::{Path, PathBuf};
use std::process::Command;

fn tour_lines() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let start = readme
        .find("<!-- tour:start -->")
        .expect("tour start marker");
    let end = readme.find("<!-- tour:end -->").expect("tour end marker");
    let mut lines = Vec::new();
    let mut in_code = false;
    for l in readme[start..end].lines() {
        if l.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code && !l.trim().is_empty() {
            lines.push(l.to_owned());
        }
    }
    lines
}

#[test]
fn readme_tour_runs_verbatim() {
    let lines = tour_lines();
    assert!(lines.len() > 20, "the tour lost its commands");
    let mut script = String::new();
    for (i, l) in lines.iter().enumerate() {
        script.push_str(l);
        script.push_str(&format!("\necho \"@@exit {i} $?\"\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    let bin: PathBuf = PathBuf::from(env!("CARGO_BIN_EXE_pozctl"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("POZ_PASSPHRASE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let codes: Vec<(usize, i32)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("@@exit "))
        .map(|l| {
            let (i, c) = l.split_once(' ').unwrap();
            (i.parse().unwrap(), c.parse().unwrap())
        })
        .collect();
    assert_eq!(
        codes.len(),
        lines.len(),
        "not every line ran\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for (i, code) in codes {
        let want = if lines[i].contains("# refused") { 1 } else { 0 };
        assert_eq!(
            code, want,
            "line {i}: `{}` exited {code}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            lines[i]
        );
    }
    // What the tour promises the reader.
    assert!(
        stderr.contains("threshold not met: best group has 67 of 100"),
        "{stderr}"
    );
    assert!(stdout.contains("chain 1 -> 2\n"), "{stdout}");
    assert!(stdout.contains("VALID: every rule holds"), "{stdout}");
    assert!(stdout.contains("\"complete\":true"), "{stdout}");
    assert!(
        stdout.contains("INVALID entry-grant: grant threshold not met: group 0: 50 of 100"),
        "{stdout}"
    );
    assert!(
        stdout.contains("VALID binding \"alice@social.example\""),
        "{stdout}"
    );
    assert!(stdout.contains("INVALID binding-revoked"), "{stdout}");
}
