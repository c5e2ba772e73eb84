//! The proxy port's HTTP/1.1 server: one task per client connection reads a request head
//! (`crate::http1`), lends the call its body straight from the connection's buffer, and
//! writes the response head, and a small body with it, in one write. No hyper on this
//! side: no dispatcher state machine, no per-request timer, no channel.
//!
//! What a client may do and what it gets:
//! - a head `http1` refuses: its status (400 malformed or ambiguous, 405 `CONNECT` or
//!   `TRACE`, 431 too large, 501 a transfer coding other than chunked), and the
//!   connection closes after the answer.
//! - a head that does not arrive whole within `client_header_timeout_ms` of its first byte:
//!   408 and closed; no request for `client_idle_timeout_ms` on an open connection (the
//!   first request included): closed.
//! - a client that takes none of its response for [`SEND_TIMEOUT`]: closed (a slow reader
//!   holds neither a task nor a runner connection for longer).
//! - `Expect: 100-continue`: `100 Continue` when the call starts reading the body.
//! - HTTP/1.0: answered, kept alive only on `connection: keep-alive`; a body of unknown
//!   length is sent as it comes and the connection closes after it (never chunked).
//! - closing (or half-closing) the connection while its call runs: the call's future is
//!   dropped (no further runner is tried), as hyper and nginx do.
//! - pipelined requests: answered in order.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::header::{ALLOW, CONNECTION, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode, Version};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::{Proxy, ProxyBody, json_error};
use crate::http1::{
    self, BodyFraming, Chunked, Decoded, Keep, MAX_HEAD_BYTES, Refusal, RequestHead, Sized, WHOLE_BODY_BYTES,
};
use crate::tls::Socket;

/// How many headers a call adds to the client's before forwarding them (`Fn-Call-Id`,
/// `Fn-App-Id`, `Fn-Fn-Id`, `Fn-Call-Type`, `Fn-Deadline`).
const FN_HEADERS_ADDED: usize = 5;
/// What a connection's buffers start with.
const BUFFER: usize = 8 * 1024;

/// Serves one client connection (plain, or TLS past its handshake) until it closes,
/// fails, idles out, or `stop` is cancelled while no request is in flight. A TLS
/// connection is closed with `close_notify`.
pub async fn serve_connection(proxy: Arc<Proxy>, stream: Socket, stop: CancellationToken) {
    let (idle, header) = proxy.client_timeouts();
    let mut conn = Conn {
        stream,
        buf: BytesMut::with_capacity(BUFFER),
        out: BytesMut::with_capacity(BUFFER),
        timer: Box::pin(tokio::time::sleep(idle)),
        deadline: Instant::now() + idle,
    };
    serve_requests(&proxy, &mut conn, header, &stop).await;
    conn.stream.close_notify();
}

/// The requests of one connection, in order, until one ends it.
async fn serve_requests(proxy: &Arc<Proxy>, conn: &mut Conn, mut header: Duration, stop: &CancellationToken) {
    let stopping = stop.cancelled();
    tokio::pin!(stopping);
    loop {
        let head = match conn.read_head(stopping.as_mut(), header).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(refusal) => {
                let mut response = json_error(refusal.status, &refusal.reason);
                if refusal.status == StatusCode::METHOD_NOT_ALLOWED {
                    response
                        .headers_mut()
                        .insert(ALLOW, HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"));
                }
                let _ = conn.write_response(response, &Method::GET, Version::HTTP_11, Keep::Close, proxy).await;
                return;
            }
        };
        let (method, version, keep_alive) = (head.method.clone(), head.version, head.keep_alive);
        let body_done = AtomicBool::new(false);
        let body = RequestBody::new(&conn.stream, &mut conn.buf, head.framing, head.continue_expected, &body_done);
        let call = proxy.serve(head, body);
        let gone = client_gone(&conn.stream, &body_done);
        let response = tokio::select! {
            biased;
            response = call => response,
            () = gone => return, // the call was dropped: logged and counted as 499
        };
        // A body the call did not read to its end leaves the stream mid-request.
        let keep_alive = keep_alive && body_done.load(Ordering::Relaxed) && !closes(response.headers());
        // An HTTP/1.0 client keeps the connection only when the answer says so.
        let keep = match (keep_alive, version) {
            (false, _) => Keep::Close,
            (true, Version::HTTP_10) => Keep::Announced,
            (true, _) => Keep::Open,
        };
        match conn.write_response(response, &method, version, keep, proxy).await {
            Ok(true) => {
                let (idle, next_header) = proxy.client_timeouts();
                conn.rearm(idle);
                header = next_header;
            }
            Ok(false) => return,
            Err(e) => {
                tracing::debug!(error = %e, "client connection ended while answering");
                return;
            }
        }
    }
}

/// One client connection's socket, buffers and idle timer.
struct Conn {
    /// Plain or TLS; its TCP socket is shared with a write queued at the end of the
    /// scheduler's pass, which keeps it open.
    stream: Socket,
    /// Bytes read and not yet parsed: the next head, a body, pipelined requests.
    buf: BytesMut,
    /// The response being written; its allocation comes back once the write is done.
    out: BytesMut,
    /// Wakes the connection at or before `deadline`. Reset only when the deadline moves
    /// earlier: a deadline pushed later is found when the timer fires early.
    timer: Pin<Box<Sleep>>,
    /// When the current wait (idle, or a head arriving) gives up.
    deadline: Instant,
}

impl Conn {
    /// Sets the deadline of the next wait to `timeout` from now.
    fn rearm(&mut self, timeout: Duration) {
        self.deadline = Instant::now() + timeout;
        if self.deadline < self.timer.deadline() {
            self.timer.as_mut().reset(self.deadline);
        }
    }

    /// Reads until a whole request head is buffered and parses it; a head must arrive
    /// within `header_timeout` of its first byte. `Ok(None)`: the client closed the
    /// connection or idled out between requests, or `stopping` resolved then.
    async fn read_head(
        &mut self,
        mut stopping: Pin<&mut impl Future<Output = ()>>,
        header_timeout: Duration,
    ) -> Result<Option<RequestHead>, Refusal> {
        let mut started = false;
        loop {
            if !self.buf.is_empty() {
                if let Some(head) = http1::parse_request(&mut self.buf, FN_HEADERS_ADDED)? {
                    return Ok(Some(head));
                }
                if self.buf.len() > MAX_HEAD_BYTES {
                    return Err(Refusal::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"));
                }
                if !started {
                    // Part of a head: the rest must follow promptly.
                    started = true;
                    self.rearm(header_timeout);
                }
            }
            let idle = self.buf.is_empty();
            let read = poll_fn(|cx| {
                if let Poll::Ready(read) = self.stream.poll_read(&mut self.buf, cx) {
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
                    return Err(Refusal::new(StatusCode::REQUEST_TIMEOUT, "the request head did not arrive in time"));
                }
            }
        }
    }

    /// Writes `response` to a `method` request of HTTP `version`: head and small body in
    /// one write, a larger one after it, an unsized one chunked (HTTP/1.1) or until the
    /// connection closes (HTTP/1.0). Returns whether the connection stays open.
    async fn write_response(
        &mut self,
        response: Response<ProxyBody>,
        method: &Method,
        version: Version,
        keep: Keep,
        proxy: &Proxy,
    ) -> io::Result<bool> {
        let (head, mut body) = response.into_parts();
        let status = head.status;
        let bodiless = *method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let length = if bodiless { None } else { body.size_hint().exact() };
        let sized = match length {
            _ if *method == Method::HEAD => Sized::HeadAnswer,
            _ if bodiless => Sized::Unframed,
            Some(n) => Sized::Length(n),
            None if version == Version::HTTP_10 => Sized::Unframed,
            None => Sized::Chunked,
        };
        // RFC 9112 §6.1: an HTTP/1.0 client never gets chunked; its body ends at the close.
        let keep = if sized == Sized::Unframed && !bodiless { Keep::Close } else { keep };
        let mut keep_alive = keep != Keep::Close;
        let chunked = sized == Sized::Chunked;
        self.out.clear();
        http1::encode_response_head(&mut self.out, status, &head.headers, sized, keep);
        // An answer written in one piece is sent at the end of the scheduler's pass, so the
        // answers of one pass reach the client together (see `pass`).
        if bodiless {
            return self.stream.write_at_pass_end(self.out.split().freeze()).await.map(|()| keep_alive);
        }
        let mut sent: u64 = 0;
        let next = |frame: Option<Result<http_body::Frame<Bytes>, super::BodyError>>| match frame {
            None => Ok(None),
            Some(Ok(frame)) => Ok(Some(frame.into_data().unwrap_or_default())), // trailers: not forwarded
            Some(Err(e)) => {
                if e.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::TimedOut) {
                    proxy.metrics.record_runner_timeout();
                }
                Err(io::Error::other(e))
            }
        };
        if length.is_some_and(|n| n <= WHOLE_BODY_BYTES as u64) {
            // Usually one frame, ready at once: it goes out with the head.
            while let Some(data) = next(body.frame().await)? {
                sent += data.len() as u64;
                self.out.put_slice(&data);
            }
            self.stream.write_at_pass_end(self.out.split().freeze()).await?;
        } else {
            self.stream.write_all(&self.out).await?;
            while let Some(data) = next(body.frame().await)? {
                if data.is_empty() {
                    continue;
                }
                sent += data.len() as u64;
                if chunked {
                    self.out.clear();
                    let _ = std::fmt::Write::write_fmt(&mut self.out, format_args!("{:x}\r\n", data.len()));
                    if data.len() <= WHOLE_BODY_BYTES {
                        // One write per chunk: its size line, data and end together.
                        self.out.put_slice(&data);
                        self.out.put_slice(b"\r\n");
                        self.stream.write_all(&self.out).await?;
                    } else {
                        self.stream.write_all(&self.out).await?;
                        self.stream.write_all(&data).await?;
                        self.stream.write_all(b"\r\n").await?;
                    }
                } else {
                    self.stream.write_all(&data).await?;
                }
            }
            if chunked {
                self.stream.write_all(b"0\r\n\r\n").await?;
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

/// What a wait for bytes ended with.
enum Wait {
    Read(io::Result<usize>),
    Stop,
    Timeout,
}

/// Resolves when the client closes its side of the connection (or it fails) after the
/// request's body was read; pending forever once the client sends more (a pipelined
/// request: it is read after this response).
async fn client_gone(stream: &Socket, body_done: &AtomicBool) {
    let mut pipelined = false;
    poll_fn(|cx| {
        // The call reads the body on the same socket; until then its bytes are not news.
        // The call's task is polled first, so the pass that finishes the body checks here.
        if pipelined || !body_done.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        match stream.poll_peek(cx) {
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
    headers.get(CONNECTION).is_some_and(|v| http1::has_token(v, "close"))
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A request body read from the client connection as the call asks for it.
#[derive(Debug)]
pub(crate) struct RequestBody<'a> {
    stream: &'a Socket,
    buf: &'a mut BytesMut,
    framing: Framing,
    /// Bytes of `100 Continue` still to send before waiting for the body.
    to_continue: usize,
    /// Set once the body was read to its end.
    done: &'a AtomicBool,
}

#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(Chunked),
    Done,
}

impl<'a> RequestBody<'a> {
    /// The body of a request framed as `framing`, read from `stream` after what `buf`
    /// holds; `done` is set once it is read to its end (at once when there is none). `continue_expected`: send
    /// `100 Continue` before the first wait for bytes.
    pub(crate) fn new(
        stream: &'a Socket,
        buf: &'a mut BytesMut,
        framing: BodyFraming,
        continue_expected: bool,
        done: &'a AtomicBool,
    ) -> Self {
        done.store(framing == BodyFraming::None, Ordering::Relaxed);
        let framing = match framing {
            BodyFraming::None => Framing::Done,
            BodyFraming::Length(n) => Framing::Length(n),
            BodyFraming::Chunked => Framing::Chunked(Chunked::new()),
        };
        RequestBody { stream, buf, framing, to_continue: if continue_expected { CONTINUE.len() } else { 0 }, done }
    }

    /// The body's length as its head declared it (0 when chunked or absent).
    pub(crate) fn declared(&self) -> u64 {
        match self.framing {
            Framing::Length(n) => n,
            Framing::Chunked(_) | Framing::Done => 0,
        }
    }

    /// The next bytes of the body; `None` at its end.
    ///
    /// # Errors
    /// The client closed the connection before the end, or sent a malformed chunked body.
    pub(crate) async fn data(&mut self) -> Option<io::Result<Bytes>> {
        poll_fn(|cx| self.poll_data(cx)).await
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            match &mut self.framing {
                Framing::Done => return Poll::Ready(None),
                Framing::Length(left) if !self.buf.is_empty() => {
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(self.buf.len());
                    *left -= take as u64;
                    if *left == 0 {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(self.buf.split_to(take).freeze())));
                }
                Framing::Length(_) => {}
                Framing::Chunked(decoder) => match decoder.decode(self.buf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(data))),
                    Ok(Decoded::Done) => {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => return Poll::Ready(Some(Err(e))),
                },
            }
            // Nothing buffered: the client may be waiting to be told to send.
            while self.to_continue > 0 {
                match std::task::ready!(self.stream.poll_send(&CONTINUE[CONTINUE.len() - self.to_continue..], cx)) {
                    Ok(n) => self.to_continue -= n,
                    Err(e) => return Poll::Ready(Some(Err(e))),
                }
            }
            match std::task::ready!(self.stream.poll_read(self.buf, cx)) {
                Ok(0) => {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed the connection before the end of the body",
                    ))));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }

    fn finish(&mut self) {
        self.framing = Framing::Done;
        self.to_continue = 0;
        self.done.store(true, Ordering::Relaxed);
    }
}
