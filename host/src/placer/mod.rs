//! The placer runtime: placer components loaded into one wasmtime engine and run in a
//! sandbox (DESIGN §5).
//!
//! A [`PlacerRuntime`] owns the engine, the linker and the 1 ms epoch ticker. Loading a
//! component yields an immutable [`PlacerVersion`]: the compiled component, its pre-linked
//! instance, its config and a pool of warm instances. [`PlacerVersion::place`] checks an
//! instance out of the pool, tells it about a new runner set if it has not seen it, calls
//! `place` under the epoch budget and memory cap, cleans the output and returns the
//! instance. A fault (trap, timeout, memory cap) drops the instance and falls back to the
//! native naive order (or rejects the call when configured so); five faults in a row
//! quarantine the version.
//!
//! # Layout
//! - `runtime`: engine, linker, ticker, [`SandboxLimits`]; loading and world checks.
//! - `version`: [`PlacerVersion`], the instance pool and the placement call.
//! - `sandbox`: per-instance host state: locked-down WASI, memory limiter, guest logs.
//! - `fault`: fault kinds and the quarantine state machine.
//! - `order`: output sanitising and the native fallback order.
//! - `native`: the built-ins' algorithms without the sandbox (`serve --native-placement`).
//! - `check`: validation with sample calls (`placerd check`, reload).
//! - `builtin`: the embedded built-in placers.

mod bindings {
    #![allow(missing_docs, missing_debug_implementations, unreachable_pub)]
    wasmtime::component::bindgen!({ world: "placer", path: "../wit" });
}

mod builtin;
mod check;
mod error;
mod fault;
mod native;
mod order;
mod runtime;
mod sandbox;
mod version;

pub use bindings::placerd::placer::types::{Call, CallKind, Runner, RunnerLoad};
pub use builtin::{BUILTINS, builtin};
pub use check::{CheckReport, sample_calls, sample_runners};
pub use error::{LoadError, PlaceError};
pub use fault::{FaultKind, FaultPolicy, OnFault};
pub use native::NativePlacer;
pub use order::{fallback_order, sanitize};
pub(crate) use runtime::hex;
pub use runtime::{PlacerObserver, PlacerRuntime, SandboxLimits};
pub use version::{PlacedBy, Placement, PlacerSource, PlacerVersion};
