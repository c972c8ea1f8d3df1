//! The `record` target: [`poz_fuzzing::codecs::record`] (its doc says what is checked).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| poz_fuzzing::codecs::record(data));
