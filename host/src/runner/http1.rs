//! The HTTP/1.1 wire format between placerd and its runners: the request head encoded in
//! one buffer, the response head parsed with httparse, and the response body's framing
//! (RFC 9112 §6.3) with a chunked decoder. No I/O here: `client` drives the socket.

use std::io;

use bytes::{Bytes, BytesMut};
use hyper::header::{
    CONNECTION, CONTENT_LENGTH, DATE, HeaderName, HeaderValue, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use hyper::{HeaderMap, Method, StatusCode};

use super::client::Forward;

/// The longest response head a runner may send.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header fields in a response head (hyper's default too).
const MAX_HEADERS: usize = 100;
/// The longest chunk-size line or trailer section of a chunked body.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 64 * 1024;

fn malformed(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// The request line and headers of `forward`, ending with the blank line. The body's
/// length is sent as `content-length` (the body is buffered; a client's own
/// `content-length` is replaced, `transfer-encoding` never reaches this far).
pub(crate) fn encode_head(forward: &Forward, out: &mut Vec<u8>) {
    let target = forward.uri.path_and_query().map_or("/", |p| p.as_str());
    out.reserve(256 + forward.headers.len() * 48);
    out.extend_from_slice(forward.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &forward.headers {
        if name == CONTENT_LENGTH {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = matches!(forward.method, Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS);
    if !forward.body.is_empty() || !bodiless {
        out.extend_from_slice(b"content-length: ");
        decimal(out, forward.body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal (what `write!` does, without its formatting machinery).
pub(crate) fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (a response to `HEAD`, or 204 / 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
    /// Until the runner closes the connection.
    UntilClose,
}

impl Framing {
    /// The body's length when it is known from the head.
    pub(crate) fn length(self) -> Option<u64> {
        match self {
            Framing::Empty => Some(0),
            Framing::Length(n) => Some(n),
            Framing::Chunked | Framing::UntilClose => None,
        }
    }
}

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) framing: Framing,
    /// The connection may carry another request once the body is read.
    pub(crate) keep_alive: bool,
}

/// Parses the response head at the start of `buf`. `Ok(None)`: incomplete, read more.
/// On success the head's bytes are split off the front of `buf`; header values share them
/// (no copy per header). Informational (1xx) heads are returned like any other; the
/// caller skips them.
///
/// # Errors
/// A malformed head, one with too many fields, or a contradictory length.
pub(crate) fn parse_head(buf: &mut BytesMut, request_method: &Method) -> io::Result<Option<Head>> {
    // Where each field lies in the head, so the values can be slices of it once it is
    // split off the buffer.
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let (len, code, http10, fields) = {
        let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed =
            httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, buf, &mut slots);
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(malformed(format!("malformed response head from the runner: {e}"))),
        };
        // Offsets fit in u32: the head is at most MAX_HEAD_BYTES (checked by the caller
        // before reading more).
        let start = buf.as_ptr() as usize;
        let offset = |p: *const u8| (p as usize - start) as u32;
        for (span, field) in spans.iter_mut().zip(response.headers.iter()) {
            let (name, value) = (offset(field.name.as_ptr()), offset(field.value.as_ptr()));
            *span = (name, name + field.name.len() as u32, value, value + field.value.len() as u32);
        }
        (len, response.code.unwrap_or_default(), response.version == Some(0), response.headers.len())
    };
    let status = StatusCode::from_u16(code).map_err(|_| malformed(format!("runner sent status {code}")))?;
    let head = buf.split_to(len).freeze();
    // Room for `Fn-Call-Id` and `Fn-Placer`, added before the client gets it.
    let mut headers = HeaderMap::with_capacity(fields + 2);
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let (mut close, mut keep) = (false, false);
    let head_request = *request_method == Method::HEAD;
    for &(name_start, name_end, value_start, value_end) in &spans[..fields] {
        let name = HeaderName::from_bytes(&head[name_start as usize..name_end as usize])
            .map_err(|_| malformed("runner sent an invalid header name"))?;
        let raw = std::str::from_utf8(&head[value_start as usize..value_end as usize]);
        // The framing and connection headers are read here and not kept (placerd frames
        // the body for the client itself), and neither is `date`: placerd dates its own
        // responses, as nginx does for the servers behind it.
        if name == CONTENT_LENGTH {
            for part in raw.unwrap_or("x").split(',') {
                let n: u64 = part.trim().parse().map_err(|_| malformed("runner sent an invalid content-length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(malformed("runner sent two different content-lengths"));
                }
                length = Some(n);
            }
            if !head_request {
                continue; // a HEAD answer's length is the resource's: it goes to the client
            }
        } else if name == TRANSFER_ENCODING {
            // The last coding decides: chunked frames the body, anything else runs to close.
            let last = raw.unwrap_or("").rsplit(',').next().unwrap_or("").trim();
            chunked = Some(last.eq_ignore_ascii_case("chunked"));
            continue;
        } else if name == CONNECTION {
            for token in raw.unwrap_or("").split(',') {
                close |= token.trim().eq_ignore_ascii_case("close");
                keep |= token.trim().eq_ignore_ascii_case("keep-alive");
            }
            continue;
        } else if name == DATE || is_hop_by_hop(&name) {
            continue;
        }
        let value = HeaderValue::from_maybe_shared(head.slice(value_start as usize..value_end as usize))
            .map_err(|_| malformed("runner sent an invalid header value"))?;
        headers.append(name, value);
    }
    let framing = if *request_method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(0)) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    // A head with both a length and a transfer coding may be a smuggling attempt: use
    // the coding for this response (RFC 9112 §6.3) and never the connection again.
    let ambiguous = chunked.is_some() && length.is_some();
    let keep_alive = !close && (!http10 || keep) && framing != Framing::UntilClose && !ambiguous;
    Ok(Some(Head { status, headers, framing, keep_alive }))
}

/// The hop-by-hop headers other than `Connection` and `Transfer-Encoding` (RFC 9110
/// §7.6.1), which describe the runner's connection, not the response.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == TE
        || *name == TRAILER
        || *name == UPGRADE
        || *name == PROXY_AUTHENTICATE
        || *name == PROXY_AUTHORIZATION
        || name.as_str() == "keep-alive"
}

/// What [`Chunked::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The buffer holds no complete piece: read more.
    NeedMore,
    /// The last chunk and the trailers are read: the body is complete.
    Done,
}

/// A chunked-body decoder (RFC 9112 §7.1). Trailers are read and dropped.
#[derive(Debug)]
pub(crate) struct Chunked {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line.
    Size,
    /// Inside a chunk's data: bytes left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk; bytes of trailers seen so far.
    Trailers(usize),
    Done,
}

impl Chunked {
    pub(crate) fn new() -> Self {
        Chunked { state: State::Size }
    }

    /// Takes what it can from the front of `buf`.
    ///
    /// # Errors
    /// A malformed chunk size or delimiter, or an over-long line.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Decoded> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::Done),
                State::Size => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else { return Ok(Decoded::NeedMore) };
                    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
                    let digits = std::str::from_utf8(digits).map_err(|_| malformed("invalid chunk size"))?.trim();
                    if digits.is_empty() || digits.len() > 15 {
                        return Err(malformed("invalid chunk size"));
                    }
                    let size = u64::from_str_radix(digits, 16).map_err(|_| malformed("invalid chunk size"))?;
                    self.state = if size == 0 { State::Trailers(0) } else { State::Data(size) };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let rest = left - take as u64;
                    self.state = if rest == 0 { State::DataEnd } else { State::Data(rest) };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                State::DataEnd => {
                    let Some(line) = take_line(buf, 2)? else { return Ok(Decoded::NeedMore) };
                    if !line.is_empty() {
                        return Err(malformed("chunk data longer than its size"));
                    }
                    self.state = State::Size;
                }
                State::Trailers(seen) => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else { return Ok(Decoded::NeedMore) };
                    let seen = seen + line.len() + 2;
                    if seen > MAX_TRAILERS {
                        return Err(malformed("chunked trailers too long"));
                    }
                    self.state = if line.is_empty() { State::Done } else { State::Trailers(seen) };
                }
            }
        }
    }
}

/// Removes one line (ending in LF, an optional CR before it) from the front of `buf` and
/// returns it without the line ending; `None` if no line end is buffered yet.
fn take_line(buf: &mut BytesMut, max: usize) -> io::Result<Option<Bytes>> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) if end <= max => {
            let mut line = buf.split_to(end + 1).freeze();
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            Ok(Some(line))
        }
        Some(_) => Err(malformed("chunk line too long")),
        None if buf.len() > max => Err(malformed("chunk line too long")),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Uri;

    fn head(text: &str, method: Method) -> Head {
        let mut buf = BytesMut::from(format!("{text}NEXT").as_bytes());
        let head = parse_head(&mut buf, &method).expect("parses").expect("complete");
        assert_eq!(&buf[..], b"NEXT", "the head was not split off whole");
        head
    }

    fn parse(text: &str) -> io::Result<Option<Head>> {
        parse_head(&mut BytesMut::from(text.as_bytes()), &Method::GET)
    }

    #[test]
    fn the_request_head_carries_method_target_headers_and_the_body_length() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example"));
        headers.insert("content-length", HeaderValue::from_static("999"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        let forward = Forward {
            method: Method::POST,
            uri: Uri::from_static("/t/app/fn?x=1"),
            headers,
            body: Bytes::from_static(b"hello"),
        };
        let mut out = Vec::new();
        encode_head(&forward, &mut out);
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "POST /t/app/fn?x=1 HTTP/1.1\r\nhost: example\r\nx-multi: a\r\nx-multi: b\r\ncontent-length: 5\r\n\r\n"
        );
        let get =
            Forward { method: Method::GET, uri: Uri::from_static("/"), headers: HeaderMap::new(), body: Bytes::new() };
        let mut out = Vec::new();
        encode_head(&get, &mut out);
        assert_eq!(out, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn the_response_framing_follows_rfc_9112() {
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 12\r\nx-a: b\r\n\r\n", Method::POST);
        assert_eq!((h.status, h.framing, h.keep_alive), (StatusCode::OK, Framing::Length(12), true));
        assert_eq!(h.headers["x-a"], "b");
        let h = head(
            "HTTP/1.1 200 OK\r\ndate: x\r\nconnection: keep-alive\r\nkeep-alive: timeout=5\r\ncontent-length: 1\r\nx-b: c\r\n\r\n",
            Method::GET,
        );
        let kept: Vec<_> = h.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(kept, ["x-b"], "framing, connection and date headers are placerd's to write");
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", Method::HEAD);
        assert_eq!(h.headers["content-length"], "5", "a HEAD answer keeps the resource's length");
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 3\r\n\r\n", Method::GET);
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false), "both framings: not reused");
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", Method::GET);
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, true));
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", Method::GET);
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = head("HTTP/1.1 200 OK\r\n\r\n", Method::GET);
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", Method::HEAD);
        assert_eq!((h.framing, h.keep_alive), (Framing::Empty, true));
        let h = head("HTTP/1.1 204 No Content\r\n\r\n", Method::GET);
        assert_eq!((h.framing, h.keep_alive), (Framing::Empty, true));
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n", Method::GET);
        assert_eq!((h.framing, h.keep_alive), (Framing::Empty, false));
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", Method::GET);
        assert!(!h.keep_alive, "HTTP/1.0 closes unless asked to keep alive");
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 1\r\nconnection: keep-alive\r\n\r\n", Method::GET);
        assert!(h.keep_alive);
        let h = head("HTTP/1.1 100 Continue\r\n\r\n", Method::POST);
        assert!(h.status.is_informational());
        assert_eq!(h.framing, Framing::Empty);
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\n\r\n", Method::GET);
        assert_eq!(h.framing, Framing::Length(7));
    }

    #[test]
    fn bad_or_partial_heads_are_named() {
        assert!(parse("HTTP/1.1 200 OK\r\ncontent-len").expect("partial").is_none());
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\n",
            "HTTP/1.1 20x OK\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            let e = parse(bad).expect_err(bad);
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{bad}: {e}");
        }
        let many: String = (0..MAX_HEADERS + 1).map(|i| format!("x-{i}: v\r\n")).collect();
        assert!(parse(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")).is_err());
    }

    /// Decodes `input` fed `step` bytes at a time.
    fn dechunk(input: &[u8], step: usize) -> io::Result<(Vec<u8>, BytesMut)> {
        let mut decoder = Chunked::new();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(b) => body.extend_from_slice(&b),
                Decoded::Done => return Ok((body, buf)),
                Decoded::NeedMore if fed >= input.len() => return Err(io::ErrorKind::UnexpectedEof.into()),
                Decoded::NeedMore => {
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_however_they_arrive() {
        let input = b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 100] {
            let (body, rest) = dechunk(input, step).expect("decodes");
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            // What follows the body stays for the caller (then the connection is not reused).
            assert!(rest.is_empty() || rest.as_ref() == b"NEXT" || b"NEXT".starts_with(&rest), "step {step}");
        }
        assert_eq!(dechunk(b"3\nabc\n0\n\n", 1).expect("bare LF").0, b"abc");
        for bad in [&b"zz\r\n"[..], b"3\r\nabcd\r\n0\r\n\r\n", b"10000000000000000\r\n", b"\r\n"] {
            assert_eq!(dechunk(bad, 4).expect_err("bad").kind(), io::ErrorKind::InvalidData);
        }
        let long = vec![b'1'; MAX_CHUNK_LINE + 10];
        assert_eq!(dechunk(&long, 1000).expect_err("long").kind(), io::ErrorKind::InvalidData);
    }
}
