//! Configuration: a serde mirror of `placerd.toml` ([`FileConfig`], every key optional,
//! unknown keys rejected) validated into the internal [`Config`] of durations and addresses.
//! Validation reports every bad key at once, not the first. Parsing takes a `&str`;
//! [`ConfigSource`] is where the file, the `PLACERD_<KEY>` environment overrides
//! (`env`) and the command line's flags meet, so a reload reads them exactly as start-up
//! did.

mod env;
mod source;

pub use env::apply_env;
pub use source::{ConfigSource, Overrides};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::placer::{OnFault, Recycle, SandboxLimits};

/// A configuration error, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML did not parse or has an unknown key / wrong type.
    #[error("{0}")]
    Parse(String),
    /// A key has a value placerd cannot use.
    #[error("{key}: {reason}")]
    Invalid {
        /// The offending key, dotted.
        key: String,
        /// Why.
        reason: String,
    },
    /// Several keys are wrong (each is one of the above).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Many(Vec<ConfigError>),
}

impl ConfigError {
    /// Each problem on its own, for a report of one line per problem.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Many(all) => all.iter().flat_map(ConfigError::problems).collect(),
            one => vec![one.to_string()],
        }
    }
}

/// Collects every problem of a config instead of stopping at the first.
#[derive(Debug, Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    fn take<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        result.map_err(|e| self.0.push(e)).ok()
    }

    /// `value` if nothing was wrong; every problem otherwise.
    fn finish<T>(mut self, value: Option<T>) -> Result<T, ConfigError> {
        match (self.0.len(), value) {
            (0, Some(value)) => Ok(value),
            (0, None) => Err(ConfigError::Parse("invalid configuration".into())),
            (1, _) => Err(self.0.remove(0)),
            _ => Err(ConfigError::Many(self.0)),
        }
    }
}

/// `placerd.toml` as written. Each field documents its TOML key and default.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// `listen = "127.0.0.1:8080"`: the client-facing HTTP listener.
    pub listen: String,
    /// `admin_listen = "127.0.0.1:9090"`: admin API and /metrics.
    pub admin_listen: String,
    /// `admin_token_file = ""`: bearer token for admin writes.
    pub admin_token_file: String,
    /// `default_placer = "consistent-hash"`.
    pub default_placer: String,
    /// `placers_dir = "placers"`: NAME.wasm becomes placer NAME.
    pub placers_dir: String,
    /// `state_dir = ""`: where placers installed and routes set through the admin API are
    /// kept across restarts; "" keeps them in memory only.
    pub state_dir: String,
    /// `cache_dir = ""`: compiled placers kept across restarts; "" is
    /// `$XDG_CACHE_HOME/placerd` (else `~/.cache/placerd`), "off" keeps none.
    pub cache_dir: String,
    /// `max_body_bytes = 6291456`: larger request bodies get 413.
    pub max_body_bytes: u64,
    /// `body_timeout_ms = 30000`: the whole request body must arrive within it, else 408
    /// and the connection closes.
    pub body_timeout_ms: u64,
    /// `max_connections = 10000`: open client connections, all workers together; beyond it new
    /// connections wait in the listen backlog.
    pub max_connections: u64,
    /// `max_buffered_bytes = 268435456`: request bodies held in memory across all calls; a
    /// call that would pass it gets 503 with `Retry-After`.
    pub max_buffered_bytes: u64,
    /// `workers = "auto"`: threads serving the proxy port, each with its own event loop;
    /// `"auto"` is one per core the process may use (as nginx's `worker_processes auto`).
    pub workers: Workers,
    /// `retry_all_delay_ms = 10`: wait after every runner refused, before asking again.
    pub retry_all_delay_ms: u64,
    /// `placer_timeout_ms = 360000`: how long a sync call may wait to be placed.
    pub placer_timeout_ms: u64,
    /// `detached_placer_timeout_ms = 30000`: the same for detached calls.
    pub detached_placer_timeout_ms: u64,
    /// `placer_budget_ms = 5`: CPU budget of one `place` call.
    pub placer_budget_ms: u64,
    /// `placer_memory_limit_bytes = 16777216`: memory cap per placer instance.
    pub placer_memory_limit_bytes: u64,
    /// `placer_recycle_memory_percent = 75`: an instance whose memory passes this share of
    /// the cap is retired for a fresh one, built ahead of need (100: never).
    pub placer_recycle_memory_percent: u64,
    /// `placer_recycle_calls = 0`: retire an instance after this many calls (0: never).
    pub placer_recycle_calls: u64,
    /// `placer_recycle_seconds = 0`: retire an instance this long after it was built (0:
    /// never).
    pub placer_recycle_seconds: u64,
    /// `on_placer_fault = "fallback"` or `"reject"`.
    pub on_placer_fault: String,
    /// `status_interval_ms = 1000`: runner status polling period.
    pub status_interval_ms: u64,
    /// `connect_timeout_ms = 1000`: runner TCP connect timeout.
    pub connect_timeout_ms: u64,
    /// `shutdown_grace_ms = 30000`: on SIGTERM/SIGINT, how long calls in flight may finish.
    pub shutdown_grace_ms: u64,
    /// `runner_read_timeout_ms = 300000`: the longest silence between bytes from a runner
    /// once a call is sent to it (Fn's longest function timeout, so no legitimate call is
    /// cut); past it the client gets 504. A `[[routes]]` entry may set its own.
    pub runner_read_timeout_ms: u64,
    /// `runner_write_timeout_ms = 60000`: the longest a runner may take none of a request
    /// being sent to it; past it the client gets 504.
    pub runner_write_timeout_ms: u64,
    /// `client_idle_timeout_ms = 60000`: how long a client connection may wait for its
    /// next request (the first one included) before it is closed.
    pub client_idle_timeout_ms: u64,
    /// `client_header_timeout_ms = 10000`: how long a request head may take to arrive
    /// from its first byte; past it, 408 and the connection closes.
    pub client_header_timeout_ms: u64,
    /// `[runners]`.
    pub runners: FileRunners,
    /// `[placers.NAME.config]` tables, handed to `configure`.
    pub placers: BTreeMap<String, FilePlacer>,
    /// `[[routes]]`, first match wins.
    pub routes: Vec<FileRoute>,
    /// `[tls]`: TLS on the proxy port (none by default).
    #[serde(skip_serializing_if = "FileTls::is_off")]
    pub tls: FileTls,
    /// `[admin]`: the admin port's TLS (`[admin.tls]`).
    #[serde(skip_serializing_if = "FileAdmin::is_off")]
    pub admin: FileAdmin,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileAdmin {
    /// `[admin.tls]`: the admin port speaks TLS, with the same keys as `[tls]`.
    pub tls: FileTls,
}

impl FileAdmin {
    fn is_off(&self) -> bool {
        self.tls.is_off()
    }
}

/// `[tls]`: the proxy port speaks TLS when a certificate is given.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileTls {
    /// `cert_file = ""`: PEM, the certificate first, then its chain.
    pub cert_file: String,
    /// `key_file = ""`: PEM, the certificate's private key.
    pub key_file: String,
    /// `[[tls.certificates]]`: certificates for the server names a client asks for (SNI).
    pub certificates: Vec<FileCertificate>,
}

/// `[[tls.certificates]]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileCertificate {
    /// `server_names = ["api.example.com", "*.example.com"]`.
    pub server_names: Vec<String>,
    /// `cert_file = ""`.
    pub cert_file: String,
    /// `key_file = ""`.
    pub key_file: String,
}

impl FileTls {
    fn is_off(&self) -> bool {
        self.cert_file.is_empty() && self.key_file.is_empty() && self.certificates.is_empty()
    }

    /// The files, checked for completeness (the files are read when placerd starts or
    /// reloads, not here); `None` when TLS is off.
    fn validate(&self, table: &str) -> Result<Option<crate::tls::TlsFiles>, ConfigError> {
        if self.is_off() {
            return Ok(None);
        }
        let pair = |key: &str, cert: &str, key_file: &str| match (cert.is_empty(), key_file.is_empty()) {
            (false, false) => Ok(crate::tls::CertFiles { cert_file: cert.into(), key_file: key_file.into() }),
            (true, _) => Err(invalid(&format!("{key}.cert_file"), "missing: key_file is set, name its certificate")),
            (_, true) => Err(invalid(&format!("{key}.key_file"), "missing: cert_file is set, name its private key")),
        };
        let default = if self.cert_file.is_empty() && self.key_file.is_empty() {
            None
        } else {
            Some(pair(table, &self.cert_file, &self.key_file)?)
        };
        let mut named = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (i, certificate) in self.certificates.iter().enumerate() {
            let key = format!("{table}.certificates[{i}]");
            if certificate.server_names.is_empty() {
                return Err(invalid(&format!("{key}.server_names"), "missing: the names this certificate answers for"));
            }
            let mut names = Vec::new();
            for name in &certificate.server_names {
                let lower = name.to_ascii_lowercase();
                let bare = lower.strip_prefix("*.").unwrap_or(&lower);
                let valid = !bare.is_empty()
                    && bare.split('.').all(|label| {
                        !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if !valid {
                    return Err(invalid(
                        &format!("{key}.server_names"),
                        format!("{name:?} is not a DNS name (or *. and one): example.com, *.example.com"),
                    ));
                }
                if !seen.insert(lower.clone()) {
                    return Err(invalid(&format!("{key}.server_names"), format!("{name:?} is listed twice")));
                }
                names.push(lower);
            }
            named.push((names, pair(&key, &certificate.cert_file, &certificate.key_file)?));
        }
        Ok(Some(crate::tls::TlsFiles { default, named }))
    }
}

impl Default for FileConfig {
    fn default() -> Self {
        FileConfig {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            admin_token_file: String::new(),
            default_placer: "consistent-hash".into(),
            placers_dir: "placers".into(),
            state_dir: String::new(),
            cache_dir: String::new(),
            max_body_bytes: 6 << 20,
            body_timeout_ms: 30_000,
            max_connections: crate::server::MAX_CONNECTIONS as u64,
            max_buffered_bytes: 256 << 20,
            workers: Workers::default(),
            retry_all_delay_ms: 10,
            placer_timeout_ms: 360_000,
            detached_placer_timeout_ms: 30_000,
            placer_budget_ms: 5,
            placer_memory_limit_bytes: 16 << 20,
            placer_recycle_memory_percent: 75,
            placer_recycle_calls: 0,
            placer_recycle_seconds: 0,
            on_placer_fault: "fallback".into(),
            status_interval_ms: 1_000,
            connect_timeout_ms: 1_000,
            shutdown_grace_ms: 30_000,
            runner_read_timeout_ms: 300_000,
            runner_write_timeout_ms: 60_000,
            client_idle_timeout_ms: crate::server::KEEP_ALIVE_TIMEOUT.as_millis() as u64,
            client_header_timeout_ms: crate::server::HEADER_READ_TIMEOUT.as_millis() as u64,
            runners: FileRunners::default(),
            placers: BTreeMap::new(),
            routes: Vec::new(),
            tls: FileTls::default(),
            admin: FileAdmin::default(),
        }
    }
}

/// `[runners]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileRunners {
    /// `static = ["127.0.0.1:9001"]`.
    #[serde(rename = "static")]
    pub static_: Vec<String>,
    /// `file = ""`: a runner file (one `host:port [key=value ...]` per line), watched.
    pub file: String,
    /// `dns = ""`: `name:port`; every A/AAAA record of `name`, sorted, re-resolved.
    pub dns: String,
    /// `dns_interval_ms = 5000`: how often `dns` is re-resolved.
    pub dns_interval_ms: u64,
    /// `dns_server = ""`: `IP:port` of the DNS server to ask; empty means the system's
    /// (`/etc/resolv.conf`, with its search domains).
    pub dns_server: String,
    /// `[runners.outlier_detection]`: passive ejection after connect failures.
    pub outlier_detection: FileOutlierDetection,
    /// `[runners.tls]`: TLS to the runners (none by default).
    #[serde(skip_serializing_if = "FileRunnerTls::is_off")]
    pub tls: FileRunnerTls,
}

/// `[runners.tls]`: runners speak TLS when `ca_file` is given.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileRunnerTls {
    /// `ca_file = ""`: PEM, the CA certificates that sign runners' certificates.
    pub ca_file: String,
    /// `cert_file = ""`: PEM, placerd's client certificate and chain (mutual TLS).
    pub cert_file: String,
    /// `key_file = ""`: PEM, its private key.
    pub key_file: String,
    /// `server_name = ""`: the name runners' certificates must hold; empty: each
    /// runner's host.
    pub server_name: String,
}

impl FileRunnerTls {
    fn is_off(&self) -> bool {
        self.ca_file.is_empty() && self.cert_file.is_empty() && self.key_file.is_empty() && self.server_name.is_empty()
    }

    fn validate(&self) -> Result<Option<crate::tls::RunnerTlsFiles>, ConfigError> {
        if self.is_off() {
            return Ok(None);
        }
        if self.ca_file.is_empty() {
            return Err(invalid("runners.tls.ca_file", "missing: the CA bundle that signs the runners' certificates"));
        }
        let client = match (self.cert_file.is_empty(), self.key_file.is_empty()) {
            (true, true) => None,
            (false, false) => Some(crate::tls::CertFiles {
                cert_file: self.cert_file.clone().into(),
                key_file: self.key_file.clone().into(),
            }),
            (true, false) => {
                return Err(invalid("runners.tls.cert_file", "missing: key_file is set, name its certificate"));
            }
            (false, true) => {
                return Err(invalid("runners.tls.key_file", "missing: cert_file is set, name its private key"));
            }
        };
        Ok(Some(crate::tls::RunnerTlsFiles {
            ca_file: self.ca_file.clone().into(),
            client,
            server_name: (!self.server_name.is_empty()).then(|| self.server_name.clone()),
        }))
    }
}

/// `[runners.outlier_detection]`, named after Envoy's outlier detection.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileOutlierDetection {
    /// `consecutive_failures = 5`: connect failures in a row that eject a runner.
    pub consecutive_failures: u64,
    /// `base_ejection_time_ms = 30000`: the first ejection; each repeat without a
    /// committed call in between lasts twice as long.
    pub base_ejection_time_ms: u64,
    /// `max_ejection_time_ms = 300000`: the longest ejection.
    pub max_ejection_time_ms: u64,
    /// `max_ejection_percent = 50`: never eject more than this share of the runners.
    pub max_ejection_percent: u64,
}

impl Default for FileOutlierDetection {
    fn default() -> Self {
        FileOutlierDetection {
            consecutive_failures: 5,
            base_ejection_time_ms: 30_000,
            max_ejection_time_ms: 300_000,
            max_ejection_percent: 50,
        }
    }
}

/// Passive ejection of runners after connect failures (`[runners.outlier_detection]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Connect failures in a row that eject a runner.
    pub consecutive_failures: u32,
    /// Length of the first ejection.
    pub base_ejection_time: Duration,
    /// Longest ejection.
    pub max_ejection_time: Duration,
    /// Largest share of the runners ejected at once, percent.
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        FileOutlierDetection::default().validate().unwrap_or_else(|e| unreachable!("defaults are valid: {e}"))
    }
}

impl FileOutlierDetection {
    fn validate(&self) -> Result<OutlierDetection, ConfigError> {
        const KEY: &str = "runners.outlier_detection";
        let consecutive_failures = u32::try_from(self.consecutive_failures)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| invalid(&format!("{KEY}.consecutive_failures"), "must be at least 1"))?;
        let max_ejection_percent = u32::try_from(self.max_ejection_percent)
            .ok()
            .filter(|n| *n <= 100)
            .ok_or_else(|| invalid(&format!("{KEY}.max_ejection_percent"), "must be 0 to 100"))?;
        let base = ms(&format!("{KEY}.base_ejection_time_ms"), self.base_ejection_time_ms, 1)?;
        let max = ms(&format!("{KEY}.max_ejection_time_ms"), self.max_ejection_time_ms, 1)?;
        if max < base {
            return Err(invalid(&format!("{KEY}.max_ejection_time_ms"), "must be at least base_ejection_time_ms"));
        }
        Ok(OutlierDetection {
            consecutive_failures,
            base_ejection_time: base,
            max_ejection_time: max,
            max_ejection_percent,
        })
    }
}

impl Default for FileRunners {
    fn default() -> Self {
        FileRunners {
            static_: Vec::new(),
            file: String::new(),
            dns: String::new(),
            dns_interval_ms: 5_000,
            dns_server: String::new(),
            outlier_detection: FileOutlierDetection::default(),
            tls: FileRunnerTls::default(),
        }
    }
}

/// `[placers.NAME]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilePlacer {
    /// `[placers.NAME.config]`: string values handed to `configure`.
    pub config: BTreeMap<String, toml::Value>,
}

/// One `[[routes]]` entry.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileRoute {
    /// `app = "billing"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// `fn = "billing/charge"`.
    #[serde(rename = "fn", skip_serializing_if = "Option::is_none")]
    pub fn_: Option<String>,
    /// `placer = "naive"`.
    pub placer: String,
    /// `shadow = "NAME"`: a placer that orders the same calls beside `placer`, off the
    /// client's path, to report what it would have done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<String>,
    /// `shadow_percent = 100`: the share of the route's calls the shadow sees.
    pub shadow_percent: u64,
    /// `canary = "NAME"`: a placer that serves `canary_percent` of the route's calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    /// `canary_percent = 0`: the share of the route's calls the canary serves (1-100 when
    /// `canary` is set).
    pub canary_percent: u64,
    /// `runner_read_timeout_ms`: this route's own longest silence from a runner (for
    /// functions known to be quick); unset: the top-level key's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner_read_timeout_ms: Option<u64>,
}

impl Default for FileRoute {
    fn default() -> Self {
        FileRoute {
            app: None,
            fn_: None,
            placer: String::new(),
            shadow: None,
            shadow_percent: 100,
            canary: None,
            canary_percent: 0,
            runner_read_timeout_ms: None,
        }
    }
}

/// One validated route (also its JSON form in the admin API and `state_dir`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Matches calls of this app, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Matches calls of this fn id, if set.
    #[serde(rename = "fn", default, skip_serializing_if = "Option::is_none")]
    pub fn_id: Option<String>,
    /// The placer for matching calls.
    pub placer: String,
    /// A placer run beside `placer` on a share of the calls, off the client's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<String>,
    /// Percent of the route's calls the shadow orders.
    #[serde(default = "all", skip_serializing_if = "is_all")]
    pub shadow_percent: u8,
    /// A placer that serves `canary_percent` of the route's calls instead of `placer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
    /// Percent of the route's calls the canary serves.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub canary_percent: u8,
    /// The longest silence from a runner for the route's calls, in ms; `None`: the
    /// top-level `runner_read_timeout_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_read_timeout_ms: Option<u64>,
}

impl Default for Route {
    fn default() -> Self {
        Route {
            app: None,
            fn_id: None,
            placer: String::new(),
            shadow: None,
            shadow_percent: 100,
            canary: None,
            canary_percent: 0,
            runner_read_timeout_ms: None,
        }
    }
}

impl Route {
    /// `app=A fn=F`, for logs, metrics and the admin API.
    pub fn label(&self) -> String {
        match (&self.app, &self.fn_id) {
            (Some(app), Some(f)) => format!("app={app} fn={f}"),
            (Some(app), None) => format!("app={app}"),
            (None, Some(f)) => format!("fn={f}"),
            (None, None) => "any".into(),
        }
    }

    /// Problems with the route's own values (not the names it gives placers).
    ///
    /// # Errors
    /// The first problem, with the key below `routes[i]`.
    pub fn check(&self) -> Result<(), (String, String)> {
        if self.placer.is_empty() {
            return Err(("placer".into(), "missing: name the placer for these calls".into()));
        }
        if self.app.is_none() && self.fn_id.is_none() {
            return Err((String::new(), "needs `app`, `fn` or both".into()));
        }
        if self.runner_read_timeout_ms == Some(0) {
            return Err(("runner_read_timeout_ms".into(), "must be at least 1".into()));
        }
        if self.shadow_percent > 100 {
            return Err(("shadow_percent".into(), format!("must be 0 to 100, got {}", self.shadow_percent)));
        }
        match (&self.canary, self.canary_percent) {
            (_, p) if p > 100 => Err(("canary_percent".into(), format!("must be 1 to 100, got {p}"))),
            (Some(_), 0) => Err(("canary_percent".into(), "set the share of calls the canary serves, 1 to 100".into())),
            (None, p) if p > 0 => Err(("canary".into(), "canary_percent is set but no canary placer is named".into())),
            (Some(c), _) if *c == self.placer => {
                Err(("canary".into(), "the canary is the route's placer already".into()))
            }
            _ if self.shadow.as_ref() == Some(&self.placer) => {
                Err(("shadow".into(), "the shadow is the route's placer already".into()))
            }
            _ => Ok(()),
        }
    }
}

/// `workers`: `"auto"` or a count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Workers {
    /// One per core the process may use (its CPU affinity and cgroup quota).
    #[default]
    Auto,
    /// This many.
    Count(u64),
}

/// Most workers placerd starts: more threads than this are a typo, not a machine.
pub const MAX_WORKERS: usize = 1024;

impl Workers {
    /// The count: `Auto` is the cores the process may use.
    fn resolve(self) -> Result<usize, ConfigError> {
        match self {
            Workers::Auto => Ok(std::thread::available_parallelism().map_or(1, std::num::NonZero::get)),
            Workers::Count(n) => usize::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_WORKERS).contains(n))
                .ok_or_else(|| invalid("workers", format!("must be \"auto\" or 1 to {MAX_WORKERS}, got {n}"))),
        }
    }
}

impl Serialize for Workers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Workers::Auto => s.serialize_str("auto"),
            Workers::Count(n) => s.serialize_u64(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Workers;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"auto\" or a number of workers")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Workers, E> {
                match v {
                    "auto" => Ok(Workers::Auto),
                    // `PLACERD_WORKERS="4"` and a quoted count in the file mean the count.
                    _ => v
                        .parse()
                        .map(Workers::Count)
                        .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Workers, E> {
                Ok(Workers::Count(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Workers, E> {
                u64::try_from(v)
                    .map(Workers::Count)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn all() -> u8 {
    100
}

fn is_all(percent: &u8) -> bool {
    *percent == 100
}

fn is_zero(percent: &u8) -> bool {
    *percent == 0
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Client-facing listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Bearer token for admin writes (read from `admin_token_file` by `main`).
    pub admin_token_file: Option<PathBuf>,
    /// Placer used when no route matches.
    pub default_placer: String,
    /// Folder of user placers.
    pub placers_dir: PathBuf,
    /// Where admin-API changes are kept across restarts; `None`: in memory only.
    pub state_dir: Option<PathBuf>,
    /// Where compiled placers are kept across restarts; `None`: nowhere.
    pub cache_dir: Option<PathBuf>,
    /// Request body limit.
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
    /// Open client connections, all workers together.
    pub max_connections: usize,
    /// Threads serving the proxy port (`workers`, `"auto"` resolved).
    pub workers: usize,
    /// Request body bytes held across all calls.
    pub max_buffered_bytes: usize,
    /// Wait after a full pass of refusals.
    pub retry_all_delay: Duration,
    /// Placement deadline of sync calls.
    pub placer_timeout: Duration,
    /// Placement deadline of detached calls.
    pub detached_placer_timeout: Duration,
    /// Runner status polling period.
    pub status_interval: Duration,
    /// Runner connect timeout.
    pub connect_timeout: Duration,
    /// How long calls in flight may finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// The longest silence between bytes from a runner after a call is sent (routes may
    /// set their own).
    pub runner_read_timeout: Duration,
    /// The longest a runner may take none of a request being sent.
    pub runner_write_timeout: Duration,
    /// How long a client connection may idle between requests.
    pub client_idle_timeout: Duration,
    /// How long a request head may take from its first byte.
    pub client_header_timeout: Duration,
    /// Sandbox limits for placers.
    pub sandbox: SandboxLimits,
    /// Static runner addresses, in index order (`runners.static`).
    pub runners: Vec<String>,
    /// Where runners come from: the static list, a file or DNS.
    pub discovery: RunnerSource,
    /// When connect failures eject a runner.
    pub outlier_detection: OutlierDetection,
    /// `configure` tables by placer name.
    pub placer_config: BTreeMap<String, Vec<(String, String)>>,
    /// `[[routes]]` as configured, first match wins. `serve` moves them into the live
    /// route table (`proxy::RouteTable`, which `PUT /admin/routes` replaces), so nothing
    /// reads a stale copy here.
    pub routes: Vec<Route>,
    /// `--record-trace FILE`: one JSON line per call (no bodies), for `simulate --trace`.
    /// A command-line option only.
    pub record_trace: Option<PathBuf>,
    /// `--native-placement`: run the built-in placers' algorithms natively instead of their
    /// Wasm components, to measure the sandbox's cost. A command-line option only.
    pub native_placement: bool,
    /// Where this config was read from, so `SIGHUP` and `POST /admin/reload` can read it
    /// again the same way; `None` for a config built in code (nothing to re-read).
    pub source: Option<ConfigSource>,
    /// `[tls]`: the proxy port's certificates, if it speaks TLS.
    pub tls: Option<crate::tls::TlsFiles>,
    /// `[runners.tls]`: how placerd speaks TLS to runners, if it does.
    pub runner_tls: Option<crate::tls::RunnerTlsFiles>,
    /// `[admin.tls]`: the admin port's certificates, if it speaks TLS.
    pub admin_tls: Option<crate::tls::TlsFiles>,
    /// How often the admin dashboard samples calls per runner (5 s; it keeps 120 samples).
    /// Not a TOML key: tests shorten it.
    pub history_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        FileConfig::default().validate().unwrap_or_else(|e| unreachable!("defaults are valid: {e}"))
    }
}

impl Config {
    /// Parses and validates a TOML document.
    ///
    /// # Errors
    /// [`ConfigError`] naming the key that is unknown, mistyped or invalid.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        file.validate()
    }
}

/// The first route matching `app_id` / `fn_id`.
pub fn route_for<'a>(routes: &'a [Route], app_id: &str, fn_id: &str) -> Option<&'a Route> {
    routes
        .iter()
        .find(|r| r.app.as_deref().is_none_or(|a| a == app_id) && r.fn_id.as_deref().is_none_or(|f| f == fn_id))
}

/// The placer of the first route matching `app_id` / `fn_id`, else `default`.
pub fn placer_for<'a>(routes: &'a [Route], default: &'a str, app_id: &str, fn_id: &str) -> &'a str {
    route_for(routes, app_id, fn_id).map_or(default, |r| &r.placer)
}

/// Why `address` is not a runner address `host:port` (a name or IP, `[v6]` bracketed, and
/// a u16 port), with the fix; `None` when it is one.
pub fn runner_address_problem(address: &str) -> Option<String> {
    if let Some((scheme, rest)) = address.split_once("://") {
        let rest = rest.trim_end_matches('/');
        return Some(format!(
            "expected host:port, got {address:?}: drop the {scheme}:// (placerd speaks HTTP/1.1 to runners), e.g. {rest:?}"
        ));
    }
    if address.contains(',') || address.contains(char::is_whitespace) {
        let parts: Vec<String> = address
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .map(|p| format!("{p:?}"))
            .collect();
        return Some(format!(
            "expected one host:port, got the list {address:?}: give one address per entry, e.g. [{}]",
            parts.join(", ")
        ));
    }
    let valid_host = |host: &str| {
        if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            return v6.parse::<std::net::Ipv6Addr>().is_ok();
        }
        !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    };
    match address.rsplit_once(':') {
        Some((host, port)) if valid_host(host) && port.parse::<u16>().is_ok() => None,
        Some((_, port)) if port.contains('/') => {
            Some(format!("expected host:port, got {address:?}: drop the path (runners are addressed by host:port)"))
        }
        _ => Some(format!("expected host:port (e.g. \"127.0.0.1:9001\"; IPv6 as \"[::1]:9001\"), got {address:?}")),
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), reason: reason.into() }
}

fn addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| invalid(key, format!("expected an IP:port address, got {value:?}")))
}

fn ms(key: &str, value: u64, min: u64) -> Result<Duration, ConfigError> {
    if value < min {
        return Err(invalid(key, format!("must be at least {min}, got {value}")));
    }
    Ok(Duration::from_millis(value))
}

/// Where the runner set comes from (`[runners]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RunnerSource {
    /// `runners.static` ([`Config::runners`]).
    #[default]
    Static,
    /// `runners.file`: re-read whenever its folder changes.
    File(PathBuf),
    /// `runners.dns`.
    Dns {
        /// Name to resolve.
        name: String,
        /// Port of every runner.
        port: u16,
        /// Re-resolution period (`dns_interval_ms`).
        interval: Duration,
        /// `dns_server`, or `None` for the system's resolver configuration.
        server: Option<SocketAddr>,
    },
}

impl FileRunners {
    fn source(&self) -> Result<RunnerSource, ConfigError> {
        let given = [!self.static_.is_empty(), !self.file.is_empty(), !self.dns.is_empty()];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(invalid("runners", "set only one of `static`, `file` and `dns`"));
        }
        if !self.file.is_empty() {
            return Ok(RunnerSource::File(PathBuf::from(&self.file)));
        }
        if self.dns.is_empty() {
            return Ok(RunnerSource::Static);
        }
        let (name, port) = self
            .dns
            .rsplit_once(':')
            .and_then(|(name, port)| Some((name, port.parse::<u16>().ok()?)))
            .filter(|(name, _)| !name.is_empty() && !name.contains(char::is_whitespace))
            .ok_or_else(|| invalid("runners.dns", format!("expected name:port, got {:?}", self.dns)))?;
        let server = match self.dns_server.as_str() {
            "" => None,
            s => Some(addr("runners.dns_server", s)?),
        };
        Ok(RunnerSource::Dns {
            name: name.to_string(),
            port,
            interval: ms("runners.dns_interval_ms", self.dns_interval_ms, 10)?,
            server,
        })
    }
}

impl FileConfig {
    /// Checks every value and builds the internal [`Config`].
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the bad key, or [`ConfigError::Many`] when several
    /// are bad: every problem is reported at once.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let mut p = Problems::default();
        let on_fault = p.take(match self.on_placer_fault.as_str() {
            "fallback" => Ok(OnFault::Fallback),
            "reject" => Ok(OnFault::Reject),
            other => Err(invalid("on_placer_fault", format!("expected \"fallback\" or \"reject\", got {other:?}"))),
        });
        let discovery = p.take(self.runners.source());
        let outlier_detection = p.take(self.runners.outlier_detection.validate());
        let mut runners = Vec::new();
        for (i, runner) in self.runners.static_.iter().enumerate() {
            let key = format!("runners.static[{i}]");
            if let Some(problem) = runner_address_problem(runner) {
                p.0.push(invalid(&key, problem));
            } else if runners.contains(runner) {
                p.0.push(invalid(&key, format!("{runner} is listed twice")));
            } else {
                runners.push(runner.clone());
            }
        }
        let mut placer_config = BTreeMap::new();
        for (name, placer) in self.placers {
            let mut pairs = Vec::new();
            for (key, value) in placer.config {
                let value = match value {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    _ => {
                        p.0.push(invalid(
                            &format!("placers.{name}.config.{key}"),
                            "expected a string, number or boolean",
                        ));
                        continue;
                    }
                };
                pairs.push((key, value));
            }
            placer_config.insert(name, pairs);
        }
        let mut routes = Vec::new();
        for (i, route) in self.routes.into_iter().enumerate() {
            let percent = |v: u64| u8::try_from(v).unwrap_or(u8::MAX);
            let route = Route {
                app: route.app,
                fn_id: route.fn_,
                placer: route.placer,
                shadow: route.shadow,
                shadow_percent: percent(route.shadow_percent),
                canary: route.canary,
                canary_percent: percent(route.canary_percent),
                runner_read_timeout_ms: route.runner_read_timeout_ms,
            };
            match route.check() {
                Ok(()) => routes.push(route),
                Err((key, reason)) if key.is_empty() => p.0.push(invalid(&format!("routes[{i}]"), reason)),
                Err((key, reason)) => p.0.push(invalid(&format!("routes[{i}].{key}"), reason)),
            }
        }
        if self.default_placer.is_empty() {
            p.0.push(invalid("default_placer", "must name a placer"));
        }
        let max_body_bytes = p.take(
            usize::try_from(self.max_body_bytes)
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| invalid("max_body_bytes", format!("must be at least 1, got {}", self.max_body_bytes))),
        );
        let max_connections =
            p.take(usize::try_from(self.max_connections).ok().filter(|n| *n >= 1).ok_or_else(|| {
                invalid("max_connections", format!("must be at least 1, got {}", self.max_connections))
            }));
        let max_buffered_bytes = p.take(
            usize::try_from(self.max_buffered_bytes).ok().filter(|n| *n >= max_body_bytes.unwrap_or(1)).ok_or_else(
                || {
                    invalid(
                        "max_buffered_bytes",
                        format!(
                            "must be at least max_body_bytes ({}), got {}",
                            self.max_body_bytes, self.max_buffered_bytes
                        ),
                    )
                },
            ),
        );
        let workers = p.take(self.workers.resolve());
        let memory = p.take(
            usize::try_from(self.placer_memory_limit_bytes)
                .ok()
                .filter(|m| *m >= 2 << 20)
                .ok_or_else(|| invalid("placer_memory_limit_bytes", "must be at least 2097152 (2 MiB)")),
        );
        let recycle_percent = p.take(
            u8::try_from(self.placer_recycle_memory_percent).ok().filter(|n| (10..=100).contains(n)).ok_or_else(|| {
                invalid(
                    "placer_recycle_memory_percent",
                    format!("must be from 10 to 100 (100: never), got {}", self.placer_recycle_memory_percent),
                )
            }),
        );
        let listen = p.take(addr("listen", &self.listen));
        let admin_listen = p.take(addr("admin_listen", &self.admin_listen));
        let admin_token_file = (!self.admin_token_file.is_empty()).then(|| PathBuf::from(&self.admin_token_file));
        if let Some(admin) = admin_listen
            && !admin.ip().is_loopback()
            && admin_token_file.is_none()
        {
            p.0.push(invalid(
                "admin_listen",
                format!("{admin} is not loopback: set admin_token_file so the admin API needs a token"),
            ));
        }
        let body_timeout = p.take(ms("body_timeout_ms", self.body_timeout_ms, 1));
        let retry_all_delay = p.take(ms("retry_all_delay_ms", self.retry_all_delay_ms, 1));
        let placer_timeout = p.take(ms("placer_timeout_ms", self.placer_timeout_ms, 1));
        let detached_placer_timeout = p.take(ms("detached_placer_timeout_ms", self.detached_placer_timeout_ms, 1));
        let status_interval = p.take(ms("status_interval_ms", self.status_interval_ms, 10));
        let connect_timeout = p.take(ms("connect_timeout_ms", self.connect_timeout_ms, 1));
        let shutdown_grace = p.take(ms("shutdown_grace_ms", self.shutdown_grace_ms, 0));
        let runner_read_timeout = p.take(ms("runner_read_timeout_ms", self.runner_read_timeout_ms, 1));
        let runner_write_timeout = p.take(ms("runner_write_timeout_ms", self.runner_write_timeout_ms, 1));
        let client_idle_timeout = p.take(ms("client_idle_timeout_ms", self.client_idle_timeout_ms, 1));
        let client_header_timeout = p.take(ms("client_header_timeout_ms", self.client_header_timeout_ms, 1));
        let budget = p.take(ms("placer_budget_ms", self.placer_budget_ms, 1));
        let tls = p.take(self.tls.validate("tls"));
        let admin_tls = p.take(self.admin.tls.validate("admin.tls"));
        let runner_tls = p.take(self.runners.tls.validate());
        let config = (|| {
            Some(Config {
                listen: listen?,
                admin_listen: admin_listen?,
                admin_token_file,
                default_placer: self.default_placer,
                placers_dir: PathBuf::from(self.placers_dir),
                state_dir: (!self.state_dir.is_empty()).then(|| PathBuf::from(&self.state_dir)),
                cache_dir: match self.cache_dir.as_str() {
                    "off" => None,
                    "" => crate::placer::default_cache_dir(),
                    dir => Some(PathBuf::from(dir)),
                },
                max_body_bytes: max_body_bytes?,
                body_timeout: body_timeout?,
                max_connections: max_connections?,
                max_buffered_bytes: max_buffered_bytes?,
                workers: workers?,
                retry_all_delay: retry_all_delay?,
                placer_timeout: placer_timeout?,
                detached_placer_timeout: detached_placer_timeout?,
                status_interval: status_interval?,
                connect_timeout: connect_timeout?,
                shutdown_grace: shutdown_grace?,
                runner_read_timeout: runner_read_timeout?,
                runner_write_timeout: runner_write_timeout?,
                client_idle_timeout: client_idle_timeout?,
                client_header_timeout: client_header_timeout?,
                sandbox: SandboxLimits {
                    budget: budget?,
                    memory_limit_bytes: memory?,
                    on_fault: on_fault?,
                    // One ready for each worker's first call.
                    warm_instances: workers.unwrap_or(1),
                    recycle: Recycle {
                        memory_percent: recycle_percent?,
                        calls: self.placer_recycle_calls,
                        age: (self.placer_recycle_seconds > 0)
                            .then(|| Duration::from_secs(self.placer_recycle_seconds)),
                    },
                    ..SandboxLimits::default()
                },
                runners,
                discovery: discovery?,
                outlier_detection: outlier_detection?,
                placer_config,
                routes,
                record_trace: None,
                native_placement: false,
                source: None,
                tls: tls?,
                runner_tls: runner_tls?,
                admin_tls: admin_tls?,
                history_interval: Duration::from_secs(5),
            })
        })();
        p.finish(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_documented_defaults() {
        let c = Config::from_toml("").expect("valid");
        assert_eq!(c.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(c.default_placer, "consistent-hash");
        assert_eq!(c.max_body_bytes, 6_291_456);
        assert_eq!(c.body_timeout, Duration::from_secs(30));
        assert_eq!(c.max_connections, 10_000);
        assert_eq!(c.max_buffered_bytes, 256 << 20);
        assert_eq!(c.cache_dir, crate::placer::default_cache_dir());
        assert_eq!(Config::from_toml("cache_dir = \"off\"").expect("valid").cache_dir, None);
        assert_eq!(c.retry_all_delay, Duration::from_millis(10));
        assert_eq!(c.placer_timeout, Duration::from_secs(360));
        assert_eq!(c.detached_placer_timeout, Duration::from_secs(30));
        assert_eq!(c.sandbox.budget, Duration::from_millis(5));
        assert_eq!(c.sandbox.memory_limit_bytes, 16 << 20);
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        assert_eq!(c.workers, cores, "one worker per core the process may use");
    }

    #[test]
    fn tls_tables_name_their_files_and_refuse_half_pairs() {
        let c = Config::from_toml("").expect("valid");
        assert!(c.tls.is_none() && c.runner_tls.is_none() && c.admin_tls.is_none(), "plain by default");
        let c = Config::from_toml(
            r#"
            [tls]
            cert_file = "a.crt"
            key_file = "a.key"
            [[tls.certificates]]
            server_names = ["API.example.com", "*.b.example.com"]
            cert_file = "b.crt"
            key_file = "b.key"
            [runners.tls]
            ca_file = "ca.pem"
            server_name = "runners.internal"
            [admin.tls]
            cert_file = "admin.crt"
            key_file = "admin.key"
            "#,
        )
        .expect("valid");
        let tls = c.tls.expect("tls");
        assert_eq!(tls.default.expect("default").cert_file, PathBuf::from("a.crt"));
        assert_eq!(tls.named[0].0, ["api.example.com", "*.b.example.com"], "names in lower case");
        let runners = c.runner_tls.expect("runners.tls");
        assert_eq!((runners.client, runners.server_name.as_deref()), (None, Some("runners.internal")));
        assert!(c.admin_tls.is_some());
        for (toml, key) in [
            ("[tls]\ncert_file = \"a\"", "tls.key_file"),
            ("[tls]\nkey_file = \"a\"", "tls.cert_file"),
            ("[[tls.certificates]]\ncert_file = \"a\"\nkey_file = \"b\"", "tls.certificates[0].server_names"),
            (
                "[[tls.certificates]]\nserver_names = [\"a b\"]\ncert_file = \"a\"\nkey_file = \"b\"",
                "tls.certificates[0].server_names",
            ),
            ("[runners.tls]\ncert_file = \"a\"\nkey_file = \"b\"", "runners.tls.ca_file"),
            ("[runners.tls]\nca_file = \"a\"\ncert_file = \"b\"", "runners.tls.key_file"),
            ("[admin.tls]\ncert_file = \"a\"", "admin.tls.key_file"),
        ] {
            let e = Config::from_toml(toml).expect_err(toml).to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
    }

    #[test]
    fn workers_is_auto_or_a_count() {
        assert_eq!(Config::from_toml("workers = 3").expect("valid").workers, 3);
        assert_eq!(Config::from_toml("workers = \"3\"").expect("valid").workers, 3, "PLACERD_WORKERS=\"3\"");
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        assert_eq!(Config::from_toml("workers = \"auto\"").expect("valid").workers, cores);
        for (bad, says) in [
            ("workers = 0", "workers: must be \"auto\" or 1 to 1024, got 0"),
            ("workers = 5000", "got 5000"),
            ("workers = -1", "\"auto\" or a number of workers"),
            ("workers = \"many\"", "\"auto\" or a number of workers"),
        ] {
            let e = Config::from_toml(bad).expect_err(bad).to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn design_example_parses() {
        let c = Config::from_toml(
            r#"
            listen = "127.0.0.1:8080"
            on_placer_fault = "reject"
            [runners]
            static = ["127.0.0.1:9001", "127.0.0.1:9002"]
            [placers.consistent-hash.config]
            max_load_factor = "1.25"
            [[routes]]
            app = "billing"
            placer = "naive"
            "#,
        )
        .expect("valid");
        assert_eq!(c.runners.len(), 2);
        assert_eq!(c.sandbox.on_fault, OnFault::Reject);
        assert_eq!(c.placer_config["consistent-hash"], vec![("max_load_factor".into(), "1.25".into())]);
        assert_eq!(placer_for(&c.routes, &c.default_placer, "billing", "billing/x"), "naive");
        assert_eq!(placer_for(&c.routes, &c.default_placer, "shop", "shop/x"), "consistent-hash");
    }

    #[test]
    fn runner_sources() {
        let file = Config::from_toml("[runners]\nfile = \"/etc/placerd/runners\"").expect("valid");
        assert_eq!(file.discovery, RunnerSource::File("/etc/placerd/runners".into()));
        let dns =
            Config::from_toml("[runners]\ndns = \"runners.svc:8080\"\ndns_server = \"127.0.0.1:5353\"").expect("valid");
        assert_eq!(
            dns.discovery,
            RunnerSource::Dns {
                name: "runners.svc".into(),
                port: 8080,
                interval: Duration::from_secs(5),
                server: Some("127.0.0.1:5353".parse().expect("addr")),
            }
        );
        assert_eq!(Config::from_toml("").expect("valid").discovery, RunnerSource::Static);
    }

    #[test]
    fn errors_name_the_key() {
        for (toml, key) in [
            ("lisen = \"x\"", "lisen"),
            ("listen = \"nowhere\"", "listen"),
            ("retry_all_delay_ms = 0", "retry_all_delay_ms"),
            ("on_placer_fault = \"explode\"", "on_placer_fault"),
            ("[runners]\nstatic = [\"no-port\"]", "runners.static[0]"),
            ("[runners]\nstatic = [\"http://127.0.0.1:9001\"]", "drop the http://"),
            ("[runners]\nstatic = [\"a:1,b:2\"]", "one address per entry"),
            ("[runners]\nstatic = [\"127.0.0.1:9001/v1\"]", "drop the path"),
            ("[runners]\nstatic = [\"::1:9001\"]", "IPv6 as"),
            ("[runners]\nstatic = [\"a:1\", \"a:1\"]", "runners.static[1]"),
            ("[[routes]]\nplacer = \"naive\"", "routes[0]"),
            ("[[routes]]\napp = \"a\"\nplacer = \"naive\"\nshadow_percent = 101", "routes[0].shadow_percent"),
            ("[[routes]]\napp = \"a\"\nplacer = \"naive\"\ncanary = \"least-loaded\"", "routes[0].canary_percent"),
            ("[[routes]]\napp = \"a\"\nplacer = \"naive\"\ncanary_percent = 5", "routes[0].canary"),
            ("[[routes]]\napp = \"a\"\nplacer = \"naive\"\nshadow = \"naive\"", "routes[0].shadow"),
            ("max_body_bytes = \"big\"", "max_body_bytes"),
            ("body_timeout_ms = 0", "body_timeout_ms"),
            ("max_connections = 0", "max_connections"),
            ("max_buffered_bytes = 10", "max_buffered_bytes"),
            ("admin_listen = \"0.0.0.0:9090\"", "admin_listen"),
            ("[runners]\nstatic = [\"a:1\"]\ndns = \"r:1\"", "runners"),
            ("[runners]\ndns = \"no-port\"", "runners.dns"),
            ("[runners]\ndns = \"r:99999\"", "runners.dns"),
            ("[runners]\ndns = \"r:80\"\ndns_interval_ms = 0", "runners.dns_interval_ms"),
            ("[runners]\ndns = \"r:80\"\ndns_server = \"localhost\"", "runners.dns_server"),
            ("[runners.outlier_detection]\nconsecutive_failures = 0", "runners.outlier_detection.consecutive_failures"),
            (
                "[runners.outlier_detection]\nmax_ejection_percent = 101",
                "runners.outlier_detection.max_ejection_percent",
            ),
            (
                "[runners.outlier_detection]\nmax_ejection_time_ms = 10",
                "runners.outlier_detection.max_ejection_time_ms",
            ),
        ] {
            let err = Config::from_toml(toml).expect_err(toml).to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
    }
}
