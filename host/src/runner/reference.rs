//! `placerd runner`: the reference runner used by the demo, the tests and the benchmarks.
//!
//! - any path: echoes the request body back (`?ms=N` sleeps N ms first; `?die=1` reads
//!   the request and drops the connection without answering, like a crashed runner);
//! - a concurrency limit: above it, `503` + `Fn-Runner-Busy: 1` before reading the body;
//! - detached calls (`Fn-Call-Type: detached`) are acknowledged `202` and run on;
//! - `GET /v1/status`: Fn's `RunnerStatus` fields in snake_case;
//! - `GET /v1/ledger`: executions per `Fn-Call-Id`, so tests can prove at-most-once.

use std::collections::HashMap;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use crate::server::serve_http;

/// Largest body the reference runner reads.
const MAX_BODY: usize = 16 << 20;

/// Settings of a reference runner.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// Calls executed at once; more are refused as busy. 0 refuses everything.
    pub max_concurrency: u32,
    /// Name sent back in the `Fn-Runner` response header.
    pub name: String,
}

/// Shared state of one reference runner.
#[derive(Debug, Default)]
pub struct RunnerStats {
    active: AtomicU32,
    received: AtomicU64,
    handled: AtomicU64,
    ledger: Mutex<HashMap<String, u32>>,
}

impl RunnerStats {
    /// How many times each call id was executed here.
    pub fn ledger(&self) -> HashMap<String, u32> {
        self.ledger.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Executions of `call_id` here.
    pub fn executions(&self, call_id: &str) -> u32 {
        self.ledger.lock().map_or(0, |l| l.get(call_id).copied().unwrap_or(0))
    }

    /// Requests received (refused ones included).
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// How long calls in flight may finish when a reference runner stops.
const GRACE: Duration = Duration::from_secs(1);

/// Serves the reference runner on `listener` until `shutdown` resolves, over TLS when `tls`
/// is given ([`tls_acceptor`]).
pub async fn serve(
    listener: TcpListener,
    options: RunnerOptions,
    stats: Arc<RunnerStats>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let options = Arc::new(options);
    serve_http(listener, shutdown, GRACE, crate::server::MAX_CONNECTIONS, tls, move |req| {
        handle(req, options.clone(), stats.clone())
    })
    .await;
}

/// TLS for a reference runner: its certificate and key (PEM files), and, with
/// `client_ca`, client certificates required and verified against that CA bundle (mutual
/// TLS, as a runner that accepts calls only from placerd).
///
/// # Errors
/// A file that does not load, named.
pub fn tls_acceptor(
    cert: &crate::tls::CertFiles,
    client_ca: Option<&std::path::Path>,
) -> Result<tokio_rustls::TlsAcceptor, crate::tls::TlsError> {
    let provider = crate::tls::provider();
    let certified = crate::tls::certified_key("runner tls", cert, &provider)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| crate::tls::TlsError::new("runner tls", "", e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(crate::tls::client_verifier(ca)?),
    };
    let mut config = builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A reference runner on 127.0.0.1 port 0, for tests and the demo. Stops when dropped.
#[derive(Debug)]
pub struct RunnerHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its counters and ledger.
    pub stats: Arc<RunnerStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RunnerHandle {
    /// Binds 127.0.0.1:0 and serves in a background task.
    ///
    /// # Errors
    /// The bind error.
    pub async fn spawn(options: RunnerOptions) -> std::io::Result<Self> {
        Self::spawn_on(SocketAddr::from(([127, 0, 0, 1], 0)), options).await
    }

    /// Binds `addr` (e.g. another loopback address with a shared port, for DNS tests) and
    /// serves in a background task.
    ///
    /// # Errors
    /// The bind error.
    pub async fn spawn_on(addr: SocketAddr, options: RunnerOptions) -> std::io::Result<Self> {
        Self::spawn_with(addr, options, None).await
    }

    /// Binds `addr` and serves over TLS with `tls` ([`tls_acceptor`]) in a background task.
    ///
    /// # Errors
    /// The bind error.
    pub async fn spawn_with(
        addr: SocketAddr,
        options: RunnerOptions,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(RunnerStats::default());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(serve(listener, options, stats.clone(), tls, async move {
            let _ = stopped.await;
        }));
        Ok(RunnerHandle { addr, stats, stop: Some(stop) })
    }
}

impl Drop for RunnerHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

type Reply = Result<Response<Full<Bytes>>, std::io::Error>;

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    Ok(r)
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')).map(str::to_string)
}

async fn handle(req: Request<Incoming>, options: Arc<RunnerOptions>, stats: Arc<RunnerStats>) -> Reply {
    if req.method() == Method::GET && req.uri().path() == "/v1/status" {
        return reply(StatusCode::OK, status_json(&stats));
    }
    if req.method() == Method::GET && req.uri().path() == "/v1/ledger" {
        return reply(StatusCode::OK, serde_json::to_vec(&stats.ledger()).unwrap_or_default());
    }
    stats.received.fetch_add(1, Ordering::Relaxed);
    // Admission before reading the body: a refusal proves the call did not start here.
    let admitted = stats
        .active
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| (a < options.max_concurrency).then_some(a + 1))
        .is_ok();
    if !admitted {
        let mut r = Response::new(Full::new(Bytes::from_static(b"{\"message\":\"runner busy\"}")));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        r.headers_mut().insert("fn-runner-busy", hyper::header::HeaderValue::from_static("1"));
        return Ok(r);
    }
    let _active = Active(stats.clone());
    let call_id = req.headers().get("fn-call-id").and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
    let detached = req.headers().get("fn-call-type").is_some_and(|v| v.as_bytes() == b"detached");
    let sleep = query_param(&req, "ms").and_then(|ms| ms.parse().ok()).map(Duration::from_millis);
    let die = query_param(&req, "die").is_some_and(|v| v == "1");
    let content_type = req.headers().get(hyper::header::CONTENT_TYPE).cloned();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("{{\"message\":\"{e}\"}}")),
    };
    if let Ok(mut ledger) = stats.ledger.lock() {
        *ledger.entry(call_id.clone()).or_default() += 1;
    }
    if die {
        // Read the call, then vanish: hyper closes the connection without a response.
        return Err(std::io::Error::other("runner died mid-call"));
    }
    if detached {
        let stats = stats.clone();
        let active = Active(stats.clone());
        stats.active.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            if let Some(d) = sleep {
                tokio::time::sleep(d).await;
            }
            stats.handled.fetch_add(1, Ordering::Relaxed);
            drop(active);
        });
        let mut r = Response::new(Full::new(Bytes::from(format!("{{\"call_id\":\"{call_id}\"}}"))));
        *r.status_mut() = StatusCode::ACCEPTED;
        return Ok(r);
    }
    if let Some(d) = sleep {
        tokio::time::sleep(d).await;
    }
    stats.handled.fetch_add(1, Ordering::Relaxed);
    let mut r = Response::new(Full::new(body));
    if let Ok(name) = hyper::header::HeaderValue::from_str(&options.name) {
        r.headers_mut().insert("fn-runner", name);
    }
    if let Some(ct) = content_type {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, ct);
    }
    Ok(r)
}

/// Releases one concurrency slot when dropped.
struct Active(Arc<RunnerStats>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

fn status_json(stats: &RunnerStats) -> String {
    serde_json::json!({
        "active_request_count": stats.active.load(Ordering::Relaxed),
        "requests_received": stats.received.load(Ordering::Relaxed),
        "requests_handled": stats.handled.load(Ordering::Relaxed),
        "kdumps_on_disk": 0,
        "status_failed": false,
        "cached": false,
        "status_id": "",
        "details": "placerd reference runner",
        "error_code": 0,
        "error_str": "",
        "created_at": "",
        "started_at": "",
        "completed_at": "",
        "scheduler_duration_ns": 0,
        "execution_duration_ns": 0,
        "image_pull_wait_duration_ns": 0,
        "ctr_prep_duration_ns": 0,
        "ctr_create_duration_ns": 0,
        "init_start_time_ns": 0,
        "is_network_disabled": false,
    })
    .to_string()
}
