//! The client-facing HTTP server (DESIGN §7): request → call → placement → runner response.
//!
//! Routes: `POST /invoke/{fn_id}` and `/t/{app}/{path...}` (fn id `{app}/{first segment}`);
//! `Fn-App-Id` / `Fn-Fn-Id` override; anything else is a JSON 404. The body is buffered up
//! to `max_body_bytes` (413 above, no runner contacted), hop-by-hop headers are stripped
//! both ways, `Fn-*` headers are added, and the runner's response streams back. If the
//! client goes away, hyper drops the call's future: placement stops and no further runner
//! is tried (logged as 499).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;

use arc_swap::ArcSwap;

use tracing::Instrument;

use crate::admin::metrics::Metrics;
use crate::config::{Config, Route, placer_for};
use crate::lifecycle::RunnerPool;
use crate::lifecycle::{self, Timing};
use crate::placer::{Call, CallKind, NativePlacer, PlacerSource};
use crate::reload::Registry;
use crate::runner::{Forward, StaticPool};

/// Largest total size of request headers forwarded to a runner; above it, 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The response body type of the proxy.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
/// Names, not strings, so removing them does not parse each name on every call.
const HOP_BY_HOP: [HeaderName; 8] = [
    HeaderName::from_static("connection"),
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-authenticate"),
    HeaderName::from_static("proxy-authorization"),
    HeaderName::from_static("te"),
    HeaderName::from_static("trailer"),
    HeaderName::from_static("transfer-encoding"),
    HeaderName::from_static("upgrade"),
];

/// Everything a request needs, shared by all connections.
#[derive(Debug)]
pub struct Proxy {
    /// Validated config.
    pub config: Arc<Config>,
    /// The runners.
    pub pool: Arc<StaticPool>,
    /// The placers.
    pub placers: Arc<Registry>,
    /// `[[routes]]`, replaced whole by `PUT /admin/routes`.
    pub routes: ArcSwap<Vec<Route>>,
    /// Metrics, recorded per call.
    pub metrics: Arc<Metrics>,
    /// `--record-trace`: where each call's JSON line goes.
    trace: Option<std::sync::Mutex<std::io::BufWriter<std::fs::File>>>,
    /// `--native-placement`: the built-ins' native twins by placer name.
    native: HashMap<String, NativePlacer>,
    seq: AtomicU64,
}

impl Proxy {
    /// A proxy over `pool` with the placers of `placers`.
    ///
    /// # Errors
    /// The trace file (`record_trace`) cannot be created.
    pub fn new(
        config: Arc<Config>,
        pool: Arc<StaticPool>,
        placers: Arc<Registry>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let routes = ArcSwap::from_pointee(config.routes.clone());
        let trace = match &config.record_trace {
            Some(path) => Some(std::sync::Mutex::new(std::io::BufWriter::new(std::fs::File::create(path)?))),
            None => None,
        };
        let mut native = HashMap::new();
        if config.native_placement {
            for info in placers.infos() {
                let config = config.placer_config.get(&info.name).map_or(&[][..], Vec::as_slice);
                match NativePlacer::builtin(&info.name, config) {
                    Ok(Some(placer)) => {
                        native.insert(info.name.clone(), placer);
                    }
                    Ok(None) => {}
                    Err(e) => return Err(std::io::Error::other(format!("placer `{}`: {e}", info.name))),
                }
            }
            tracing::warn!(placers = ?native.keys().collect::<Vec<_>>(), "--native-placement: built-in placers run natively, outside the sandbox");
        }
        Ok(Proxy { config, pool, placers, routes, metrics, trace, native, seq: AtomicU64::new(0) })
    }

    /// The trace line of one call (`--record-trace`): call fields, the runner set
    /// generation, the chosen runner and the outcome; never bodies. `None` when not tracing.
    fn trace_line<T>(
        &self,
        call: &Call,
        placer: &str,
        outcome: &lifecycle::Outcome<T>,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        self.trace.as_ref()?;
        let generation = self.pool.snapshot().map_or(0, |set| set.generation);
        let line = serde_json::json!({
            "call_id": call.id,
            "app_id": call.app_id,
            "fn_id": call.fn_id,
            "slot_key": call.slot_key,
            "kind": match call.kind { CallKind::Sync => "sync", CallKind::Detached => "detached" },
            "seq": call.seq,
            "extensions": call.extensions,
            "placer": placer,
            "generation": generation,
            "runner": outcome.runner,
            "attempts": outcome.attempts,
            "outcome": match &outcome.result { Ok(_) => "placed".to_string(), Err(e) => e.to_string() },
            "placement_ms": outcome.placement_time.as_secs_f64() * 1e3,
        });
        match line {
            serde_json::Value::Object(map) => Some(map),
            _ => None,
        }
    }

    fn write_trace(&self, mut line: serde_json::Map<String, serde_json::Value>, status: u16) {
        let Some(trace) = &self.trace else { return };
        line.insert("status".into(), status.into());
        if let Ok(mut w) = trace.lock() {
            use std::io::Write;
            if writeln!(w, "{}", serde_json::Value::Object(line)).and_then(|()| w.flush()).is_err() {
                tracing::warn!("could not write the call trace");
            }
        }
    }

    /// Handles one client request.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<ProxyBody>, hyper::Error> {
        let mut guard = CancelGuard {
            metrics: self.metrics.clone(),
            method: req.method().clone(),
            started: Instant::now(),
            call_id: None,
            done: false,
        };
        let response = self.call(req, &mut guard).await;
        guard.done = true;
        if let Ok(r) = &response {
            self.metrics.record_status(r.status().as_u16());
        }
        response
    }

    async fn call(&self, req: Request<Incoming>, guard: &mut CancelGuard) -> Result<Response<ProxyBody>, hyper::Error> {
        let started = guard.started;
        let Some((app_id, fn_id)) = route(&req) else {
            let status =
                if is_known_path(req.uri().path()) { StatusCode::METHOD_NOT_ALLOWED } else { StatusCode::NOT_FOUND };
            let message = if status == StatusCode::NOT_FOUND { "no such route" } else { "method not allowed" };
            return Ok(json_error(status, message));
        };
        let head_bytes: usize = req.headers().iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
        if head_bytes > MAX_HEADER_BYTES {
            return Ok(json_error(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                &format!("request headers over {MAX_HEADER_BYTES} bytes"),
            ));
        }
        let (parts, body) = req.into_parts();
        let limit = self.config.max_body_bytes;
        let declared =
            parts.headers.get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Ok(json_error(StatusCode::PAYLOAD_TOO_LARGE, &format!("request body over {limit} bytes")));
        }
        let body = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                return Ok(json_error(StatusCode::PAYLOAD_TOO_LARGE, &format!("request body over {limit} bytes")));
            }
            Err(e) => return Ok(json_error(StatusCode::BAD_REQUEST, &format!("could not read the request body: {e}"))),
        };

        if let Some(name) = non_utf8_fn_header(&parts.headers) {
            return Ok(json_error(StatusCode::BAD_REQUEST, &format!("header {name} is not valid UTF-8")));
        }
        let kind = match parts.headers.get("fn-call-type").map(HeaderValue::as_bytes) {
            Some(b"detached") => CallKind::Detached,
            _ => CallKind::Sync,
        };
        let call = Call {
            id: ulid(),
            slot_key: header_str(&parts.headers, "fn-slot-hash").unwrap_or(&fn_id).to_string(),
            app_id,
            fn_id,
            kind,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            random: fastrand::u64(..),
            extensions: extensions(&parts.headers),
        };
        let placer_name =
            placer_for(&self.routes.load(), &self.config.default_placer, &call.app_id, &call.fn_id).to_string();
        let Some(placer) = self.placers.get(&placer_name).or_else(|| {
            tracing::warn!(placer = %placer_name, "route names an unknown placer; using the default");
            self.placers.get(&self.config.default_placer)
        }) else {
            return Ok(json_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("no placer named `{placer_name}`")));
        };
        let timeout = match kind {
            CallKind::Detached => self.config.detached_placer_timeout,
            CallKind::Sync => self.config.placer_timeout,
        };
        let forward = Forward {
            method: parts.method.clone(),
            path_and_query: parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
            headers: forward_headers(&parts.headers, &call, timeout),
            body,
        };
        let timing = Timing {
            retry_all_delay: self.config.retry_all_delay,
            placer_timeout: timeout,
            detached: kind == CallKind::Detached,
        };

        let span = tracing::info_span!(
            "call",
            call_id = %call.id,
            app = %call.app_id,
            r#fn = %call.fn_id,
            placer = %placer_name,
            sha256 = &placer.sha256()[..12],
            attempts = tracing::field::Empty,
            runner = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        guard.call_id = Some(call.id.clone());
        let cancel = CancellationToken::new();
        // Empty unless `--native-placement`: no lookup on the normal path.
        let native = if self.native.is_empty() {
            None
        } else {
            self.native.get(placer.name()).filter(|_| matches!(placer.source(), PlacerSource::Builtin))
        };
        let outcome = match native {
            None => {
                lifecycle::place(&*self.pool, &*self.pool, &*placer, &call, &forward, timing, &cancel)
                    .instrument(span.clone())
                    .await
            }
            Some(native) => {
                lifecycle::place(&*self.pool, &*self.pool, native, &call, &forward, timing, &cancel)
                    .instrument(span.clone())
                    .await
            }
        };
        self.metrics.record_outcome(&outcome);
        span.record("attempts", outcome.attempts);
        span.record("runner", outcome.runner.as_deref().unwrap_or("-"));
        match &outcome.result {
            Ok(_) => span.record("outcome", "placed"),
            Err(e) => span.record("outcome", tracing::field::display(e)),
        };
        let trace_line = self.trace_line(&call, &placer_name, &outcome);
        let response = match outcome.result {
            Ok(response) => {
                let (mut head, body) = response.into_parts();
                strip_hop_by_hop(&mut head.headers);
                if let Ok(v) = HeaderValue::from_str(&call.id) {
                    head.headers.insert(HeaderName::from_static("fn-call-id"), v);
                }
                if let Ok(v) = HeaderValue::from_str(placer.label()) {
                    head.headers.insert(HeaderName::from_static("fn-placer"), v);
                }
                if kind == CallKind::Detached && head.status == StatusCode::ACCEPTED {
                    drop(body);
                    let mut r = json(StatusCode::ACCEPTED, serde_json::json!({ "call_id": call.id }).to_string());
                    r.headers_mut().insert(HeaderName::from_static("fn-call-id"), head.headers["fn-call-id"].clone());
                    r
                } else {
                    Response::from_parts(head, body.boxed())
                }
            }
            Err(e) => {
                let mut r = json_error(e.status(), &e.to_string());
                if let Ok(v) = HeaderValue::from_str(&call.id) {
                    r.headers_mut().insert(HeaderName::from_static("fn-call-id"), v);
                }
                r
            }
        };
        if let Some(line) = trace_line {
            self.write_trace(line, response.status().as_u16());
        }
        let _entered = span.enter();
        tracing::info!(
            target: "placerd::access",
            call_id = %call.id, method = %parts.method, path = %parts.uri.path(), status = response.status().as_u16(),
            placer = %placer_name, attempts = outcome.attempts, busy = outcome.busy, runner = outcome.runner.as_deref().unwrap_or("-"),
            placement_ms = outcome.placement_time.as_secs_f64() * 1e3, total_ms = started.elapsed().as_secs_f64() * 1e3,
            "call"
        );
        Ok(response)
    }
}

/// Logs and counts a 499 if the client goes away before the call is answered (hyper then
/// drops the call's future, which stops placement: no further runner is tried).
struct CancelGuard {
    metrics: Arc<Metrics>,
    method: Method,
    started: Instant,
    call_id: Option<String>,
    done: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.done {
            self.metrics.record_cancelled();
            tracing::info!(target: "placerd::access", call_id = self.call_id.as_deref().unwrap_or("-"), method = %self.method,
                status = 499u16, total_ms = self.started.elapsed().as_secs_f64() * 1e3, "call cancelled by the client");
        }
    }
}

/// The first `Fn-*` header whose value is not UTF-8 (placerd reads those as text).
fn non_utf8_fn_header(headers: &HeaderMap) -> Option<String> {
    headers
        .iter()
        .find(|(name, value)| name.as_str().starts_with("fn-") && value.to_str().is_err())
        .map(|(name, _)| name.as_str().to_string())
}

/// `(app_id, fn_id)` for a routable request.
fn route(req: &Request<Incoming>) -> Option<(String, String)> {
    let path = req.uri().path();
    let (mut app, mut fn_id) = if let Some(fn_id) = path.strip_prefix("/invoke/") {
        if req.method() != Method::POST || fn_id.is_empty() || fn_id.contains('/') {
            return None;
        }
        (String::new(), fn_id.to_string())
    } else if let Some(rest) = path.strip_prefix("/t/") {
        let mut segments = rest.splitn(3, '/');
        let app = segments.next().filter(|a| !a.is_empty())?;
        let first = segments.next().unwrap_or("");
        (app.to_string(), format!("{app}/{first}"))
    } else {
        return None;
    };
    if let Some(a) = header_str(req.headers(), "fn-app-id") {
        app = a.to_string();
    }
    if let Some(f) = header_str(req.headers(), "fn-fn-id") {
        fn_id = f.to_string();
    }
    Some((app, fn_id))
}

fn is_known_path(path: &str) -> bool {
    path.starts_with("/invoke/")
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).filter(|s| !s.is_empty())
}

/// `Fn-Ext-Key: value` headers become extensions `("key", "value")`.
fn extensions(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            let key = name.as_str().strip_prefix("fn-ext-")?;
            Some((key.to_string(), value.to_str().ok()?.to_string()))
        })
        .collect()
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

fn forward_headers(original: &HeaderMap, call: &Call, timeout: Duration) -> HeaderMap {
    let mut headers = original.clone();
    strip_hop_by_hop(&mut headers);
    headers.remove(hyper::header::CONTENT_LENGTH);
    let kind = match call.kind {
        CallKind::Sync => "sync",
        CallKind::Detached => "detached",
    };
    let deadline = humantime::format_rfc3339_millis(SystemTime::now() + timeout).to_string();
    // Static names: inserting by `&str` would parse each name on every call.
    for (name, value) in [
        (HeaderName::from_static("fn-call-id"), call.id.as_str()),
        (HeaderName::from_static("fn-app-id"), &call.app_id),
        (HeaderName::from_static("fn-fn-id"), &call.fn_id),
        (HeaderName::from_static("fn-call-type"), kind),
        (HeaderName::from_static("fn-deadline"), &deadline),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
    headers
}

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

/// A ULID: 48-bit millisecond time + 80 random bits, Crockford base32, 26 characters.
fn ulid() -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let value = (ms & ((1 << 48) - 1)) << 80 | (fastrand::u128(..) & ((1 << 80) - 1));
    (0..26).rev().map(|i| ALPHABET[((value >> (i * 5)) & 31) as usize] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulids_are_26_chars_and_sort_by_time() {
        let a = ulid();
        std::thread::sleep(Duration::from_millis(2));
        let b = ulid();
        assert_eq!(a.len(), 26);
        assert!(a < b, "{a} {b}");
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
