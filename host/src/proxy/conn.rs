//! The proxy port's HTTP/1.1 server: one task per client connection reads a request head
//! with httparse, lends the call its body straight from the connection's buffer, and
//! writes the response head, and a small body with it, in one write. No hyper on this
//! side: no dispatcher state machine, no per-request timer, no channel.
//!
//! What a client may do and what it gets:
//! - a malformed head: 400; a head over [`MAX_HEAD_BYTES`] or with more than
//!   [`MAX_HEADERS`] fields: 431; both framings (`content-length` and
//!   `transfer-encoding`), a coding other than chunked, or two lengths: 400. All close the
//!   connection after the answer.
//! - a head that does not arrive whole within [`HEADER_READ_TIMEOUT`] of its first byte,
//!   or no request for [`KEEP_ALIVE_TIMEOUT`] on an open connection: closed.
//! - a client that takes none of its response for [`SEND_TIMEOUT`]: closed (a slow reader
//!   holds neither a task nor a runner connection for longer).
//! - `Expect: 100-continue`: `100 Continue` when the call starts reading the body.
//! - HTTP/1.0: answered, kept alive only on `connection: keep-alive`.
//! - closing (or half-closing) the connection while its call runs: the call's future is
//!   dropped (no further runner is tried), as hyper and nginx do.
//! - pipelined requests: answered in order.

use std::future::{Future, poll_fn};
use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::header::{CONNECTION, CONTENT_LENGTH, EXPECT, HeaderName, HeaderValue, TRANSFER_ENCODING};
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use tokio::io::{Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::{Proxy, ProxyBody, json_error};
use crate::runner::http1::{Chunked, Decoded, decimal};
use crate::server::{HEADER_READ_TIMEOUT, KEEP_ALIVE_TIMEOUT, MAX_HEAD_BYTES, SEND_TIMEOUT};

/// The most header fields in a request head (hyper's default too).
pub(crate) const MAX_HEADERS: usize = 100;
/// How many headers a call adds to the client's before forwarding them (`Fn-Call-Id`,
/// `Fn-App-Id`, `Fn-Fn-Id`, `Fn-Call-Type`, `Fn-Deadline`).
const FN_HEADERS_ADDED: usize = 5;
/// A response body of known length up to this size is written with its head.
const WRITE_WITH_HEAD: usize = 64 * 1024;
/// What one read asks the kernel for, at least.
const READ_CHUNK: usize = 8 * 1024;

/// Serves one client connection until it closes, fails, idles out, or `stop` is
/// cancelled while no request is in flight.
pub async fn serve_connection(proxy: Arc<Proxy>, stream: TcpStream, stop: CancellationToken) {
    let mut conn = Conn {
        stream,
        buf: BytesMut::with_capacity(READ_CHUNK),
        out: Vec::with_capacity(READ_CHUNK),
        timer: Box::pin(tokio::time::sleep(KEEP_ALIVE_TIMEOUT)),
        deadline: Instant::now() + KEEP_ALIVE_TIMEOUT,
    };
    let stopping = stop.cancelled();
    tokio::pin!(stopping);
    loop {
        let head = match conn.read_head(stopping.as_mut()).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(Refused(status, message)) => {
                let response = json_error(status, &message);
                let _ = conn.write_response(response, &Method::GET, Keep::Close).await;
                return;
            }
        };
        let RequestHead { method, uri, version, headers, framing, continue_expected, keep_alive } = head;
        let body_done = AtomicBool::new(framing == BodyFraming::None);
        let body = RequestBody {
            stream: &conn.stream,
            buf: &mut conn.buf,
            framing: match framing {
                BodyFraming::None => Framing::Done,
                BodyFraming::Length(n) => Framing::Length(n),
                BodyFraming::Chunked => Framing::Chunked(Chunked::new()),
            },
            to_continue: if continue_expected { CONTINUE.len() } else { 0 },
            done: &body_done,
        };
        let mut request = Request::new(body);
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = version;
        *request.headers_mut() = headers;
        let call = proxy.serve(request);
        let gone = client_gone(&conn.stream, &body_done);
        let response = tokio::select! {
            biased;
            response = call => response,
            () = gone => return, // the call was dropped: logged and counted as 499
        };
        // A body the call did not read to its end leaves the stream mid-request.
        let keep_alive = keep_alive && body_done.load(Ordering::Relaxed) && !closes(response.headers());
        // An HTTP/1.0 client keeps the connection only when the answer says so.
        let keep_alive = match (keep_alive, version) {
            (false, _) => Keep::Close,
            (true, Version::HTTP_10) => Keep::Announced,
            (true, _) => Keep::Open,
        };
        match conn.write_response(response, &method, keep_alive).await {
            Ok(true) => conn.rearm(KEEP_ALIVE_TIMEOUT),
            Ok(false) => return,
            Err(e) => {
                tracing::debug!(error = %e, "client connection ended while answering");
                return;
            }
        }
    }
}

/// A request refused before it became a call: the status and the message for the client.
struct Refused(StatusCode, String);

/// How a request's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
struct RequestHead {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    framing: BodyFraming,
    /// `Expect: 100-continue` on HTTP/1.1.
    continue_expected: bool,
    /// The client lets the connection carry another request.
    keep_alive: bool,
}

/// One client connection's socket, buffers and idle timer.
struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet parsed: the next head, a body, pipelined requests.
    buf: BytesMut,
    /// The response being written; kept across requests for its capacity.
    out: Vec<u8>,
    /// Wakes the connection at or before `deadline`. Reset only when the deadline moves
    /// earlier: a deadline pushed later is found when the timer fires early.
    timer: Pin<Box<Sleep>>,
    /// When the current wait (idle, or a head arriving) gives up.
    deadline: Instant,
}

impl Conn {
    /// Sets the deadline of the next wait to `timeout` from now.
    fn rearm(&mut self, timeout: std::time::Duration) {
        self.deadline = Instant::now() + timeout;
        if self.deadline < self.timer.deadline() {
            self.timer.as_mut().reset(self.deadline);
        }
    }

    /// Reads until a whole request head is buffered and parses it. `Ok(None)`: the client
    /// closed the connection or idled out between requests, or `stopping` resolved then.
    async fn read_head(
        &mut self,
        mut stopping: Pin<&mut impl Future<Output = ()>>,
    ) -> Result<Option<RequestHead>, Refused> {
        let mut started = false;
        loop {
            if !self.buf.is_empty() {
                if let Some(head) = parse_head(&mut self.buf)? {
                    return Ok(Some(head));
                }
                if self.buf.len() > MAX_HEAD_BYTES {
                    return Err(Refused(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large".into()));
                }
                if !started {
                    // Part of a head: the rest must follow promptly.
                    started = true;
                    self.rearm(HEADER_READ_TIMEOUT);
                }
            }
            let idle = self.buf.is_empty();
            let read = poll_fn(|cx| {
                if let Poll::Ready(read) = poll_read(&self.stream, &mut self.buf, cx) {
                    return Poll::Ready(Wait::Read(read));
                }
                if idle && stopping.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wait::Stop);
                }
                while self.timer.as_mut().poll(cx).is_ready() {
                    if Instant::now() >= self.deadline {
                        return Poll::Ready(Wait::Timeout);
                    }
                    self.timer.as_mut().reset(self.deadline);
                }
                Poll::Pending
            })
            .await;
            match read {
                Wait::Read(Ok(0)) | Wait::Stop => return Ok(None),
                Wait::Read(Ok(_)) => {}
                Wait::Read(Err(e)) => {
                    tracing::debug!(error = %e, "client connection failed");
                    return Ok(None);
                }
                Wait::Timeout if idle => return Ok(None),
                Wait::Timeout => {
                    return Err(Refused(StatusCode::REQUEST_TIMEOUT, "the request head did not arrive in time".into()));
                }
            }
        }
    }

    /// Writes `response`: head and small body in one write, a larger one after it, an
    /// unsized one chunked. Returns whether the connection stays open.
    async fn write_response(&mut self, response: Response<ProxyBody>, method: &Method, keep: Keep) -> io::Result<bool> {
        let mut keep_alive = keep != Keep::Close;
        let (head, mut body) = response.into_parts();
        let status = head.status;
        let bodiless = *method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let length = if bodiless { None } else { body.size_hint().exact() };
        let chunked = !bodiless && length.is_none();
        self.out.clear();
        encode_response_head(&mut self.out, status, &head.headers, *method == Method::HEAD, length, chunked, keep);
        // An answer written in one piece is sent at the end of the scheduler's pass, so the
        // answers of one pass reach the client together (see `pass`).
        if bodiless {
            write_at_pass_end(&self.stream, &self.out).await?;
            return Ok(keep_alive);
        }
        let mut sent: u64 = 0;
        if length.is_some_and(|n| n <= WRITE_WITH_HEAD as u64) {
            // Usually one frame, ready at once: it goes out with the head.
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(io::Error::other)?;
                if let Ok(data) = frame.into_data() {
                    sent += data.len() as u64;
                    self.out.extend_from_slice(&data);
                }
            }
            write_at_pass_end(&self.stream, &self.out).await?;
        } else {
            write_all(&self.stream, &self.out).await?;
            while let Some(frame) = body.frame().await {
                let Ok(data) = frame.map_err(io::Error::other)?.into_data() else { continue };
                if data.is_empty() {
                    continue;
                }
                sent += data.len() as u64;
                if chunked {
                    self.out.clear();
                    let _ = write!(self.out, "{:x}\r\n", data.len());
                    if data.len() <= WRITE_WITH_HEAD {
                        // One write per chunk: its size line, data and end together.
                        self.out.extend_from_slice(&data);
                        self.out.extend_from_slice(b"\r\n");
                        write_all(&self.stream, &self.out).await?;
                    } else {
                        write_all(&self.stream, &self.out).await?;
                        write_all(&self.stream, &data).await?;
                        write_all(&self.stream, b"\r\n").await?;
                    }
                } else {
                    write_all(&self.stream, &data).await?;
                }
            }
            if chunked {
                write_all(&self.stream, b"0\r\n\r\n").await?;
            }
        }
        if length.is_some_and(|n| n != sent) {
            // The body did not match its length: the client cannot find the next response.
            keep_alive = false;
            tracing::warn!(declared = length, sent, "response body length differs from its size hint");
        }
        Ok(keep_alive)
    }
}

/// What becomes of the connection after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// It carries the next request (HTTP/1.1's default).
    Open,
    /// It carries the next request, and the response says so (`connection: keep-alive`,
    /// for HTTP/1.0 clients).
    Announced,
    /// It closes after the response (`connection: close`).
    Close,
}

/// What a wait for bytes ended with.
enum Wait {
    Read(io::Result<usize>),
    Stop,
    Timeout,
}

/// Reads what the socket has into `buf`; pending until it has something.
///
/// A read that leaves room in the buffer took all the socket had: its readiness is cleared
/// then (as tokio's own `AsyncRead` does), so the next wait parks without a system call
/// that would only say "nothing yet".
fn poll_read(stream: &TcpStream, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_read_ready(cx))?;
        if buf.capacity() - buf.len() < READ_CHUNK {
            buf.reserve(READ_CHUNK);
        }
        let room = buf.capacity() - buf.len();
        let mut drained = 0;
        let read = stream.try_io(Interest::READABLE, || match stream.try_read_buf(buf)? {
            n if n > 0 && n < room => {
                drained = n;
                Err(io::ErrorKind::WouldBlock.into()) // clears the readiness; the bytes are kept
            }
            n => Ok(n),
        });
        match read {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && drained > 0 => return Poll::Ready(Ok(drained)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            read => return Poll::Ready(read),
        }
    }
}

/// Writes all of `bytes`, trying the socket before waiting on it. Fails with `TimedOut`
/// when the socket stays full for [`SEND_TIMEOUT`]: the client stopped reading.
async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match stream.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::timeout(SEND_TIMEOUT, stream.writable()).await.map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "the client took none of its response in time")
                })??;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes all of `bytes`, the first send at the end of the scheduler's pass
/// ([`crate::pass::write_some`]) and the rest, if the socket took only part, as [`write_all`].
async fn write_at_pass_end(stream: &TcpStream, bytes: &[u8]) -> io::Result<()> {
    let sent = crate::pass::write_some(stream, bytes).await?;
    write_all(stream, &bytes[sent..]).await
}

/// Resolves when the client closes its side of the connection (or it fails) after the
/// request's body was read; pending forever once the client sends more (a pipelined
/// request: it is read after this response).
async fn client_gone(stream: &TcpStream, body_done: &AtomicBool) {
    let mut pipelined = false;
    poll_fn(|cx| {
        // The call reads the body on the same socket; until then its bytes are not news.
        // The call's task is polled first, so the pass that finishes the body checks here.
        if pipelined || !body_done.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        let mut byte = [0u8; 1];
        let mut peek = ReadBuf::new(&mut byte);
        match stream.poll_peek(cx, &mut peek) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(()),
            Poll::Ready(Ok(_)) => {
                pipelined = true;
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
}

/// True when the response says the connection closes after it.
fn closes(headers: &HeaderMap) -> bool {
    headers.get(CONNECTION).is_some_and(|v| has_token(v, "close"))
}

fn has_token(value: &HeaderValue, token: &str) -> bool {
    value.as_bytes().split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Parses the request head at the start of `buf`; `Ok(None)`: incomplete. On success the
/// head's bytes are split off `buf`, and the URI and header values share them.
fn parse_head(buf: &mut BytesMut) -> Result<Option<RequestHead>, Refused> {
    let bad = |message: &str| Refused(StatusCode::BAD_REQUEST, message.to_string());
    // Where the target and each field lie in the head, so they can be slices of it once
    // it is split off the buffer. Offsets fit in u32: the head is at most MAX_HEAD_BYTES.
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let (len, method, target, http10, fields) = {
        let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut request, buf, &mut slots);
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Refused(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "too many request headers".into()));
            }
            Err(e) => return Err(bad(&format!("malformed request head: {e}"))),
        };
        if len > MAX_HEAD_BYTES {
            return Err(Refused(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large".into()));
        }
        let start = buf.as_ptr() as usize;
        let offset = |p: *const u8| (p as usize - start) as u32;
        for (span, field) in spans.iter_mut().zip(request.headers.iter()) {
            let (name, value) = (offset(field.name.as_ptr()), offset(field.value.as_ptr()));
            *span = (name, name + field.name.len() as u32, value, value + field.value.len() as u32);
        }
        let method =
            Method::from_bytes(request.method.unwrap_or_default().as_bytes()).map_err(|_| bad("invalid method"))?;
        let path = request.path.unwrap_or_default();
        let target = (offset(path.as_ptr()), offset(path.as_ptr()) + path.len() as u32);
        (len, method, target, request.version == Some(0), request.headers.len())
    };
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target.0 as usize..target.1 as usize))
        .map_err(|_| bad("invalid request target"))?;
    // Room for the `Fn-*` headers the call adds before forwarding: no regrowth per call.
    let mut headers = HeaderMap::with_capacity(fields + FN_HEADERS_ADDED);
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let (mut close, mut keep, mut continue_expected) = (false, false, false);
    for &(name_start, name_end, value_start, value_end) in &spans[..fields] {
        let name = HeaderName::from_bytes(&head[name_start as usize..name_end as usize])
            .map_err(|_| bad("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_start as usize..value_end as usize))
            .map_err(|_| bad("invalid header value"))?;
        if name == CONTENT_LENGTH {
            for part in value.as_bytes().split(|&b| b == b',') {
                let n = std::str::from_utf8(part.trim_ascii())
                    .ok()
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| bad("invalid content-length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(bad("two different content-lengths"));
                }
                length = Some(n);
            }
        } else if name == TRANSFER_ENCODING {
            let last = value.as_bytes().rsplit(|&b| b == b',').next().unwrap_or_default().trim_ascii();
            chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
        } else if name == CONNECTION {
            close |= has_token(&value, "close");
            keep |= has_token(&value, "keep-alive");
        } else if name == EXPECT {
            continue_expected |= value.as_bytes().eq_ignore_ascii_case(b"100-continue");
        }
        headers.append(name, value);
    }
    // RFC 9112 §6.1 and §6.3: a request body is chunked last or has one length. Both at
    // once is how requests are smuggled past a proxy: refused, not guessed at.
    let framing = match (chunked, length) {
        (Some(_), Some(_)) => return Err(bad("both content-length and transfer-encoding")),
        (Some(_), None) if http10 => return Err(bad("transfer-encoding in an HTTP/1.0 request")),
        (Some(true), None) => BodyFraming::Chunked,
        (Some(false), None) => return Err(bad("a request body must be chunked last")),
        (None, Some(0) | None) => BodyFraming::None,
        (None, Some(n)) => BodyFraming::Length(n),
    };
    Ok(Some(RequestHead {
        method,
        uri,
        version: if http10 { Version::HTTP_10 } else { Version::HTTP_11 },
        headers,
        framing,
        continue_expected: continue_expected && !http10 && framing != BodyFraming::None,
        keep_alive: !close && (!http10 || keep),
    }))
}

/// The status line and headers of a response, ending with the blank line. The body's
/// framing is placerd's: `content-length` when `length` is known, else chunked (or, for a
/// `HEAD` answer, the runner's `content-length` as it is). Hop-by-hop framing headers in
/// `headers` are not written.
fn encode_response_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    head: bool,
    length: Option<u64>,
    chunked: bool,
    keep: Keep,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if name == TRANSFER_ENCODING || name == CONNECTION || (name == CONTENT_LENGTH && !head) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(n) = length {
        out.extend_from_slice(b"content-length: ");
        decimal(out, n);
        out.extend_from_slice(b"\r\n");
    } else if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    match keep {
        Keep::Open => {}
        Keep::Announced => out.extend_from_slice(b"connection: keep-alive\r\n"),
        Keep::Close => out.extend_from_slice(b"connection: close\r\n"),
    }
    out.extend_from_slice(b"date: ");
    date(out);
    out.extend_from_slice(b"\r\n\r\n");
}

/// Appends the current time as an HTTP date, formatted once per second per thread.
fn date(out: &mut Vec<u8>) {
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
        out.extend_from_slice(text);
    });
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A request body read from the client connection as the call asks for it.
struct RequestBody<'a> {
    stream: &'a TcpStream,
    buf: &'a mut BytesMut,
    framing: Framing,
    /// Bytes of `100 Continue` still to send before waiting for the body.
    to_continue: usize,
    /// Set once the body was read to its end.
    done: &'a AtomicBool,
}

enum Framing {
    Length(u64),
    Chunked(Chunked),
    Done,
}

impl Body for RequestBody<'_> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = self.get_mut();
        loop {
            match &mut this.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(left) if !this.buf.is_empty() => {
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(this.buf.len());
                    *left -= take as u64;
                    if *left == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(this.buf.split_to(take).freeze()))));
                }
                Framing::Length(_) => {}
                Framing::Chunked(decoder) => match decoder.decode(this.buf)? {
                    Decoded::Data(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Decoded::Done => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Decoded::NeedMore => {}
                },
            }
            // Nothing buffered: the client may be waiting to be told to send.
            while this.to_continue > 0 {
                ready!(this.stream.poll_write_ready(cx))?;
                match this.stream.try_write(&CONTINUE[CONTINUE.len() - this.to_continue..]) {
                    Ok(n) => this.to_continue -= n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Some(Err(e))),
                }
            }
            if ready!(poll_read(this.stream, this.buf, cx))? == 0 {
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection before the end of the body",
                ))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Chunked(_) => SizeHint::default(),
            Framing::Done => SizeHint::with_exact(0),
        }
    }
}

impl RequestBody<'_> {
    fn finish(&mut self) {
        self.framing = Framing::Done;
        self.to_continue = 0;
        self.done.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair on loopback: (the client's end, the server's end).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    /// More than loopback's send and receive buffers hold together.
    const LARGE: usize = 64 << 20;

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_dropped_after_the_send_timeout() {
        let (_client, server) = pair().await;
        let started = Instant::now();
        let response = vec![b'x'; LARGE];
        let e = tokio::time::timeout(2 * SEND_TIMEOUT, write_all(&server, &response))
            .await
            .expect("the write gives up on its own")
            .expect_err("the client never reads");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(started.elapsed() >= SEND_TIMEOUT, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_client_that_reads_gets_the_whole_response() {
        use tokio::io::AsyncReadExt;
        let (mut client, server) = pair().await;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.map(|_| got.len())
        });
        write_all(&server, &vec![b'x'; LARGE]).await.expect("written");
        drop(server);
        assert_eq!(reader.await.expect("joined").expect("read"), LARGE);
    }

    fn parse(text: &[u8]) -> Result<Option<RequestHead>, Refused> {
        let mut buf = BytesMut::from(text);
        parse_head(&mut buf)
    }

    fn status(text: &[u8]) -> StatusCode {
        match parse(text) {
            Err(Refused(status, _)) => status,
            Ok(head) => panic!("accepted {:?}: {head:?}", String::from_utf8_lossy(text)),
        }
    }

    #[test]
    fn heads_parse_with_their_framing_and_connection_semantics() {
        let mut buf =
            BytesMut::from(&b"POST /t/app/fn?x=1 HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\n\r\nabcNEXT"[..]);
        let head = parse_head(&mut buf).ok().flatten().expect("complete");
        assert_eq!((head.method, head.uri.path(), head.uri.query()), (Method::POST, "/t/app/fn", Some("x=1")));
        assert_eq!((head.framing, head.keep_alive, head.continue_expected), (BodyFraming::Length(3), true, false));
        assert_eq!(head.headers["host"], "a");
        assert_eq!(&buf[..], b"abcNEXT", "the head was split off, the body stays buffered");

        let head = parse(b"POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\nexpect: 100-continue\r\n\r\n")
            .ok()
            .flatten()
            .expect("chunked");
        assert_eq!((head.framing, head.continue_expected), (BodyFraming::Chunked, true));
        let head = parse(b"GET / HTTP/1.0\r\n\r\n").ok().flatten().expect("1.0");
        assert_eq!((head.version, head.keep_alive, head.framing), (Version::HTTP_10, false, BodyFraming::None));
        let head = parse(b"GET / HTTP/1.0\r\nconnection: Keep-Alive\r\n\r\n").ok().flatten().expect("1.0 kept");
        assert!(head.keep_alive);
        let head = parse(b"GET / HTTP/1.1\r\nconnection: foo, close\r\n\r\n").ok().flatten().expect("close");
        assert!(!head.keep_alive);
        let head = parse(b"GET / HTTP/1.1\r\nexpect: 100-continue\r\n\r\n").ok().flatten().expect("no body");
        assert!(!head.continue_expected, "nothing to continue without a body");
        assert!(parse(b"GET / HTTP/1.1\r\nhost: a\r\n").ok().expect("partial").is_none());
    }

    #[test]
    fn ambiguous_or_malformed_heads_are_refused_with_their_status() {
        for bad in [
            &b"POST / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked, gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: +1\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: \r\n\r\n",
            b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
        ] {
            assert_eq!(status(bad), StatusCode::BAD_REQUEST, "{:?}", String::from_utf8_lossy(bad));
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        assert_eq!(
            status(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let head = parse(b"POST / HTTP/1.1\r\ncontent-length: 5, 5\r\n\r\n").ok().flatten().expect("same twice");
        assert_eq!(head.framing, BodyFraming::Length(5));
    }

    #[test]
    fn response_heads_carry_placerd_framing_not_the_runner_one() {
        let mut headers = HeaderMap::new();
        headers.insert("content-length", HeaderValue::from_static("999"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("x-a", HeaderValue::from_static("b"));
        let mut out = Vec::new();
        encode_response_head(&mut out, StatusCode::OK, &headers, false, Some(5), false, Keep::Open);
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.starts_with("HTTP/1.1 200 OK\r\nx-a: b\r\ncontent-length: 5\r\ndate: "), "{text}");
        assert!(text.ends_with(" GMT\r\n\r\n"), "{text}");
        let mut out = Vec::new();
        encode_response_head(&mut out, StatusCode::BAD_GATEWAY, &HeaderMap::new(), false, None, true, Keep::Close);
        let text = String::from_utf8(out).expect("utf-8");
        assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\ntransfer-encoding: chunked\r\nconnection: close\r\n"));
        let mut out = Vec::new();
        encode_response_head(&mut out, StatusCode::OK, &headers, true, None, false, Keep::Announced);
        assert!(String::from_utf8(out).expect("utf-8").contains("content-length: 999\r\n"), "HEAD keeps the length");
        for n in [0, 7, 10, 12345, u64::MAX] {
            let mut out = Vec::new();
            decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
        let mut out = Vec::new();
        encode_response_head(&mut out, StatusCode::OK, &HeaderMap::new(), false, Some(0), false, Keep::Announced);
        assert!(String::from_utf8(out).expect("utf-8").contains("connection: keep-alive\r\n"), "for HTTP/1.0");
    }
}
