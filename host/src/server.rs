//! The one HTTP/1.1 accept loop, shared by the proxy, the admin API and the reference
//! runner: accept (at most `max_connections` open at once; beyond that, new connections
//! wait in the kernel's backlog), set `TCP_NODELAY`, serve each connection with the same
//! limits, and on stop close idle connections and let requests in flight finish within a
//! grace period.

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long a client may take to send request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line + headers) accepted; above it, 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Default `max_connections`: open connections per listener.
pub const MAX_CONNECTIONS: usize = 10_000;

/// Accepts HTTP/1.1 connections on `listener` and serves each with `handle` until `stop`
/// resolves; then closes idle connections and lets requests in flight finish for up to
/// `grace`. At most `max_connections` are open at once: the loop accepts the next only when
/// one closes. Returns false when some were still running at the end of the grace period.
pub async fn serve_http<H, F, B, E>(
    listener: TcpListener,
    stop: impl Future<Output = ()>,
    grace: Duration,
    max_connections: usize,
    handle: H,
) -> bool
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, E>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
    E: Into<Box<dyn StdError + Send + Sync>>,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(max_connections.max(1)));
    tokio::pin!(stop);
    loop {
        // A free connection slot first: while none is, connections queue in the backlog.
        let slot = tokio::select! {
            () = &mut stop => break,
            slot = open.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // never closed
            },
        };
        let (stream, _) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, usually: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEAD_BYTES)
            .serve_connection(TokioIo::new(stream), service_fn(handle));
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::time::timeout(grace, graceful.shutdown()).await.is_ok()
}
