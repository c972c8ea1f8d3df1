//! The POZ query gateway (`poz-query-gw`): 7074 plain and 7075 Noise NK
//! lookups of every query type (MASTER, MIRRORS, SERIAL, IDENTITY, CHAIN,
//! ZONE, CHALLENGE), answered from the store over gRPC, under a
//! connection discipline ([`edge`]) and an adaptive proof of work driven
//! by load ([`load`]). Stateless: any number run behind one address.
#![forbid(unsafe_code)]

pub mod edge;
pub mod fleet;
pub mod gateway;
pub mod load;
pub mod lookup;

pub use edge::{Answer, Discipline, Edge};
pub use load::LoadMeter;
pub use lookup::StoreLookup;
