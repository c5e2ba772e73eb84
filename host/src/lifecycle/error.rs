//! Why a call was not answered by a runner, and the HTTP status for each.

use hyper::StatusCode;

use crate::placer::PlaceError;
use crate::runner::{PoolError, RunnerFailed};

/// How a call ended without a runner's answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The placer deadline passed with every runner refusing: 503.
    #[error("server too busy")]
    TooBusy,
    /// A detached call could not be placed in time: 500.
    #[error("service reservation failure")]
    ReservationFailure,
    /// The pool's error (user: fail fast; service: after the deadline).
    #[error("runner pool: {0}")]
    Pool(PoolError),
    /// The placer faulted and `on_placer_fault = "reject"`: 500.
    #[error("{0}")]
    Placer(PlaceError),
    /// The call was committed to a runner and then failed: 502, or 504 when the runner
    /// kept silent past its read timeout or took none of the request past its write
    /// timeout. Never re-sent.
    #[error("runner failed after accepting the call: {0}")]
    Runner(RunnerFailed),
}

/// Equal when they mean the same to the client: same variant, same message.
impl PartialEq for CallError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (CallError::Pool(a), CallError::Pool(b)) => a == b,
            (CallError::Placer(a), CallError::Placer(b)) => a == b,
            (CallError::Runner(a), CallError::Runner(b)) => a.to_string() == b.to_string(),
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

impl CallError {
    /// What the client is told: what happened, without runner addresses or the internal
    /// error (those are in the log line with the call id).
    pub fn client_message(&self) -> String {
        match self {
            CallError::Runner(failed) if failed.timed_out() => "the runner did not answer in time".to_string(),
            CallError::Runner(_) => "the runner failed after accepting the call".to_string(),
            other => other.to_string(),
        }
    }

    /// The HTTP status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            CallError::TooBusy => StatusCode::SERVICE_UNAVAILABLE,
            CallError::Runner(failed) if failed.timed_out() => StatusCode::GATEWAY_TIMEOUT,
            CallError::ReservationFailure | CallError::Placer(_) => StatusCode::INTERNAL_SERVER_ERROR,
            CallError::Pool(PoolError::User(_)) | CallError::Runner(_) => StatusCode::BAD_GATEWAY,
            CallError::Pool(PoolError::Service(_)) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}
