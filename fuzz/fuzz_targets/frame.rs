//! The `frame` target: [`poz_fuzzing::gate::frame`] (its doc says what is checked).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| poz_fuzzing::gate::frame(data));
