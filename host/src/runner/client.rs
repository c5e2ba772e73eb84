//! TryExec over HTTP/1.1: every attempt is classified as *not placed* (connect failed
//! before a byte was written, the request provably never left, a busy refusal, or the
//! runner left the pool) or *committed*. There is no hidden retry: hyper's low-level
//! connection API is used directly, and a request is only re-sent when hyper hands it back
//! unsent.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::pool::{DynamicPool, InFlight, RunnerState};
use super::{Attempt, NotPlaced, RunnerFailed, TryExec};

/// The header a runner sets on a `503` to say "busy, did not start it".
pub const BUSY_HEADER: &str = "fn-runner-busy";

/// A request as it goes to a runner: already stripped of hop-by-hop headers and carrying
/// the `Fn-*` headers.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Original method.
    pub method: Method,
    /// Original path and query (parsed once; each attempt clones it).
    pub uri: Uri,
    /// Headers to send.
    pub headers: HeaderMap,
    /// The buffered body.
    pub body: Bytes,
}

/// A runner's response body that keeps the runner's in-flight count up until it is read
/// or dropped.
#[derive(Debug)]
pub struct RunnerBody {
    inner: Incoming,
    _in_flight: InFlight,
}

impl Body for RunnerBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Sends calls to the runners of one pool over pooled keep-alive connections.
#[derive(Debug, Clone)]
pub struct RunnerClient {
    /// The pool whose runners this client reaches: it decides on ejections, which depend
    /// on how many of its runners are ejected already.
    pool: Arc<DynamicPool>,
    /// TCP connect timeout for runner connections (`connect_timeout_ms`), in µs; a reload
    /// may change it.
    connect_timeout_us: Arc<AtomicU64>,
}

impl RunnerClient {
    /// A client for the runners of `pool`.
    pub fn new(pool: Arc<DynamicPool>, connect_timeout: Duration) -> Self {
        let client = RunnerClient { pool, connect_timeout_us: Arc::default() };
        client.set_connect_timeout(connect_timeout);
        client
    }

    /// The connect timeout of connections opened from now on.
    pub fn set_connect_timeout(&self, timeout: Duration) {
        let us = u64::try_from(timeout.as_micros()).unwrap_or(u64::MAX);
        self.connect_timeout_us.store(us, Ordering::Relaxed);
    }

    /// Opens a new HTTP/1.1 connection to `runner` within the connect timeout.
    async fn connect(&self, runner: &RunnerState) -> Result<SendRequest<Full<Bytes>>, NotPlaced> {
        let address = &runner.address;
        let timeout = Duration::from_micros(self.connect_timeout_us.load(Ordering::Relaxed));
        let stream = tokio::time::timeout(timeout, TcpStream::connect(address.as_str()))
            .await
            .map_err(|_| NotPlaced::ConnectTimeout { runner: address.clone() })?
            .map_err(|source| NotPlaced::Connect { runner: address.clone(), source })?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|source| NotPlaced::Handshake { runner: address.clone(), source })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "runner connection ended");
            }
        });
        sender.ready().await.map_err(|source| NotPlaced::Handshake { runner: address.clone(), source })?;
        Ok(sender)
    }

    /// Sends `request` on a pooled connection, or on a fresh one when there is none or
    /// hyper hands the request back unsent (the runner closed the idle connection: the
    /// request provably never left).
    async fn send(
        &self,
        runner: &RunnerState,
        request: Request<Full<Bytes>>,
    ) -> Result<Result<Response<Incoming>, RunnerFailed>, NotPlaced> {
        let request = match runner.checkout() {
            None => request,
            Some(mut pooled) => match pooled.try_send_request(request).await {
                Ok(response) => {
                    runner.checkin(pooled);
                    return Ok(Ok(response));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) => unsent,
                    None => return Ok(Err(RunnerFailed { runner: runner.address.clone(), error: e.into_error() })),
                },
            },
        };
        let mut fresh = match self.connect(runner).await {
            Ok(conn) => conn,
            Err(e) => {
                self.pool.record_connect_failure(runner, &e);
                return Err(e);
            }
        };
        match fresh.try_send_request(request).await {
            Ok(response) => {
                runner.checkin(fresh);
                Ok(Ok(response))
            }
            Err(mut e) => match e.take_message() {
                Some(_) => Err(NotPlaced::Unsent { runner: runner.address.clone(), source: e.into_error() }),
                None => Ok(Err(RunnerFailed { runner: runner.address.clone(), error: e.into_error() })),
            },
        }
    }
}

fn build(forward: &Forward) -> Result<Request<Full<Bytes>>, NotPlaced> {
    let mut request = Request::builder()
        .method(forward.method.clone())
        .uri(forward.uri.clone())
        .body(Full::new(forward.body.clone()))
        .map_err(NotPlaced::BadRequest)?;
    *request.headers_mut() = forward.headers.clone();
    Ok(request)
}

/// A busy refusal is not placed; any other answer is committed.
fn classify(
    runner: &RunnerState,
    response: Response<Incoming>,
    in_flight: InFlight,
    latency: Duration,
) -> Attempt<Response<RunnerBody>> {
    let busy = response.status() == StatusCode::SERVICE_UNAVAILABLE
        && response.headers().get(BUSY_HEADER).is_some_and(|v| v.as_bytes() == b"1");
    runner.record_answer(!busy);
    if busy {
        runner.record_refusal();
        return Attempt::NotPlaced(NotPlaced::Busy);
    }
    runner.record_latency(latency);
    runner.record_commit();
    Attempt::Committed(Ok(response.map(|inner| RunnerBody { inner, _in_flight: in_flight })))
}

impl TryExec<Forward, Arc<RunnerState>> for RunnerClient {
    type Output = Response<RunnerBody>;

    async fn try_exec(&self, runner: &Arc<RunnerState>, call: &Forward) -> Attempt<Self::Output> {
        if runner.left() {
            return Attempt::NotPlaced(NotPlaced::Closed);
        }
        let request = match build(call) {
            Ok(r) => r,
            Err(e) => return Attempt::NotPlaced(e),
        };
        // Count the call on the runner before anything else, so placements racing this
        // one already see it (bounded loads depend on it); dropped again if not placed.
        let in_flight = runner.track();
        let sent = std::time::Instant::now();
        match self.send(runner, request).await {
            Ok(Ok(response)) => classify(runner, response, in_flight, sent.elapsed()),
            Ok(Err(failed)) => {
                runner.record_commit();
                runner.record_error();
                Attempt::Committed(Err(failed))
            }
            Err(not_placed) => Attempt::NotPlaced(not_placed),
        }
    }
}
