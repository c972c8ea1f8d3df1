//! The POZ fuzz targets as plain functions over untrusted bytes.
//!
//! Each target takes one input (`&[u8]`, whatever libFuzzer or a corpus
//! file holds) and panics only when a promise of the code under test is
//! broken: a decoder or service panicking on its own, an accepted value
//! that does not re-encode to the bytes it came from where the codec
//! promises one encoding, a Noise exchange that decrypts to something
//! else than was sent. A panic here is a bug in the fleet, not in the
//! input.
//!
//! Two callers: the cargo-fuzz binaries in `fuzz/fuzz_targets/` (one per
//! target, built with coverage instrumentation, see docs/OPERATIONS.md,
//! "Fuzzing"), and this crate's test `tests/corpus.rs`, which replays
//! every checked-in corpus and regression file through the same function
//! in the workspace's ordinary build (the test command's smoke run).
//!
//! | target | what it drives |
//! |---|---|
//! | `record` | [`poz::Record`] decode, re-encode equality, [`poz::verify_record`] |
//! | `entry` | [`poz::SignedEntry`] decode, re-encode, every zone's [`poz::entries::EntryBody`] |
//! | `frame` | request frames through [`poz::gate::Gate`] on every port, admitted ones answered by [`poz::serve::Catalog`]; response frames |
//! | `codec` | every other [`poz::Codec`] type (wire queries and answers, audit, PoW, auth, batch proofs, key files), request payload rules, handle rules, the batch-log and batch auditors |
//! | `noise` | Noise NK first messages through the responder and the gate, as the query and submit gateways take them |
//! | `grpc` | every gRPC request message of `proto/poz/v1` decoded, round-tripped, and passed through the verifier service and the signer's request validation |
#![forbid(unsafe_code)]

pub mod codecs;
pub mod gate;
#[cfg(feature = "grpc")]
pub mod grpc;

/// One fuzz target: its name (the cargo-fuzz binary and the corpus
/// directory `fuzz/corpus/<name>`) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target this build has (`grpc` only with the `grpc` feature).
pub const TARGETS: &[Target] = &[
    ("record", codecs::record),
    ("entry", codecs::entry),
    ("frame", gate::frame),
    ("codec", codecs::codec),
    ("noise", gate::noise),
    #[cfg(feature = "grpc")]
    ("grpc", grpc::request),
];
