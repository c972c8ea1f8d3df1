//! Validation of a decoded record: every rule of SPEC §8, each reported on
//! its own so a user sees which hold and which fail.
//!
//! - `rules`: the rules ledger (names, stable codes) and the [`Report`].
//! - `record`: a whole record, its chain from genesis and zones, and the
//!   acceptance-time bound on its times.
//! - `binding`: one identity binding against its provider's record.
//! - `fork`: two revisions with one serial.
//! - `submit`: the proofs a SUBMIT_REQUEST carries.
//! - `cache`: verified records by the hash of their bytes.

mod binding;
mod cache;
mod fork;
mod record;
mod rules;
mod submit;

pub use binding::{verify_binding, verify_bindings, BindingError, VerifiedBinding};
pub use cache::{RecordRefused, VerifiedRecordCache};
pub use fork::{detect_chain_fork, detect_fork, Fork};
pub use record::{
    check_entry_times, check_times, verify_and_accept, verify_record, FutureTimestamp,
    VerifiedRecord, MAX_CLOCK_SKEW_MS,
};
pub use rules::{Check, Outcome, Report, Rule};
pub use submit::{verify_submit_request, SubmitRequestRefused};
