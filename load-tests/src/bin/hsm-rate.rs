//! Bare Ed25519 signing rate of a PKCS#11 token through `Pkcs11KeyStore`
//! (one 32-byte digest per signature, each checked after signing as the
//! signer does), with `--threads` threads over `--sessions` sessions in
//! this process. Run several processes at once to compare sessions in one
//! process with worker processes (load-tests/hsm-rate.sh).
use clap::Parser;
use poz_signer::{KeyStore, Pkcs11KeyStore, TokenConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "/usr/lib/softhsm/libsofthsm2.so")]
    pkcs11_module: std::path::PathBuf,
    #[arg(long, default_value = "poz-bench")]
    token_label: String,
    #[arg(long, default_value = "1234")]
    pin: String,
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let token = TokenConfig {
        module: a.pkcs11_module,
        token_label: a.token_label,
        pin: a.pin.into(),
        sessions: a.sessions,
    };
    // A fresh token gets one key, generated inside it.
    {
        let s = Pkcs11KeyStore::open(&token)?;
        if s.keys().is_empty() {
            s.generate("rate")?;
        }
    }
    let hsm = Arc::new(Pkcs11KeyStore::open(&token)?);
    let key = hsm
        .keys()
        .first()
        .map(|k| k.public.id())
        .ok_or_else(|| anyhow::anyhow!("the token holds no Ed25519 key"))?;
    let until = Instant::now() + Duration::from_secs(a.seconds);
    let started = Instant::now();
    let threads: Vec<_> = (0..a.threads)
        .map(|t| {
            let hsm = hsm.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < until {
                    let d = poz::hash::tagged_hash(
                        "rate",
                        &[&(t as u64).to_be_bytes(), &n.to_be_bytes()],
                    );
                    if hsm.sign(&key, &d).is_err() {
                        break;
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "sessions {} threads {}: {total} signatures in {secs:.1} s = {:.0}/s",
        a.sessions,
        a.threads,
        total as f64 / secs
    );
    Ok(())
}
