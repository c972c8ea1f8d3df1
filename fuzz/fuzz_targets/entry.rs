//! Any bytes as a zone entry, then its body as every zone type: decoding
//! never panics and round-trips exactly.
#![no_main]
use libfuzzer_sys::fuzz_target;
use poz::entries::EntryBody;
use poz::zone::{SignedEntry, ZoneType};
use poz::Codec;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = SignedEntry::from_bytes(data) {
        assert_eq!(e.to_bytes(), data);
        for z in ZoneType::ALL {
            let _ = EntryBody::decode(z, e.kind, &e.body);
        }
    }
});
