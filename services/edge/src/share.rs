//! Whose load sets the proof-of-work difficulty: this process's own
//! ([`LocalLoad`]) or the fleet's, shared through Redis
//! ([`crate::RedisLoad`]). The tuner ([`crate::spawn_tuner`]) asks its
//! share four times a second.

use crate::fleet::Source;
use poz::pow::{Load, LoadTargets};
use std::future::Future;

/// A source of the load the difficulty follows.
pub trait LoadShare: Send + 'static {
    /// Publishes `mine` (this process's load of the last second) where
    /// the share keeps it, and returns the load and the targets to set
    /// the difficulty from, and where they came from. Never fails: a
    /// share that cannot reach its peers answers with `mine` and
    /// `per_gateway` ([`Source::Local`]).
    fn tick(
        &mut self,
        mine: &Load,
        per_gateway: &LoadTargets,
    ) -> impl Future<Output = (Load, LoadTargets, Source)> + Send;
}

/// This process's load only (no Redis configured, or `pozd`).
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalLoad;

impl LoadShare for LocalLoad {
    async fn tick(
        &mut self,
        mine: &Load,
        per_gateway: &LoadTargets,
    ) -> (Load, LoadTargets, Source) {
        (*mine, *per_gateway, Source::Local)
    }
}
