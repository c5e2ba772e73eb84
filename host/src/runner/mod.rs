//! Runners: the servers that execute calls. The pool of them, the client that sends a call
//! to one, where their membership comes from, and the reference runner.
//!
//! A pool publishes its membership as an immutable [`Membership`]: the [`RunnerSet`] the
//! placers are told and one *handle* per runner, in the same order. The placement loop
//! takes one membership per pass and gives the handle of the runner it tries to the client
//! ([`TryExec`]): no second lookup by index or address. Every attempt ends as an
//! [`Attempt`]: *not placed* only when the runner provably did not start the call.
//!
//! # Layout
//! - `pool`: [`DynamicPool`]: the membership (swapped whole by discovery) and each
//!   runner's live state (what placers and operators see) and ejection.
//! - `client`: [`RunnerClient`]: TryExec over HTTP/1.1 (the crate's `http1` module) on a
//!   runner's handle, the connection driven by the calling task, with read and write
//!   deadlines.
//! - `idle`: the client's idle keep-alive connections, per worker and runner.
//! - `discovery`: the runner file and DNS sources.
//! - `status`: `GET /v1/status` polling.
//! - `reference`: `placerd runner`, the reference runner.

use std::future::Future;
use std::sync::Arc;

use crate::placer::{RunnerLoad, RunnerSet};

pub mod client;
pub mod discovery;
mod idle;
pub mod pool;
pub mod reference;
pub mod status;

pub use client::{BUSY_HEADER, Forward, RunnerBody, RunnerClient, RunnerTimeouts};
pub use pool::{Discovery, DynamicPool, RunnerState};

/// One membership of a pool: the set the placers see and one handle per runner, in the
/// same order. Immutable: a change publishes a new one.
#[derive(Debug)]
pub struct Membership<H = Arc<RunnerState>> {
    /// What placers are told (`set-runners`).
    pub set: Arc<RunnerSet>,
    /// One handle per runner of `set`, same order: what the client sends calls to.
    pub handles: Vec<H>,
}

/// An error reported by a runner pool instead of a membership.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The caller's fault (e.g. no runners configured): fail fast, 502.
    #[error("{0}")]
    User(String),
    /// The pool's fault (discovery has found nothing yet): keep trying until the deadline.
    #[error("{0}")]
    Service(String),
}

/// A runner pool as the placement loop sees it.
pub trait RunnerPool: Send + Sync {
    /// The handle of one runner, handed to the client.
    type Handle: Send + Sync;
    /// The current membership. `Err` means "no runners, and here is why" (Fn's pool error).
    ///
    /// # Errors
    /// [`PoolError::User`] fails the call fast (502); [`PoolError::Service`] is retried
    /// until the placer deadline and then returned.
    fn snapshot(&self) -> Result<Arc<Membership<Self::Handle>>, PoolError>;
    /// One load per runner of `membership`, in order.
    fn loads(&self, membership: &Membership<Self::Handle>) -> Vec<RunnerLoad>;
}

/// Why an attempt did not place the call. Each variant is a case where the runner provably
/// did not start it: only these allow trying another runner.
#[derive(Debug, thiserror::Error)]
pub enum NotPlaced {
    /// The TCP connect was refused or failed, or its TLS handshake did: nothing of the
    /// call was written.
    #[error("connect to {runner}")]
    Connect {
        /// The runner's address.
        runner: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The TCP connect did not finish within `connect_timeout_ms`: nothing was written.
    #[error("connect to {runner} timed out")]
    ConnectTimeout {
        /// The runner's address.
        runner: String,
    },
    /// A fresh connection failed before one byte of the request was written.
    #[error("{runner}: connection closed before the request was sent")]
    Unsent {
        /// The runner's address.
        runner: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The runner refused: `503` + `Fn-Runner-Busy: 1`, before reading the body.
    #[error("runner busy")]
    Busy,
    /// The runner left the pool after this placement pass began.
    #[error("runner left the pool")]
    Closed,
}

/// A call that a runner took and then failed (connection lost, malformed response): never
/// sent anywhere else.
#[derive(Debug, thiserror::Error)]
#[error("{runner}: {error}")]
pub struct RunnerFailed {
    /// The runner's address.
    pub runner: String,
    /// What went wrong (shown in the message, so not repeated as a source).
    pub error: std::io::Error,
}

impl RunnerFailed {
    /// True when the runner kept silent past its read timeout, or took none of the request
    /// past its write timeout.
    pub fn timed_out(&self) -> bool {
        self.error.kind() == std::io::ErrorKind::TimedOut
    }
}

/// The result of one TryExec.
#[derive(Debug)]
pub enum Attempt<T> {
    /// Provably not started: the loop may try another runner.
    NotPlaced(NotPlaced),
    /// Started (or possibly started): never sent anywhere else. `Err` is a failure after
    /// commit and becomes a 502.
    Committed(Result<T, RunnerFailed>),
}

/// Sends a call to one runner, given the handle its pool handed out.
pub trait TryExec<C: ?Sized, H>: Send + Sync {
    /// What a placed call yields (the runner's response).
    type Output: Send;
    /// Tries `call` on the runner behind `handle`.
    fn try_exec(&self, handle: &H, call: &C) -> impl Future<Output = Attempt<Self::Output>> + Send;
}
