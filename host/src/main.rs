//! The `placerd` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use std::sync::Arc;

use placerd::config::{Config, ConfigSource, FileConfig, Overrides};
use placerd::placer::{BUILTINS, FaultPolicy, PlacerRuntime, PlacerSource, SandboxLimits, builtin};
use placerd::runner::reference::{self, RunnerHandle, RunnerOptions, RunnerStats};
use placerd::simulate::html::{page, svg as chart};
use placerd::simulate::{Contender, Event, KeyDist, Workload, simulate, table, trace_keys};
use tokio::net::TcpListener;

/// `println!` for the command's output: when stdout is a pipe whose reader has gone
/// (`placerd check … | head`), the command ends quietly, as `cat` does, rather than
/// panicking on the broken pipe.
macro_rules! outln {
    () => {
        out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes `args` to stdout; exits 0 at once if the reader closed the pipe.
fn out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    match std::io::stdout().lock().write_fmt(args) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("placerd: cannot write to stdout: {e}");
            std::process::exit(1);
        }
    }
}

/// mimalloc instead of glibc's malloc: the proxy allocates and frees small buffers on every
/// call, and glibc's consolidation showed at ~5% of placerd's CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// placerd: a WebAssembly-pluggable placement engine.
///
/// An HTTP proxy in front of a pool of runners that asks a sandboxed WebAssembly placer to
/// order the runners for every call. Logs go to stderr; filter them with RUST_LOG (e.g.
/// RUST_LOG=placerd=debug,placerd::access=info).
#[derive(Debug, Parser)]
#[command(version = LONG_VERSION, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (SIGTERM/SIGINT: stop accepting, finish calls in flight, exit 0;
    /// SIGHUP: reload the config).
    ///
    /// Every config key can also be set as PLACERD_<KEY> (PLACERD_DEFAULT_PLACER=naive;
    /// `__` goes one table down: PLACERD_RUNNERS__STATIC='["10.0.0.1:8080"]'). Flags win
    /// over the environment, which wins over the file; see examples/placerd.toml for every
    /// key.
    Serve {
        /// placerd.toml (every key optional).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Dry run: load every placer the config names and run it on sample calls, read the
        /// token and runner files, resolve the default and route placers; report every
        /// problem and exit (non-zero on any), like `nginx -t`.
        #[arg(long)]
        check_config: bool,
        /// Bearer token file for the admin API (overrides `admin_token_file`).
        #[arg(long, value_name = "FILE")]
        admin_token_file: Option<PathBuf>,
        /// Client listener (overrides `listen`).
        #[arg(long)]
        listen: Option<String>,
        /// Admin API, /metrics, /healthz, /readyz listener (overrides `admin_listen`).
        #[arg(long)]
        admin_listen: Option<String>,
        /// A runner address (repeatable; overrides `runners.static`).
        #[arg(long = "runner", value_name = "HOST:PORT")]
        runners: Vec<String>,
        /// Placers folder (overrides `placers_dir`).
        #[arg(long)]
        placers_dir: Option<PathBuf>,
        /// Default placer (overrides `default_placer`).
        #[arg(long)]
        default_placer: Option<String>,
        /// Write one JSON line per call here (call fields, runner generation, chosen runner,
        /// outcome; no bodies), for `placerd simulate --trace`.
        #[arg(long, value_name = "FILE")]
        record_trace: Option<PathBuf>,
        /// Benchmarking only: run the built-in placers' algorithms natively, outside the
        /// sandbox, to measure what Wasm placement costs (`bench/proxy.sh`). Custom placers
        /// still run in Wasm.
        #[arg(long, hide = true)]
        native_placement: bool,
    },
    /// Run the proxy with three reference runners on loopback and print curl lines to try.
    Demo {
        /// Client listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Default placer.
        #[arg(long, default_value = "consistent-hash")]
        default_placer: String,
        /// Admin API listener.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: String,
    },
    /// Run a reference runner (echo/sleep handlers, busy refusals, /v1/status).
    Runner {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: String,
        /// Calls executed at once; more are refused with `503` + `Fn-Runner-Busy: 1`.
        #[arg(long, default_value_t = 64)]
        max_concurrency: u32,
        /// Name sent in the `Fn-Runner` header (defaults to the listen address).
        #[arg(long)]
        name: Option<String>,
        /// Serve over TLS with this certificate (PEM, then its chain); needs --tls-key.
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM).
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Require a client certificate signed by this CA bundle (PEM): mutual TLS, so
        /// only placerd (holding such a certificate) can call. Needs --tls-cert.
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        client_ca: Option<PathBuf>,
    },
    /// Compare placers offline: the real Wasm components over a synthetic or recorded
    /// workload; prints balance (max/avg, CV), peak in-flight, warm-hit ratio and keys
    /// moved per membership change.
    Simulate {
        /// Runners at the start.
        #[arg(long, default_value_t = 10)]
        runners: usize,
        /// Distinct keys (functions).
        #[arg(long, default_value_t = 10_000)]
        keys: usize,
        /// Key distribution: `uniform` or `zipf:S` (e.g. zipf:1.1).
        #[arg(long, default_value = "zipf:1.1")]
        dist: String,
        /// Calls in all.
        #[arg(long, default_value_t = 100_000)]
        calls: usize,
        /// Calls in flight on average.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Membership changes: `add@N`, `remove:I@N` (repeatable).
        #[arg(long = "event", default_values_t = vec!["add@50000".to_string()])]
        events: Vec<String>,
        /// Seed for the workload.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Replay the slot keys of a trace from `placerd serve --record-trace`.
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Also compare this placer component (repeatable; label = file stem).
        #[arg(long = "placer", value_name = "FILE.wasm")]
        placers: Vec<PathBuf>,
        /// Write a self-contained HTML report here.
        #[arg(long)]
        html: Option<PathBuf>,
        /// Write the chart alone as SVG here.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Give each --placer its `[placers.NAME.config]` (NAME = its file stem) and the
        /// memory cap of this placerd.toml.
        #[arg(long, value_name = "PLACERD.TOML")]
        config_file: Option<PathBuf>,
        /// Memory cap per placer instance, in bytes (placer_memory_limit_bytes; default
        /// 16 MiB, or the config file's).
        #[arg(long)]
        memory_limit_bytes: Option<usize>,
    },
    /// Validate a placer component and print the orders it gives sample calls.
    ///
    /// Checks the world (exports configure, set-runners, place), runs configure, set-runners
    /// on a sample set and place on sample calls under the sandbox budget. Exits 0 for a
    /// good placer, 1 with a one-line reason for a bad one. With `--bench`, then times
    /// `place` through the sandbox and prints `place p50=.. p99=.. runners=N` and the
    /// instance's memory.
    Check {
        /// The component to check (`NAME.wasm` becomes placer NAME), or a built-in's name.
        #[arg(required_unless_present = "builtin", conflicts_with = "builtin")]
        file: Option<PathBuf>,
        /// Check an embedded built-in instead of a file.
        #[arg(long, value_parser = builtin_names())]
        builtin: Option<String>,
        /// A `key=value` pair for the placer's configure (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_pair)]
        config: Vec<(String, String)>,
        /// Check with what a placerd.toml gives this placer: its `[placers.NAME.config]`
        /// (a --config pair replaces its key) and its sandbox limits.
        #[arg(long, value_name = "PLACERD.TOML")]
        config_file: Option<PathBuf>,
        /// The name the placer serves under, whose `[placers.NAME.config]` --config-file
        /// gives it (default: the file's stem, `my_placer` for `my_placer.wasm`).
        #[arg(long, value_name = "NAME", requires = "config_file")]
        name: Option<String>,
        /// CPU budget of one place call, in milliseconds (placer_budget_ms; default 5, or
        /// the config file's).
        #[arg(long)]
        budget_ms: Option<u64>,
        /// Memory cap per instance, in bytes (placer_memory_limit_bytes; default 16 MiB, or
        /// the config file's).
        #[arg(long)]
        memory_limit_bytes: Option<usize>,
        /// After the check, time `place` through the sandbox (p50, p99) and report memory.
        #[arg(long)]
        bench: bool,
        /// Runners in the set `--bench` places over.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000), requires = "bench")]
        runners: u32,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    ///
    /// e.g. `placerd completions bash > /etc/bash_completion.d/placerd`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print placerd's man page (roff) to stdout: `placerd man | man -l -`.
    Man,
    /// Scaffold a placer project in ./NAME that builds with one command and passes
    /// `placerd check` as it is.
    New {
        /// The placer's name (and the project's folder).
        name: String,
        /// rust (on the placerd-placer SDK), python (componentize-py) or js
        /// (componentize-js).
        #[arg(long, default_value = "rust")]
        lang: placerd::scaffold::Lang,
        /// Where to create the project folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

/// `placerd -V` / `--version`: what a bug report needs.
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit ",
    env!("PLACERD_COMMIT"),
    "\nplacer contract placerd:placer@0.4.0 (0.3.0, 0.2.0 and 0.1.0 components load too)",
    "\nwasmtime ",
    env!("PLACERD_WASMTIME_VERSION"),
);

/// Warns when `config` has placer tables but none for `name`: the placer runs without one.
fn warn_without_table(config: &Config, path: &Path, name: &str, hint: &str) {
    if config.placer_config.is_empty() || config.placer_config.contains_key(name) {
        return;
    }
    let tables: Vec<&str> = config.placer_config.keys().map(String::as_str).collect();
    eprintln!(
        "warning: {} has no [placers.{name}.config] (it has {}); `{name}` runs without one ({hint})",
        path.display(),
        tables.join(", ")
    );
}

/// A placerd.toml for `check` and `simulate`: its placer tables and sandbox limits.
fn read_config_file(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Config::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn builtin_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(BUILTINS.iter().map(|(name, _)| *name))
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Command::Check { .. } | Command::Simulate { .. } => "error",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    // Colour only on a terminal, and never with NO_COLOR set (https://no-color.org): a
    // log file or journald gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(colour).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().with_current_span(true).with_span_list(false).init(),
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("placerd: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            config,
            check_config,
            admin_token_file,
            listen,
            admin_listen,
            runners,
            placers_dir,
            default_placer,
            record_trace,
            native_placement,
        } => {
            let source = ConfigSource {
                path: config,
                overrides: Overrides {
                    listen,
                    admin_listen,
                    admin_token_file: admin_token_file.map(|p| p.display().to_string()),
                    runners,
                    placers_dir: placers_dir.map(|p| p.display().to_string()),
                    default_placer,
                },
            };
            let loaded = match source.read() {
                Ok(loaded) => loaded,
                Err(e) if check_config => {
                    for problem in e.problems() {
                        outln!("error: {problem}");
                    }
                    bail!(
                        "{}: {} problem(s); nothing was checked beyond the config's own keys",
                        source.describe(),
                        e.problems().len()
                    );
                }
                Err(e) => bail!("{}: {e}", source.describe()),
            };
            for warning in &loaded.warnings {
                tracing::warn!("{warning}");
            }
            let mut config = loaded.config;
            config.record_trace = record_trace;
            config.native_placement = native_placement;
            if check_config {
                return check_config_report(&source, &config, &loaded.warnings);
            }
            control_runtime()?.block_on(async move {
                let listener =
                    TcpListener::bind(config.listen).await.with_context(|| format!("listen on {}", config.listen))?;
                placerd::serve(listener, config, shutdown_signal()).await
            })
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "placerd",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
            .render(&mut std::io::stdout())
            .context("writing the man page"),
        Command::Demo { listen, default_placer, admin_listen } => {
            control_runtime()?.block_on(demo(listen, default_placer, admin_listen))
        }
        Command::Runner { listen, max_concurrency, name, tls_cert, tls_key, client_ca } => tokio_runtime()?.block_on(async move {
            let tls = match (tls_cert, tls_key) {
                (Some(cert_file), Some(key_file)) => {
                    let files = placerd::tls::CertFiles { cert_file, key_file };
                    Some(reference::tls_acceptor(&files, client_ca.as_deref())?)
                }
                _ => None,
            };
            let listener = TcpListener::bind(&listen).await.with_context(|| format!("listen on {listen}"))?;
            let options = RunnerOptions { max_concurrency, name: name.unwrap_or_else(|| listen.clone()) };
            let shutdown = shutdown_signal();
            tracing::info!(%listen, max_concurrency, tls = tls.is_some(), mutual_tls = client_ca.is_some(), "reference runner serving");
            reference::serve(listener, options, Arc::new(RunnerStats::default()), tls, shutdown).await;
            Ok(())
        }),
        Command::Simulate {
            runners,
            keys,
            dist,
            calls,
            concurrency,
            events,
            seed,
            trace,
            placers,
            html,
            svg,
            config_file,
            memory_limit_bytes,
        } => {
            let from_file = config_file.as_deref().map(read_config_file).transpose()?;
            let dist = match dist.split_once(':') {
                None if dist == "uniform" => KeyDist::Uniform,
                Some(("zipf", s)) => KeyDist::Zipf(
                    s.parse().ok().filter(|s: &f64| s.is_finite() && *s > 0.0).context("--dist zipf:S needs S > 0")?,
                ),
                _ => bail!("--dist: expected uniform or zipf:S, got {dist:?}"),
            };
            let events = events
                .iter()
                .map(|e| e.parse::<Event>().map_err(|e| anyhow::anyhow!("--event: {e}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let trace_keys = match &trace {
                Some(path) => Some(read_trace_keys(path)?),
                None => None,
            };
            anyhow::ensure!(
                runners > 0 && keys > 0 && calls > 0 && concurrency > 0,
                "--runners, --keys, --calls and --concurrency must be positive"
            );
            let workload = Workload { runners, keys, dist, calls, concurrency, events, seed, trace_keys };
            let mut contenders = Contender::defaults();
            for path in placers {
                let label = path.file_stem().and_then(|s| s.to_str()).unwrap_or("placer").to_string();
                let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
                if let (Some(c), Some(file)) = (&from_file, &config_file) {
                    warn_without_table(
                        c,
                        file,
                        &label,
                        "the file's stem names the table: rename a copy to pick another",
                    );
                }
                let config = from_file.as_ref().and_then(|c| c.placer_config.get(&label).cloned()).unwrap_or_default();
                contenders.push(Contender { label, bytes, config });
            }
            let memory_limit_bytes = memory_limit_bytes
                .or(from_file.as_ref().map(|c| c.sandbox.memory_limit_bytes))
                .unwrap_or(SandboxLimits::default().memory_limit_bytes);
            // Simulation measures placement, not speed: a roomy budget.
            let limits =
                SandboxLimits { budget: Duration::from_millis(100), memory_limit_bytes, ..SandboxLimits::default() };
            let runtime = PlacerRuntime::new(limits)?;
            let reports = simulate(&runtime, &workload, &contenders)?;
            let description = format!(
                "{} calls, {} runners, {} keys ({}), concurrency {}, events [{}], seed {}",
                calls,
                runners,
                keys,
                trace.as_ref().map_or_else(|| format!("{dist:?}"), |p| format!("trace {}", p.display())),
                concurrency,
                workload.events.iter().map(|e| format!("{e:?}")).collect::<Vec<_>>().join(", "),
                seed
            );
            outln!("{description}");
            out(format_args!("{}", table(&reports)));
            if let Some(path) = html {
                std::fs::write(&path, page(&reports, &description))
                    .with_context(|| format!("writing {}", path.display()))?;
                outln!("wrote {}", path.display());
            }
            if let Some(path) = svg {
                std::fs::write(&path, chart(&reports, &description))
                    .with_context(|| format!("writing {}", path.display()))?;
                outln!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Check {
            file,
            builtin: name,
            config,
            config_file,
            name: serves_as,
            budget_ms,
            memory_limit_bytes,
            bench,
            runners,
        } => {
            // A bare built-in name (`check consistent-hash`) checks the built-in.
            let (file, name) = match (file, name) {
                (Some(path), None) if !path.exists() && path.to_str().is_some_and(|p| builtin(p).is_some()) => {
                    (None, path.to_str().map(str::to_string))
                }
                other => other,
            };
            let from_file = config_file.as_deref().map(read_config_file).transpose()?;
            let file_limits = from_file.as_ref().map_or_else(SandboxLimits::default, |c| c.sandbox);
            let limits = SandboxLimits {
                budget: budget_ms.map_or(file_limits.budget, Duration::from_millis),
                memory_limit_bytes: memory_limit_bytes.unwrap_or(file_limits.memory_limit_bytes),
                // Check reports every fault itself; quarantine would only hide the placer
                // from the rest of the bench.
                fault_policy: FaultPolicy {
                    quarantine_after: u32::MAX,
                    rate_min_faults: u32::MAX,
                    ..FaultPolicy::default()
                },
                ..SandboxLimits::default()
            };
            let placer_name = serves_as
                .or_else(|| file.as_deref().and_then(|p| p.file_stem()).and_then(|s| s.to_str()).map(str::to_string))
                .or_else(|| name.clone())
                .unwrap_or_default();
            // The file's table, with --config pairs replacing its keys.
            if let (Some(c), Some(path)) = (&from_file, &config_file) {
                warn_without_table(c, path, &placer_name, "--name NAME picks the table of the name it serves under");
            }
            let mut pairs = from_file.and_then(|mut c| c.placer_config.remove(&placer_name)).unwrap_or_default();
            pairs.retain(|(key, _)| !config.iter().any(|(k, _)| k == key));
            pairs.extend(config);
            check(file, name, pairs, limits, bench.then_some(runners as usize))
        }
        Command::New { name, lang, dir } => {
            let root = placerd::scaffold::create(&dir, &name, lang).map_err(|e| anyhow::anyhow!("new: {e}"))?;
            outln!("created {} ({lang:?} placer `{name}`)", root.display());
            outln!("build it:  cd {} && {}", root.display(), placerd::scaffold::build_command(lang, &name));
            outln!("check it:  {}   (see its README.md)", placerd::scaffold::check_command(lang, &name));
            Ok(())
        }
    }
}

/// `serve --check-config`: the dry run's findings, one per line; an error if any problem.
fn check_config_report(source: &ConfigSource, config: &Config, warnings: &[String]) -> anyhow::Result<()> {
    let run = placerd::plan::dry_run(config);
    for problem in &run.problems {
        outln!("error: {problem}");
    }
    for warning in warnings.iter().chain(&run.warnings) {
        outln!("warning: {warning}");
    }
    if !run.problems.is_empty() {
        bail!("{}: {} problem(s)", source.describe(), run.problems.len());
    }
    outln!("config ok: {}", run.summary.join("; "));
    Ok(())
}

/// The slot keys of a `--record-trace` file, in order.
fn read_trace_keys(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    trace_keys(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The proxy's runtime for what does not serve calls (the workers have their own).
fn control_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    placerd::control_runtime().context("starting tokio")
}

/// The reference runner's runtime: tokio's, one thread per core (`TOKIO_WORKER_THREADS`
/// overrides).
fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")
}

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
}

/// Resolves on SIGTERM or SIGINT. The SIGTERM handler is installed when this is called,
/// not when the future is first polled: a process that has said it is serving must not die
/// of a SIGTERM that arrives before its accept loop runs. Call it inside the runtime.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        #[cfg(unix)]
        if let Some(mut term) = term {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
            }
            return;
        }
        ctrl_c().await;
    }
}

async fn demo(listen: String, default_placer: String, admin_listen: String) -> anyhow::Result<()> {
    let mut runners = Vec::new();
    for i in 1..=3 {
        let handle = RunnerHandle::spawn(RunnerOptions { max_concurrency: 4, name: format!("runner-{i}") }).await?;
        runners.push(handle);
    }
    // The demo's placers folder is its own temporary one: nothing is left in the working
    // directory, and it is removed on exit.
    let folder =
        tempfile::Builder::new().prefix("placerd-demo-").tempdir().context("creating the demo's placers folder")?;
    let placers_dir = folder.path().join("placers");
    std::fs::create_dir_all(&placers_dir).with_context(|| format!("creating {}", placers_dir.display()))?;
    let file = FileConfig {
        listen: listen.clone(),
        admin_listen: admin_listen.clone(),
        default_placer,
        placers_dir: placers_dir.display().to_string(),
        runners: placerd::config::FileRunners {
            static_: runners.iter().map(|r| r.addr.to_string()).collect(),
            ..Default::default()
        },
        ..FileConfig::default()
    };
    let config = file.validate()?;
    // Bound before the banner: a port in use is an error, not a banner and then an error.
    let listener = TcpListener::bind(config.listen).await.with_context(|| format!("listen on {listen}"))?;
    let admin = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("admin listener: cannot listen on {admin_listen}"))?;
    // The bound addresses (a port 0 is a real port by now).
    let listen = listener.local_addr().map_or(listen, |a| a.to_string());
    let admin_listen = admin.local_addr().map_or(admin_listen, |a| a.to_string());
    let addresses: Vec<String> = runners.iter().map(|r| r.addr.to_string()).collect();
    outln!("placerd demo: proxy on http://{listen}, runners {}", addresses.join(", "));
    outln!(
        "placers: built-in naive, consistent-hash, least-loaded (default `{}`); drop NAME.wasm into {}/ to add or replace one",
        config.default_placer,
        placers_dir.display()
    );
    outln!("admin API, /metrics: http://{admin_listen}/admin/placers, http://{admin_listen}/metrics");
    outln!();
    outln!("try:");
    outln!(
        "  curl -si -X POST http://{listen}/invoke/hello -d 'hi'              # same fn -> same runner (see Fn-Runner)"
    );
    outln!("  curl -si -X POST http://{listen}/invoke/other -d 'hi'              # another fn may land elsewhere");
    outln!("  curl -si http://{listen}/t/myapp/slow?ms=500                     # an HTTP trigger that sleeps 500 ms");
    outln!("  curl -si -X POST -H 'Fn-Call-Type: detached' http://{listen}/invoke/bg   # 202 + call id");
    outln!(
        "  for i in $(seq 14); do curl -s -o /dev/null -w '%{{http_code}} ' -X POST 'http://{listen}/t/app/x?ms=1500' & done; wait   # 3x4 slots: refusals move calls"
    );
    outln!("  curl -s http://{admin_listen}/admin/placers                        # loaded placers, sha256, last error");
    outln!("  curl -s -X PUT --data-binary @my.wasm http://{admin_listen}/admin/placers/mine   # push a placer");
    outln!();
    outln!("dashboard: http://{admin_listen}/");
    outln!("Ctrl-C stops everything.");
    placerd::serve_with_admin(listener, Some(admin), config, shutdown_signal()).await?;
    drop(runners);
    drop(folder);
    Ok(())
}

fn check(
    file: Option<PathBuf>,
    builtin_name: Option<String>,
    config: Vec<(String, String)>,
    limits: SandboxLimits,
    bench_runners: Option<usize>,
) -> anyhow::Result<()> {
    let (name, source, bytes) = match (file, builtin_name) {
        (Some(path), _) => {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .with_context(|| format!("{}: not a NAME.wasm path", path.display()))?
                .to_string();
            let bytes =
                std::fs::read(&path).with_context(|| format!("check failed: cannot read {}", path.display()))?;
            (name, PlacerSource::File(path), bytes)
        }
        (None, Some(name)) => {
            let Some(bytes) = builtin(&name) else { bail!("no built-in placer named `{name}`") };
            (name, PlacerSource::Builtin, bytes.to_vec())
        }
        (None, None) => bail!("give a FILE.wasm or --builtin NAME"),
    };
    let mut runtime = PlacerRuntime::new(limits)?;
    // The same compile cache as `serve` (its default folder): checking a 20 MB Python or
    // JavaScript placer again, or serving it after a check, skips Cranelift.
    if let Some(dir) = placerd::placer::default_cache_dir() {
        let _ = runtime.set_cache_dir(&dir);
    }
    let version = runtime.load(&name, source, &bytes, config).context("check failed")?;
    let report = version.check().context("check failed")?;
    outln!("ok: placer `{name}` implements placerd:placer/placer (sha256 {})", &version.sha256()[..16]);
    let addresses: Vec<String> =
        report.runners.runners.iter().enumerate().map(|(i, r)| format!("{i}={}", r.address)).collect();
    outln!("sample runners: {}", addresses.join(" "));
    for (call, order) in &report.orders {
        outln!("  {:<14} seq={} -> {order:?}", call.fn_id, call.seq);
    }
    outln!("{} sample calls placed within the {} ms budget", report.calls, limits.budget.as_millis());
    if let Some(runners) = bench_runners {
        let bench = version.bench(runners, BENCH_CALLS).context("bench failed")?;
        outln!("place p50={} p99={} runners={}", duration(bench.p50), duration(bench.p99), bench.runners);
        if bench.reuses_orders {
            outln!(
                "orders reused by slot-hash: a key placed before takes p50={} (the host's lookup, no guest call)",
                duration(bench.repeated_p50)
            );
        }
        outln!(
            "memory {} KiB per instance (contract {}, {} calls timed, {} over the budget left out)",
            bench.memory_bytes / 1024,
            version.contract().version(),
            bench.calls,
            bench.timeouts
        );
        if bench.recycles > 0 {
            outln!(
                "recycled {} instances in {} calls (one per {} calls, {} late); a replacement took {} to build, \
                 off the call path",
                bench.recycles,
                bench.placed,
                bench.placed as u64 / bench.recycles,
                bench.late_recycles,
                duration(bench.replacement)
            );
        } else {
            outln!("recycled no instance in {} calls", bench.placed);
        }
    }
    Ok(())
}

/// Calls `check --bench` times (after as many warm-up calls).
const BENCH_CALLS: usize = 20_000;

/// `123ns`, `1.23µs`, `4.56ms`: three significant figures in the natural unit.
fn duration(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1_000.0 {
        format!("{ns:.0}ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2}µs", ns / 1e3)
    } else {
        format!("{:.2}ms", ns / 1e6)
    }
}
