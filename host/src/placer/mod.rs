//! The placer contract and runtime: the types every layer shares (the call, the runner
//! set, the load view), the [`Order`] interface, and placer components loaded into one
//! wasmtime engine and run in a sandbox.
//!
//! A [`PlacerRuntime`] owns the engine and the linker. Loading a component yields an
//! immutable [`PlacerVersion`]: the compiled component, its pre-linked instance, its config
//! and a pool of warm instances. [`PlacerVersion::place`] checks an instance out of the
//! pool, tells it about a new runner set if it has not seen it, calls `place` under the
//! epoch budget and memory cap, cleans the output and returns the instance. A fault (trap,
//! timeout, memory cap) drops the instance and falls back to the native naive order (or
//! rejects the call when configured so); five faults in a row quarantine the version.
//!
//! This module is near the bottom of the host: it uses no other module of the crate but
//! the plain [`crate::backoff`] and [`crate::throttle`], and `shard` for the counters every
//! call writes.
//!
//! # Layout
//! - `contract`: the contracts a component may implement (0.4, and 0.3, 0.2 and 0.1
//!   adapted) and the host's [`RunnerLoad`].
//! - `engine`: what every version shares: engine, [`SandboxLimits`], deadline watchdog,
//!   [`PlacerObserver`].
//! - `runtime`: [`PlacerRuntime`]: the linker, the compiled-component cache, loading and
//!   world checks.
//! - `version`: [`PlacerVersion`], the instance pool and the placement call.
//! - `sandbox`: per-instance host state: locked-down WASI, memory limiter, guest logs.
//! - `fault`: fault kinds and quarantine.
//! - `order`: output sanitising and the native fallback order.
//! - `native`: the built-ins' algorithms without the sandbox (`serve --native-placement`).
//! - `check`: validation with sample calls (`placerd check`, reload).
//! - `builtin`: the embedded built-in placers.

mod builtin;
mod cache;
mod check;
mod contract;
mod engine;
mod error;
mod fault;
mod native;
mod order;
mod runtime;
mod sandbox;
mod version;

pub use builtin::{BUILTINS, builtin};
pub use cache::default_cache_dir;
pub use check::{BenchReport, CheckReport, sample_calls, sample_runners};
pub use contract::{Call, CallKind, Contract, LoadColumn, Runner, RunnerLoad, slot_hash};
pub(crate) use engine::hex;
pub use engine::{GuestTimer, PlacerObserver, Recycle, RecycleReason, SandboxLimits};
pub use error::{LoadError, PlaceError};
pub use fault::{FaultKind, FaultPolicy, OnFault};
pub use native::NativePlacer;
pub use order::{fallback_order, sanitize};
pub use runtime::{MAX_COMPONENT_BYTES, PlacerRuntime};
pub use version::{PlacedBy, Placement, PlacerSource, PlacerVersion};

/// One published membership of runners, as placers are told it (`set-runners`). Every
/// change gets a new, larger generation so placer instances know when to be told again.
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

    /// True when the set has no runners.
    pub fn is_empty(&self) -> bool {
        self.runners.is_empty()
    }
}

/// Orders runners for a call: a placer version (Wasm), a built-in's native twin, or a fake
/// in tests. The placement loop knows only this.
pub trait Order: Send + Sync {
    /// Indices into `set`, most preferred first.
    ///
    /// # Errors
    /// [`PlaceError`] when the placer faulted and the policy rejects.
    fn order(&self, call: &Call, set: &RunnerSet, loads: &[RunnerLoad]) -> Result<Vec<u32>, PlaceError>;
}
