//! The POZ query gateway (`poz-query-gw`): 7074 plain and 7075 Noise NK
//! lookups of every query type (MASTER, MIRRORS, SERIAL, IDENTITY, CHAIN,
//! ZONE, CHALLENGE, and the audit's BATCHES, BATCH and HANDLE_HISTORY),
//! answered from the store over gRPC ([`lookup`]),
//! behind the POZ edge (`poz_edge`: connection discipline and adaptive
//! proof of work driven by load). Stateless: any number run behind one
//! address. [`serve`] runs one from its [`Config`].
#![forbid(unsafe_code)]

mod audit;
pub mod lookup;
pub mod serve;

pub use lookup::StoreLookup;
pub use serve::{edge, run, serve, Config, Listeners, ServeError};
