//! Runs a cold CHAIN verification (decode + verify master, authority,
//! binding), a warm one (binding against an already verified provider) or a
//! raw Ed25519 verify N times, for instruction-count
//! profiling with `valgrind --tool=callgrind`:
//!
//! ```sh
//! cargo build --release -p poz --example profile_chain
//! valgrind --tool=callgrind target/release/examples/profile_chain chain 200
//! valgrind --tool=callgrind target/release/examples/profile_chain raw 200
//! valgrind --tool=callgrind target/release/examples/profile_chain warm 200
//! ```
//! and the same with N = 0 to subtract the setup.
use poz::sample::{self, T0};
use poz::verify::{verify_and_accept, verify_binding};
use poz::zone::ZoneType;
use poz::{Codec, Record};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "chain".into());
    let n: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100);
    let (rec, b) = sample::chain_provider().expect("sample chain");
    let bytes = rec.to_bytes();
    let key = rec.keys.get(1).expect("key").clone();
    let digest = b.digest(&rec.id(), ZoneType::IDENTITY);
    let key_bytes: [u8; 32] = key.bytes().try_into().expect("32 bytes");
    let verified = verify_and_accept(Record::from_bytes(&bytes).expect("decode")).expect("valid");
    for _ in 0..n {
        if mode == "warm" {
            verify_binding(&verified, &b, T0 + 10).expect("binding");
        } else if mode == "rawbytes" {
            // What a verifier handed key bytes must do: decompress, verify.
            let k = poz::PublicKey::ed25519_from_bytes(&key_bytes).expect("key");
            assert!(k.verify(&digest, &b.signatures[0]));
        } else if mode == "raw" {
            assert!(key.verify(&digest, &b.signatures[0]));
        } else {
            let r = Record::from_bytes(&bytes).expect("decode");
            let vr = verify_and_accept(r).expect("valid");
            verify_binding(&vr, &b, T0 + 10).expect("binding");
        }
    }
}
