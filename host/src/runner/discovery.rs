//! Runner discovery (`[runners]`): a watched runner file, or DNS re-resolved on
//! an interval. Each source computes the whole runner list and hands it to
//! [`DynamicPool::update`], which bumps the generation only when the list changed; the
//! placers learn the new set through `set-runners` on their next call.
//!
//! A source that fails (unreadable or invalid file, resolver error, no records) keeps the
//! last good set, logs why and calls its [`OnError`] (which counts
//! `lb_placer_rp_error_count_total`).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{Resolver, TokioResolver};

use super::DynamicPool;
use crate::config::runner_address_problem;
use crate::placer::Runner;
use crate::watch::{FolderWatch, watch};

/// Called once per failed discovery (unreadable or invalid runner file, DNS error), after
/// the failure is logged; the caller counts it.
pub type OnError = Arc<dyn Fn() + Send + Sync>;

/// Parses a runner file: one runner per line, `host:port` then optional `key=value`
/// labels, separated by blanks; `#` starts a comment; blank lines are skipped. Order is
/// kept (it is the placement-index order).
///
/// # Errors
/// The first bad line, with its number.
pub fn parse_runner_file(text: &str) -> Result<Vec<Runner>, String> {
    let mut runners: Vec<Runner> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split_once('#').map_or(line, |(before, _)| before);
        let mut words = line.split_whitespace();
        let Some(address) = words.next() else { continue };
        let at = || format!("line {}", n + 1);
        if let Some(problem) = runner_address_problem(address) {
            return Err(format!("{}: {problem}", at()));
        }
        if runners.iter().any(|r| r.address == address) {
            return Err(format!("{}: {address} is listed twice", at()));
        }
        let mut labels: Vec<(String, String)> = Vec::new();
        for word in words {
            let Some((key, value)) = word.split_once('=').filter(|(k, _)| !k.is_empty()) else {
                return Err(format!("{}: expected a key=value label, got {word:?}", at()));
            };
            if labels.iter().any(|(k, _)| k == key) {
                return Err(format!("{}: label {key:?} given twice", at()));
            }
            labels.push((key.to_string(), value.to_string()));
        }
        runners.push(Runner { address: address.to_string(), labels });
    }
    Ok(runners)
}

/// Reads and parses the runner file at `path` (following symlinks).
///
/// # Errors
/// Why it cannot be read, or its first bad line; both name the file.
pub fn read_runner_file(path: &Path) -> Result<Vec<Runner>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_runner_file(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Re-reads the runner file at `path` whenever anything in its folder changes.
///
/// The folder is watched, not the file: editors and `mv` replace the file, and a Kubernetes
/// ConfigMap mount swaps a `..data` symlink beside it, and both only show as events in the
/// folder. Every change is re-read whole; an unchanged list does not bump the generation.
///
/// # Errors
/// The folder cannot be watched.
pub fn watch_file(pool: Arc<DynamicPool>, path: PathBuf, on_error: OnError) -> std::io::Result<FolderWatch> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    watch(&folder, move || {
        match read_runner_file(&path) {
            Ok(runners) => apply(&pool, runners, &path.display().to_string()),
            Err(e) => {
                tracing::warn!(error = %e, "runner file unusable; keeping the last good runner set");
                on_error();
            }
        }
        std::future::ready(())
    })
}

fn apply(pool: &DynamicPool, runners: Vec<Runner>, source: &str) {
    let count = runners.len();
    if let Some(generation) = pool.update(runners) {
        tracing::info!(source, runners = count, generation, "runner set changed");
    }
}

/// Resolves `name` to runner addresses: every A and AAAA record, with `port`, sorted.
#[derive(Debug)]
pub struct DnsSource {
    resolver: TokioResolver,
    name: String,
    port: u16,
}

impl DnsSource {
    /// A source asking `server`, or the system's resolver configuration (`/etc/resolv.conf`,
    /// search domains included) when `None`. Answers are not cached: every resolution asks.
    ///
    /// # Errors
    /// The system resolver configuration cannot be read.
    pub fn new(name: &str, port: u16, server: Option<SocketAddr>) -> Result<Self, String> {
        let mut builder = match server {
            Some(server) => {
                let servers = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
                Resolver::builder_with_config(
                    ResolverConfig::from_parts(None, Vec::new(), servers),
                    TokioConnectionProvider::default(),
                )
            }
            None => Resolver::builder_tokio().map_err(|e| format!("system DNS configuration: {e}"))?,
        };
        let options = builder.options_mut();
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.cache_size = 0;
        options.timeout = Duration::from_secs(2);
        options.attempts = 1;
        Ok(DnsSource { resolver: builder.build(), name: name.to_string(), port })
    }

    /// One resolution: the runners, sorted by address (IPv4 before IPv6), so every placerd
    /// that sees the same records sees the same indices.
    ///
    /// # Errors
    /// The resolver's error, or "no records".
    pub async fn resolve(&self) -> Result<Vec<Runner>, String> {
        let lookup = self.resolver.lookup_ip(self.name.as_str()).await.map_err(|e| format!("{}: {e}", self.name))?;
        let mut ips: Vec<IpAddr> = lookup.iter().collect();
        ips.sort();
        ips.dedup();
        if ips.is_empty() {
            return Err(format!("{}: no A or AAAA records", self.name));
        }
        Ok(ips
            .into_iter()
            .map(|ip| Runner { address: SocketAddr::new(ip, self.port).to_string(), labels: Vec::new() })
            .collect())
    }
}

/// Resolves `source` now and then every `interval` until the task is aborted.
pub async fn poll_dns(pool: Arc<DynamicPool>, source: DnsSource, interval: Duration, on_error: OnError) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match source.resolve().await {
            Ok(runners) => apply(&pool, runners, &source.name),
            Err(e) => {
                tracing::warn!(error = %e, "DNS resolution failed; keeping the last good runner set");
                on_error();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runner_file_has_addresses_labels_and_comments() {
        let text = "# runners\n10.0.0.1:8080 zone=a weight=2\n\n  10.0.0.2:8080   # no labels\n[::1]:9000 zone=b\n";
        let runners = parse_runner_file(text).expect("valid");
        let addresses: Vec<&str> = runners.iter().map(|r| r.address.as_str()).collect();
        assert_eq!(addresses, ["10.0.0.1:8080", "10.0.0.2:8080", "[::1]:9000"]);
        assert_eq!(runners[0].labels, vec![("zone".into(), "a".into()), ("weight".into(), "2".into())]);
        assert!(runners[1].labels.is_empty());
        assert!(parse_runner_file("").expect("an empty file is an empty set").is_empty());
    }

    #[test]
    fn a_bad_runner_file_names_the_line() {
        for (text, line) in [
            ("a:1\nno-port\n", "line 2"),
            ("a:1\na:1\n", "line 2"),
            ("a:1 zone\n", "line 1"),
            ("a:1 =x\n", "line 1"),
            ("# c\n\na:1 z=1 z=2\n", "line 3"),
            ("a:99999\n", "line 1"),
        ] {
            let e = parse_runner_file(text).expect_err(text);
            assert!(e.starts_with(line), "{text:?}: {e}");
        }
    }
}
