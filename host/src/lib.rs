//! placerd: a WebAssembly-pluggable placement engine.
//!
//! An HTTP reverse proxy in front of a pool of runners. For every call it asks a *placer*,
//! a sandboxed WebAssembly component implementing `wit/placer.wit`, to order the runners,
//! then tries them in that order. The host owns everything that must never be left to
//! plug-in code: deadlines, retries, runner I/O and the at-most-once rule; placers own one
//! pure decision.
//!
//! # Layout
//! Modules use only those listed before them (`docs/architecture.md` draws the graph):
//! - [`backoff`]: failures in a row → doubling periods (placer quarantine, runner ejection).
//! - `shard`: values written on every call, one copy per worker (crate-private).
//! - `pass`: the end of a scheduler pass, when the writes of its tasks go out together
//!   (crate-private: it hands the kernel what it owns; each worker's runtime installs it).
//! - `http1`: the one HTTP/1.1 implementation, both directions (heads, framing, chunked
//!   coding, hop-by-hop rules, limits), used by the proxy port and the runner client.
//! - [`watch`]: debounced folder watching (placers folder, runner file).
//! - [`server`]: the admin API's and the reference runner's accept loop, with graceful
//!   shutdown.
//! - [`placer`]: the contract types every layer shares ([`placer::Call`],
//!   [`placer::RunnerSet`], [`placer::RunnerLoad`]), the [`placer::Order`] interface, and
//!   the Wasm runtime: engine, loading and validating components, warm instances, the
//!   sandbox, output cleaning, fallback and quarantine. The built-ins are embedded here.
//! - [`config`]: `placerd.toml` (serde mirror) → validated [`config::Config`]; where a
//!   config comes from (file, `PLACERD_<KEY>` environment, flags).
//! - [`runner`]: the runner pool and its handles, the runner client (TryExec over HTTP),
//!   discovery (file, DNS), status polling, and the reference runner.
//! - [`lifecycle`]: the placement loop (Fn's placer tracker): deadlines, retry-all, outcomes.
//! - [`reload`]: the registry of placers, validate-then-swap, the `placers_dir` scanner.
//! - [`metrics`]: Prometheus metrics, written by the call path, read by the admin API.
//! - [`state`]: `state_dir`, where admin-API changes survive a restart.
//! - [`proxy`]: the client-facing HTTP server: request → call → placement → response.
//! - [`workers`]: the threads that serve the proxy port, each with its own runtime.
//! - [`tls`]: TLS on the proxy port (certificates by SNI, reloaded whole) and the socket
//!   both sides read and write, plain or TLS.
//! - [`plan`]: a config checked against the world (`--check-config`, start-up) and
//!   applied to a running placerd (reload on `SIGHUP` or `POST /admin/reload`).
//! - [`admin`]: the admin API (placers, routes, runners, metrics, health) and its dashboard.
//! - [`simulate`]: offline comparison of placers (`placerd simulate`).
//! - this file wires them together (`serve`) and builds the runtimes; `main.rs` is the
//!   command line.

// Denied, not forbidden: a few places must, and each says why it is sound where it does:
// `placer::cache` deserializes compiled placer code, `placer::contract` lends the call's
// loads to the store, and `pass` hands the kernel the buffers and sockets it owns
// (io_uring submissions, and `shutdown` of a socket kept open for good).
#![deny(unsafe_code)]

pub mod admin;
pub mod backoff;
pub mod config;
mod http1;
pub mod lifecycle;
pub mod metrics;
mod pass;
pub mod placer;
pub mod plan;
pub mod proxy;
pub mod reload;
pub mod runner;
pub mod scaffold;
pub mod server;
mod shard;
pub mod simulate;
pub mod state;
pub mod throttle;
pub mod tls;
pub mod watch;
pub mod workers;

use std::future::Future;
use std::sync::Arc;

/// The runtime of the threads that do not serve calls: the admin API, runner status
/// polling, discovery, the placers folder's watcher, signals. One thread: the call path
/// never runs here (the workers have their own, see [`workers`]).
///
/// # Errors
/// The runtime could not be built (no event queue).
pub fn control_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

/// One worker's runtime: current-thread, so every task runs on the thread that accepted
/// its connection, with no work-stealing queues or cross-thread wake-ups, and its park
/// hooked so the writes of one scheduler pass leave together (`pass`).
fn worker_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    pass::install(&mut builder);
    builder.enable_all().build()
}

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::admin::Admin;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::placer::PlacerRuntime;
use crate::plan::Live;
use crate::proxy::{Proxy, RouteTable};
use crate::reload::Registry;
use crate::server::serve_http;
use crate::state::StateDir;
use crate::workers::Workers;

/// Runs placerd on `listener` with `config` until `shutdown` resolves, with the admin API
/// on `config.admin_listen`.
///
/// # Errors
/// See [`serve_with_admin`]; also the admin listener failing to bind.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let admin = tokio::net::TcpListener::bind(config.admin_listen)
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
    listener: tokio::net::TcpListener,
    admin: Option<tokio::net::TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let token = plan::read_token(&config).map_err(anyhow::Error::msg)?;
    // Certificates first: a file that does not load stops the start before anything else.
    let tls = config.tls.as_ref().map(tls::ServerTls::load).transpose()?.map(Arc::new);
    let runner_tls = config.runner_tls.as_ref().map(tls::ClientTls::load).transpose()?.map(Arc::new);
    let admin_tls =
        config.admin_tls.as_ref().map(|f| tls::ServerTls::load_as("admin.tls", f)).transpose()?.map(Arc::new);
    let metrics = Arc::new(Metrics::new());
    let mut runtime =
        PlacerRuntime::with_observer(config.sandbox, metrics.clone()).context("starting the placer engine")?;
    if let Some(dir) = &config.cache_dir
        && let Err(e) = runtime.set_cache_dir(dir)
    {
        tracing::warn!(cache_dir = %dir.display(), error = %e, "not caching compiled placers on disk");
    }
    let runtime = Arc::new(runtime);
    let registry =
        Arc::new(Registry::new(runtime, config.placer_config.clone()).context("loading the built-in placers")?);
    // The first load of the placers folder can take seconds per large placer (compiling):
    // a stop asked for meanwhile is honoured at once, not after it.
    let mut shutdown = std::pin::pin!(shutdown);
    let first_load = tokio::select! {
        loaded = reload::watch_dir(registry.clone(), config.placers_dir.clone()) => loaded,
        () = &mut shutdown => {
            tracing::info!("stopped while loading the placers folder, before serving");
            return Ok(());
        }
    };
    let _watch = match first_load {
        Ok(watch) => Some(watch),
        Err(e) => {
            tracing::warn!(dir = %config.placers_dir.display(), error = %e, "not watching the placers folder");
            None
        }
    };
    // The admin API's changes from before a restart: its placers after the folder's (the
    // admin API wins), its routes over the file's.
    let state = match &config.state_dir {
        Some(dir) => Some(StateDir::open(dir).with_context(|| format!("state_dir: cannot create {}", dir.display()))?),
        None => None,
    };
    let routes = RouteTable::new(config.routes.clone(), config.default_placer.clone());
    if let Some(state) = &state {
        plan::load_saved_placers(&registry, state).await;
        let saved = state.routes().with_context(|| format!("state_dir: {}", state.path().display()))?;
        if let Some(saved) = saved {
            tracing::info!(routes = saved.len(), state_dir = %state.path().display(), "routes set through the admin API replace the file's [[routes]]");
            routes.replace(saved);
        }
    }
    let table = routes.get();
    let resolved = plan::resolve(
        &config.placer_config,
        &config.default_placer,
        &table.routes,
        table.from_admin,
        &registry.names(),
    );
    anyhow::ensure!(resolved.problems.is_empty(), "{}", resolved.problems.join("; "));
    for warning in &resolved.warnings {
        tracing::warn!("{warning}");
    }
    let (pool, runner_feed) = plan::start_runners(&config, &metrics).await?;
    let config = Arc::new(config);
    let proxy = Arc::new(
        Proxy::new(config.clone(), pool.clone(), registry, routes, metrics.clone())
            .with_context(|| format!("--record-trace: cannot create {:?}", config.record_trace))?,
    );
    proxy.set_runner_tls(runner_tls);
    let poller = tokio::spawn(runner::status::poll_status(pool.clone(), config.status_interval, proxy.runner_tls()));
    let reloaded_tls = [("tls", &tls), ("admin.tls", &admin_tls)]
        .into_iter()
        .filter_map(|(key, tls)| Some((key, tls.clone()?)))
        .collect();
    let live = Arc::new(Live::new(proxy.clone(), token, runner_feed, state, metrics.clone(), reloaded_tls));
    let hangup = reload_on_hangup(live.clone());
    let admin_addr = admin.as_ref().and_then(|a| a.local_addr().ok()).map_or("-".to_string(), |a| a.to_string());
    tracing::info!(listen = %listener.local_addr()?, tls = tls.is_some(), admin = %admin_addr, workers = config.workers, runners = pool.membership().set.len(), default_placer = %config.default_placer, "placerd serving");

    let stop = CancellationToken::new();
    let grace = config.shutdown_grace;
    let history = Arc::new(admin::dashboard::History::new(config.history_interval));
    let sampler = tokio::spawn(admin::dashboard::sample(history.clone(), pool.clone()));
    let admin_task = admin.map(|admin| {
        let admin_state = Arc::new(Admin { proxy: proxy.clone(), live: live.clone(), history });
        tokio::spawn(serve_http(
            admin,
            stop.clone().cancelled_owned(),
            grace,
            config.max_connections,
            admin_tls.as_ref().map(|tls| tls.acceptor()),
            move |req| admin_state.clone().handle(req),
        ))
    });
    let listener = listener.into_std().context("listen: cannot hand the listener to the workers")?;
    let workers =
        Workers::start(listener, config.workers, config.max_connections, &proxy, tls.as_ref(), &metrics, &stop)
            .context("starting the workers")?;
    shutdown.await;
    let grace = proxy.config().shutdown_grace;
    tracing::info!(grace_ms = grace.as_millis() as u64, "shutting down: no new connections, finishing calls in flight");
    stop.cancel();
    let mut finished = workers.finished().await;
    if let Some(task) = admin_task {
        finished &= task.await.unwrap_or(false);
    }
    if !finished {
        tracing::warn!(grace_ms = grace.as_millis() as u64, "calls still in flight after the shutdown grace period");
    }
    if let Some(task) = hangup {
        task.abort();
    }
    poller.abort();
    sampler.abort();
    drop(live);
    tracing::info!("placerd stopped");
    Ok(())
}

/// `SIGHUP` reloads the config (as `nginx -s reload` does), logging what changed or why
/// nothing did. Without a handler, a `SIGHUP` would kill the process.
fn reload_on_hangup(live: Arc<Live>) -> Option<tokio::task::JoinHandle<()>> {
    #[cfg(unix)]
    {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => signal,
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGHUP; reload with POST /admin/reload");
                return None;
            }
        };
        Some(tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the config");
                let _ = live.reload().await;
            }
        }))
    }
    #[cfg(not(unix))]
    {
        let _ = live;
        None
    }
}

#[cfg(test)]
mod tests {
    /// Every `tests/*.rs` file is a `[[test]]` target of this crate: with `autotests =
    /// false` (the tests live beside the workspace, not in `host/tests`), a file that is not
    /// listed in `host/Cargo.toml` would never run.
    #[test]
    fn every_end_to_end_test_file_is_registered() {
        let host = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let manifest = std::fs::read_to_string(host.join("Cargo.toml")).expect("host/Cargo.toml");
        let manifest: toml::Table = manifest.parse().expect("valid TOML");
        let registered: Vec<String> = manifest
            .get("test")
            .and_then(|t| t.as_array())
            .map(|tests| tests.iter().filter_map(|t| t.get("path")?.as_str()).map(str::to_string).collect())
            .unwrap_or_default();
        let dir = host.join("../tests");
        let mut missing = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("tests/") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "rs") {
                let file = path.file_name().and_then(|f| f.to_str()).unwrap_or_default();
                if !registered.iter().any(|r| r == &format!("../tests/{file}")) {
                    missing.push(file.to_string());
                }
            }
        }
        assert!(
            missing.is_empty(),
            "tests/{{{}}} not registered: add a [[test]] with path = \"../tests/NAME.rs\" to host/Cargo.toml",
            missing.join(", ")
        );
    }
}
