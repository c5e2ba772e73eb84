//! Heads, both ways: the request line or status line and the header fields, parsed with
//! httparse into values that share the head's bytes (no copy per header), and the body's
//! framing settled from them (RFC 9112 §6.3).

use bytes::{Bytes, BytesMut};
use hyper::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, HOST, TRANSFER_ENCODING};
use hyper::http::uri::{Authority, PathAndQuery};
use hyper::{HeaderMap, Method, StatusCode, Uri, Version};

use super::{MAX_HEAD_BYTES, MAX_HEADERS, Refusal, is_hop_by_hop};

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
}

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (a response to `HEAD`, 1xx, 204, 304, or `content-length: 0`).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
    /// Until the runner closes the connection.
    UntilClose,
}

impl Framing {
    /// The body's length when the head says it.
    pub(crate) fn length(self) -> Option<u64> {
        match self {
            Framing::Empty => Some(0),
            Framing::Length(n) => Some(n),
            Framing::Chunked | Framing::UntilClose => None,
        }
    }
}

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct RequestHead {
    pub(crate) method: Method,
    /// The target in origin form (an absolute-form target's path and query; `*` for
    /// `OPTIONS *`).
    pub(crate) uri: Uri,
    pub(crate) version: Version,
    /// The end-to-end fields: hop-by-hop ones, the framing headers and `Expect` are read
    /// and dropped; `Host` is the absolute-form target's authority when there is one.
    pub(crate) headers: HeaderMap,
    pub(crate) framing: BodyFraming,
    /// `Expect: 100-continue` on an HTTP/1.1 request with a body.
    pub(crate) continue_expected: bool,
    /// The client lets the connection carry another request.
    pub(crate) keep_alive: bool,
}

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub(crate) status: StatusCode,
    /// The end-to-end fields: hop-by-hop ones, the framing headers (but a `HEAD` answer's
    /// `content-length`, which is the resource's) and `date` are read and dropped.
    pub(crate) headers: HeaderMap,
    pub(crate) framing: Framing,
    /// The connection may carry another request once the body is read.
    pub(crate) keep_alive: bool,
}

/// Where a field's name and value lie in the head: offsets fit in u32, the head being at
/// most [`MAX_HEAD_BYTES`].
type Span = (u32, u32, u32, u32);

/// What `transfer-encoding` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Absent,
    Chunked,
}

/// The fields of a head, with what the framing and connection headers said.
struct Fields {
    headers: HeaderMap,
    length: Option<u64>,
    coding: Coding,
    close: bool,
    keep_alive: bool,
    continue_expected: bool,
    hosts: u32,
}

/// Parses the request head at the start of `buf`. `Ok(None)`: incomplete, read more. On
/// success the head's bytes are split off `buf`; the URI and header values share them.
///
/// # Errors
/// The [`Refusal`] to answer with: 400 malformed or ambiguous, 405 a method placerd does
/// not forward, 431 too large, 501 a transfer coding other than chunked.
pub(crate) fn parse_request(buf: &mut BytesMut, added: usize) -> Result<Option<RequestHead>, Refusal> {
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let (len, method, target, http10, fields) = {
        let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut request, buf, &mut slots);
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Refusal::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too many request headers"));
            }
            Err(e) => return Err(Refusal::bad(format!("malformed request head: {e}"))),
        };
        if len > MAX_HEAD_BYTES {
            return Err(Refusal::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"));
        }
        let start = buf.as_ptr() as usize;
        record_spans(request.headers, start, &mut spans);
        let method = Method::from_bytes(request.method.unwrap_or_default().as_bytes())
            .map_err(|_| Refusal::bad("invalid method"))?;
        let path = request.path.unwrap_or_default();
        let at = (path.as_ptr() as usize - start) as u32;
        (len, method, (at, at + path.len() as u32), request.version == Some(0), request.headers.len())
    };
    if method == Method::CONNECT || method == Method::TRACE {
        return Err(Refusal::new(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not forwarded")));
    }
    let head = buf.split_to(len).freeze();
    let mut fields = scan(&head, &spans[..fields], Side::Request, added)?;
    let (uri, authority) = origin_form(head.slice(target.0 as usize..target.1 as usize), &method)?;
    if fields.hosts > 1 {
        return Err(Refusal::bad("more than one Host header"));
    }
    if let Some(host) = fields.headers.get(HOST) {
        if !valid_host(host.as_bytes()) {
            return Err(Refusal::bad("invalid Host header"));
        }
    } else if !http10 {
        // RFC 9112 §3.2: even with an absolute-form target, as nginx refuses it.
        return Err(Refusal::bad("an HTTP/1.1 request must carry a Host header"));
    }
    if let Some(authority) = authority {
        // RFC 9112 §3.2.2: the target's authority is the request's host.
        let value =
            hyper::header::HeaderValue::from_maybe_shared(Bytes::copy_from_slice(authority.as_str().as_bytes()))
                .map_err(|_| Refusal::bad("invalid request target"))?;
        fields.headers.insert(HOST, value);
    }
    // RFC 9112 §6.1 and §6.3: a request body is chunked last or has one length. Both at
    // once is how requests are smuggled past a proxy: refused, not guessed at.
    let framing = match (fields.coding, fields.length) {
        (Coding::Chunked, Some(_)) => return Err(Refusal::bad("both content-length and transfer-encoding")),
        (Coding::Chunked, None) if http10 => return Err(Refusal::bad("transfer-encoding in an HTTP/1.0 request")),
        (Coding::Chunked, None) => BodyFraming::Chunked,
        (Coding::Absent, Some(0) | None) => BodyFraming::None,
        (Coding::Absent, Some(n)) => BodyFraming::Length(n),
    };
    Ok(Some(RequestHead {
        method,
        uri,
        version: if http10 { Version::HTTP_10 } else { Version::HTTP_11 },
        headers: fields.headers,
        framing,
        continue_expected: fields.continue_expected && !http10 && framing != BodyFraming::None,
        keep_alive: !fields.close && (!http10 || fields.keep_alive),
    }))
}

/// RFC 9110 §7.2: `uri-host [":" port]`: a registered name (unreserved and sub-delimiter
/// characters, percent-encodings) or an IP literal in brackets, never empty, never with
/// user information (`@`) or a path; the port digits only.
fn valid_host(host: &[u8]) -> bool {
    let (name, port) = if host.first() == Some(&b'[') {
        let Some(end) = host.iter().position(|&b| b == b']') else { return false };
        let literal = &host[1..end];
        if literal.is_empty() || !literal.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return false;
        }
        match &host[end + 1..] {
            [] => (&host[..=end], &[][..]),
            [b':', port @ ..] => (&host[..=end], port),
            _ => return false,
        }
    } else {
        let colon = host.iter().position(|&b| b == b':').unwrap_or(host.len());
        let name = &host[..colon];
        let registered = name.iter().enumerate().all(|(i, &b)| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')')
                || matches!(b, b'*' | b'+' | b',' | b';' | b'=')
                || (b == b'%' && name.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)))
        });
        if !registered {
            return false;
        }
        (name, host.get(colon + 1..).unwrap_or_default())
    };
    !name.is_empty() && port.len() <= 5 && port.iter().all(u8::is_ascii_digit)
}

/// The request target in origin form, and an absolute-form target's authority.
fn origin_form(raw: Bytes, method: &Method) -> Result<(Uri, Option<Authority>), Refusal> {
    let invalid = || Refusal::bad("invalid request target");
    if raw.first() == Some(&b'/') {
        return Ok((Uri::from_maybe_shared(raw).map_err(|_| invalid())?, None));
    }
    if raw.as_ref() == b"*" && *method == Method::OPTIONS {
        return Ok((Uri::from_static("*"), None));
    }
    // Absolute form (authority form is CONNECT's, refused above).
    let uri = Uri::from_maybe_shared(raw).map_err(|_| invalid())?;
    let scheme_ok = uri.scheme_str().is_some_and(|s| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"));
    let authority = uri.authority().filter(|a| !a.as_str().is_empty() && !a.as_str().contains('@')).cloned();
    let (true, Some(authority)) = (scheme_ok, authority) else { return Err(invalid()) };
    let path = uri.path_and_query().map_or_else(|| PathAndQuery::from_static("/"), Clone::clone);
    let path = if path.as_str().is_empty() { PathAndQuery::from_static("/") } else { path };
    Ok((Uri::from(path), Some(authority)))
}

/// Parses the response head at the start of `buf`, the answer to a `request_method`
/// request. `Ok(None)`: incomplete, read more. On success the head's bytes are split off
/// `buf`; header values share them. Informational (1xx) heads are returned like any other.
///
/// # Errors
/// A malformed head, too many fields, a contradictory length, a transfer coding other than
/// chunked, or both framings at once.
pub(crate) fn parse_response(
    buf: &mut BytesMut,
    request_method: &Method,
    added: usize,
) -> Result<Option<ResponseHead>, Refusal> {
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let (len, code, http10, fields) = {
        let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed =
            httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, buf, &mut slots);
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(Refusal::bad(format!("malformed response head: {e}"))),
        };
        if len > MAX_HEAD_BYTES {
            return Err(Refusal::bad("response head too large"));
        }
        record_spans(response.headers, buf.as_ptr() as usize, &mut spans);
        (len, response.code.unwrap_or_default(), response.version == Some(0), response.headers.len())
    };
    let status = StatusCode::from_u16(code).map_err(|_| Refusal::bad(format!("invalid status {code}")))?;
    let head = buf.split_to(len).freeze();
    let head_request = *request_method == Method::HEAD;
    let fields = scan(&head, &spans[..fields], Side::Response { head_request }, added)?;
    let bodiless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = match (fields.coding, fields.length) {
        _ if bodiless => Framing::Empty,
        (Coding::Chunked, Some(_)) => return Err(Refusal::bad("both content-length and transfer-encoding")),
        (Coding::Chunked, None) => Framing::Chunked,
        (Coding::Absent, Some(0)) => Framing::Empty,
        (Coding::Absent, Some(n)) => Framing::Length(n),
        (Coding::Absent, None) => Framing::UntilClose,
    };
    let keep_alive = !fields.close && (!http10 || fields.keep_alive) && framing != Framing::UntilClose;
    Ok(Some(ResponseHead { status, headers: fields.headers, framing, keep_alive }))
}

/// Notes where each parsed field lies relative to `start`, the head's first byte.
fn record_spans(parsed: &[httparse::Header<'_>], start: usize, spans: &mut [Span]) {
    let offset = |p: *const u8| (p as usize - start) as u32;
    for (span, field) in spans.iter_mut().zip(parsed) {
        let (name, value) = (offset(field.name.as_ptr()), offset(field.value.as_ptr()));
        *span = (name, name + field.name.len() as u32, value, value + field.value.len() as u32);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Request,
    /// `head_request`: the answer to a `HEAD`, whose `content-length` is the resource's
    /// and goes to the client.
    Response {
        head_request: bool,
    },
}

/// Reads the fields of `head`: the framing and connection headers into [`Fields`], the
/// end-to-end ones into a map with room for `added` more.
fn scan(head: &Bytes, spans: &[Span], side: Side, added: usize) -> Result<Fields, Refusal> {
    let mut fields = Fields {
        headers: HeaderMap::with_capacity(spans.len() + added),
        length: None,
        coding: Coding::Absent,
        close: false,
        keep_alive: false,
        continue_expected: false,
        hosts: 0,
    };
    let mut codings = Codings::default();
    for &(name_start, name_end, value_start, value_end) in spans {
        let name = hyper::header::HeaderName::from_bytes(&head[name_start as usize..name_end as usize])
            .map_err(|_| Refusal::bad("invalid header name"))?;
        let value = hyper::header::HeaderValue::from_maybe_shared(head.slice(value_start as usize..value_end as usize))
            .map_err(|_| Refusal::bad("invalid header value"))?;
        if name == CONTENT_LENGTH {
            for part in value.as_bytes().split(|&b| b == b',') {
                let n = content_length(part.trim_ascii()).ok_or_else(|| Refusal::bad("invalid content-length"))?;
                if fields.length.is_some_and(|l| l != n) {
                    return Err(Refusal::bad("two different content-lengths"));
                }
                fields.length = Some(n);
            }
            if side != (Side::Response { head_request: true }) {
                continue;
            }
        } else if name == TRANSFER_ENCODING {
            codings.add(value.as_bytes());
            continue;
        } else if name == CONNECTION {
            fields.close |= super::has_token(&value, "close");
            fields.keep_alive |= super::has_token(&value, "keep-alive");
            continue;
        } else if is_hop_by_hop(&name) {
            continue;
        } else if side == Side::Request {
            if name == EXPECT {
                // placerd answers `100-continue` itself when the call reads the body.
                fields.continue_expected |= value.as_bytes().eq_ignore_ascii_case(b"100-continue");
                continue;
            }
            if name == HOST {
                fields.hosts += 1;
            }
        } else if name == DATE {
            continue; // placerd dates its own responses, as nginx does
        }
        fields.headers.append(name, value);
    }
    fields.coding = codings.settle()?;
    Ok(fields)
}

/// A `content-length` value: decimal digits only (no sign, no space), no overflow.
fn content_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The transfer codings of every `transfer-encoding` line, in order.
#[derive(Debug, Default)]
struct Codings {
    present: bool,
    chunked: u32,
    other: bool,
    /// The last coding listed is `chunked`.
    chunked_last: bool,
    /// An empty element was listed.
    empty: bool,
}

impl Codings {
    fn add(&mut self, value: &[u8]) {
        self.present = true;
        for coding in value.split(|&b| b == b',') {
            let coding = coding.trim_ascii();
            // An empty element (`, chunked`) is refused, as nginx and HAProxy refuse it:
            // counted as a coding that is not chunked.
            let chunked = coding.eq_ignore_ascii_case(b"chunked");
            self.empty |= coding.is_empty();
            self.chunked += u32::from(chunked);
            self.other |= !chunked;
            self.chunked_last = chunked;
        }
    }

    /// `chunked` once and last is the only coding placerd implements (nginx: 501 for
    /// others; a coding is never decoded nor passed on as if it were not there).
    fn settle(self) -> Result<Coding, Refusal> {
        if !self.present {
            Ok(Coding::Absent)
        } else if !self.chunked_last || self.chunked > 1 || self.empty {
            Err(Refusal::bad("transfer-encoding must be codings that end with chunked, once"))
        } else if self.other {
            Err(Refusal::new(StatusCode::NOT_IMPLEMENTED, "transfer codings other than chunked are not implemented"))
        } else {
            Ok(Coding::Chunked)
        }
    }
}
