//! The chunked transfer coding (RFC 9112 §7.1), decoded as bytes arrive: the same decoder
//! reads client request bodies and runner response bodies.

use std::io;

use bytes::{Bytes, BytesMut};

use super::{MAX_CHUNK_EXTENSIONS, MAX_CHUNK_LINE, MAX_TRAILERS};

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

/// A chunked-body decoder. Extensions and trailers are checked, bounded and dropped.
#[derive(Debug)]
pub(crate) struct Chunked {
    state: State,
    /// Extension bytes seen in this body so far (bounded by [`MAX_CHUNK_EXTENSIONS`]).
    extensions: usize,
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

fn malformed(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Chunked {
    pub(crate) fn new() -> Self {
        Chunked { state: State::Size, extensions: 0 }
    }

    /// Takes what it can from the front of `buf`.
    ///
    /// # Errors
    /// `InvalidData`: a malformed chunk-size line, delimiter or trailer, a line not ended
    /// by CRLF, or a line, the extensions or the trailers over their bounds.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Decoded> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::Done),
                State::Size => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else { return Ok(Decoded::NeedMore) };
                    let size = self.chunk_size(&line)?;
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
                    if buf.len() < 2 {
                        if buf.first().is_some_and(|&b| b != b'\r') {
                            return Err(malformed("chunk data longer than its size"));
                        }
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(malformed("chunk data not followed by CRLF"));
                    }
                    let _ = buf.split_to(2);
                    self.state = State::Size;
                }
                State::Trailers(seen) => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else { return Ok(Decoded::NeedMore) };
                    let seen = seen + line.len() + 2;
                    if seen > MAX_TRAILERS {
                        return Err(malformed("chunked trailers too long"));
                    }
                    if line.is_empty() {
                        self.state = State::Done;
                    } else if trailer_field(&line) {
                        self.state = State::Trailers(seen);
                    } else {
                        return Err(malformed("invalid trailer field"));
                    }
                }
            }
        }
    }

    /// `chunk-size [ BWS ";" chunk-ext ]`: hex digits only, then optional spaces or tabs,
    /// then an extension of visible characters, spaces and tabs.
    fn chunk_size(&mut self, line: &[u8]) -> io::Result<u64> {
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 {
            return Err(malformed("invalid chunk size"));
        }
        let mut size: u64 = 0;
        for &b in &line[..digits] {
            let digit = u64::from(char::from(b).to_digit(16).unwrap_or(0));
            size = size
                .checked_mul(16)
                .and_then(|s| s.checked_add(digit))
                .ok_or_else(|| malformed("chunk size too large"))?;
        }
        let rest = &line[digits..];
        let rest = &rest[rest.iter().take_while(|&&b| b == b' ' || b == b'\t').count()..];
        if rest.is_empty() {
            return Ok(size);
        }
        if rest[0] != b';' || !rest.iter().all(|&b| b == b'\t' || (b >= b' ' && b != 0x7f)) {
            return Err(malformed("invalid chunk size or extension"));
        }
        self.extensions += rest.len();
        if self.extensions > MAX_CHUNK_EXTENSIONS {
            return Err(malformed("too many chunk extension bytes"));
        }
        Ok(size)
    }
}

/// `field-name ":" OWS field-value OWS`: a token, a colon, then visible characters,
/// spaces and tabs.
fn trailer_field(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&b| b == b':') else { return false };
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    colon > 0
        && line[..colon].iter().all(token)
        && line[colon + 1..].iter().all(|&b| b == b'\t' || (b >= b' ' && b != 0x7f))
}

/// Removes one line, ended by CRLF, from the front of `buf` and returns it without the
/// CRLF; `None` if no line end is buffered yet. A line of more than `max` bytes, or one
/// ended by a bare LF, is an error; a CR inside the line is left for the caller's syntax,
/// which allows none.
fn take_line(buf: &mut BytesMut, max: usize) -> io::Result<Option<Bytes>> {
    match buf.iter().take(max).position(|&b| b == b'\n') {
        Some(end) => {
            if end == 0 || buf[end - 1] != b'\r' {
                return Err(malformed("a chunked body's line must end with CRLF"));
            }
            let mut line = buf.split_to(end + 1).freeze();
            line.truncate(end - 1);
            Ok(Some(line))
        }
        None if buf.len() >= max => Err(malformed("chunk line too long")),
        None => Ok(None),
    }
}
