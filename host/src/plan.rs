//! The running configuration: what a config needs beyond its own keys, checked against
//! the world (placers, files, the running proxy), and how a running placerd changes to a
//! new config.
//!
//! The same checks serve three uses:
//! - `serve --check-config` ([`dry_run`]): loads every placer the config names (built-ins
//!   with their `[placers.NAME.config]`, `placers_dir`, `state_dir`), reads the token and
//!   runner files, resolves the default and route placers, and reports every problem;
//! - start-up (`serve`): refuses to start on any of those problems ([`resolve`]);
//! - reload ([`Live::reload`], on `SIGHUP` or `POST /admin/reload`): reads the config
//!   again, validates all of it against the running placers, and only then swaps runners,
//!   routes, the default placer, placer configs and limits. A config that does not
//!   validate changes nothing. Keys that need a restart are reported, not ignored.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use serde::Serialize;

use crate::config::{Config, Route, RunnerSource};
use crate::metrics::Metrics;
use crate::placer::{BUILTINS, MAX_COMPONENT_BYTES, PlacerRuntime, PlacerSource, Runner};
use crate::proxy::Proxy;
use crate::reload::{Registry, valid_name};
use crate::runner::discovery::{self, DnsSource, OnError};
use crate::runner::{Discovery, DynamicPool};
use crate::state::StateDir;
use crate::tls::ServerTls;
use crate::watch::FolderWatch;

/// Reads `admin_token_file`: `None` when none is configured.
///
/// # Errors
/// The file cannot be read or holds no token (the message names the key and the file).
pub fn read_token(config: &Config) -> Result<Option<String>, String> {
    let Some(path) = &config.admin_token_file else { return Ok(None) };
    let token = std::fs::read_to_string(path)
        .map_err(|e| format!("admin_token_file: cannot read {}: {e}", path.display()))?
        .trim()
        .to_string();
    if token.is_empty() {
        return Err(format!("admin_token_file: {} is empty: write the token into it", path.display()));
    }
    Ok(Some(token))
}

/// What the names a config gives placers resolve to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Names that must resolve and do not: `default_placer`, a route's placer, a
    /// `[placers.NAME.config]` table whose NAME is a near miss of a loaded placer's.
    pub problems: Vec<String>,
    /// A `[placers.NAME.config]` table for no loaded placer (it applies when a placer of
    /// that name is installed, e.g. through the admin API).
    pub warnings: Vec<String>,
}

/// Checks the names a config gives placers: `[placers.NAME.config]` tables,
/// `default_placer` and the routes' placers, against the placers that exist (`names`).
/// `routes_from_admin`: the routes are the admin API's (`state_dir`), not the file's.
pub fn resolve(
    placer_config: &BTreeMap<String, Vec<(String, String)>>,
    default_placer: &str,
    routes: &[Route],
    routes_from_admin: bool,
    names: &[String],
) -> Resolved {
    let near = |name: &str| {
        let squash = |n: &str| n.replace(['-', '_', '.'], "").to_ascii_lowercase();
        names.iter().find(|n| squash(n) == squash(name)).cloned()
    };
    let unknown = |name: &str| {
        let hint = near(name).map(|n| format!("; did you mean `{n}`?")).unwrap_or_default();
        format!("no placer named `{name}` (placers: {}){hint}", names.join(", "))
    };
    let mut resolved = Resolved::default();
    for name in placer_config.keys().filter(|n| !names.contains(n)) {
        if near(name).is_some() {
            resolved.problems.push(format!("placers.{name}.config: {}: fix the name", unknown(name)));
        } else {
            resolved.warnings.push(format!(
                "placers.{name}.config: no placer named `{name}` is loaded; the table applies once one is installed (placers_dir or PUT /admin/placers/{name})"
            ));
        }
    }
    if !names.iter().any(|n| n == default_placer) {
        resolved.problems.push(format!("default_placer: {}", unknown(default_placer)));
    }
    let where_ = if routes_from_admin { "routes set through the admin API (state_dir/routes.json)" } else { "routes" };
    for (i, route) in routes.iter().enumerate() {
        for (key, name) in
            [("placer", Some(&route.placer)), ("shadow", route.shadow.as_ref()), ("canary", route.canary.as_ref())]
        {
            if let Some(name) = name.filter(|n| !names.contains(n)) {
                resolved.problems.push(format!("{where_}[{i}].{key}: {}", unknown(name)));
            }
        }
    }
    resolved
}

/// What `serve --check-config` found.
#[derive(Debug, Default)]
pub struct DryRun {
    /// Each makes `serve` refuse to start (or a reload refuse to apply).
    pub problems: Vec<String>,
    /// Odd but allowed (no runners, a placers folder that does not exist yet).
    pub warnings: Vec<String>,
    /// What would run: one line each.
    pub summary: Vec<String>,
}

/// Everything `serve` would load and check before serving, without listening: the token
/// and runner files, every placer (compiled and run on sample calls), the names the config
/// gives them. Blocking: compiling placers takes a while.
pub fn dry_run(config: &Config) -> DryRun {
    let mut run = DryRun::default();
    if let Err(e) = read_token(config) {
        run.problems.push(e);
    }
    if let Some(files) = &config.admin_tls
        && let Err(e) = ServerTls::load_as("admin.tls", files)
    {
        run.problems.push(e.to_string());
    }
    if let Some(files) = &config.tls {
        match ServerTls::load(files) {
            Ok(_) => run.summary.push(format!(
                "TLS on {}: {} certificate(s)",
                config.listen,
                usize::from(files.default.is_some()) + files.named.len()
            )),
            Err(e) => run.problems.push(e.to_string()),
        }
    }
    if let Some(files) = &config.runner_tls {
        match crate::tls::ClientTls::load(files) {
            Ok(_) => run.summary.push(format!(
                "runners over TLS{}",
                if files.client.is_some() { ", with a client certificate" } else { "" }
            )),
            Err(e) => run.problems.push(e.to_string()),
        }
    }
    match &config.discovery {
        RunnerSource::Static if config.runners.is_empty() => run.warnings.push(
            "no runners: set [runners] static, file or dns (or --runner); calls get 503 until there are some".into(),
        ),
        RunnerSource::Static => run.summary.push(format!("{} static runners", config.runners.len())),
        RunnerSource::File(path) => match discovery::read_runner_file(path) {
            Ok(runners) if runners.is_empty() => {
                run.warnings.push(format!("runners.file: {} lists no runners", path.display()));
            }
            Ok(runners) => run.summary.push(format!("{} runners from {}", runners.len(), path.display())),
            Err(e) => run.problems.push(format!("runners.file: {e}")),
        },
        RunnerSource::Dns { name, port, server, .. } => match DnsSource::new(name, *port, *server) {
            Ok(_) => run.summary.push(format!("runners from DNS {name}:{port} (not resolved by --check-config)")),
            Err(e) => run.problems.push(format!("runners.dns: {e}")),
        },
    }
    let mut runtime = match PlacerRuntime::new(config.sandbox) {
        Ok(runtime) => runtime,
        Err(e) => {
            run.problems.push(format!("placer engine: {}", e.report()));
            return run;
        }
    };
    if let Some(dir) = &config.cache_dir {
        let _ = runtime.set_cache_dir(dir);
    }
    let mut names = Vec::new();
    let check = |name: &str, source: PlacerSource, bytes: &[u8]| {
        let placer_config = config.placer_config.get(name).cloned().unwrap_or_default();
        runtime.load(name, source, bytes, placer_config).and_then(|v| v.check().map(drop)).map_err(|e| e.plain())
    };
    for (name, bytes) in BUILTINS {
        if let Err(e) = check(name, PlacerSource::Builtin, bytes) {
            run.problems.push(format!("placers.{name}.config: {e}"));
        }
        names.push((*name).to_string());
    }
    match placer_files(&config.placers_dir) {
        Ok(files) => {
            for (name, path) in files {
                match read_component(&path) {
                    Ok(bytes) => match check(&name, PlacerSource::File(path.clone()), &bytes) {
                        Ok(()) => names.push(name),
                        Err(e) => run.problems.push(format!("placers_dir: {}: {e}", path.display())),
                    },
                    Err(e) => run.problems.push(format!("placers_dir: {e}")),
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => run.warnings.push(format!(
            "placers_dir: {} does not exist yet (serve creates it and watches it)",
            config.placers_dir.display()
        )),
        Err(e) => run.problems.push(format!("placers_dir: cannot list {}: {e}", config.placers_dir.display())),
    }
    let mut routes = (config.routes.clone(), false);
    if let Some(dir) = config.state_dir.as_deref().filter(|d| d.exists()) {
        match StateDir::open(dir).and_then(|state| Ok((state.placers()?, state.routes()?))) {
            Ok((placers, saved_routes)) => {
                for (name, bytes) in placers {
                    match check(&name, PlacerSource::Admin, &bytes) {
                        Ok(()) => names.push(name),
                        Err(e) => run.problems.push(format!("state_dir: placer `{name}`: {e}")),
                    }
                }
                if let Some(saved) = saved_routes {
                    run.warnings.push(format!(
                        "routes set through the admin API ({}) replace the file's [[routes]] (DELETE /admin/routes goes back)",
                        dir.join("routes.json").display()
                    ));
                    routes = (saved, true);
                }
            }
            Err(e) => run.problems.push(format!("state_dir: {}: {e}", dir.display())),
        }
    }
    names.sort();
    names.dedup();
    let resolved = resolve(&config.placer_config, &config.default_placer, &routes.0, routes.1, &names);
    run.problems.extend(resolved.problems);
    run.warnings.extend(resolved.warnings);
    run.summary.push(format!("placers {} (default `{}`)", names.join(", "), config.default_placer));
    run.summary.push(format!("{} routes", routes.0.len()));
    run
}

/// The `NAME.wasm` files of `dir` whose names are placer names, sorted.
fn placer_files(dir: &Path) -> std::io::Result<Vec<(String, std::path::PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if let (Some(name), Some(ext)) = (path.file_stem().and_then(|s| s.to_str()), path.extension())
            && ext == "wasm"
            && valid_name(name)
            && path.is_file()
        {
            files.push((name.to_string(), path.clone()));
        }
    }
    files.sort();
    Ok(files)
}

/// Reads a component file, refusing one over the size placerd compiles before reading it.
fn read_component(path: &Path) -> Result<Vec<u8>, String> {
    let size = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?.len();
    if size > MAX_COMPONENT_BYTES as u64 {
        return Err(format!("{}: {size} bytes is over the {MAX_COMPONENT_BYTES}-byte limit", path.display()));
    }
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Keeps a runner source running; dropping it stops it.
#[derive(Debug)]
enum Feed {
    Static,
    File(#[allow(dead_code)] FolderWatch),
    Dns(tokio::task::JoinHandle<()>),
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Feed::Dns(task) = self {
            task.abort();
        }
    }
}

/// The runner source in force and what keeps the pool current from it.
#[derive(Debug)]
pub struct RunnerFeed {
    source: RunnerSource,
    #[allow(dead_code)] // held to keep the watch or the DNS task alive
    feed: Feed,
}

/// The runner pool and what keeps it current (`[runners]`).
///
/// A runner file must be readable and valid at start (a typo should stop a deploy, not
/// leave placerd without runners); later bad versions are skipped. DNS is resolved once
/// before serving; if that fails placerd starts with no runners (not ready on `/readyz`)
/// and keeps trying every interval.
///
/// # Errors
/// The runner file cannot be read, parsed or watched, or the DNS name is invalid.
pub async fn start_runners(config: &Config, metrics: &Arc<Metrics>) -> anyhow::Result<(Arc<DynamicPool>, RunnerFeed)> {
    let discovery = match config.discovery {
        RunnerSource::Static => Discovery::Static,
        _ => Discovery::Dynamic,
    };
    let pool = Arc::new(DynamicPool::with_outlier_detection(Vec::new(), discovery, config.outlier_detection));
    let feed = feed(&config.discovery, &config.runners, &pool, metrics).await?;
    Ok((pool, RunnerFeed { source: config.discovery.clone(), feed }))
}

/// Fills `pool` from `source` now and keeps it current.
async fn feed(
    source: &RunnerSource,
    static_runners: &[String],
    pool: &Arc<DynamicPool>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Feed> {
    let on_error: OnError = {
        let metrics = metrics.clone();
        Arc::new(move || metrics.record_discovery_error())
    };
    Ok(match source {
        RunnerSource::Static => {
            pool.update(static_runners.iter().map(|a| Runner { address: a.clone(), labels: Vec::new() }).collect());
            Feed::Static
        }
        RunnerSource::File(path) => {
            let runners = discovery::read_runner_file(path).map_err(|e| anyhow::anyhow!("runners.file: {e}"))?;
            pool.update(runners);
            let watch = discovery::watch_file(pool.clone(), path.clone(), on_error)
                .with_context(|| format!("runners.file: cannot watch {}", path.display()))?;
            Feed::File(watch)
        }
        RunnerSource::Dns { name, port, interval, server } => {
            let source = DnsSource::new(name, *port, *server).map_err(|e| anyhow::anyhow!("runners.dns: {e}"))?;
            match source.resolve().await {
                Ok(runners) => {
                    pool.update(runners);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "runners.dns: first resolution failed; keeping the runners known so far");
                    on_error();
                }
            }
            Feed::Dns(tokio::spawn(discovery::poll_dns(pool.clone(), source, *interval, on_error)))
        }
    })
}

/// What a reload changed.
#[derive(Debug, Default, Serialize)]
pub struct ReloadReport {
    /// Keys (or groups: `runners`, `routes`, `placers.NAME.config`) now in force.
    pub changed: Vec<String>,
    /// Keys whose new value waits for a restart, with both values.
    pub restart_needed: Vec<String>,
    /// Odd but allowed (environment variables that name no key, admin routes in force).
    pub warnings: Vec<String>,
}

/// A listener's TLS that reloads: the config table it comes from (`tls`, `admin.tls`),
/// its certificates, and the watch of the folders holding their files.
#[derive(Debug)]
struct ReloadedTls {
    key: &'static str,
    tls: Arc<ServerTls>,
    watch: std::sync::Mutex<Vec<FolderWatch>>,
}

/// A running placerd's configuration, changed whole by [`Live::reload`].
#[derive(Debug)]
pub struct Live {
    /// The proxy whose routes, limits, placers and runners a reload changes.
    pub proxy: Arc<Proxy>,
    /// The admin token (`admin_token_file`, re-read on reload).
    token: ArcSwap<Option<String>>,
    /// The runner source in force.
    runners: tokio::sync::Mutex<RunnerFeed>,
    /// Where admin-API changes are kept, if anywhere.
    pub state: Option<StateDir>,
    metrics: Arc<Metrics>,
    /// The proxy port's TLS (`tls`) and the admin port's (`admin.tls`), certificates
    /// re-read on reload, each with the watch of the folders its files are in.
    tls: Vec<ReloadedTls>,
}

impl Live {
    /// The running placerd: its proxy, token, runner source and state folder.
    pub fn new(
        proxy: Arc<Proxy>,
        token: Option<String>,
        runners: RunnerFeed,
        state: Option<StateDir>,
        metrics: Arc<Metrics>,
        tls: Vec<(&'static str, Arc<ServerTls>)>,
    ) -> Self {
        let tls = tls
            .into_iter()
            .map(|(key, tls)| {
                let watch = std::sync::Mutex::new(tls.watch());
                ReloadedTls { key, tls, watch }
            })
            .collect();
        Live {
            proxy,
            token: ArcSwap::from_pointee(token),
            runners: tokio::sync::Mutex::new(runners),
            state,
            metrics,
            tls,
        }
    }

    /// The admin token in force.
    pub fn token(&self) -> Arc<Option<String>> {
        self.token.load_full()
    }

    /// Reads the config again (file, environment, flags), validates all of it against the
    /// running placers, then applies it. Reloads run one at a time. Counted in
    /// `placerd_config_reloads_total{result}` and logged either way.
    ///
    /// # Errors
    /// Every problem found; nothing was changed.
    pub async fn reload(&self) -> Result<ReloadReport, Vec<String>> {
        let mut runners = self.runners.lock().await;
        let result = self.try_reload(&mut runners).await;
        self.metrics.record_config_reload(result.is_ok());
        match &result {
            Ok(report) => {
                tracing::info!(changed = ?report.changed, restart_needed = ?report.restart_needed, "config reloaded");
                for key in &report.restart_needed {
                    tracing::warn!(key = %key, "config reload: this key needs a restart; the running value stays");
                }
            }
            Err(problems) => {
                for problem in problems {
                    tracing::warn!(problem = %problem, "config reload refused; the running config stays");
                }
            }
        }
        result
    }

    async fn try_reload(&self, runners: &mut RunnerFeed) -> Result<ReloadReport, Vec<String>> {
        let running = self.proxy.config();
        let Some(source) = &running.source else {
            return Err(vec!["placerd was started without a config file or flags to read again".into()]);
        };
        let loaded = source.read().map_err(|e| e.problems())?;
        let next = loaded.config;
        let mut report = ReloadReport { warnings: loaded.warnings, ..ReloadReport::default() };
        let mut problems = Vec::new();
        let token = read_token(&next).map_err(|e| problems.push(e)).ok().flatten();
        // The admin listener a reload cannot move (a restart does): off loopback, it keeps
        // needing a token whatever the file now says about `admin_listen`.
        if !running.admin_listen.ip().is_loopback() && next.admin_token_file.is_none() {
            problems.push(format!(
                "admin_token_file: the admin API listens on {} (not loopback) until a restart; a reload cannot remove its token",
                running.admin_listen
            ));
        }
        let file_runners = match &next.discovery {
            RunnerSource::File(path) => {
                discovery::read_runner_file(path).map_err(|e| problems.push(format!("runners.file: {e}"))).ok()
            }
            RunnerSource::Dns { name, port, server, .. } => {
                if let Err(e) = DnsSource::new(name, *port, *server) {
                    problems.push(format!("runners.dns: {e}"));
                }
                None
            }
            RunnerSource::Static => None,
        };
        // Placers whose config changed: rebuilt and checked now, published only if all of
        // the reload passes.
        let registry = self.proxy.placers.clone();
        let names = registry.names();
        let changed: Vec<(String, Vec<(String, String)>)> = names
            .iter()
            .filter_map(|name| {
                let wanted = next.placer_config.get(name).cloned().unwrap_or_default();
                let running = registry.get(name)?;
                (running.config() != wanted.as_slice()).then(|| (name.clone(), wanted))
            })
            .collect();
        let builder = registry.clone();
        let built = tokio::task::spawn_blocking(move || {
            changed
                .into_iter()
                .filter_map(|(name, config)| Some((name.clone(), builder.reconfigured(&name, config)?)))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| vec![format!("rebuilding placers: {e}")])?;
        let mut versions = Vec::new();
        for (name, result) in built {
            match result {
                Ok(version) => {
                    report.changed.push(format!("placers.{name}.config"));
                    versions.push(version);
                }
                Err(e) => problems.push(format!("placers.{name}.config: {}", e.plain())),
            }
        }
        let table = self.proxy.routes.get();
        let routes = if table.from_admin { &table.routes } else { &next.routes };
        let resolved = resolve(&next.placer_config, &next.default_placer, routes, table.from_admin, &names);
        problems.extend(resolved.problems);
        report.warnings.extend(resolved.warnings);
        if table.from_admin && table.file != next.routes {
            report.warnings.push(
                "the file's [[routes]] changed, but routes set through the admin API are in force (DELETE /admin/routes to use the file's)".into(),
            );
        }
        report.restart_needed = restart_needed(&running, &next);
        // Certificates are read again whether or not their paths changed (the files may
        // have); TLS turned on or off waits for a restart.
        let mut certificates = Vec::new();
        for reloaded in &self.tls {
            let files = if reloaded.key == "admin.tls" { &next.admin_tls } else { &next.tls };
            if let Some(files) = files {
                match reloaded.tls.prepare(files) {
                    Ok(read) => certificates.push((reloaded, files, read)),
                    Err(e) => problems.push(e.to_string()),
                }
            }
        }
        let runner_tls = match (&running.runner_tls, &next.runner_tls) {
            (Some(_), Some(files)) => {
                crate::tls::ClientTls::load(files).map_err(|e| problems.push(e.to_string())).ok().map(Arc::new)
            }
            _ => None,
        };
        let kind = |s: &RunnerSource| std::mem::discriminant(s);
        if !problems.is_empty() {
            return Err(problems);
        }

        // Everything validated: apply.
        report.changed.extend(changed_keys(&running, &next, table.file != next.routes));
        if **self.token.load() != token {
            report.changed.push("admin_token_file".into());
        }
        for (reloaded, files, read) in certificates {
            let moved = reloaded.tls.files() != *files;
            if reloaded.tls.install(files, read) {
                report.changed.push(reloaded.key.into());
            }
            if moved {
                *reloaded.watch.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = reloaded.tls.watch();
            }
        }
        if runner_tls.is_some() {
            // Read again whatever changed (the files may have): new runner connections
            // use it; open ones keep theirs.
            self.proxy.set_runner_tls(runner_tls);
            if running.runner_tls != next.runner_tls {
                report.changed.push("runners.tls".into());
            }
        }
        registry.publish_config(next.placer_config.clone(), versions);
        self.proxy.routes.set_file(next.routes.clone(), next.default_placer.clone());
        if kind(&runners.source) == kind(&next.discovery) {
            let pool = &self.proxy.pool;
            let updated = match (&next.discovery, file_runners) {
                (RunnerSource::Static, _) => {
                    let list = next.runners.iter().map(|a| Runner { address: a.clone(), labels: Vec::new() }).collect();
                    pool.update(list).is_some()
                }
                // The same file: its watch goes on; read now so the reload reports it.
                (RunnerSource::File(path), Some(list)) if Some(path) == file_path(&runners.source) => {
                    pool.update(list).is_some()
                }
                (source, _) if *source != runners.source => {
                    match feed(source, &next.runners, pool, &self.metrics).await {
                        Ok(new_feed) => {
                            *runners = RunnerFeed { source: source.clone(), feed: new_feed };
                            true
                        }
                        Err(e) => {
                            report.warnings.push(format!("{e:#}; the running runner source stays"));
                            false
                        }
                    }
                }
                _ => false,
            };
            if updated {
                report.changed.push("runners".into());
            }
        }
        self.token.store(Arc::new(token));
        self.proxy.set_config(Arc::new(next));
        Ok(report)
    }
}

fn file_path(source: &RunnerSource) -> Option<&std::path::PathBuf> {
    match source {
        RunnerSource::File(path) => Some(path),
        _ => None,
    }
}

/// The keys a reload applies that differ between `old` and `new` (placer configs and
/// runners are reported where they are applied).
fn changed_keys(old: &Config, new: &Config, file_routes_changed: bool) -> Vec<String> {
    let mut changed = Vec::new();
    let mut differs = |key: &str, differ: bool| {
        if differ {
            changed.push(key.to_string());
        }
    };
    differs("default_placer", old.default_placer != new.default_placer);
    differs("routes", file_routes_changed);
    differs("max_body_bytes", old.max_body_bytes != new.max_body_bytes);
    differs("body_timeout_ms", old.body_timeout != new.body_timeout);
    differs("max_buffered_bytes", old.max_buffered_bytes != new.max_buffered_bytes);
    differs("retry_all_delay_ms", old.retry_all_delay != new.retry_all_delay);
    differs("placer_timeout_ms", old.placer_timeout != new.placer_timeout);
    differs("detached_placer_timeout_ms", old.detached_placer_timeout != new.detached_placer_timeout);
    differs("connect_timeout_ms", old.connect_timeout != new.connect_timeout);
    differs("shutdown_grace_ms", old.shutdown_grace != new.shutdown_grace);
    differs("runner_read_timeout_ms", old.runner_read_timeout != new.runner_read_timeout);
    differs("runner_write_timeout_ms", old.runner_write_timeout != new.runner_write_timeout);
    differs("client_idle_timeout_ms", old.client_idle_timeout != new.client_idle_timeout);
    differs("client_header_timeout_ms", old.client_header_timeout != new.client_header_timeout);
    changed
}

/// Keys whose change a reload cannot apply: listeners, folders, the sandbox's limits (every
/// version of every placer runs under them), the status poller's period, ejection, the
/// runner source's kind.
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut keys = Vec::new();
    let mut differs = |key: &str, old: String, new: String| {
        if old != new {
            keys.push(format!("{key} (running {old}, file {new})"));
        }
    };
    differs("listen", old.listen.to_string(), new.listen.to_string());
    differs("admin_listen", old.admin_listen.to_string(), new.admin_listen.to_string());
    differs("placers_dir", old.placers_dir.display().to_string(), new.placers_dir.display().to_string());
    differs("state_dir", format!("{:?}", old.state_dir), format!("{:?}", new.state_dir));
    differs("cache_dir", format!("{:?}", old.cache_dir), format!("{:?}", new.cache_dir));
    differs("max_connections", old.max_connections.to_string(), new.max_connections.to_string());
    differs("workers", old.workers.to_string(), new.workers.to_string());
    let tls = |c: &Config| if c.tls.is_some() { "on" } else { "off" };
    differs("tls", tls(old).into(), tls(new).into());
    let runner_tls = |c: &Config| if c.runner_tls.is_some() { "on" } else { "off" };
    differs("runners.tls", runner_tls(old).into(), runner_tls(new).into());
    let admin_tls = |c: &Config| if c.admin_tls.is_some() { "on" } else { "off" };
    differs("admin.tls", admin_tls(old).into(), admin_tls(new).into());
    differs("placer_budget_ms", format!("{:?}", old.sandbox.budget), format!("{:?}", new.sandbox.budget));
    differs(
        "placer_memory_limit_bytes",
        old.sandbox.memory_limit_bytes.to_string(),
        new.sandbox.memory_limit_bytes.to_string(),
    );
    differs("on_placer_fault", format!("{:?}", old.sandbox.on_fault), format!("{:?}", new.sandbox.on_fault));
    differs("placer_recycle_*", format!("{:?}", old.sandbox.recycle), format!("{:?}", new.sandbox.recycle));
    differs("status_interval_ms", format!("{:?}", old.status_interval), format!("{:?}", new.status_interval));
    differs(
        "runners.outlier_detection",
        format!("{:?}", old.outlier_detection),
        format!("{:?}", new.outlier_detection),
    );
    let kind = |s: &RunnerSource| match s {
        RunnerSource::Static => "static",
        RunnerSource::File(_) => "file",
        RunnerSource::Dns { .. } => "dns",
    };
    differs("runners (source)", kind(&old.discovery).into(), kind(&new.discovery).into());
    keys
}

/// Loads the placers saved in `state` (installed through the admin API before a restart).
/// One that no longer loads (a newer placerd, a changed config) is logged and skipped; its
/// file stays.
pub async fn load_saved_placers(registry: &Arc<Registry>, state: &StateDir) {
    let placers = match state.placers() {
        Ok(placers) => placers,
        Err(e) => {
            tracing::warn!(state_dir = %state.path().display(), error = %e, "cannot read the saved placers");
            return;
        }
    };
    for (name, bytes) in placers {
        if let Err(e) = registry.install_async(&name, PlacerSource::Admin, bytes).await {
            tracing::warn!(placer = %name, state_dir = %state.path().display(), error = %e.plain(), "a placer saved in state_dir no longer loads; skipping it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_names_each_unknown_placer_with_a_hint() {
        let names: Vec<String> = ["consistent-hash", "least-loaded", "naive"].map(String::from).to_vec();
        let tables = BTreeMap::from([("consistent_hash".to_string(), Vec::new())]);
        let routes = vec![Route { app: Some("a".into()), fn_id: None, placer: "mine".into(), ..Route::default() }];
        let resolved = resolve(&tables, "rendezvous", &routes, false, &names);
        let problems = resolved.problems;
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].starts_with("placers.consistent_hash.config:"), "{problems:#?}");
        assert!(problems[0].contains("did you mean `consistent-hash`"), "{problems:#?}");
        assert!(problems[1].starts_with("default_placer: no placer named `rendezvous`"));
        assert!(problems[2].starts_with("routes[0].placer:"));
        assert_eq!(resolve(&BTreeMap::new(), "naive", &[], false, &names), Resolved::default());
        // A table for a placer that is not installed yet is a warning, not an error.
        let later = BTreeMap::from([("ch-bounded".to_string(), Vec::new())]);
        let resolved = resolve(&later, "naive", &[], false, &names);
        assert!(resolved.problems.is_empty() && resolved.warnings.len() == 1, "{resolved:?}");
    }
}
