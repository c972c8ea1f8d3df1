//! pozd refuses a data directory that holds something else, and leaves it
//! untouched. (The whole tour, pozd with pozctl, is
//! services/pozctl/tests/pozd_tour.rs.)
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

#[test]
fn a_foreign_data_directory_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pozd"))
        .arg("--data")
        .arg(dir.path())
        .args(["--plain", "127.0.0.1:1", "--noise", "127.0.0.1:2"])
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds no pozd data"), "{err}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["notes.txt"]);
}
