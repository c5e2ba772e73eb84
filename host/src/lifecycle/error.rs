//! Why a call was not answered by a runner, and the HTTP status for each (DESIGN §4).

use hyper::StatusCode;

use crate::placer::PlaceError;

/// An error reported by a runner pool instead of a runner set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The caller's fault (e.g. no runners for this app): fail fast, 502.
    #[error("{0}")]
    User(String),
    /// The pool's fault (discovery failing): keep trying until the deadline.
    #[error("{0}")]
    Service(String),
}

/// How a call ended without a runner's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// The client went away; no further runner was tried (logged as 499).
    #[error("client cancelled the call")]
    Cancelled,
    /// The placer faulted and `on_placer_fault = "reject"`: 500.
    #[error("{0}")]
    Placer(PlaceError),
    /// The call was committed to a runner and then failed: 502. Never re-sent.
    #[error("runner failed after accepting the call: {0}")]
    Runner(String),
}

impl CallError {
    /// The HTTP status the client gets (499 is only logged: the client is gone).
    pub fn status(&self) -> StatusCode {
        match self {
            CallError::TooBusy => StatusCode::SERVICE_UNAVAILABLE,
            CallError::ReservationFailure | CallError::Placer(_) => StatusCode::INTERNAL_SERVER_ERROR,
            CallError::Pool(PoolError::User(_)) | CallError::Runner(_) => StatusCode::BAD_GATEWAY,
            CallError::Pool(PoolError::Service(_)) => StatusCode::SERVICE_UNAVAILABLE,
            CallError::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        }
    }
}
