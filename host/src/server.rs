//! The accept loop of the admin API and the reference runner: accept (at most
//! `max_connections` open at once; beyond that, new connections wait in the kernel's
//! backlog), set `TCP_NODELAY`, serve each connection with hyper ([`serve_http`]), and on
//! stop let each connection close when idle and finish the request in flight within a
//! grace period. The proxy port has its own workers (`workers.rs`) and HTTP/1.1
//! server; it takes its timeouts' defaults from here.

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

/// How long a client may take to send request headers, from their first byte: the admin
/// port's and the reference runner's, and the default of the proxy port's
/// `client_header_timeout_ms`.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may wait idle for its next request before it is closed: the
/// default of the proxy port's `client_idle_timeout_ms`.
pub const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the proxy port waits for a client to take more of its response (between two
/// writes, as nginx's `send_timeout`) before it closes the connection.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Default `max_connections`: open client connections (all workers together), and the
/// admin listener's own limit.
pub const MAX_CONNECTIONS: usize = 10_000;

/// Accepts connections on `listener` and serves each with `serve` until `stop` resolves.
/// `serve` gets the connection and a token cancelled at stop: it should then close the
/// connection once no request is in flight. At most `max_connections` are open at once:
/// the loop accepts the next only when one closes. After stop, waits up to `grace` for
/// every connection to close; returns false when some were still open at its end.
pub async fn serve_connections<S, F>(
    listener: TcpListener,
    stop: impl Future<Output = ()>,
    grace: Duration,
    max_connections: usize,
    serve: S,
) -> bool
where
    S: Fn(TcpStream, CancellationToken) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let slots = u32::try_from(max_connections.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
    let open = Arc::new(Semaphore::new(slots as usize));
    let stopping = CancellationToken::new();
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
        let connection = serve(stream, stopping.clone());
        tokio::spawn(async move {
            connection.await;
            drop(slot);
        });
    }
    drop(listener);
    stopping.cancel();
    // Every slot back means every connection closed.
    tokio::time::timeout(grace, open.acquire_many(slots)).await.is_ok()
}

/// [`serve_connections`] with hyper's HTTP/1.1 server and `handle` for each request, over
/// TLS when `tls` is given (a handshake must end within [`HEADER_READ_TIMEOUT`]; one that
/// fails is logged with its reason).
pub async fn serve_http<H, F, B, E>(
    listener: TcpListener,
    stop: impl Future<Output = ()>,
    grace: Duration,
    max_connections: usize,
    tls: Option<tokio_rustls::TlsAcceptor>,
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
    serve_connections(listener, stop, grace, max_connections, move |stream, stopping| {
        let (handle, tls) = (handle.clone(), tls.clone());
        async move {
            let io = match tls {
                None => Either::Left(stream),
                Some(acceptor) => {
                    let peer = stream.peer_addr().ok();
                    let accepted = match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => Ok(stream),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("no handshake in time".to_string()),
                    };
                    match accepted {
                        Ok(stream) => Either::Right(stream),
                        Err(reason) => {
                            // Any client can fail a handshake: rate limited, as the proxy port's.
                            if let Some(dropped) = HANDSHAKE_LOG.admit() {
                                tracing::info!(peer = ?peer, reason, dropped, "tls: handshake failed");
                            }
                            return;
                        }
                    }
                }
            };
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(crate::http1::MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(io), service_fn(handle));
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stopping.cancelled() => {
                    // Idle: closes now; busy: answers the request in flight, then closes.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
    })
    .await
}

/// Rate limit of the "handshake failed" lines of the admin port and the reference runner.
static HANDSHAKE_LOG: crate::throttle::Throttle = crate::throttle::Throttle::new(10, Duration::from_secs(10));
