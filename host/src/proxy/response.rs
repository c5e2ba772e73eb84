//! Step three of a call: the runner's response (or the error) becomes the client's
//! response, and the call is logged (access log, `--record-trace`).

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use super::request::ClientError;
use crate::lifecycle::{CallError, Outcome};
use crate::placer::{Call, CallKind};
use crate::runner::RunnerBody;

/// The response body type of the proxy and the admin API.
pub type ProxyBody = BoxBody<Bytes, BodyError>;

/// Why a response body stopped short (the runner's connection broke mid-body).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

const FN_CALL_ID: HeaderName = HeaderName::from_static("fn-call-id");
const FN_PLACER: HeaderName = HeaderName::from_static("fn-placer");

/// A JSON response with `status`.
pub fn json(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A JSON error `{"message": ...}` with `status`.
pub fn json_error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    json(status, serde_json::json!({ "message": message }).to_string())
}

/// The answer to a request placerd will not place: its JSON error, `Retry-After` when
/// retrying soon may work, and `Connection: close` when the body was not read whole.
pub(crate) fn client_error(e: &ClientError) -> Response<ProxyBody> {
    let mut r = json_error(e.status(), &e.to_string());
    if matches!(e, ClientError::MethodNotAllowed) {
        r.headers_mut().insert(hyper::header::ALLOW, HeaderValue::from_static("POST"));
    }
    if matches!(e, ClientError::Overloaded) {
        r.headers_mut().insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if e.closes_connection() {
        r.headers_mut().insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// The runner's response as the proxy answers it (a small body of known length was read
/// whole by the runner client; others stream).
pub(crate) fn boxed(response: Response<RunnerBody>) -> Response<ProxyBody> {
    response.map(|body| body.map_err(BodyError::from).boxed())
}

/// The client's response for a placed or failed call: the runner's response with `Fn-Call-Id` and `Fn-Placer` (`placer`); a detached call the
/// runner accepted becomes `202 {"call_id"}`; an error becomes its JSON error.
pub(crate) fn shape(
    result: Result<Response<ProxyBody>, CallError>,
    call: &Call,
    call_id: &HeaderValue,
    placer: &str,
) -> Response<ProxyBody> {
    let mut response = match result {
        Ok(response) => {
            // `http1` left the runner's hop-by-hop headers out when it parsed the head.
            let (mut head, body) = response.into_parts();
            if let Some(v) = placer_value(placer) {
                head.headers.insert(FN_PLACER, v);
            }
            if call.kind == CallKind::Detached && head.status == StatusCode::ACCEPTED {
                drop(body);
                json(StatusCode::ACCEPTED, serde_json::json!({ "call_id": call.id }).to_string())
            } else {
                Response::from_parts(head, body)
            }
        }
        Err(e) => json_error(e.status(), &e.client_message()),
    };
    response.headers_mut().insert(FN_CALL_ID, call_id.clone());
    response
}

/// `placer` as a header value; the last one is kept per thread, so a route's placer is
/// not copied into a new value on every call.
fn placer_value(placer: &str) -> Option<HeaderValue> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<HeaderValue>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some(value) if value.as_bytes() == placer.as_bytes() => Some(value.clone()),
        _ => {
            let value = HeaderValue::from_str(placer).ok()?;
            *last = Some(value.clone());
            Some(value)
        }
    })
}

/// `--record-trace`: one JSON line per call (call fields, runner set generation, chosen
/// runner, outcome, status; never bodies), for `placerd simulate --trace`.
#[derive(Debug)]
pub(crate) struct Trace(Mutex<std::io::BufWriter<std::fs::File>>);

impl Trace {
    /// Creates (truncates) `path`.
    ///
    /// # Errors
    /// The file cannot be created.
    pub(crate) fn create(path: &std::path::Path) -> std::io::Result<Self> {
        Ok(Trace(Mutex::new(std::io::BufWriter::new(std::fs::File::create(path)?))))
    }

    /// Writes the line of one call.
    pub(crate) fn write<T>(&self, call: &Call, placer: &str, outcome: &Outcome<T>, status: u16) {
        let line = serde_json::json!({
            "call_id": call.id,
            "app_id": call.app_id,
            "fn_id": call.fn_id,
            "slot_key": call.slot_key,
            "kind": match call.kind { CallKind::Sync => "sync", CallKind::Detached => "detached" },
            "seq": call.seq,
            "extensions": call.extensions,
            "placer": placer,
            "generation": outcome.generation,
            "runner": outcome.runner,
            "attempts": outcome.attempts,
            "outcome": match &outcome.result { Ok(_) => "placed".to_string(), Err(e) => e.to_string() },
            "placement_ms": outcome.placement_time.as_secs_f64() * 1e3,
            "status": status,
        });
        if let Ok(mut w) = self.0.lock()
            && writeln!(w, "{line}").and_then(|()| w.flush()).is_err()
        {
            tracing::warn!("could not write the call trace");
        }
    }
}

/// What the access log says of a request, besides the call and its outcome.
#[derive(Debug)]
pub(crate) struct Access<'a> {
    /// The request's method.
    pub(crate) method: &'a str,
    /// The request's path.
    pub(crate) path: &'a str,
    /// The placer that ordered the runners.
    pub(crate) placer: &'a str,
    /// The status the client got.
    pub(crate) status: u16,
    /// From the request's arrival to its response.
    pub(crate) total: Duration,
}

/// The access log line of one answered call.
pub(crate) fn log_access<T>(call: &Call, access: &Access<'_>, outcome: &Outcome<T>) {
    let Access { method, path, placer, status, total } = access;
    tracing::info!(
        target: "placerd::access",
        call_id = %call.id, method, path, status, placer, attempts = outcome.attempts, busy = outcome.busy,
        runner = outcome.runner.as_deref().unwrap_or("-"),
        placement_ms = outcome.placement_time.as_secs_f64() * 1e3, total_ms = total.as_secs_f64() * 1e3,
        "call"
    );
}
