//! Verifying an identity binding with its chain, against the raw Ed25519
//! verify rate on the same machine.
//!
//! `cargo bench -p poz --bench verify` prints Criterion's figures and then
//! a ratio line per case: (signatures checked × one raw verify) / (time of
//! the whole verification). 1.0 means parsing and hashing cost nothing;
//! the goal is at least 0.9. The batch case compares `verify_bindings`
//! over 256 bindings with ed25519-dalek's `verify_batch` over the same
//! signatures (goal: at least 0.8).
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use criterion::{black_box, Criterion};
use poz::sample::{self, T0};
use poz::verify::{verify_and_accept, verify_binding, verify_bindings, VerifiedRecord};
use poz::zone::SignedEntry;
use poz::{Codec, Record};
use std::time::{Duration, Instant};

/// What a CHAIN answer carries: the provider's key map, master zone with
/// its history from genesis, the identity authority; and one binding.
fn chain() -> (Vec<u8>, SignedEntry) {
    let (rec, b) = sample::chain_provider().unwrap();
    (rec.to_bytes(), b)
}

/// Signatures a cold chain verification checks.
fn signature_count(rec: &Record, b: &SignedEntry) -> usize {
    rec.history
        .iter()
        .chain([&rec.master])
        .map(|m| m.signatures.len())
        .sum::<usize>()
        + rec
            .authorities
            .values()
            .map(|a| a.signatures.len())
            .sum::<usize>()
        + b.signatures.len()
}

fn verify_cold(bytes: &[u8], b: &SignedEntry) {
    let rec = Record::from_bytes(bytes).unwrap();
    let vr = verify_and_accept(rec).unwrap();
    verify_binding(&vr, b, T0 + 10).unwrap();
}

fn raw_setup() -> (
    ed25519_dalek::VerifyingKey,
    [u8; 32],
    ed25519_dalek::Signature,
) {
    use ed25519_dalek::Signer;
    let sk = ed25519_dalek::SigningKey::from_bytes(&[5u8; 32]);
    let msg = [7u8; 32];
    (sk.verifying_key(), msg, sk.sign(&msg))
}

/// Times `f` over `n` calls.
fn time(n: u32, mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed()
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let (bytes, binding) = chain();
    let rec = Record::from_bytes(&bytes).unwrap();
    let sigs = signature_count(&rec, &binding);
    let verified: VerifiedRecord = verify_and_accept(rec).unwrap();
    let (vk, msg, sig) = raw_setup();

    c.bench_function("ed25519/verify_strict (raw)", |bn| {
        bn.iter(|| vk.verify_strict(black_box(&msg), black_box(&sig)).unwrap())
    });
    c.bench_function("binding/verify against a verified provider", |bn| {
        bn.iter(|| verify_binding(black_box(&verified), black_box(&binding), T0 + 10).unwrap())
    });
    c.bench_function(
        "chain/decode + verify master, authority, binding (cold)",
        |bn| bn.iter(|| verify_cold(black_box(&bytes), black_box(&binding))),
    );
    // A batch of 256 bindings by one device, and the same signatures as
    // ed25519-dalek batch input.
    let device = sample::provider_keys().device_a;
    let (prov, _) = sample::chain_provider().unwrap();
    let batch = sample::bulk_bindings(&prov, 256, &[&device]).unwrap();
    let digests: Vec<[u8; 32]> = batch
        .iter()
        .map(|e| e.identity_digest(&prov.id()).0)
        .collect();
    let messages: Vec<&[u8]> = digests.iter().map(|d| d.as_slice()).collect();
    let batch_sigs: Vec<_> = batch
        .iter()
        .map(|e| {
            ed25519_dalek::Signature::from_bytes(
                e.signatures[0].data.as_slice().try_into().unwrap(),
            )
        })
        .collect();
    let device_key: [u8; 32] = prov.keys.get(1).unwrap().bytes().try_into().unwrap();
    let keys = vec![ed25519_dalek::VerifyingKey::from_bytes(&device_key).unwrap(); 256];
    let raw_batch = || ed25519_dalek::verify_batch(&messages, &batch_sigs, &keys).unwrap();
    let poz_batch = || {
        assert!(verify_bindings(&verified, &batch, T0 + 10)
            .iter()
            .all(|r| r.is_ok()))
    };
    c.bench_function("ed25519/verify_batch x256 (raw)", |bn| bn.iter(raw_batch));
    c.bench_function("bindings/verify_bindings x256", |bn| bn.iter(poz_batch));
    c.final_summary();

    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    // The ratio, from interleaved rounds so that both sides see the same
    // machine state; the median round is reported.
    let mut warm = Vec::new();
    let mut cold = Vec::new();
    let mut batched = Vec::new();
    for _ in 0..15 {
        let rb = time(20, raw_batch).as_secs_f64();
        let pb = time(20, poz_batch).as_secs_f64();
        batched.push(rb / pb);
        let raw = time(2000, || {
            vk.verify_strict(black_box(&msg), black_box(&sig)).unwrap()
        })
        .as_secs_f64()
            / 2000.0;
        let w = time(2000, || {
            verify_binding(black_box(&verified), black_box(&binding), T0 + 10).unwrap();
        })
        .as_secs_f64()
            / 2000.0;
        let cd =
            time(500, || verify_cold(black_box(&bytes), black_box(&binding))).as_secs_f64() / 500.0;
        warm.push(raw * binding.signatures.len() as f64 / w);
        cold.push(raw * sigs as f64 / cd);
    }
    batched.sort_by(|a, b| a.total_cmp(b));
    warm.sort_by(|a, b| a.total_cmp(b));
    cold.sort_by(|a, b| a.total_cmp(b));
    println!(
        "RATIO binding against verified provider: {:.3} ({} signature per binding; median of 15 rounds, min {:.3}, max {:.3})",
        warm[7],
        binding.signatures.len(),
        warm[0],
        warm[14]
    );
    println!(
        "RATIO cold chain (decode + {} signatures): {:.3} (median of 15 rounds, min {:.3}, max {:.3})",
        sigs, cold[7], cold[0], cold[14]
    );
    println!(
        "RATIO batch of 256 bindings against raw verify_batch: {:.3} (median of 15 rounds, min {:.3}, max {:.3})",
        batched[7], batched[0], batched[14]
    );
}
