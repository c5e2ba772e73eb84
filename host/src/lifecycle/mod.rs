//! The placement loop: Fn's placer tracker.
//!
//! For one call: take a membership of the pool and its loads, ask the placer for an order,
//! try the runners in that order (through the handles of that membership) until one is
//! *placed*; when all refused, fail fast on an empty set with a user error, else wait
//! `retry_all_delay` (with jitter) and ask again, until the placer deadline. The placer
//! deadline stops placement only: a committed attempt runs on. A call is retried on another
//! runner only when the attempt was provably not started ([`Attempt::NotPlaced`]).
//!
//! A client that goes away drops the call's future, and with it this loop: no further
//! runner is tried (the proxy counts it).
//!
//! The loop is generic over [`RunnerPool`], [`TryExec`] and [`Order`] so the Fn test
//! scenarios run against fakes on tokio's paused clock.

mod error;

use std::time::Duration;

use tokio::time::Instant;

pub use error::CallError;

use crate::placer::{Call, Order};
use crate::runner::{Attempt, NotPlaced, PoolError, RunnerPool, TryExec};

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
    /// Attempts that failed before sending (connect, handshake, unsent, bad request).
    pub connect_errors: u32,
    /// The runner that took the call.
    pub runner: Option<String>,
    /// Generation of the runner set the call was placed in (0 if never placed).
    pub generation: u64,
    /// Time spent placing, excluding the committed attempt (Fn's `lb_placer_latency`).
    pub placement_time: Duration,
    /// Snapshots that returned a pool error (Fn's `lb_placer_rp_error_count`).
    pub pool_errors: u32,
    /// Passes that found no runners (Fn's `lb_placer_rp_empty_count`).
    pub empty_passes: u32,
    /// The placer deadline passed before the call was placed.
    pub timed_out: bool,
}

/// Runs the placement loop for one call: `placer` orders the runners of `pool`, `client`
/// sends `payload` to them.
pub async fn place<C, X, P, O>(
    pool: &P,
    client: &X,
    placer: &O,
    call: &Call,
    payload: &C,
    timing: Timing,
) -> Outcome<X::Output>
where
    C: ?Sized + Sync,
    P: RunnerPool + ?Sized,
    X: TryExec<C, P::Handle>,
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
        generation: 0,
        placement_time: Duration::ZERO,
        pool_errors: 0,
        empty_passes: 0,
        timed_out: false,
    };
    let mut last_pool_error = None;
    // The first pass checks the deadline against `started`, just read.
    let mut clock = Some(started);
    'placement: loop {
        if clock.take().unwrap_or_else(Instant::now) >= deadline {
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
            Ok(membership) if membership.set.is_empty() => out.empty_passes += 1,
            Ok(membership) => {
                let loads = pool.loads(&membership);
                let order = match placer.order(call, &membership.set, &loads) {
                    Ok(order) => order,
                    Err(e) => {
                        out.result = Err(CallError::Placer(e));
                        break;
                    }
                };
                for index in order {
                    let index = index as usize;
                    let (Some(runner), Some(handle)) =
                        (membership.set.runners.get(index), membership.handles.get(index))
                    else {
                        continue;
                    };
                    let attempt_started = Instant::now();
                    if attempt_started >= deadline {
                        out.result = Err(timed_out(timing, last_pool_error));
                        out.timed_out = true;
                        break 'placement;
                    }
                    out.attempts += 1;
                    match client.try_exec(handle, payload).await {
                        Attempt::NotPlaced(NotPlaced::Busy) => out.busy += 1,
                        Attempt::NotPlaced(NotPlaced::Closed) => {}
                        Attempt::NotPlaced(e) => {
                            out.connect_errors += 1;
                            tracing::debug!(runner = %runner.address, error = &e as &dyn std::error::Error, "runner not reached; trying the next");
                        }
                        Attempt::Committed(result) => {
                            out.placement_time = attempt_started.duration_since(started);
                            out.runner = Some(runner.address.clone());
                            out.generation = membership.set.generation;
                            out.result = result.map_err(CallError::Runner);
                            return out;
                        }
                    }
                }
            }
        }
        // Everything refused (or nothing to try): wait, but never past the deadline.
        let jitter = 0.8 + fastrand::f64() * 0.4;
        let wake = (Instant::now() + timing.retry_all_delay.mul_f64(jitter)).min(deadline);
        tokio::time::sleep_until(wake).await;
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
