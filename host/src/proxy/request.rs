//! Step one of a call: the client's request becomes a [`Call`] for the placer and a
//! [`Forward`] for the runner. Pure functions (ids and the clock come in as arguments), so
//! every client error is unit-tested here.
//!
//! Routes: `POST /invoke/{fn_id}` and `/t/{app}/{path...}` (fn id `{app}/{first
//! segment}`); `Fn-App-Id` / `Fn-Fn-Id` override. Anything else is a 404.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode, Uri};

use super::budget::Held;
use super::conn::RequestBody;
use crate::http1::{BodyFraming, Joined, RequestHead};
use crate::lifecycle::Timing;
use crate::placer::{Call, CallKind};
use crate::runner::{Forward, RunnerTimeouts};

/// Largest total size of request headers forwarded to a runner; above it, 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

// The `Fn-*` headers placerd reads, by static name: looking up by `&str` would parse and
// hash the name on every call.
const FN_APP_ID: HeaderName = HeaderName::from_static("fn-app-id");
const FN_FN_ID: HeaderName = HeaderName::from_static("fn-fn-id");
const FN_CALL_TYPE: HeaderName = HeaderName::from_static("fn-call-type");
const FN_SLOT_HASH: HeaderName = HeaderName::from_static("fn-slot-hash");

/// A request placerd will not place, with the status the client gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No route matches the path: 404.
    #[error("no such route")]
    NoRoute,
    /// A path under `/invoke/` that is not `POST /invoke/{fn_id}`: 405.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The headers add up to more than [`MAX_HEADER_BYTES`]: 431.
    #[error("request headers over {MAX_HEADER_BYTES} bytes")]
    HeadersTooLarge,
    /// The body is (or says it is) larger than `max_body_bytes`: 413.
    #[error("request body over {limit} bytes")]
    BodyTooLarge {
        /// `max_body_bytes`.
        limit: usize,
    },
    /// The body could not be read (the client broke off, bad chunked encoding): 400.
    #[error("could not read the request body: {0}")]
    BadBody(String),
    /// An `Fn-*` header placerd reads as text is not UTF-8: 400.
    #[error("header {0} is not valid UTF-8")]
    NonUtf8Header(String),
    /// The path has a `.` or `..` segment (raw or percent-encoded): 400. Runners may
    /// resolve them differently from the route placerd matched.
    #[error("paths with `.` or `..` segments are not accepted")]
    DotSegment,
    /// The body did not arrive within `body_timeout_ms`: 408, and the connection closes.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(Duration),
    /// Holding this body would pass `max_buffered_bytes`: 503 with `Retry-After`.
    #[error("too many request bodies in flight; retry shortly")]
    Overloaded,
}

impl ClientError {
    /// The HTTP status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ClientError::NoRoute => StatusCode::NOT_FOUND,
            ClientError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ClientError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ClientError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ClientError::BadBody(_) | ClientError::NonUtf8Header(_) | ClientError::DotSegment => {
                StatusCode::BAD_REQUEST
            }
            ClientError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ClientError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// True when the connection closes after the answer: the body was not read whole, so
    /// the next bytes on it are not a request head.
    pub fn closes_connection(&self) -> bool {
        matches!(self, ClientError::BodyTimeout(_) | ClientError::Overloaded | ClientError::BodyTooLarge { .. })
    }
}

/// Which function a request calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// `Fn-App-Id`, or the app of a `/t/` path ("" for `/invoke/`).
    pub(crate) app_id: String,
    /// `Fn-Fn-Id`, or the fn id from the path.
    pub(crate) fn_id: String,
}

/// What the host gives a new call: its id, sequence number, random value and start time.
#[derive(Debug, Clone)]
pub(crate) struct CallIds {
    /// A ULID.
    pub(crate) id: String,
    /// Host sequence number.
    pub(crate) seq: u64,
    /// Per-call random value.
    pub(crate) random: u64,
    /// When the call arrived (for `Fn-Deadline`).
    pub(crate) now: SystemTime,
}

/// The placement deadlines a call gets, by kind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    /// Wait after a full pass of refusals.
    pub(crate) retry_all_delay: Duration,
    /// Placement deadline of sync calls.
    pub(crate) sync: Duration,
    /// Placement deadline of detached calls.
    pub(crate) detached: Duration,
}

/// A request turned into a call.
#[derive(Debug)]
pub(crate) struct Parsed {
    /// What the placer sees.
    pub(crate) call: Call,
    /// What the runner gets.
    pub(crate) forward: Forward,
    /// The placement loop's timing for this call.
    pub(crate) timing: Timing,
    /// The call's id as a header value, made once for the runner, the client and the log.
    pub(crate) id_value: HeaderValue,
}

/// Checks a request's head before its body is read: route, header size, declared body
/// length, `Fn-*` header encoding.
///
/// # Errors
/// The [`ClientError`] to answer with; no body is read and no runner contacted.
pub(crate) fn check_head(head: &RequestHead, max_body_bytes: usize) -> Result<Target, ClientError> {
    if has_dot_segment(head.uri.path()) {
        return Err(ClientError::DotSegment);
    }
    // One pass over the headers for their size and the encoding of the `Fn-*` ones.
    let mut head_bytes = 0;
    let mut non_utf8 = None;
    let mut fn_headers = false;
    for (name, value) in &head.headers {
        head_bytes += name.as_str().len() + value.len() + 4;
        if name.as_str().starts_with("fn-") {
            fn_headers = true;
            if non_utf8.is_none() && value.to_str().is_err() {
                non_utf8 = Some(name);
            }
        }
    }
    let target = route(&head.method, head.uri.path(), fn_headers.then_some(&head.headers))?;
    if head_bytes > MAX_HEADER_BYTES {
        return Err(ClientError::HeadersTooLarge);
    }
    if matches!(head.framing, BodyFraming::Length(n) if n > max_body_bytes as u64) {
        return Err(ClientError::BodyTooLarge { limit: max_body_bytes });
    }
    if let Some(name) = non_utf8 {
        return Err(ClientError::NonUtf8Header(name.as_str().to_string()));
    }
    Ok(target)
}

/// Reads the whole body, up to `limit` bytes, holding its bytes in `held`: the declared
/// length before the first byte is read, then as much as has arrived.
///
/// # Errors
/// [`ClientError::BodyTooLarge`] past the limit, [`ClientError::Overloaded`] when `held`
/// cannot grow, [`ClientError::BadBody`] when reading fails.
pub(crate) async fn read_body(
    body: &mut RequestBody<'_>,
    limit: usize,
    held: &mut Held<'_>,
) -> Result<Bytes, ClientError> {
    let declared = usize::try_from(body.declared()).unwrap_or(usize::MAX);
    if declared > limit {
        return Err(ClientError::BodyTooLarge { limit });
    }
    if !held.grow(declared) {
        return Err(ClientError::Overloaded);
    }
    // Most bodies arrive in one piece: kept as it is, no copy.
    let mut joined = Joined::default();
    let mut read = 0usize;
    while let Some(data) = body.data().await {
        let data = data.map_err(|e| ClientError::BadBody(e.to_string()))?;
        read = read.saturating_add(data.len());
        if read > limit {
            return Err(ClientError::BodyTooLarge { limit });
        }
        if !held.grow(read) {
            return Err(ClientError::Overloaded);
        }
        joined.push(data, declared);
    }
    Ok(joined.finish())
}

/// True when a segment of `path` is `.` or `..`, raw or percent-encoded (`%2e`), with
/// `/`, `\\`, `%2f` and `%5c` all taken as separators.
fn has_dot_segment(path: &str) -> bool {
    // Most paths have neither a dot nor a percent sign: one scan and done.
    if !path.bytes().any(|b| b == b'.' || b == b'%') {
        return false;
    }
    // A runner that decodes `%2f` or `%5c`, or takes `\\` for a separator, would see
    // `..%2f` as a `..` segment: they separate segments here too.
    let bytes = path.as_bytes();
    let encoded = |i: usize, hi: u8, lo: u8| {
        bytes.len() >= i + 3 && bytes[i] == b'%' && bytes[i + 1] == hi && bytes[i + 2] | 0x20 == lo
    };
    let (mut i, mut dots, mut other) = (0, 0, false);
    loop {
        let separator = if i == bytes.len() || bytes[i] == b'/' || bytes[i] == b'\\' {
            Some(1)
        } else if encoded(i, b'2', b'f') || encoded(i, b'5', b'c') {
            Some(3)
        } else {
            None
        };
        if let Some(width) = separator {
            if !other && (1..=2).contains(&dots) {
                return true;
            }
            if i == bytes.len() {
                return false;
            }
            (dots, other) = (0, false);
            i += width;
        } else if bytes[i] == b'.' {
            dots += 1;
            i += 1;
        } else if encoded(i, b'2', b'e') {
            dots += 1;
            i += 3;
        } else {
            other = true;
            i += 1;
        }
    }
}

/// Builds the call and the forwarded request of a checked request, with the runner I/O
/// deadlines `timeouts`. The request's headers move into the forward (no copy); method and
/// URI stay for the access log.
pub(crate) fn into_call(
    head: &mut RequestHead,
    target: Target,
    body: Bytes,
    ids: CallIds,
    deadlines: Deadlines,
    timeouts: RunnerTimeouts,
) -> Parsed {
    // Most calls carry no `Fn-*` header: one scan of the names instead of three lookups.
    let fn_headers = head.headers.keys().any(|name| name.as_str().starts_with("fn-"));
    let kind = match fn_headers.then(|| head.headers.get(FN_CALL_TYPE)).flatten().map(HeaderValue::as_bytes) {
        Some(b"detached") => CallKind::Detached,
        _ => CallKind::Sync,
    };
    let slot_key = fn_headers.then(|| header_str(&head.headers, FN_SLOT_HASH)).flatten();
    let call = Call {
        id: ids.id,
        slot_key: slot_key.unwrap_or(&target.fn_id).to_string(),
        app_id: target.app_id,
        fn_id: target.fn_id,
        kind,
        seq: ids.seq,
        random: ids.random,
        extensions: if fn_headers { extensions(&head.headers) } else { Vec::new() },
    };
    let placer_timeout = match kind {
        CallKind::Detached => deadlines.detached,
        CallKind::Sync => deadlines.sync,
    };
    // A ULID is ASCII.
    let id_value = HeaderValue::from_str(&call.id).unwrap_or(HeaderValue::from_static("-"));
    let forward = Forward {
        method: head.method.clone(),
        uri: head.uri.path_and_query().map_or_else(|| Uri::from_static("/"), |p| Uri::from(p.clone())),
        headers: forward_headers(std::mem::take(&mut head.headers), &call, &id_value, ids.now + placer_timeout),
        body,
        timeouts,
    };
    let timing =
        Timing { retry_all_delay: deadlines.retry_all_delay, placer_timeout, detached: kind == CallKind::Detached };
    Parsed { call, forward, timing, id_value }
}

/// The function a request calls, or why it calls none.
/// `headers`: the request's, when it has `Fn-*` ones.
fn route(method: &Method, path: &str, headers: Option<&HeaderMap>) -> Result<Target, ClientError> {
    let (mut app_id, mut fn_id) = if let Some(fn_id) = path.strip_prefix("/invoke/") {
        // Everything under `/invoke/` is the invoke API: only `POST /invoke/{fn_id}` is.
        if *method != Method::POST || fn_id.is_empty() || fn_id.contains('/') {
            return Err(ClientError::MethodNotAllowed);
        }
        (String::new(), fn_id.to_string())
    } else if let Some(rest) = path.strip_prefix("/t/") {
        let mut segments = rest.splitn(3, '/');
        let app = segments.next().filter(|a| !a.is_empty()).ok_or(ClientError::NoRoute)?;
        let first = segments.next().unwrap_or("");
        let mut fn_id = String::with_capacity(app.len() + 1 + first.len());
        fn_id.push_str(app);
        fn_id.push('/');
        fn_id.push_str(first);
        (app.to_string(), fn_id)
    } else {
        return Err(ClientError::NoRoute);
    };
    if let Some(headers) = headers {
        if let Some(a) = header_str(headers, FN_APP_ID) {
            app_id = a.to_string();
        }
        if let Some(f) = header_str(headers, FN_FN_ID) {
            fn_id = f.to_string();
        }
    }
    Ok(Target { app_id, fn_id })
}

fn header_str(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
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

/// The client's end-to-end headers (`http1` dropped the hop-by-hop ones, the framing
/// headers and `Expect`), plus the `Fn-*` headers of `call`.
fn forward_headers(mut headers: HeaderMap, call: &Call, id: &HeaderValue, deadline: SystemTime) -> HeaderMap {
    let kind = match call.kind {
        CallKind::Sync => "sync",
        CallKind::Detached => "detached",
    };
    // Static names: inserting by `&str` would parse each name on every call.
    headers.insert(HeaderName::from_static("fn-call-id"), id.clone());
    for (name, value) in
        [(HeaderName::from_static("fn-app-id"), &call.app_id), (HeaderName::from_static("fn-fn-id"), &call.fn_id)]
    {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
    headers.insert(HeaderName::from_static("fn-call-type"), HeaderValue::from_static(kind));
    headers.insert(HeaderName::from_static("fn-deadline"), deadline_header(deadline));
    headers
}

/// `deadline` in RFC 3339 with milliseconds, as a header value. Calls that start in the
/// same millisecond with the same timeout share one value: formatting a date costs more
/// than the rest of the `Fn-*` headers together.
fn deadline_header(deadline: SystemTime) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(u128, HeaderValue)>> = const { std::cell::RefCell::new(None) };
    }
    let ms = deadline.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    LAST.with_borrow_mut(|last| match last {
        Some((at, value)) if *at == ms => value.clone(),
        _ => {
            let text = humantime::format_rfc3339_millis(deadline).to_string();
            let value = HeaderValue::from_maybe_shared(Bytes::from(text)).unwrap_or(HeaderValue::from_static(""));
            *last = Some((ms, value.clone()));
            value
        }
    })
}

/// A ULID: 48-bit millisecond time + 80 random bits, Crockford base32, 26 characters.
pub(crate) fn ulid(now: SystemTime, random: u128) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let ms = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let value = (ms & ((1 << 48) - 1)) << 80 | (random & ((1 << 80) - 1));
    let mut text = [0u8; 26];
    for (i, c) in text.iter_mut().rev().enumerate() {
        *c = ALPHABET[((value >> (i * 5)) & 31) as usize];
    }
    // ASCII by construction.
    String::from_utf8(text.to_vec()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::proxy::budget::BodyBudget;

    const MAX_BODY: usize = 100;

    /// The head of a request with `headers` (and `host: x` unless they name a host), as
    /// the proxy port parses it.
    fn parts(method: Method, uri: &str, headers: &[(&str, &[u8])]) -> RequestHead {
        let mut text = format!("{method} {uri} HTTP/1.1\r\n").into_bytes();
        if !headers.iter().any(|(name, _)| *name == "host") {
            text.extend_from_slice(b"host: x\r\n");
        }
        for (name, value) in headers {
            text.extend_from_slice(format!("{name}: ").as_bytes());
            text.extend_from_slice(value);
            text.extend_from_slice(b"\r\n");
        }
        text.extend_from_slice(b"\r\n");
        crate::http1::parse_request(&mut BytesMut::from(&text[..]), 5).expect("a valid head").expect("complete")
    }

    fn check(method: Method, uri: &str, headers: &[(&str, &[u8])]) -> Result<Target, ClientError> {
        check_head(&parts(method, uri, headers), MAX_BODY)
    }

    /// Reads a body of `framing` that a client on loopback sends as `sent` (then closes).
    async fn body_of(
        framing: BodyFraming,
        sent: &'static [u8],
        limit: usize,
        held: &mut Held<'_>,
    ) -> Result<Bytes, ClientError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        tokio::io::AsyncWriteExt::write_all(&mut client, sent).await.expect("sent");
        drop(client);
        let (mut buf, done) = (BytesMut::new(), std::sync::atomic::AtomicBool::new(false));
        let server = crate::tls::Socket::plain(server);
        let mut body = RequestBody::new(&server, &mut buf, framing, false, &done);
        read_body(&mut body, limit, held).await
    }

    const TIMEOUTS: RunnerTimeouts = RunnerTimeouts { read: Duration::from_secs(300), write: Duration::from_secs(60) };

    fn ids() -> CallIds {
        CallIds { id: "01TESTCALL".into(), seq: 7, random: 42, now: SystemTime::UNIX_EPOCH }
    }

    const DEADLINES: Deadlines = Deadlines {
        retry_all_delay: Duration::from_millis(10),
        sync: Duration::from_secs(360),
        detached: Duration::from_secs(30),
    };

    #[test]
    fn routes_give_the_app_and_fn_and_headers_override_them() {
        let t = |app: &str, f: &str| Ok(Target { app_id: app.into(), fn_id: f.into() });
        assert_eq!(check(Method::POST, "/invoke/hello", &[]), t("", "hello"));
        assert_eq!(check(Method::GET, "/t/shop/cart/items?x=1", &[]), t("shop", "shop/cart"));
        assert_eq!(check(Method::PUT, "/t/shop", &[]), t("shop", "shop/"));
        let overridden = [("fn-app-id", &b"billing"[..]), ("fn-fn-id", &b"billing/charge"[..])];
        assert_eq!(check(Method::POST, "/invoke/hello", &overridden), t("billing", "billing/charge"));
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        for uri in ["/", "/v1/status", "/t/", "/t//x", "/tx/a"] {
            assert_eq!(check(Method::POST, uri, &[]), Err(ClientError::NoRoute), "{uri}");
        }
        for (method, uri) in [(Method::GET, "/invoke/hello"), (Method::POST, "/invoke/"), (Method::POST, "/invoke/a/b")]
        {
            assert_eq!(check(method, uri, &[]), Err(ClientError::MethodNotAllowed), "{uri}");
        }
        assert_eq!(ClientError::NoRoute.status(), StatusCode::NOT_FOUND);
        assert_eq!(ClientError::MethodNotAllowed.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn oversized_headers_are_431() {
        let big = vec![b'x'; MAX_HEADER_BYTES];
        let e = check(Method::POST, "/invoke/f", &[("x-big", &big)]).expect_err("too large");
        assert_eq!(e, ClientError::HeadersTooLarge);
        assert_eq!(e.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn a_declared_body_over_the_limit_is_413_before_reading() {
        let e = check(Method::POST, "/invoke/f", &[("content-length", b"101")]).expect_err("too large");
        assert_eq!(e, ClientError::BodyTooLarge { limit: MAX_BODY });
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(check(Method::POST, "/invoke/f", &[("content-length", b"100")]).is_ok());
    }

    #[test]
    fn fn_headers_must_be_utf8_and_others_need_not() {
        let e = check(Method::POST, "/invoke/f", &[("fn-slot-hash", b"\xff\xfe")]).expect_err("not utf-8");
        assert_eq!(e, ClientError::NonUtf8Header("fn-slot-hash".into()));
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert!(check(Method::POST, "/invoke/f", &[("x-binary", b"\xff")]).is_ok());
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_413_and_broken_ones_400() {
        let budget = BodyBudget::new(1 << 20);
        let ok = body_of(BodyFraming::Length(5), b"hello", MAX_BODY, &mut budget.hold()).await;
        assert_eq!(ok, Ok(Bytes::from_static(b"hello")));
        let big = body_of(BodyFraming::Length(MAX_BODY as u64 + 1), b"x", MAX_BODY, &mut budget.hold()).await;
        assert_eq!(big, Err(ClientError::BodyTooLarge { limit: MAX_BODY }));
        let chunked = b"40\r\n0123456789012345678901234567890123456789012345678901234567890123\r\n\
                        40\r\n0123456789012345678901234567890123456789012345678901234567890123\r\n";
        let big = body_of(BodyFraming::Chunked, chunked, MAX_BODY, &mut budget.hold()).await;
        assert_eq!(big, Err(ClientError::BodyTooLarge { limit: MAX_BODY }), "counted as it arrives");
        let broken = body_of(BodyFraming::Length(10), b"part", MAX_BODY, &mut budget.hold()).await;
        let e = broken.expect_err("broken body");
        assert!(matches!(&e, ClientError::BadBody(m) if m.contains("closed the connection")), "{e}");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let bad = body_of(BodyFraming::Chunked, b"+5\r\nhello\r\n0\r\n\r\n", MAX_BODY, &mut budget.hold()).await;
        assert!(matches!(&bad, Err(ClientError::BadBody(m)) if m.contains("chunk size")), "{bad:?}");
    }

    #[tokio::test]
    async fn bodies_in_many_pieces_are_joined_and_held_against_the_budget() {
        let budget = BodyBudget::new(9);
        let mut held = budget.hold();
        let joined = body_of(BodyFraming::Chunked, b"3\r\npar\r\n2\r\nts\r\n0\r\n\r\n", MAX_BODY, &mut held).await;
        assert_eq!(joined, Ok(Bytes::from_static(b"parts")));
        assert_eq!(budget.used(), 5, "held until the call ends");
        // 5 held + 5 more passes 9: refused as overloaded, and what it took is given back.
        let refused =
            body_of(BodyFraming::Chunked, b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", MAX_BODY, &mut budget.hold()).await;
        assert_eq!(refused, Err(ClientError::Overloaded));
        assert_eq!(refused.expect_err("overloaded").status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(budget.used(), 5);
        // A declared length is held before the body is read.
        let declared = body_of(BodyFraming::Length(5), b"12345", MAX_BODY, &mut budget.hold()).await;
        assert_eq!(declared, Err(ClientError::Overloaded));
        drop(held);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn dot_segments_raw_or_encoded_are_400() {
        for uri in [
            "/t/app/../../v1/status",
            "/t/app/./x",
            "/t/app/%2e%2E/x",
            "/t/app/.%2e/x",
            "/t/a/..",
            "/invoke/..",
            "/t/app/..%2fadmin",
            "/t/app/..%2F..%2Fv1/status",
            "/t/app/%2e%2e%5cx",
            "/t/app/x%2f.",
        ] {
            assert_eq!(check(Method::POST, uri, &[]), Err(ClientError::DotSegment), "{uri}");
        }
        for uri in [
            "/t/app/v1.2/x",
            "/t/app/...",
            "/t/app/.well-known",
            "/t/app/a%20b",
            "/t/app/x?y=../z",
            "/t/app/a%2fb",
            "/t/app/...%2f",
        ] {
            assert!(check(Method::POST, uri, &[]).is_ok(), "{uri}");
        }
        assert_eq!(ClientError::DotSegment.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn connection_removes_no_header_but_hop_by_hop_ones_and_expect_is_not_forwarded() {
        let mut p = parts(
            Method::POST,
            "/invoke/f",
            &[
                ("host", b"fns.example"),
                ("connection", b"host, content-type, fn-ext-zone, authorization, x-forwarded-for, x-user, keep-alive"),
                ("content-type", b"text/plain"),
                ("authorization", b"Bearer t"),
                ("fn-ext-zone", b"a"),
                ("x-forwarded-for", b"192.0.2.1"),
                ("x-user", b"alice"),
                ("keep-alive", b"timeout=5"),
                ("expect", b"100-continue"),
            ],
        );
        let target = check_head(&p, MAX_BODY).expect("routable");
        let forwarded = into_call(&mut p, target, Bytes::new(), ids(), DEADLINES, TIMEOUTS).forward.headers;
        for kept in ["host", "content-type", "authorization", "fn-ext-zone", "x-forwarded-for", "x-user"] {
            assert!(forwarded.contains_key(kept), "{kept} removed");
        }
        for gone in ["connection", "keep-alive", "expect"] {
            assert!(!forwarded.contains_key(gone), "{gone} forwarded");
        }
    }

    #[test]
    fn a_call_carries_the_ids_slot_key_extensions_and_fn_headers() {
        let mut p = parts(
            Method::POST,
            "/t/shop/cart?x=1",
            &[
                ("fn-slot-hash", b"cart-42"),
                ("fn-ext-zone", b"a"),
                ("connection", b"keep-alive"),
                ("keep-alive", b"timeout=5"),
                ("content-length", b"2"),
                ("x-kept", b"1"),
            ],
        );
        let target = check_head(&p, MAX_BODY).expect("routable");
        let parsed = into_call(&mut p, target, Bytes::from_static(b"hi"), ids(), DEADLINES, TIMEOUTS);
        let call = &parsed.call;
        assert_eq!((call.id.as_str(), call.seq, call.random), ("01TESTCALL", 7, 42));
        assert_eq!(
            (call.app_id.as_str(), call.fn_id.as_str(), call.slot_key.as_str()),
            ("shop", "shop/cart", "cart-42")
        );
        assert_eq!(call.kind, CallKind::Sync);
        assert_eq!(call.extensions, vec![("zone".to_string(), "a".to_string())]);
        let f = &parsed.forward;
        assert_eq!(f.uri, "/t/shop/cart?x=1");
        assert!(f.headers.contains_key("x-kept"));
        for gone in ["connection", "keep-alive", "content-length"] {
            assert!(!f.headers.contains_key(gone), "{gone} forwarded");
        }
        assert_eq!(f.headers["fn-call-id"], "01TESTCALL");
        assert_eq!(f.headers["fn-call-type"], "sync");
        assert_eq!(f.headers["fn-deadline"], "1970-01-01T00:06:00.000Z");
        assert_eq!(parsed.timing.placer_timeout, DEADLINES.sync);
    }

    #[test]
    fn detached_calls_get_the_detached_deadline() {
        let mut p = parts(Method::POST, "/invoke/f", &[("fn-call-type", b"detached")]);
        let target = check_head(&p, MAX_BODY).expect("ok");
        let parsed = into_call(&mut p, target, Bytes::new(), ids(), DEADLINES, TIMEOUTS);
        assert_eq!(parsed.call.kind, CallKind::Detached);
        assert!(parsed.timing.detached);
        assert_eq!(parsed.timing.placer_timeout, DEADLINES.detached);
        assert_eq!(parsed.forward.headers["fn-deadline"], "1970-01-01T00:00:30.000Z");
    }

    #[test]
    fn deadline_values_are_shared_within_a_millisecond_only() {
        let at = |ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(deadline_header(at(1_000)), "1970-01-01T00:00:01.000Z");
        let micros_later = at(1_000) + Duration::from_micros(900);
        assert_eq!(deadline_header(micros_later), "1970-01-01T00:00:01.000Z", "same millisecond");
        assert_eq!(deadline_header(at(1_001)), "1970-01-01T00:00:01.001Z", "the next one");
        assert_eq!(deadline_header(at(1_000)), "1970-01-01T00:00:01.000Z", "and back");
    }

    #[test]
    fn ulids_are_26_chars_and_sort_by_time() {
        let t0 = SystemTime::now();
        let a = ulid(t0, u128::MAX);
        let b = ulid(t0 + Duration::from_millis(2), 0);
        assert_eq!(a.len(), 26);
        assert!(a < b, "{a} {b}");
    }
}
