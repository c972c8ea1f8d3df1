//! The `grpc` target: [`poz_fuzzing::grpc::request`] (its doc says what is checked).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| poz_fuzzing::grpc::request(data));
