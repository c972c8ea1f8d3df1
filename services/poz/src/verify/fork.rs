//! Forks: two revisions of one record with the same serial that differ.

use crate::hash::Hash32;
use crate::master::MasterZone;
use serde::Serialize;

/// Two revisions of one record that claim the same serial but differ: a
/// fork, and so a security event.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Fork {
    pub record_id: Hash32,
    pub serial: u32,
    pub first: Hash32,
    pub second: Hash32,
}

/// Compares two revisions of the same record.
pub fn detect_fork(a: &MasterZone, b: &MasterZone) -> Option<Fork> {
    (a.record_id() == b.record_id()
        && a.serial == b.serial
        && a.current_master_hash != b.current_master_hash)
        .then(|| Fork {
            record_id: a.record_id(),
            serial: a.serial,
            first: a.current_master_hash,
            second: b.current_master_hash,
        })
}

/// Compares two chains of the same record (oldest first) and reports the
/// first serial at which they diverge.
pub fn detect_chain_fork(a: &[MasterZone], b: &[MasterZone]) -> Option<Fork> {
    a.iter().find_map(|x| {
        b.iter()
            .find(|y| y.serial == x.serial)
            .and_then(|y| detect_fork(x, y))
    })
}
