//! Any bytes as a request frame arriving on each port: the gate decides
//! without panicking, and an admitted request re-encodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use poz::codec::Codec;
use poz::gate::{Admission, Gate, Port};
use poz::pow::{Challenger, PowConfig, Secrets};

fuzz_target!(|data: &[u8]| {
    let mut gate = Gate::new(Challenger::new(PowConfig::default(), Secrets(vec![[1; 32]])), 64);
    for port in [Port::Plain, Port::NoiseQuery, Port::NoiseSubmit] {
        for difficulty in [0, 8] {
            if let Admission::Admit(r) = gate.admit(port, data, 1_000_000, difficulty) {
                assert_eq!(r.to_bytes(), data);
            }
        }
    }
    if let Ok(Some(n)) = poz::wire::Response::check(data, 1 << 20) {
        let _ = poz::wire::Response::from_bytes(&data[..n]);
    }
});
