//! Hostile input: flipped bytes in signed areas must make verification
//! fail, and no input may panic the parser or the verifier.
#![allow(clippy::unwrap_used)] // a panic in a test is a failure with a backtrace

use poz::codec::Codec;
use poz::zone::SignedEntry;
use poz::Record;
use proptest::prelude::*;

fn vector(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/vectors/{name}.poz", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Decodes and, when that works, verifies: the whole path a server or
/// client takes with untrusted bytes. True only when the record proves
/// itself completely (valid, nothing left unchecked).
fn decode_and_verify(b: &[u8]) -> bool {
    match Record::from_bytes(b) {
        Ok(r) => poz::verify_record(&r).is_complete(),
        Err(_) => false,
    }
}

/// Every section of these records is signed or hash-chained (they carry no
/// Key Names or Private Key Map, the only unsigned sections), so flipping
/// any one bit of any byte, header and TOC included, must leave a record
/// that no longer proves itself: a decode error, a failed rule, or (when a
/// TOC flip hides the Zone History as an unknown optional section) a chain
/// that can no longer be walked from genesis.
#[test]
fn every_single_byte_flip_breaks_verification() {
    for name in ["valid-chain-1-2", "valid-provider-all-zones"] {
        let good = vector(name);
        assert!(decode_and_verify(&good));
        for pos in 0..good.len() {
            for mask in [0x01u8, 0x80] {
                let mut b = good.clone();
                b[pos] ^= mask;
                assert!(
                    !decode_and_verify(&b),
                    "{name}: flipping bit {mask:#x} of byte {pos} still verifies"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode_and_verify(&b);
        let _ = SignedEntry::from_bytes(&b);
        let _ = poz::private::KeyFile::from_bytes(&b);
    }

    #[test]
    fn records_with_a_valid_header_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut b = b"POZ\0".to_vec();
        b.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
        b.extend_from_slice(&body);
        let _ = decode_and_verify(&b);
    }

    #[test]
    fn mutated_vectors_never_panic(
        which in 0usize..3,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
    ) {
        let name = ["valid-chain-1-2", "valid-provider-all-zones", "valid-provider-revocation-one-device"][which];
        let mut b = vector(name);
        for (idx, val, op) in edits {
            if b.is_empty() { break; }
            let i = idx.index(b.len());
            match op {
                0 => b[i] = val,
                1 => { b.insert(i, val); }
                2 => { b.remove(i); }
                _ => b.truncate(i),
            }
        }
        let _ = decode_and_verify(&b);
    }

    #[test]
    fn decoded_records_re_encode_to_the_same_bytes(which in 0usize..3, idx in any::<prop::sample::Index>(), val in any::<u8>()) {
        let name = ["valid-chain-1-2", "valid-provider-all-zones", "valid-genesis-34-33-33-recovery"][which];
        let mut b = vector(name);
        let i = idx.index(b.len());
        b[i] = val;
        if let Ok(r) = Record::from_bytes(&b) {
            // One encoding per record: whatever decodes re-encodes exactly.
            prop_assert_eq!(r.to_bytes(), b);
        }
    }
}

mod frames {
    use poz::codec::Codec;
    use poz::gate::{Admission, Gate, Port};
    use poz::pow::{Challenger, PowConfig, Secrets};
    use poz::wire::{Request, Response, Status};
    use proptest::prelude::*;

    fn gate() -> Gate {
        Gate::new(
            Challenger::new(PowConfig::default(), Secrets(vec![[1; 32]])),
            1000,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, .. ProptestConfig::default() })]

        /// Any bytes through the gate on any port, at any difficulty: an
        /// admitted request or a well-formed response, never a panic.
        #[test]
        fn the_gate_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300), port in 0u8..3, difficulty in 0u8..4) {
            let port = [Port::Plain, Port::NoiseQuery, Port::NoiseSubmit][port as usize];
            match gate().admit(port, &b, 1_000_000, difficulty) {
                Admission::Admit(r) => prop_assert_eq!(r.to_bytes(), b),
                Admission::Respond(r) => {
                    let back = Response::from_bytes(&r.to_bytes()).unwrap();
                    prop_assert!(back.status != Status::OK || r.payload.len() == 25, "only CHALLENGE is answered OK by the gate");
                }
            }
        }

        /// Request::check agrees with decode: whatever check calls whole
        /// decodes (or fails with a status), and no prefix of a valid
        /// frame is whole.
        #[test]
        fn check_and_decode_agree(t in any::<u8>(), id in any::<u16>(), payload in proptest::collection::vec(any::<u8>(), 0..200), pow in any::<bool>()) {
            let mut r = Request::new(poz::wire::MessageType(t), id, payload);
            if pow {
                r.pow = Some(poz::wire::PowSolution { challenge: [2; 16], timestamp: 3, nonce: 4 });
            }
            let b = r.to_bytes();
            for i in 0..b.len() {
                prop_assert_eq!(Request::check(&b[..i]).unwrap(), None);
            }
            prop_assert_eq!(Request::check(&b).unwrap(), Some(b.len()));
            prop_assert_eq!(Request::decode(&b).unwrap(), r);
        }

        /// Responses: any bytes decode or fail cleanly, and check never
        /// claims more than was given.
        #[test]
        fn responses_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Some(n)) = Response::check(&b, 1 << 20) {
                prop_assert!(n <= b.len());
                let _ = Response::from_bytes(&b[..n]);
            }
            let _ = Response::from_bytes(&b);
        }
    }
}
