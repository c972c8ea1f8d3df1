//! The holder's journey over the POZ ports (issue 18; README, "The
//! holder's journey over the protocol"): a fresh record published to a
//! provider that hosts records (SUBMIT_SIGNED kind 3) and looked up by its
//! record name; a binding asked for (SUBMIT_REQUEST), decided by the
//! provider (Provider API DecideBindingRequest through `pozctl requests`)
//! or issued at once, fetched (SUBMIT_STATUS), copied into the holder's
//! Identity Zone and published as the next revision; the copy verified
//! against the provider's record, then refused once the provider revokes
//! it.
//!
//! Against pozd with the queue policy the README's lines run verbatim (a
//! line whose comment says "refused" must exit 1, "pending" 3, any other
//! 0); with the issue policy the same journey runs without the
//! operator's step.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

mod pozd;

use poz_testkit::ServiceProcess;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The README's journey lines, in order.
fn journey_lines() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    let start = readme
        .find("<!-- journey:start -->")
        .expect("journey start marker");
    let end = readme
        .find("<!-- journey:end -->")
        .expect("journey end marker");
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

fn bin_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pozctl"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Runs `lines` in one bash in `dir` with `vars`; returns (stdout,
/// stderr) after checking each line's exit code.
fn run_lines(dir: &Path, lines: &[String], vars: &[(String, String)]) -> (String, String) {
    let mut script = String::new();
    for (i, l) in lines.iter().enumerate() {
        script.push_str(l);
        script.push_str(&format!("\necho \"@@exit {i} $?\"\n"));
    }
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("POZ_PASSPHRASE")
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
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
        let want = if lines[i].contains("# refused") {
            1
        } else if lines[i].contains("# pending") {
            3
        } else {
            0
        };
        assert_eq!(
            code, want,
            "line {i}: `{}` exited {code}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            lines[i]
        );
    }
    (stdout, stderr)
}

/// What every run of the journey must have said.
fn journey_said(stdout: &str, stderr: &str) {
    assert!(stdout.contains("published "), "{stdout}");
    assert!(
        stdout.contains("VERIFIED record for "),
        "the hosted record by its record name\n{stdout}"
    );
    assert!(
        stdout.contains("issued: binding written to dana.binding"),
        "{stdout}"
    );
    assert!(stdout.contains("adopted \"dana\""), "{stdout}");
    assert!(stdout.contains(" serial 2 "), "the next revision\n{stdout}");
    assert!(
        stdout.contains("VALID binding \"dana@demo.example\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("INVALID binding-revoked") || stderr.contains("revoked"),
        "{stdout}\n{stderr}"
    );
}

#[test]
fn readme_journey_runs_verbatim_against_pozd_with_the_queue_policy() {
    let lines = journey_lines();
    assert!(lines.len() > 15, "the journey lost its commands");
    let dir = tempfile::tempdir().unwrap();
    let (mut p, vars) = pozd::start(&dir.path().join("data"), &["--binding-requests", "queue"]);
    let (stdout, stderr) = run_lines(dir.path(), &lines, &vars);
    journey_said(&stdout, &stderr);
    assert!(
        stdout.contains("pending: the provider has not decided yet"),
        "{stdout}"
    );
    assert!(stdout.contains("1 pending"), "{stdout}");
    let status = p.terminate();
    assert!(status.success(), "{status:?}\n{}", p.stderr());
}

#[test]
fn journey_against_pozd_with_the_issue_policy() {
    // The README's lines without the operator's step and with the
    // request issued at once: no pending fetch, no list, no approval.
    let mut lines: Vec<String> = journey_lines()
        .into_iter()
        .filter(|l| !l.contains("# pending") && !l.contains("pozctl requests"))
        .collect();
    // A handle someone holds is refused at once: exit 1, with the rule.
    lines.push(
        "pozctl identity request demo.example --handle alice --record dana.poz --key dana.key --server $POZ_SUBMIT --noise-key $POZ_SUBMIT_KEY    # refused".into(),
    );
    let dir = tempfile::tempdir().unwrap();
    let (mut p, vars) = pozd::start(&dir.path().join("data"), &["--binding-requests", "issue"]);
    let (stdout, stderr) = run_lines(dir.path(), &lines, &vars);
    journey_said(&stdout, &stderr);
    assert!(stdout.contains(": issued (submission "), "{stdout}");
    assert!(
        stderr.contains("refused: the handle could not be issued: binding-unique"),
        "{stderr}"
    );
    let status = p.terminate();
    assert!(status.success(), "{status:?}\n{}", p.stderr());
}

/// The split fleet as separate processes (poz-store, poz-verifier,
/// poz-signer with a software key, poz-provider-api, poz-query-gw,
/// poz-submit-gw), plain loopback gRPC, the sample provider
/// `social.example` loaded into the store first. Returns the processes
/// (they end with the test) and the journey's variables.
async fn split_fleet(dir: &Path, policy: &str) -> (Vec<ServiceProcess>, Vec<(String, String)>) {
    use poz::Codec;
    let db = format!("sqlite://{}?mode=rwc", dir.join("s.db").display());
    let (provider, _) = poz::sample::chain_provider().unwrap();
    let id = {
        let store = poz_store::Store::open(&db, poz_store::StoreOptions::default())
            .await
            .unwrap();
        let (id, _) = store
            .import_record(&provider.to_bytes(), &["social.example".into()])
            .await
            .unwrap();
        store.close().await;
        id
    };
    let bin = |name: &str| poz_testkit::workspace_bin(name);
    let conf = |name: &str, text: String| {
        let p = dir.join(format!("{name}.toml"));
        std::fs::write(&p, text).unwrap();
        p
    };
    let spawn = |name: &str, config: PathBuf| {
        let mut cmd = Command::new(bin(name));
        cmd.arg("--config").arg(config);
        ServiceProcess::spawn(cmd)
    };
    let store = spawn(
        "poz-store",
        conf(
            "store",
            format!("listen = \"127.0.0.1:0\"\ninsecure = true\ndatabase_url = \"{db}\"\n"),
        ),
    );
    let verifier = spawn(
        "poz-verifier",
        conf(
            "verifier",
            "listen = \"127.0.0.1:0\"\ninsecure = true\n".into(),
        ),
    );
    // The sample provider's identity device: grant and deny alone.
    let pass = dir.join("passphrase");
    std::fs::write(&pass, "correct horse\n").unwrap();
    let key_file = dir.join("device-a.key");
    let file = poz::private::KeyFile::create(
        &poz::sample::provider_keys().device_a,
        b"correct horse",
        poz::private::KdfParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        },
    )
    .unwrap();
    std::fs::write(&key_file, file.to_bytes()).unwrap();
    let signer = spawn(
        "poz-signer",
        conf(
            "signer",
            format!(
                "listen = \"127.0.0.1:0\"\ninsecure = true\nbackend = \"software\"\nkey_files = [\"{}\"]\npassphrase_file = \"{}\"\naudit_database_url = \"{db}\"\n",
                key_file.display(),
                pass.display()
            ),
        ),
    );
    let api = spawn(
        "poz-provider-api",
        conf(
            "api",
            format!(
                "listen = \"127.0.0.1:0\"\ninsecure = true\nrecord_id = \"{}\"\nstore = \"{}\"\nverifier = \"{}\"\nsigner = \"{}\"\n",
                id.to_hex(),
                store.url(),
                verifier.url(),
                signer.url()
            ),
        ),
    );
    let secrets = dir.join("secrets");
    std::fs::write(&secrets, format!("{}\n", hex::encode([3u8; 32]))).unwrap();
    let noise = |name: &str| {
        let key = poz::noise::StaticKeypair::generate();
        let f = dir.join(format!("{name}-noise.key"));
        std::fs::write(&f, hex::encode(key.secret())).unwrap();
        (key, f)
    };
    let (_, query_key) = noise("query");
    let query = spawn(
        "poz-query-gw",
        conf(
            "query",
            format!(
                "listen_plain = \"127.0.0.1:0\"\nlisten_noise = \"127.0.0.1:0\"\ninsecure = true\nstore = \"{}\"\ncache_ttl_ms = 0\nnoise_key_file = \"{}\"\nchallenge_secrets_file = \"{}\"\n",
                store.url(),
                query_key.display(),
                secrets.display()
            ),
        ),
    );
    let (submit_key, submit_key_file) = noise("submit");
    let submit = spawn(
        "poz-submit-gw",
        conf(
            "submit",
            format!(
                "listen = \"127.0.0.1:0\"\ninsecure = true\nstore = \"{}\"\nverifier = \"{}\"\nprovider_api = \"{}\"\nbinding_requests = \"{policy}\"\nprovider_record = \"{}\"\nhost_records = true\nnoise_key_file = \"{}\"\nchallenge_secrets_file = \"{}\"\n",
                store.url(),
                verifier.url(),
                api.url(),
                id.to_hex(),
                submit_key_file.display(),
                secrets.display()
            ),
        ),
    );
    // "listening plain ADDR noise ADDR key HEX"
    let plain = query.addr().split_whitespace().nth(1).unwrap().to_owned();
    let vars = vec![
        ("POZ_QUERY".to_owned(), plain),
        ("POZ_SUBMIT".to_owned(), submit.addr().to_owned()),
        ("POZ_SUBMIT_KEY".to_owned(), hex::encode(submit_key.public)),
        ("POZ_PROVIDER".to_owned(), id.to_hex()),
        ("POZ_API".to_owned(), api.url()),
    ];
    (vec![store, verifier, signer, api, query, submit], vars)
}

/// The README's journey with the provider's domain swapped in.
fn journey_for(domain: &str, queue: bool) -> Vec<String> {
    journey_lines()
        .into_iter()
        .filter(|l| queue || (!l.contains("# pending") && !l.contains("pozctl requests")))
        .map(|l| l.replace("demo.example", domain))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journey_against_the_split_services_with_both_policies() {
    for (policy, queue) in [("queue", true), ("issue", false)] {
        let dir = tempfile::tempdir().unwrap();
        let (mut procs, vars) = split_fleet(dir.path(), policy).await;
        let lines = journey_for("social.example", queue);
        let d = dir.path().to_owned();
        let (stdout, stderr) = tokio::task::spawn_blocking(move || run_lines(&d, &lines, &vars))
            .await
            .unwrap();
        journey_said(&stdout.replace("social.example", "demo.example"), &stderr);
        for p in procs.iter_mut().rev() {
            p.terminate();
        }
    }
}
