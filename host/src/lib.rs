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
//! - [`reload`]: the registry of placers (built-ins overridden by `placers_dir`).
//! - [`lifecycle`]: the placement loop (Fn's placer tracker): deadlines, retry-all, outcomes.
//! - [`runner`]: the runner set, the static pool, TryExec over HTTP, status polling, and the
//!   reference runner.
//! - [`proxy`]: the client-facing HTTP server.
//! - `main.rs`: the command line (`serve`, `demo`, `runner`, `check`).

#![forbid(unsafe_code)]

pub mod config;
pub mod lifecycle;
pub mod placer;
pub mod proxy;
pub mod reload;
pub mod runner;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::placer::PlacerRuntime;
use crate::proxy::Proxy;
use crate::reload::Registry;
use crate::runner::StaticPool;

/// How long a client may take to send request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs placerd on `listener` with `config` until `shutdown` resolves: loads the placers,
/// starts runner status polling and serves calls.
///
/// # Errors
/// A built-in placer that fails to load, or the placer engine failing to start.
pub async fn serve(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let runtime = PlacerRuntime::new(config.sandbox).context("starting the placer engine")?;
    let (registry, rejected) = {
        let config = config.clone();
        Registry::load(&runtime, &config.placers_dir, |name| {
            config.placer_config.get(name).cloned().unwrap_or_default()
        })
        .context("loading the built-in placers")?
    };
    for e in &rejected {
        tracing::warn!(error = %e, "placer not loaded");
    }
    if registry.get(&config.default_placer).is_none() {
        anyhow::bail!(
            "default_placer: no placer named `{}` (loaded: {})",
            config.default_placer,
            registry.names().join(", ")
        );
    }
    let pool = Arc::new(StaticPool::new(&config.runners, config.connect_timeout));
    let poller = tokio::spawn(runner::status::poll_status(pool.clone(), config.status_interval));
    let proxy = Arc::new(Proxy::new(config.clone(), pool, Arc::new(registry)));
    tracing::info!(listen = %listener.local_addr()?, runners = config.runners.len(), default_placer = %config.default_placer, "placerd serving");

    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => break,
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
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| proxy.clone().handle(req));
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
        });
    }
    poller.abort();
    drop(runtime);
    Ok(())
}
