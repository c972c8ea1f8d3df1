//! Runs one verification workload N times, for instruction-count profiling
//! with `valgrind --tool=callgrind` (load-tests/poz-verify-callgrind.sh):
//!
//! - `chain`: a cold CHAIN verification (decode, master, authority, binding)
//! - `warm`: a binding against an already verified provider
//! - `raw`: ed25519-dalek's `verify_strict` with a decompressed key
//! - `rawbytes`: the same, decompressing the key from bytes first
//! - `batch`: 256 bindings through `verify_bindings` (one Ed25519 batch)
//! - `rawbatch`: ed25519-dalek's `verify_batch` over the same 256
//!   signatures, digests and keys
//!
//! ```sh
//! cargo build --release -p poz --example profile_chain
//! valgrind --tool=callgrind target/release/examples/profile_chain chain 200
//! ```
//! and the same with N = 0 to subtract the setup.
use poz::sample::{self, T0};
use poz::verify::{verify_and_accept, verify_binding, verify_bindings};
use poz::{Codec, Record};

/// Bindings per batch in the `batch` and `rawbatch` modes.
pub const BATCH: u64 = 256;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "chain".into());
    let n: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100);
    let (rec, b) = sample::chain_provider().expect("sample chain");
    let bytes = rec.to_bytes();
    let key = rec.keys.get(1).expect("key").clone();
    let digest = b.identity_digest(&rec.id());
    let key_bytes: [u8; 32] = key.bytes().try_into().expect("32 bytes");
    let dalek_key = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes).expect("key");
    let dalek_sig =
        |data: &[u8]| ed25519_dalek::Signature::from_bytes(data.try_into().expect("64 bytes"));
    let sig = dalek_sig(&b.signatures[0].data);
    let verified = verify_and_accept(Record::from_bytes(&bytes).expect("decode")).expect("valid");
    let device = sample::provider_keys().device_a;
    let batch = if mode.contains("batch") {
        sample::bulk_bindings(&rec, BATCH, &[&device]).expect("bindings")
    } else {
        Vec::new()
    };
    let digests: Vec<[u8; 32]> = batch
        .iter()
        .map(|e| e.identity_digest(&rec.id()).0)
        .collect();
    let messages: Vec<&[u8]> = digests.iter().map(|d| d.as_slice()).collect();
    let sigs: Vec<_> = batch
        .iter()
        .map(|e| dalek_sig(&e.signatures[0].data))
        .collect();
    let keys = vec![dalek_key; batch.len()];
    for _ in 0..n {
        match mode.as_str() {
            "warm" => {
                verify_binding(&verified, &b, T0 + 10).expect("binding");
            }
            "rawbytes" => {
                let k = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes).expect("key");
                k.verify_strict(&digest.0, &sig).expect("verifies");
            }
            "raw" => dalek_key.verify_strict(&digest.0, &sig).expect("verifies"),
            "batch" => {
                let r = verify_bindings(&verified, &batch, T0 + 10);
                assert!(r.iter().all(|r| r.is_ok()));
            }
            "rawbatch" => ed25519_dalek::verify_batch(&messages, &sigs, &keys).expect("batch"),
            _ => {
                let r = Record::from_bytes(&bytes).expect("decode");
                let vr = verify_and_accept(r).expect("valid");
                verify_binding(&vr, &b, T0 + 10).expect("binding");
            }
        }
    }
}
