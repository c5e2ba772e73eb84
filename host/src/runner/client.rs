//! TryExec over HTTP/1.1: every attempt is classified as *not placed* (connect failed
//! before a byte was written, the request provably never left, a busy refusal, or the
//! runner left the pool) or *committed*.
//!
//! The calling task drives the runner connection itself: it writes the request (head and
//! body in one vectored write), reads and parses the response head (`crate::http1`) and,
//! for a small body of known length, the body, then returns the connection to its worker's
//! idle list for the runner (`idle`) before the client is answered. Larger or unsized bodies stream from the same
//! connection ([`RunnerBody`]), which goes back to the idle list when the body ends. There
//! is no connection task, no channel between tasks and no hidden retry: a request is only
//! sent again when not one byte of it was written.
//!
//! Once a call is sent, the runner has deadlines ([`RunnerTimeouts`]): the longest
//! silence between bytes of its answer, and the longest it may take none of the request.
//! Past either the call fails (the client gets 504); it is never sent elsewhere.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::{HeaderMap, Method, Response, StatusCode, Uri};
use tokio::net::TcpStream;

use super::idle::IdleConns;
use super::pool::{DynamicPool, InFlight, RunnerState};
use super::{Attempt, NotPlaced, RunnerFailed, TryExec};
use crate::http1::{self, Chunked, Decoded, Framing, Joined, MAX_HEAD_BYTES, ResponseHead, Silence, WHOLE_BODY_BYTES};
use crate::tls::{ClientTls, Socket};

/// The header a runner sets on a `503` to say "busy, did not start it".
pub const BUSY_HEADER: &str = "fn-runner-busy";

/// A request body up to this size travels in the head's buffer: one write, one segment.
const BODY_WITH_HEAD: usize = 4096;

/// A request as it goes to a runner: already stripped of hop-by-hop headers and carrying
/// the `Fn-*` headers.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Original method.
    pub method: Method,
    /// Original path and query (parsed once).
    pub uri: Uri,
    /// Headers to send.
    pub headers: HeaderMap,
    /// The buffered body.
    pub body: Bytes,
    /// How long the runner may keep silent, and take none of the request.
    pub timeouts: RunnerTimeouts,
}

/// The deadlines of a runner's I/O once a call is sent: a runner that stops answering or
/// reading fails the call (504) instead of holding it until the client gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerTimeouts {
    /// The longest silence between bytes from the runner, from the request's last byte to
    /// the response's last (`runner_read_timeout_ms`, per route too).
    pub read: Duration,
    /// The longest the runner may take none of the request (`runner_write_timeout_ms`).
    pub write: Duration,
}

impl Default for RunnerTimeouts {
    /// The config's defaults: 300 s (Fn's longest function timeout) and 60 s.
    fn default() -> Self {
        RunnerTimeouts { read: Duration::from_secs(300), write: Duration::from_secs(60) }
    }
}

/// One keep-alive HTTP/1.1 connection to a runner and the bytes read from it but not yet
/// used.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Plain or TLS; its TCP socket is shared with a send queued at the end of the
    /// scheduler's pass, which keeps it open.
    stream: Socket,
    buf: BytesMut,
    /// The read deadline of the call in progress.
    silence: Silence,
    /// No response has been read on it yet.
    fresh: bool,
}

fn timed_out(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what)
}

impl Conn {
    /// True unless the runner closed this idle connection or sent bytes nobody asked for.
    /// Costs no system call while the socket has not become readable since the last read.
    pub(crate) fn still_open(&mut self) -> bool {
        self.buf.is_empty() && self.stream.still_open()
    }

    /// Writes `head` then `body`, each wait for room at most `timeout`, and gives `head`
    /// back. On failure, also says how many bytes were written before it: none means the
    /// runner provably did not get the request.
    async fn write_request(
        &mut self,
        head: Bytes,
        body: &[u8],
        timeout: Duration,
    ) -> (Result<(), (usize, io::Error)>, Bytes) {
        match self.stream.seal_parts(&[&head, body]) {
            None => write_raw(self.stream.tcp(), head, body, timeout).await,
            // TLS: the request's records, sent as a request in one buffer is; a byte of
            // them written counts as the request written.
            Some(Ok(sealed)) => (write_raw(self.stream.tcp(), sealed, &[], timeout).await.0, head),
            Some(Err(e)) => (Err((0, e)), head),
        }
    }

    /// Reads more of the response into the buffer; `UnexpectedEof` if the runner closed.
    async fn read_more(&mut self, what: &str) -> io::Result<()> {
        match std::future::poll_fn(|cx| self.poll_read(cx)).await? {
            0 => Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("the runner closed the connection {what}"))),
            _ => Ok(()),
        }
    }

    /// Reads the response head, skipping informational (1xx) ones.
    async fn read_head(&mut self, method: &Method) -> io::Result<ResponseHead> {
        loop {
            // Room for `Fn-Call-Id` and `Fn-Placer`, added before the client gets it.
            match http1::parse_response(&mut self.buf, method, 2)? {
                Some(head) => {
                    if head.status == StatusCode::SWITCHING_PROTOCOLS {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, "the runner switched protocols"));
                    }
                    if !head.status.is_informational() {
                        return Ok(head);
                    }
                }
                None if self.buf.len() > MAX_HEAD_BYTES => {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "the runner's response head is too long"));
                }
                None => self.read_more("before its response head ended").await?,
            }
        }
    }

    /// Reads what the socket has into the buffer once it is readable; `Ok(0)` at the end,
    /// `TimedOut` when the runner kept silent for the read timeout.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        match self.stream.poll_read(&mut self.buf, cx) {
            Poll::Ready(read) => {
                self.silence.heard();
                Poll::Ready(read)
            }
            Poll::Pending if self.silence.poll_expired(cx) => {
                let silence = self.silence.timeout();
                Poll::Ready(Err(timed_out(format!("the runner sent nothing for {silence:?}"))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Back to `idle` for `runner` if the response allows another request and nothing
    /// past it was read; else closed.
    fn release(self, idle: &IdleConns, runner: &Arc<RunnerState>, keep_alive: bool) {
        if keep_alive && self.buf.is_empty() {
            idle.checkin(runner, self);
        }
    }

    /// Reads exactly `n` body bytes (`n` ≤ [`WHOLE_BODY_BYTES`]).
    async fn read_body(&mut self, n: usize) -> io::Result<Bytes> {
        while self.buf.len() < n {
            self.read_more("in the middle of the response body").await?;
        }
        Ok(self.buf.split_to(n).freeze())
    }
}

/// A runner's response body: read whole already (small, length known), or streaming from
/// the connection. A streaming body keeps the runner's in-flight count up until it is read
/// or dropped; a body read whole has ended the runner's part, so its count is already down
/// when the client is answered (the client's next call sees the runner free).
#[derive(Debug)]
pub struct RunnerBody {
    kind: BodyKind,
    _in_flight: Option<InFlight>,
}

#[derive(Debug)]
enum BodyKind {
    Whole(Option<Bytes>),
    Streaming(Box<Streaming>),
}

/// A body read as the client takes it. The connection goes back to the runner's idle list
/// when the body ends cleanly, and is closed if the body is dropped before that.
#[derive(Debug)]
struct Streaming {
    conn: Option<Conn>,
    runner: Arc<RunnerState>,
    idle: Arc<IdleConns>,
    decoding: Decoding,
    keep_alive: bool,
    /// Body bytes decoded before the client was answered, given first.
    prefix: Option<Bytes>,
}

#[derive(Debug)]
enum Decoding {
    /// Bytes left.
    Length(u64),
    Chunked(Chunked),
    UntilClose,
}

impl Streaming {
    /// The body ended: a reusable connection goes back to the runner.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.release(&self.idle, &self.runner, self.keep_alive);
        }
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if let Some(prefix) = self.prefix.take().filter(|p| !p.is_empty()) {
            return Poll::Ready(Some(Ok(prefix)));
        }
        loop {
            let Some(conn) = self.conn.as_mut() else { return Poll::Ready(None) };
            match &mut self.decoding {
                Decoding::Length(0) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Decoding::Length(left) if !conn.buf.is_empty() => {
                    let take = usize::try_from(*left).unwrap_or(usize::MAX).min(conn.buf.len());
                    *left -= take as u64;
                    let data = conn.buf.split_to(take).freeze();
                    // The last bytes: give the connection back now, as whoever reads the
                    // body may stop at the length without polling again.
                    if *left == 0 {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Decoding::Chunked(decoder) => match decoder.decode(&mut conn.buf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(data))),
                    Ok(Decoded::Done) => {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => {
                        self.conn = None;
                        return Poll::Ready(Some(Err(e)));
                    }
                },
                Decoding::UntilClose if !conn.buf.is_empty() => {
                    return Poll::Ready(Some(Ok(conn.buf.split().freeze())));
                }
                Decoding::Length(_) | Decoding::UntilClose => {}
            }
            match conn.poll_read(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    self.conn = None;
                    if matches!(self.decoding, Decoding::UntilClose) {
                        return Poll::Ready(None);
                    }
                    let cut = io::Error::new(io::ErrorKind::UnexpectedEof, "the runner closed the connection mid-body");
                    return Poll::Ready(Some(Err(cut)));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

impl RunnerBody {
    fn whole(bytes: Bytes) -> Self {
        RunnerBody { kind: BodyKind::Whole(Some(bytes)), _in_flight: None }
    }
}

impl Body for RunnerBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut self.kind {
            BodyKind::Whole(bytes) => Poll::Ready(bytes.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b)))),
            BodyKind::Streaming(s) => s.poll_data(cx).map(|data| data.map(|d| d.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Whole(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            BodyKind::Streaming(s) => s.conn.is_none() || matches!(s.decoding, Decoding::Length(0)),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Whole(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            BodyKind::Streaming(s) => match s.decoding {
                Decoding::Length(left) => SizeHint::with_exact(left),
                _ => SizeHint::default(),
            },
        }
    }
}

/// Sends calls to the runners of one pool over pooled keep-alive connections, each worker
/// its own.
#[derive(Debug, Clone)]
pub struct RunnerClient {
    /// The pool whose runners this client reaches: it decides on ejections, which depend
    /// on how many of its runners are ejected already.
    pool: Arc<DynamicPool>,
    /// Each worker's idle connections, per runner.
    idle: Arc<IdleConns>,
    /// TCP connect timeout for runner connections (`connect_timeout_ms`), in µs; a reload
    /// may change it.
    connect_timeout_us: Arc<AtomicU64>,
    /// `[runners.tls]`: new connections speak TLS with this while it is set (a reload
    /// may replace it; connections already open keep theirs).
    tls: Arc<arc_swap::ArcSwapOption<ClientTls>>,
}

/// How sending a request on one connection went.
enum Sent {
    /// Written whole: the runner may have started the call.
    Written(Conn),
    /// Not one byte was written.
    Unsent(io::Error),
    /// Part of it was written: committed.
    Partly(io::Error),
}

impl RunnerClient {
    /// A client for the runners of `pool`.
    pub fn new(pool: Arc<DynamicPool>, connect_timeout: Duration) -> Self {
        let client =
            RunnerClient { pool, idle: Arc::default(), connect_timeout_us: Arc::default(), tls: Arc::default() };
        client.set_connect_timeout(connect_timeout);
        client
    }

    /// The connect timeout of connections opened from now on.
    pub fn set_connect_timeout(&self, timeout: Duration) {
        let us = u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX);
        self.connect_timeout_us.store(us, Ordering::Relaxed);
    }

    /// New connections to runners speak TLS with `tls` (plain with `None`).
    pub fn set_tls(&self, tls: Option<Arc<ClientTls>>) {
        self.tls.store(tls);
    }

    /// Where the TLS of new runner connections is kept, for others that connect to
    /// runners (the status poller).
    pub fn tls(&self) -> Arc<arc_swap::ArcSwapOption<ClientTls>> {
        self.tls.clone()
    }

    /// Opens a new connection to `runner`, with its TLS handshake if runners speak TLS,
    /// within the connect timeout. A handshake that fails (the runner's certificate does
    /// not verify, it wants a client certificate) is a connect failure: nothing of the
    /// call was written.
    async fn connect(&self, runner: &RunnerState) -> Result<Conn, NotPlaced> {
        let address = &runner.address;
        let timeout = Duration::from_micros(self.connect_timeout_us.load(Ordering::Relaxed));
        let tls = self.tls.load_full();
        let connect = async {
            let tcp = TcpStream::connect(address.as_str()).await?;
            let _ = tcp.set_nodelay(true);
            match tls {
                None => Ok(Socket::plain(tcp)),
                Some(tls) => tls.connect(tcp, address).await.map_err(|e| io::Error::new(e.kind(), format!("TLS: {e}"))),
            }
        };
        let stream = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| NotPlaced::ConnectTimeout { runner: address.clone() })?
            .map_err(|source| NotPlaced::Connect { runner: address.clone(), source })?;
        Ok(Conn { stream, buf: BytesMut::new(), silence: Silence::new(Duration::ZERO), fresh: true })
    }

    /// Writes the request on an idle connection, or on a fresh one when there is none or
    /// every idle one failed before writing a byte (the runner had closed it).
    async fn send(
        &self,
        runner: &Arc<RunnerState>,
        head: Bytes,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Sent, NotPlaced> {
        let mut head = head;
        while let Some(conn) = self.idle.checkout(runner) {
            match write(conn, head, body, timeout).await {
                (Sent::Unsent(_), back) => head = back,
                (sent, _) => return Ok(sent),
            }
        }
        let conn = match self.connect(runner).await {
            Ok(conn) => conn,
            Err(e) => {
                self.pool.record_connect_failure(runner, &e);
                return Err(e);
            }
        };
        match write(conn, head, body, timeout).await.0 {
            Sent::Unsent(source) => Err(NotPlaced::Unsent { runner: runner.address.clone(), source }),
            sent => Ok(sent),
        }
    }
}

async fn write(mut conn: Conn, head: Bytes, body: &[u8], timeout: Duration) -> (Sent, Bytes) {
    let (written, head) = conn.write_request(head, body, timeout).await;
    let sent = match written {
        Ok(()) => Sent::Written(conn),
        Err((0, e)) => Sent::Unsent(e),
        Err((_, e)) => Sent::Partly(e),
    };
    (sent, head)
}

/// Writes `head` then `body` to `stream` (a request, or its TLS records), each wait for
/// room at most `timeout`, and gives `head` back; on failure, also how many bytes were
/// written before it.
async fn write_raw(
    stream: &Arc<TcpStream>,
    head: Bytes,
    body: &[u8],
    timeout: Duration,
) -> (Result<(), (usize, io::Error)>, Bytes) {
    let total = head.len() + body.len();
    let (mut written, head) = (0, head);
    // The runner requests of one scheduler pass go out together, at its end (see
    // `pass`): the other calls woken by the same events place theirs first, and a
    // runner woken by the first request finds the rest queued instead of being woken
    // again for each. A request in one buffer is sent by the pass itself.
    let head = if body.is_empty() {
        let (sent, head) = crate::pass::write_some(stream, head).await;
        match sent {
            Ok(n) => written = n,
            // A send the ring may have made counts as written: never sent again.
            Err(e) => return (Err((usize::from(e.maybe_sent), e.error)), head),
        }
        head
    } else {
        crate::pass::end().await;
        head
    };
    while written < total {
        // One buffer left (the usual case: a small body travels in the head's buffer)
        // is a plain `send`; `writev` costs the kernel more per call.
        let result = if written >= head.len() {
            stream.try_write(&body[written - head.len()..])
        } else if body.is_empty() {
            stream.try_write(&head[written..])
        } else {
            stream.try_write_vectored(&[IoSlice::new(&head[written..]), IoSlice::new(body)])
        };
        match result {
            Ok(0) => return (Err((written, io::ErrorKind::WriteZero.into())), head),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match tokio::time::timeout(timeout, stream.writable()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return (Err((written, e)), head),
                    Err(_) => {
                        let e = timed_out(format!("the runner took none of the request for {timeout:?}"));
                        return (Err((written, e)), head);
                    }
                }
            }
            Err(e) => return (Err((written, e)), head),
        }
    }
    (Ok(()), head)
}

/// Whether `error` is a TLS alert by which a runner refused the connection's handshake
/// (placerd's certificate missing or not trusted): sent before it reads any request.
fn refused_by_tls(error: &io::Error) -> bool {
    use rustls::AlertDescription as A;
    let Some(rustls::Error::AlertReceived(alert)) = error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return false;
    };
    matches!(
        alert,
        A::CertificateRequired
            | A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied
            | A::HandshakeFailure
    )
}

/// A failure after the call was committed (`commit`: the first news of it): never sent
/// anywhere else, a 502.
fn failed(runner: &RunnerState, commit: bool, error: io::Error) -> Attempt<Response<RunnerBody>> {
    runner.failed(commit);
    Attempt::Committed(Err(RunnerFailed { runner: runner.address.clone(), error }))
}

impl TryExec<Forward, Arc<RunnerState>> for RunnerClient {
    type Output = Response<RunnerBody>;

    async fn try_exec(&self, runner: &Arc<RunnerState>, call: &Forward) -> Attempt<Self::Output> {
        if runner.left() {
            return Attempt::NotPlaced(NotPlaced::Closed);
        }
        // Count the call on the runner before anything else, so placements racing this
        // one already see it (bounded loads depend on it); dropped again if not placed.
        let in_flight = runner.track();
        // A small body goes in the same buffer as the head: one write, one segment.
        let (head, body) = request_head(call, &runner.address);
        let mut conn = match self.send(runner, head, body, call.timeouts.write).await {
            Ok(Sent::Written(conn)) => conn,
            Ok(Sent::Partly(e) | Sent::Unsent(e)) => return failed(runner, true, e),
            Err(not_placed) => return Attempt::NotPlaced(not_placed),
        };
        // The runner's latency: from its request's last byte to its answer's head. Its
        // silence is counted from there too.
        let sent = Instant::now();
        conn.silence.restart(call.timeouts.read);
        let response = match conn.read_head(&call.method).await {
            Ok(head) => head,
            Err(e) if conn.fresh && refused_by_tls(&e) => {
                // TLS 1.3 ends the client's handshake before the runner checks its
                // certificate: a runner that refuses it says so with an alert instead of
                // an answer, and never read the request. A connect failure.
                let e = NotPlaced::Connect { runner: runner.address.clone(), source: e };
                self.pool.record_connect_failure(runner, &e);
                return Attempt::NotPlaced(e);
            }
            Err(e) => return failed(runner, true, e),
        };
        conn.fresh = false;
        let busy = response.status == StatusCode::SERVICE_UNAVAILABLE
            && response.headers.get(BUSY_HEADER).is_some_and(|v| v.as_bytes() == b"1");
        if busy {
            runner.refused();
            // Keep the connection only if the refusal's body came with its head: waiting
            // for the rest would hold up the next runner's try.
            if response.framing.length() == Some(conn.buf.len() as u64) {
                conn.buf.clear();
                conn.release(&self.idle, runner, response.keep_alive);
            }
            return Attempt::NotPlaced(NotPlaced::Busy);
        }
        runner.served(sent.elapsed());
        let ResponseHead { status, headers, framing, keep_alive } = response;
        let body = match framing.length().filter(|&n| n <= WHOLE_BODY_BYTES as u64) {
            Some(n) => match conn.read_body(n as usize).await {
                Ok(bytes) => {
                    conn.release(&self.idle, runner, keep_alive);
                    drop(in_flight);
                    RunnerBody::whole(bytes)
                }
                Err(error) => return failed(runner, false, error),
            },
            None => {
                let mut prefix = None;
                let decoding = match framing {
                    Framing::Length(n) => Decoding::Length(n),
                    Framing::Chunked => {
                        // What came with the head is decoded now: a malformed start is a
                        // 502 before the client gets a head, and a body that came whole
                        // goes out whole (with its length), its connection free at once.
                        let mut decoder = Chunked::new();
                        let (bytes, done) = match decode_buffered(&mut decoder, &mut conn.buf) {
                            Ok(decoded) => decoded,
                            Err(error) => return failed(runner, false, error),
                        };
                        if done {
                            conn.release(&self.idle, runner, keep_alive);
                            drop(in_flight);
                            return Attempt::Committed(Ok(answer(status, headers, RunnerBody::whole(bytes))));
                        }
                        prefix = Some(bytes);
                        Decoding::Chunked(decoder)
                    }
                    Framing::Empty | Framing::UntilClose => Decoding::UntilClose,
                };
                let streaming = Streaming {
                    conn: Some(conn),
                    runner: runner.clone(),
                    idle: self.idle.clone(),
                    decoding,
                    keep_alive,
                    prefix,
                };
                RunnerBody { kind: BodyKind::Streaming(Box::new(streaming)), _in_flight: Some(in_flight) }
            }
        };
        Attempt::Committed(Ok(answer(status, headers, body)))
    }
}

/// The request head of `call` for the runner at `address`, with the body in the same
/// buffer when it is small; and the body to send after it (empty then).
///
/// Heads are cut from one buffer per thread: each head's bytes are owned (a send at the
/// end of the pass holds them) and a new buffer is needed only when it runs out, not per
/// call.
fn request_head<'a>(call: &'a Forward, address: &str) -> (Bytes, &'a [u8]) {
    thread_local! {
        static HEADS: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
    }
    /// What a new buffer holds: room for a few hundred heads of a few hundred bytes.
    const HEADS_BUFFER: usize = 64 * 1024;
    let with_body = call.body.len() <= BODY_WITH_HEAD;
    let target = call.uri.path_and_query().map_or("/", |p| p.as_str());
    let room = 256 + call.headers.len() * 64 + if with_body { call.body.len() } else { 0 };
    HEADS.with_borrow_mut(|buf| {
        if buf.capacity() - buf.len() < room {
            buf.reserve(room.max(HEADS_BUFFER));
        }
        http1::encode_request_head(&call.method, target, &call.headers, address, call.body.len() as u64, buf);
        if with_body {
            buf.extend_from_slice(&call.body);
        }
        let head = buf.split().freeze();
        (head, if with_body { &[][..] } else { &call.body[..] })
    })
}

fn answer(status: StatusCode, headers: HeaderMap, body: RunnerBody) -> Response<RunnerBody> {
    let mut answer = Response::new(body);
    *answer.status_mut() = status;
    *answer.headers_mut() = headers;
    answer
}

/// Decodes the chunked body bytes `buf` holds already; the body so far, and whether it
/// ended.
fn decode_buffered(decoder: &mut Chunked, buf: &mut BytesMut) -> io::Result<(Bytes, bool)> {
    let mut body = Joined::default();
    loop {
        match decoder.decode(buf)? {
            Decoded::Data(data) => body.push(data, 0),
            Decoded::NeedMore => return Ok((body.finish(), false)),
            Decoded::Done => return Ok((body.finish(), true)),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A runner on a loopback port that answers the first request of each connection with
    /// `size` bytes of body, then keeps the connection open.
    async fn runner(size: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut head, mut chunk) = (Vec::new(), [0u8; 1024]);
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let mut answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n").into_bytes();
                    answer.resize(answer.len() + size, b'x');
                    let _ = stream.write_all(&answer).await;
                    let _ = stream.read(&mut chunk).await;
                });
            }
        });
        address
    }

    /// A client of a pool of one [`runner`] answering `size` bytes, the runner's handle,
    /// and a `GET /call` for it.
    async fn client_of(size: usize) -> (RunnerClient, Arc<RunnerState>, Forward) {
        let pool = Arc::new(DynamicPool::new(&[runner(size).await]));
        let client = RunnerClient::new(pool.clone(), Duration::from_secs(5));
        let handle = pool.membership().handles[0].clone();
        let call = Forward {
            method: Method::GET,
            uri: Uri::from_static("/call"),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            timeouts: RunnerTimeouts::default(),
        };
        (client, handle, call)
    }

    /// The runner's in-flight count while the call's answer is held, and once its body
    /// has been read.
    async fn in_flight_while_held(size: usize) -> (u32, u32) {
        let (client, handle, call) = client_of(size).await;
        let Attempt::Committed(Ok(answer)) = client.try_exec(&handle, &call).await else { panic!("no answer") };
        let held = handle.in_flight();
        let body = answer.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body.len(), size);
        (held, handle.in_flight())
    }

    #[tokio::test]
    async fn each_worker_keeps_its_own_idle_connections() {
        let (client, handle, call) = client_of(10).await;
        let Attempt::Committed(Ok(_)) = client.try_exec(&handle, &call).await else { panic!("no answer") };
        assert_eq!(client.idle.count(&handle), 1, "kept for this thread's next call");
        // Another worker: its own runtime on its own thread, its own connection.
        let (other, other_handle, other_call) = (client.clone(), handle.clone(), call.clone());
        // Waited for off this runtime's thread, which keeps serving the runner meanwhile.
        let kept_there = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async {
                assert_eq!(other.idle.count(&other_handle), 0, "none of the first thread's");
                let Attempt::Committed(Ok(_)) = other.try_exec(&other_handle, &other_call).await else {
                    panic!("no answer")
                };
                other.idle.count(&other_handle)
            })
        })
        .await
        .expect("joined");
        assert_eq!(kept_there, 1);
        assert_eq!(client.idle.count(&handle), 1, "this thread's list is untouched");
    }

    #[tokio::test]
    async fn a_body_read_whole_frees_the_runner_before_the_client_is_answered() {
        // The client's next call must see the runner free (bounded loads count on it).
        assert_eq!(in_flight_while_held(100).await, (0, 0));
        // A streaming body is the runner still answering.
        assert_eq!(in_flight_while_held(WHOLE_BODY_BYTES + 1).await, (1, 0));
    }
}
