//! placerd: a WebAssembly-pluggable placement engine.
//!
//! An HTTP reverse proxy in front of a pool of runners. For every call it asks a *placer*,
//! a sandboxed WebAssembly component implementing `wit/placer.wit`, to order the runners,
//! then tries them in that order. The host owns everything that must never be left to
//! plug-in code: deadlines, retries, runner I/O and the at-most-once rule; placers own one
//! pure decision.
//!
//! # Layout
//! - [`config`]: `placerd.toml` (serde mirror) → validated [`config::Config`].
//! - [`placer`]: the wasmtime engine, loading and validating placer components, the pool of
//!   warm instances, the sandbox (epoch budget, memory cap, no WASI capabilities), output
//!   sanitising, fallback and quarantine. The built-in placers are embedded here.
//! - [`reload`]: the registry of placers, validate-then-swap, the `placers_dir` watcher.
//! - [`admin`]: the admin API (placers, routes, runners).
//! - [`lifecycle`]: the placement loop (Fn's placer tracker): deadlines, retry-all, outcomes.
//! - [`runner`]: the runner set, the static pool, TryExec over HTTP, status polling, and the
//!   reference runner.
//! - [`proxy`]: the client-facing HTTP server.
//! - [`simulate`]: offline comparison of placers (`placerd simulate`).
//! - `main.rs`: the command line (`serve`, `demo`, `runner`, `check`).

#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod lifecycle;
pub mod placer;
pub mod proxy;
pub mod reload;
pub mod runner;
pub mod simulate;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::Admin;
use crate::admin::metrics::Metrics;
use crate::config::Config;
use crate::placer::PlacerRuntime;
use crate::proxy::{Proxy, ProxyBody};
use crate::reload::Registry;
use crate::runner::StaticPool;

/// Keeps a runner source running; dropping it stops it (the fields are held for that).
#[derive(Debug)]
enum DiscoveryTask {
    Static,
    File(#[allow(dead_code)] reload::watch::FolderWatch),
    Dns(tokio::task::JoinHandle<()>),
}

impl Drop for DiscoveryTask {
    fn drop(&mut self) {
        if let DiscoveryTask::Dns(task) = self {
            task.abort();
        }
    }
}

/// The runner pool and what keeps it current (`[runners]`).
///
/// A runner file must be readable and valid at start (a typo should stop a deploy, not
/// leave placerd without runners); later bad versions are skipped. DNS is resolved once
/// before serving; if that fails placerd starts with no runners (not ready on `/readyz`)
/// and keeps trying every interval.
async fn start_discovery(config: &Config, metrics: &Arc<Metrics>) -> anyhow::Result<(Arc<StaticPool>, DiscoveryTask)> {
    use crate::config::RunnerSource;
    use crate::runner::Discovery;
    use crate::runner::discovery::{DnsSource, poll_dns, read_runner_file, watch_file};
    Ok(match &config.discovery {
        RunnerSource::Static => {
            (Arc::new(StaticPool::new(&config.runners, config.connect_timeout)), DiscoveryTask::Static)
        }
        RunnerSource::File(path) => {
            let runners = read_runner_file(path).map_err(|e| anyhow::anyhow!("runners.file: {e}"))?;
            let pool = Arc::new(StaticPool::with_runners(runners, Discovery::Dynamic, config.connect_timeout));
            let watch = watch_file(pool.clone(), path.clone(), metrics.clone())
                .with_context(|| format!("runners.file: cannot watch {}", path.display()))?;
            (pool, DiscoveryTask::File(watch))
        }
        RunnerSource::Dns { name, port, interval, server } => {
            let source = DnsSource::new(name, *port, *server).map_err(|e| anyhow::anyhow!("runners.dns: {e}"))?;
            let runners = match source.resolve().await {
                Ok(runners) => runners,
                Err(e) => {
                    metrics.record_discovery_error();
                    tracing::warn!(error = %e, "runners.dns: first resolution failed; starting with no runners");
                    Vec::new()
                }
            };
            let pool = Arc::new(StaticPool::with_runners(runners, Discovery::Dynamic, config.connect_timeout));
            let task = tokio::spawn(poll_dns(pool.clone(), source, *interval, metrics.clone()));
            (pool, DiscoveryTask::Dns(task))
        }
    })
}

/// How long a client may take to send request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line + headers) accepted; above it, 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Runs placerd on `listener` with `config` until `shutdown` resolves, with the admin API
/// on `config.admin_listen`.
///
/// # Errors
/// See [`serve_with_admin`]; also the admin listener failing to bind.
pub async fn serve(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let admin = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("admin_listen: cannot listen on {}", config.admin_listen))?;
    serve_with_admin(listener, Some(admin), config, shutdown).await
}

/// Runs placerd: loads the placers, watches `placers_dir`, polls runner status, serves
/// calls on `listener` and the admin API on `admin` (if given) until `shutdown` resolves.
///
/// # Errors
/// A built-in placer that fails to load, an unknown `default_placer`, an unreadable
/// `admin_token_file`, or the placer engine failing to start.
pub async fn serve_with_admin(
    listener: TcpListener,
    admin: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let token = match &config.admin_token_file {
        Some(path) => {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("admin_token_file: cannot read {}", path.display()))?
                .trim()
                .to_string();
            anyhow::ensure!(!token.is_empty(), "admin_token_file: {} is empty", path.display());
            Some(token)
        }
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    let runtime = Arc::new(
        PlacerRuntime::new(config.sandbox).context("starting the placer engine")?.with_observer(metrics.clone()),
    );
    let registry =
        Arc::new(Registry::new(runtime, config.placer_config.clone()).context("loading the built-in placers")?);
    let _watch = match reload::watch::watch_dir(registry.clone(), config.placers_dir.clone()).await {
        Ok(watch) => Some(watch),
        Err(e) => {
            tracing::warn!(dir = %config.placers_dir.display(), error = %e, "not watching the placers folder");
            None
        }
    };
    if registry.get(&config.default_placer).is_none() {
        anyhow::bail!(
            "default_placer: no placer named `{}` (loaded: {})",
            config.default_placer,
            registry.names().join(", ")
        );
    }
    let (pool, _discovery) = start_discovery(&config, &metrics).await?;
    let poller = tokio::spawn(runner::status::poll_status(pool.clone(), config.status_interval));
    let proxy = Arc::new(
        Proxy::new(config.clone(), pool.clone(), registry, metrics)
            .with_context(|| format!("--record-trace: cannot create {:?}", config.record_trace))?,
    );
    let admin_addr = admin.as_ref().and_then(|a| a.local_addr().ok()).map_or("-".to_string(), |a| a.to_string());
    tracing::info!(listen = %listener.local_addr()?, admin = %admin_addr, runners = pool.membership().set.len(), default_placer = %config.default_placer, "placerd serving");

    let stop = CancellationToken::new();
    let grace = config.shutdown_grace;
    let admin_task = admin.map(|admin| {
        let admin_state = Arc::new(Admin { proxy: proxy.clone(), token });
        let stop = stop.clone();
        tokio::spawn(accept_loop(admin, stop, grace, move |req| admin_state.clone().handle(req)))
    });
    let proxy_task = tokio::spawn(accept_loop(listener, stop.clone(), grace, move |req| proxy.clone().handle(req)));
    shutdown.await;
    tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down: no new connections, finishing calls in flight");
    stop.cancel();
    let _ = proxy_task.await;
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    poller.abort();
    drop(_discovery);
    tracing::info!("placerd stopped");
    Ok(())
}

/// Accepts HTTP/1.1 connections on `listener` and serves each with `handle` until `stop`;
/// then closes idle connections, lets requests in flight finish for up to `grace`, and
/// returns.
async fn accept_loop<H, F>(listener: TcpListener, stop: CancellationToken, grace: Duration, handle: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<ProxyBody>, hyper::Error>> + Send + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, _) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
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
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(grace_ms = grace.as_millis() as u64, "calls still in flight after the shutdown grace period");
    }
}
