//! The `placerd` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use placerd::placer::{BUILTINS, PlacerRuntime, PlacerSource, SandboxLimits, builtin};

/// placerd: a WebAssembly-pluggable placement engine.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a placer component and print the orders it gives sample calls.
    ///
    /// Checks the world (exports configure, set-runners, place), runs configure, set-runners
    /// on a sample set and place on sample calls under the sandbox budget. Exits 0 for a
    /// good placer, 1 with a one-line reason for a bad one.
    Check {
        /// The component to check (`NAME.wasm` becomes placer NAME).
        #[arg(required_unless_present = "builtin", conflicts_with = "builtin")]
        file: Option<PathBuf>,
        /// Check an embedded built-in instead of a file.
        #[arg(long, value_parser = builtin_names())]
        builtin: Option<String>,
        /// A `key=value` pair for the placer's configure (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_pair)]
        config: Vec<(String, String)>,
        /// CPU budget of one place call, in milliseconds (placer_budget_ms).
        #[arg(long, default_value_t = 5)]
        budget_ms: u64,
        /// Memory cap per instance, in bytes (placer_memory_limit_bytes).
        #[arg(long, default_value_t = 16 << 20)]
        memory_limit_bytes: usize,
    },
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
        Command::Check { .. } => "error",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
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
        Command::Check { file, builtin: name, config, budget_ms, memory_limit_bytes } => {
            let limits = SandboxLimits {
                budget: Duration::from_millis(budget_ms),
                memory_limit_bytes,
                ..SandboxLimits::default()
            };
            check(file, name, config, limits)
        }
    }
}

fn check(
    file: Option<PathBuf>,
    builtin_name: Option<String>,
    config: Vec<(String, String)>,
    limits: SandboxLimits,
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
    let runtime = PlacerRuntime::new(limits)?;
    let version = runtime.load(&name, source, &bytes, config).context("check failed")?;
    let report = version.check().context("check failed")?;
    println!("ok: placer `{name}` implements placerd:placer/placer (sha256 {})", &version.sha256()[..16]);
    let addresses: Vec<String> =
        report.runners.runners.iter().enumerate().map(|(i, r)| format!("{i}={}", r.address)).collect();
    println!("sample runners: {}", addresses.join(" "));
    for (call, order) in &report.orders {
        println!("  {:<14} seq={} -> {order:?}", call.fn_id, call.seq);
    }
    println!("{} sample calls placed within the {} ms budget", report.calls, limits.budget.as_millis());
    Ok(())
}
