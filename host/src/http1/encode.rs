//! Heads as bytes: a request head for a runner and a response head for a client, each in
//! one buffer, with placerd's own framing headers.

use std::time::SystemTime;

use bytes::BufMut;

use hyper::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use hyper::{HeaderMap, Method, StatusCode};

/// The request line and headers, ending with the blank line. The body's length is sent as
/// `content-length` (bodies are buffered: a request never goes out chunked); a
/// `content-length` in `headers` is not written. `host` is written when `headers` has no
/// `Host` (an HTTP/1.0 client's request goes out as HTTP/1.1, which needs one).
pub(crate) fn encode_request_head(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    host: &str,
    body_len: u64,
    out: &mut impl BufMut,
) {
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    let mut has_host = false;
    for (name, value) in headers {
        if name == CONTENT_LENGTH {
            continue;
        }
        has_host |= name == HOST;
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    if !has_host {
        out.put_slice(b"host: ");
        out.put_slice(host.as_bytes());
        out.put_slice(b"\r\n");
    }
    let bodiless = matches!(*method, Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS);
    if body_len > 0 || !bodiless {
        out.put_slice(b"content-length: ");
        decimal(out, body_len);
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
}

/// How a response's body is framed for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sized {
    /// `content-length: n`.
    Length(u64),
    /// `transfer-encoding: chunked` (an HTTP/1.1 client, a body of unknown length).
    Chunked,
    /// No framing header: a status without a body, or a body of unknown length for an
    /// HTTP/1.0 client, which ends when the connection closes (RFC 9112 §6.1: never
    /// chunked for HTTP/1.0).
    Unframed,
    /// The answer to a `HEAD`: the `content-length` in the headers, the resource's, is
    /// written as it is.
    HeadAnswer,
}

/// What becomes of the connection after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// It carries the next request (HTTP/1.1's default).
    Open,
    /// It carries the next request, and the response says so (`connection: keep-alive`,
    /// for HTTP/1.0 clients).
    Announced,
    /// It closes after the response (`connection: close`).
    Close,
}

/// The status line and headers of a response, ending with the blank line. Framing and
/// connection headers in `headers` are not written: `sized` and `keep` are.
pub(crate) fn encode_response_head(
    out: &mut impl BufMut,
    status: StatusCode,
    headers: &HeaderMap,
    sized: Sized,
    keep: Keep,
) {
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in headers {
        if name == TRANSFER_ENCODING || name == CONNECTION || (name == CONTENT_LENGTH && sized != Sized::HeadAnswer) {
            continue;
        }
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    match sized {
        Sized::Length(n) => {
            out.put_slice(b"content-length: ");
            decimal(out, n);
            out.put_slice(b"\r\n");
        }
        Sized::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
        Sized::Unframed | Sized::HeadAnswer => {}
    }
    match keep {
        Keep::Open => {}
        Keep::Announced => out.put_slice(b"connection: keep-alive\r\n"),
        Keep::Close => out.put_slice(b"connection: close\r\n"),
    }
    out.put_slice(b"date: ");
    date(out);
    out.put_slice(b"\r\n\r\n");
}

/// Appends `n` in decimal (what `write!` does, without its formatting machinery).
pub(super) fn decimal(out: &mut impl BufMut, mut n: u64) {
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
    out.put_slice(&digits[at..]);
}

/// Appends the current time as an HTTP date, formatted once per second per thread.
fn date(out: &mut impl BufMut) {
    thread_local! {
        static LAST: std::cell::RefCell<(u64, [u8; 29])> = const { std::cell::RefCell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    LAST.with_borrow_mut(|(at, text)| {
        if *at != second {
            let formatted = httpdate::fmt_http_date(now);
            if formatted.len() == text.len() {
                text.copy_from_slice(formatted.as_bytes());
                *at = second;
            }
        }
        out.put_slice(text);
    });
}
