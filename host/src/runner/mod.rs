//! Runners: the servers that execute calls, as the placers see them.
//!
//! A pool publishes its membership as an immutable [`RunnerSet`]; every change gets a new,
//! larger generation so placer instances know when to be told (`set-runners`).

use crate::placer::Runner;

/// One published membership of a runner pool.
#[derive(Debug, Clone)]
pub struct RunnerSet {
    /// Grows with every change; placer instances re-learn the set when it differs from the
    /// one they saw.
    pub generation: u64,
    /// The runners in placement-index order (configured order, or sorted for DNS).
    pub runners: Vec<Runner>,
}

impl RunnerSet {
    /// A set of plain `host:port` addresses without labels.
    pub fn from_addresses<S: Into<String>>(generation: u64, addresses: impl IntoIterator<Item = S>) -> Self {
        let runners = addresses.into_iter().map(|a| Runner { address: a.into(), labels: Vec::new() }).collect();
        RunnerSet { generation, runners }
    }

    /// Number of runners.
    pub fn len(&self) -> usize {
        self.runners.len()
    }

    /// True when the pool has no runners.
    pub fn is_empty(&self) -> bool {
        self.runners.is_empty()
    }
}

pub mod client;
pub mod discovery;
pub mod pool;
pub mod reference;
pub mod status;

pub use client::{Forward, RunnerBody};
pub use pool::{Discovery, Membership, RunnerState, StaticPool};
