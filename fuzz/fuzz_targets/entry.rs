//! The `entry` target: [`poz_fuzzing::codecs::entry`] (its doc says what is checked).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| poz_fuzzing::codecs::entry(data));
