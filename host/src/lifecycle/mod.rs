//! The placement loop (DESIGN §4): Fn's placer tracker.
//!
//! For one call: take the runner set and loads, ask the placer for an order, try the
//! runners in that order until one is *placed*; when all refused, fail fast on an empty set
//! with a user error, else wait `retry_all_delay` (with jitter) and ask again, until the
//! placer deadline or the client's cancel. The placer deadline stops placement only: a
//! committed attempt runs on. A call is retried on another runner only when the attempt
//! was provably not started ([`Attempt::NotPlaced`]).
//!
//! The loop is generic over [`RunnerPool`], [`TryExec`] and [`Order`] so the Fn test
//! scenarios run against fakes on tokio's paused clock.

mod error;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use error::{CallError, PoolError};

use crate::placer::{Call, PlaceError, PlacerVersion, Runner, RunnerLoad};
use crate::runner::RunnerSet;

/// A runner pool as the loop sees it: its current membership and live loads.
pub trait RunnerPool: Send + Sync {
    /// The current set. `Err` means "no runners, and here is why" (Fn's pool error).
    ///
    /// # Errors
    /// [`PoolError::User`] fails the call fast (502); [`PoolError::Service`] is retried
    /// until the placer deadline and then returned.
    fn snapshot(&self) -> Result<Arc<RunnerSet>, PoolError>;
    /// One load per runner of `set`, in order.
    fn loads(&self, set: &RunnerSet) -> Vec<RunnerLoad>;
}

/// Why an attempt did not place the call. Only these allow trying another runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotPlaced {
    /// The connection failed before any byte of the request was written.
    Connect(String),
    /// The runner refused: `503` + `Fn-Runner-Busy: 1`, before reading the body.
    Busy,
    /// The runner is closed or ejected.
    Closed,
}

/// The result of one TryExec.
#[derive(Debug)]
pub enum Attempt<T> {
    /// Provably not started: the loop may try another runner.
    NotPlaced(NotPlaced),
    /// Started (or possibly started): never sent anywhere else. `Err` is a failure after
    /// commit and becomes a 502.
    Committed(Result<T, String>),
}

/// Sends a call to one runner.
pub trait TryExec<C: ?Sized>: Send + Sync {
    /// What a placed call yields (the runner's response).
    type Output: Send;
    /// Tries `call` on runner `index` of the set (`runner`).
    fn try_exec(&self, index: usize, runner: &Runner, call: &C) -> impl Future<Output = Attempt<Self::Output>> + Send;
}

/// Orders runners for a call: the placer (or a fake in tests).
pub trait Order: Send + Sync {
    /// Indices into `set`, most preferred first.
    ///
    /// # Errors
    /// [`PlaceError`] when the placer faulted and the policy rejects.
    fn order(&self, call: &Call, set: &RunnerSet, loads: &[RunnerLoad]) -> Result<Vec<u32>, PlaceError>;
}

impl Order for PlacerVersion {
    fn order(&self, call: &Call, set: &RunnerSet, loads: &[RunnerLoad]) -> Result<Vec<u32>, PlaceError> {
        self.place(call, set, loads).map(|p| p.order)
    }
}

/// Timing of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Wait after every runner in the order refused (`retry_all_delay_ms`), ±20% jitter.
    pub retry_all_delay: Duration,
    /// How long placement may take (`placer_timeout_ms`, or the detached one).
    pub placer_timeout: Duration,
    /// True for detached calls: the deadline then means "service reservation failure".
    pub detached: bool,
}

/// What the loop did, for logs and metrics.
#[derive(Debug)]
pub struct Outcome<T> {
    /// The runner's response, or why there is none.
    pub result: Result<T, CallError>,
    /// Runner attempts made (refused ones included).
    pub attempts: u32,
    /// Attempts refused as busy.
    pub busy: u32,
    /// Attempts that failed to connect.
    pub connect_errors: u32,
    /// The runner that took the call.
    pub runner: Option<String>,
    /// Time spent placing, excluding the committed attempt (Fn's `lb_placer_latency`).
    pub placement_time: Duration,
    /// Snapshots that returned a pool error (Fn's `lb_placer_rp_error_count`).
    pub pool_errors: u32,
    /// Passes that found no runners (Fn's `lb_placer_rp_empty_count`).
    pub empty_passes: u32,
    /// The placer deadline passed before the call was placed.
    pub timed_out: bool,
}

/// Runs the placement loop for one call.
pub async fn place<C, X, P, O>(
    pool: &P,
    exec: &X,
    placer: &O,
    call: &Call,
    payload: &C,
    timing: Timing,
    cancel: &CancellationToken,
) -> Outcome<X::Output>
where
    C: ?Sized + Sync,
    X: TryExec<C>,
    P: RunnerPool + ?Sized,
    O: Order + ?Sized,
{
    let started = Instant::now();
    let deadline = started + timing.placer_timeout;
    let mut out = Outcome {
        result: Err(CallError::TooBusy),
        attempts: 0,
        busy: 0,
        connect_errors: 0,
        runner: None,
        placement_time: Duration::ZERO,
        pool_errors: 0,
        empty_passes: 0,
        timed_out: false,
    };
    let mut last_pool_error = None;
    'placement: loop {
        if cancel.is_cancelled() {
            out.result = Err(CallError::Cancelled);
            break;
        }
        if Instant::now() >= deadline {
            out.result = Err(timed_out(timing, last_pool_error));
            out.timed_out = true;
            break;
        }
        match pool.snapshot() {
            Err(PoolError::User(msg)) => {
                out.pool_errors += 1;
                out.result = Err(CallError::Pool(PoolError::User(msg)));
                break;
            }
            Err(e) => {
                out.pool_errors += 1;
                out.empty_passes += 1;
                last_pool_error = Some(e);
            }
            Ok(set) if set.is_empty() => out.empty_passes += 1,
            Ok(set) => {
                let loads = pool.loads(&set);
                let order = match placer.order(call, &set, &loads) {
                    Ok(order) => order,
                    Err(e) => {
                        out.result = Err(CallError::Placer(e));
                        break;
                    }
                };
                for index in order {
                    let index = index as usize;
                    let Some(runner) = set.runners.get(index) else { continue };
                    if cancel.is_cancelled() {
                        out.result = Err(CallError::Cancelled);
                        break 'placement;
                    }
                    if Instant::now() >= deadline {
                        out.result = Err(timed_out(timing, last_pool_error));
                        out.timed_out = true;
                        break 'placement;
                    }
                    out.attempts += 1;
                    let attempt_started = Instant::now();
                    match exec.try_exec(index, runner, payload).await {
                        Attempt::NotPlaced(NotPlaced::Busy) => out.busy += 1,
                        Attempt::NotPlaced(NotPlaced::Connect(reason)) => {
                            out.connect_errors += 1;
                            tracing::debug!(runner = %runner.address, %reason, "runner connect failed; trying the next");
                        }
                        Attempt::NotPlaced(NotPlaced::Closed) => {}
                        Attempt::Committed(result) => {
                            out.placement_time = attempt_started.duration_since(started);
                            out.runner = Some(runner.address.clone());
                            out.result = result.map_err(CallError::Runner);
                            return out;
                        }
                    }
                }
            }
        }
        // Everything refused (or nothing to try): wait, but never past the deadline, and
        // wake at once on cancel.
        let jitter = 0.8 + fastrand::f64() * 0.4;
        let wake = (Instant::now() + timing.retry_all_delay.mul_f64(jitter)).min(deadline);
        tokio::select! {
            () = cancel.cancelled() => {
                out.result = Err(CallError::Cancelled);
                break;
            }
            () = tokio::time::sleep_until(wake) => {}
        }
    }
    out.placement_time = started.elapsed();
    out
}

fn timed_out(timing: Timing, last_pool_error: Option<PoolError>) -> CallError {
    match last_pool_error {
        Some(e) => CallError::Pool(e),
        None if timing.detached => CallError::ReservationFailure,
        None => CallError::TooBusy,
    }
}

#[cfg(test)]
mod tests;
