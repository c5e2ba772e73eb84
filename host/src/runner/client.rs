//! TryExec over HTTP/1.1 (DESIGN §4, §6): every attempt is classified as *not placed*
//! (connect failed before a byte was written, the request provably never left, or a busy
//! refusal) or *committed*. There is no hidden retry: hyper's low-level connection API is
//! used directly, and a request is only re-sent when hyper hands it back unsent.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::pool::{InFlight, RunnerState, StaticPool};
use crate::lifecycle::{Attempt, NotPlaced, TryExec};
use crate::placer::Runner;

/// The header a runner sets on a `503` to say "busy, did not start it".
pub const BUSY_HEADER: &str = "fn-runner-busy";

/// A request as it goes to a runner: already stripped of hop-by-hop headers and carrying
/// the `Fn-*` headers.
#[derive(Debug, Clone)]
pub struct Forward {
    /// Original method.
    pub method: Method,
    /// Original path and query.
    pub path_and_query: String,
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

/// Opens a new HTTP/1.1 connection to `address` within the pool's connect timeout.
async fn connect(address: &str, pool: &StaticPool) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = tokio::time::timeout(pool.connect_timeout, TcpStream::connect(address))
        .await
        .map_err(|_| format!("connect to {address} timed out"))?
        .map_err(|e| format!("connect to {address}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake with {address}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "runner connection ended");
        }
    });
    sender.ready().await.map_err(|e| format!("connection to {address}: {e}"))?;
    Ok(sender)
}

fn build(forward: &Forward) -> Result<Request<Full<Bytes>>, String> {
    let mut request = Request::builder()
        .method(forward.method.clone())
        .uri(&forward.path_and_query)
        .body(Full::new(forward.body.clone()))
        .map_err(|e| format!("bad request for runner: {e}"))?;
    *request.headers_mut() = forward.headers.clone();
    Ok(request)
}

impl StaticPool {
    async fn send(&self, state: &Arc<RunnerState>, forward: &Forward) -> Attempt<Response<RunnerBody>> {
        let request = match build(forward) {
            Ok(r) => r,
            Err(e) => return Attempt::NotPlaced(NotPlaced::Connect(e)),
        };
        // Count the call on the runner before anything else, so placements racing this
        // one already see it (bounded loads depend on it); dropped again if not placed.
        let mut in_flight = Some(state.track());
        // A pooled connection first; if hyper hands the request back unsent (the runner
        // closed the idle connection), it provably never left: use a fresh connection.
        let mut request = Some(request);
        let mut pooled = state.checkout();
        loop {
            let Some(req) = request.take() else {
                return Attempt::NotPlaced(NotPlaced::Connect("request lost".into()));
            };
            let fresh = pooled.is_none();
            let mut conn = match pooled.take() {
                Some(conn) => conn,
                None => match connect(&state.address, self).await {
                    Ok(conn) => conn,
                    Err(e) => {
                        self.record_connect_failure(state);
                        return Attempt::NotPlaced(NotPlaced::Connect(e));
                    }
                },
            };
            match conn.try_send_request(req).await {
                Ok(response) => {
                    state.checkin(conn);
                    let Some(in_flight) = in_flight.take() else {
                        return Attempt::NotPlaced(NotPlaced::Connect("in-flight guard lost".into()));
                    };
                    return classify(state, response, in_flight);
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if !fresh => request = Some(unsent),
                    Some(_) => {
                        return Attempt::NotPlaced(NotPlaced::Connect(format!(
                            "{}: connection closed before the request was sent",
                            state.address
                        )));
                    }
                    None => return Attempt::Committed(Err(format!("{}: {}", state.address, e.into_error()))),
                },
            }
        }
    }
}

fn classify(state: &RunnerState, response: Response<Incoming>, in_flight: InFlight) -> Attempt<Response<RunnerBody>> {
    let busy = response.status() == StatusCode::SERVICE_UNAVAILABLE
        && response.headers().get(BUSY_HEADER).is_some_and(|v| v.as_bytes() == b"1");
    state.record_answer(!busy);
    if busy {
        state.record_refusal();
        return Attempt::NotPlaced(NotPlaced::Busy);
    }
    Attempt::Committed(Ok(response.map(|inner| RunnerBody { inner, _in_flight: in_flight })))
}

impl TryExec<Forward> for StaticPool {
    type Output = Response<RunnerBody>;

    async fn try_exec(&self, index: usize, runner: &Runner, call: &Forward) -> Attempt<Self::Output> {
        let membership = self.membership();
        let state = match membership.states.get(index).filter(|s| s.address == runner.address) {
            Some(state) => state,
            // The membership changed after placement: the runner may sit elsewhere now, or
            // have left (then it is closed to new calls).
            None => match membership.by_address(&runner.address) {
                Some(state) => state,
                None => return Attempt::NotPlaced(NotPlaced::Closed),
            },
        };
        self.send(state, call).await
    }
}
