//! Any bytes as a POZ record: decoding never panics; whatever decodes
//! re-encodes to the identical bytes (one encoding per record); and the
//! verifier never panics on it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use poz::Codec;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = poz::Record::from_bytes(data) {
        assert_eq!(rec.to_bytes(), data, "a decoded record must re-encode to the same bytes");
        let _ = poz::verify_record(&rec);
    }
});
