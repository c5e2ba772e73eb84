//! placerd's one HTTP/1.1 implementation, for both directions: the proxy port's server
//! (`proxy::conn`) and the runner client (`runner::client`) parse, frame and encode
//! messages with this module alone, under one set of limits and one strictness. No I/O
//! here but the read that fills a connection's buffer and the silence timer (`io`): the
//! callers drive their sockets.
//!
//! Strictness is RFC 9112 as nginx and HAProxy apply it, never looser than both (the
//! table test in `tests.rs` holds every rule, and `tests/http_strict.rs` sends it to both
//! where they are installed):
//! - heads: httparse's strict mode (no space before a colon, no obs-fold, one space
//!   between the parts of the request line, a CR only before an LF; a bare LF ends a
//!   line in a head, as both peers accept);
//! - `content-length`: decimal digits only, equal values when repeated;
//!   `transfer-encoding`: `chunked`, once and last; another coding is not implemented
//!   (501), never decoded; both at once is refused;
//! - a request: exactly one valid `Host` (none is refused on HTTP/1.1, as nginx does); an
//!   absolute-form target's authority replaces it; `CONNECT` and `TRACE` are refused;
//! - chunked bodies: a chunk size is hex digits only (overflow checked), then optional
//!   spaces and an extension, then CRLF; a CR is never alone; extensions are bounded per
//!   body; trailers are field lines, bounded, and dropped;
//! - hop-by-hop headers never cross placerd: the parser drops them.

mod chunked;
mod encode;
mod head;
mod io;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::io as stdio;

use bytes::{Bytes, BytesMut};
use hyper::StatusCode;
use hyper::header::{HeaderName, HeaderValue};

pub(crate) use chunked::{Chunked, Decoded};
pub(crate) use encode::{Keep, Sized, encode_request_head, encode_response_head};
pub(crate) use head::{BodyFraming, Framing, RequestHead, ResponseHead, parse_request, parse_response};
pub(crate) use io::{Silence, poll_read};

/// The longest head (request or status line and header fields) accepted either way.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header fields in a head (hyper's default too).
pub(crate) const MAX_HEADERS: usize = 100;
/// The longest chunk-size line (size, extensions and CRLF).
pub(crate) const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Chunk extension bytes one body may carry in all (hyper's bound too): extensions are
/// read and dropped, so a body of one-byte chunks with long extensions would otherwise
/// cost far more than its size.
pub(crate) const MAX_CHUNK_EXTENSIONS: usize = 16 * 1024;
/// The longest trailer section of a chunked body.
pub(crate) const MAX_TRAILERS: usize = 64 * 1024;
/// A body of known length up to this size travels whole: written with its head to the
/// client, read whole from a runner before the client is answered.
pub(crate) const WHOLE_BODY_BYTES: usize = 64 * 1024;

/// A message this module will not take, with the status a client gets for it. From a
/// runner, any of them is a bad response (502).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// 400, 405, 431 or 501.
    pub(crate) status: StatusCode,
    /// What was wrong, for the client's error body and the log.
    pub(crate) reason: Cow<'static, str>,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, reason: impl Into<Cow<'static, str>>) -> Self {
        Refusal { status, reason: reason.into() }
    }

    /// A malformed message: 400.
    pub(crate) fn bad(reason: impl Into<Cow<'static, str>>) -> Self {
        Refusal::new(StatusCode::BAD_REQUEST, reason)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl From<Refusal> for stdio::Error {
    fn from(refusal: Refusal) -> Self {
        stdio::Error::new(stdio::ErrorKind::InvalidData, refusal.reason.into_owned())
    }
}

/// The hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, so they are
/// read by the parser and never forwarded either way. Other headers named in `Connection`
/// are kept, as nginx and HAProxy keep them: honouring them would let a client strip
/// `Host`, credentials, or a header a proxy in front of placerd added.
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    use hyper::header::{CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
    *name == CONNECTION
        || *name == TRANSFER_ENCODING
        || *name == TE
        || *name == TRAILER
        || *name == UPGRADE
        || *name == PROXY_AUTHENTICATE
        || *name == PROXY_AUTHORIZATION
        || name.as_str() == "keep-alive"
}

/// A body assembled from the pieces it arrived in: one piece is kept as it is (no copy),
/// more are joined in one buffer of at least the size hint given to [`Joined::push`].
#[derive(Debug, Default)]
pub(crate) struct Joined {
    first: Option<Bytes>,
    all: Option<BytesMut>,
}

impl Joined {
    /// Adds the next piece; `hint`: the whole body's size, if known, for the buffer.
    pub(crate) fn push(&mut self, piece: Bytes, hint: usize) {
        match (&mut self.first, &mut self.all) {
            (None, None) => self.first = Some(piece),
            (Some(first), None) => {
                let mut all = BytesMut::with_capacity(hint.max(first.len() + piece.len()));
                all.extend_from_slice(first);
                all.extend_from_slice(&piece);
                self.all = Some(all);
            }
            (_, Some(all)) => all.extend_from_slice(&piece),
        }
    }

    /// The body so far.
    pub(crate) fn finish(self) -> Bytes {
        self.all.map_or_else(|| self.first.unwrap_or_default(), BytesMut::freeze)
    }
}

/// True when the comma-separated `value` lists `token` (any case).
pub(crate) fn has_token(value: &HeaderValue, token: &str) -> bool {
    value.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}
