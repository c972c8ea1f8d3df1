//! The `noise` target: [`poz_fuzzing::gate::noise`] (its doc says what is checked).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| poz_fuzzing::gate::noise(data));
