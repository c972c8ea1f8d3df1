//! Issue 12 §9: `--print-config` printed database URLs with their
//! passwords. The signer's audit URL (and its PIN) never reach the screen.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use std::process::Command;

#[test]
fn print_config_shows_no_password_and_no_pin() {
    let out = Command::new(env!("CARGO_BIN_EXE_poz-signer"))
        .arg("--print-config")
        .env(
            "POZ_SIGNER_AUDIT_DATABASE_URL",
            "postgres://poz_signer:pg-pass-7781@db.internal:5432/poz?sslmode=require",
        )
        .env("POZ_SIGNER_PIN", "pin-5517")
        .env_remove("POZ_SIGNER_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(!printed.contains("pg-pass-7781"), "{printed}");
    assert!(!printed.contains("pin-5517"), "{printed}");
    assert!(
        printed.contains(
            "audit_database_url = \"postgres://poz_signer:REDACTED@db.internal:5432/poz?sslmode=require\""
        ),
        "{printed}"
    );
}
