//! Prometheus metrics, served as text at `GET /metrics` on the admin listener.
//!
//! Fn's `lb_placer_*` metrics keep Fn's names (for Fn's dashboards) and are recorded at the
//! points Fn's placer tracker records them (from the lifecycle's [`Outcome`]): one
//! attempt-count and one latency sample per placement, the latency excluding the committed
//! attempt's run time. placerd's own metrics share one prefix, `placerd_`; the standard
//! `process_*` metrics and `placerd_build_info` follow Prometheus' conventions. Counters
//! carry the OpenMetrics `_total` suffix (`lb_placer_placed_ok_count_total`), and every
//! labelled counter is exposed at zero for its known label values from the start, so a
//! rate over it is defined before its first increment.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry as PromRegistry;

use crate::lifecycle::{CallError, Outcome};
use crate::placer::{GuestTimer, PlacerObserver, RecycleReason};
use crate::reload::PlacerInfo;
use crate::runner::{Membership, PoolError};
use crate::shard::{Counter as CallCounter, Histogram as CallHistogram};
use crate::throttle;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
}

/// Every metric placerd exports.
#[derive(Debug)]
pub struct Metrics {
    registry: PromRegistry,
    attempt_count: CallHistogram,
    latency: CallHistogram,
    rp_error: CallCounter,
    rp_empty: CallCounter,
    client_cancelled: CallCounter,
    /// Calls failed because a runner kept silent (or took none of the request) past its
    /// deadline.
    runner_timeouts: CallCounter,
    timeout: CallCounter,
    placed_ok: CallCounter,
    placed_error: CallCounter,
    placed_abort: CallCounter,
    retry_busy: CallCounter,
    retry_error: CallCounter,
    guest_seconds: Family<Labels, CallHistogram, fn() -> CallHistogram>,
    faults: Family<Labels, Counter>,
    recycles: Family<Labels, Counter>,
    reloads: Family<Labels, Counter>,
    config_reloads: Family<Labels, Counter>,
    tls_handshakes: Family<Labels, Counter>,
    shadow_calls: Family<Labels, Counter>,
    shadow_agreement: Family<Labels, Counter>,
    shadow_faults: Family<Labels, Counter>,
    shadow_seconds: Family<Labels, Counter<f64, std::sync::atomic::AtomicU64>>,
    shadow_dropped: Counter,
    canary_calls: Family<Labels, Counter>,
    canary_rollbacks: Family<Labels, Counter>,
    placer_info: Family<Labels, Gauge>,
    requests: Family<Labels, CallCounter>,
    /// Handles into `requests` by status code, so counting a response allocates nothing
    /// after the first of its status.
    requests_by_status: Box<[std::sync::OnceLock<CallCounter>]>,
    runner_in_flight: Family<Labels, Gauge>,
    runner_reported_active: Family<Labels, Gauge>,
    runner_recent_refusals: Family<Labels, Gauge>,
    runner_healthy: Family<Labels, Gauge>,
    runner_ejected: Family<Labels, Gauge>,
    runner_generation: Gauge,
    /// Open client connections per worker.
    worker_connections: Family<Labels, Gauge>,
    /// The process metrics, read from `/proc` at each scrape.
    process: ProcessMetrics,
}

/// One live placer's and its shadow's counters (handles into the families).
#[derive(Debug, Clone, Default)]
pub struct ShadowCounters {
    calls: Counter,
    agreement: Counter,
    faults: Counter,
    seconds: Counter<f64, std::sync::atomic::AtomicU64>,
}

impl ShadowCounters {
    /// A shadow ordered one call: whether its first choice was the live one's, whether it
    /// faulted, and how long `place` took.
    pub fn record(&self, agreed: bool, faulted: bool, nanos: u64) {
        self.calls.inc();
        if agreed {
            self.agreement.inc();
        }
        if faulted {
            self.faults.inc();
        }
        self.seconds.inc_by(nanos as f64 / 1e9);
    }
}

/// Statuses placerd answers with, exposed at zero before the first of each.
const KNOWN_STATUSES: &[u16] = &[200, 202, 400, 404, 408, 413, 431, 499, 500, 502, 503, 504];

/// `placerd_build_info`'s labels.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit placerd was built from (`unknown` outside a git checkout).
pub const COMMIT: &str = env!("PLACERD_COMMIT");
/// The wasmtime release placerd embeds.
pub const WASMTIME_VERSION: &str = env!("PLACERD_WASMTIME_VERSION");

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = PromRegistry::default();
        let attempt_count = CallHistogram::new([0.0, 2.0, 3.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]);
        let latency = CallHistogram::new([
            1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0, 30000.0, 360000.0,
        ]);
        let guest_seconds = Family::<Labels, CallHistogram, fn() -> CallHistogram>::new_with_constructor(|| {
            CallHistogram::new([1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 1e-3, 5e-3, 1e-2])
        });
        let m = Metrics {
            attempt_count,
            latency,
            rp_error: CallCounter::default(),
            rp_empty: CallCounter::default(),
            client_cancelled: CallCounter::default(),
            runner_timeouts: CallCounter::default(),
            timeout: CallCounter::default(),
            placed_ok: CallCounter::default(),
            placed_error: CallCounter::default(),
            placed_abort: CallCounter::default(),
            retry_busy: CallCounter::default(),
            retry_error: CallCounter::default(),
            guest_seconds,
            faults: Family::default(),
            recycles: Family::default(),
            reloads: Family::default(),
            config_reloads: Family::default(),
            tls_handshakes: Family::default(),
            shadow_calls: Family::default(),
            shadow_agreement: Family::default(),
            shadow_faults: Family::default(),
            shadow_seconds: Family::default(),
            shadow_dropped: Counter::default(),
            canary_calls: Family::default(),
            canary_rollbacks: Family::default(),
            placer_info: Family::default(),
            requests: Family::default(),
            requests_by_status: (0..600).map(|_| std::sync::OnceLock::new()).collect(),
            runner_in_flight: Family::default(),
            runner_reported_active: Family::default(),
            runner_recent_refusals: Family::default(),
            runner_healthy: Family::default(),
            runner_ejected: Family::default(),
            runner_generation: Gauge::default(),
            worker_connections: Family::default(),
            process: ProcessMetrics::default(),
            registry: PromRegistry::default(),
        };
        let r = &mut registry;
        r.register("lb_placer_attempt_count", "Runners attempted per placement", m.attempt_count.clone());
        r.register("lb_placer_latency", "Placement latency in ms, excluding the committed attempt", m.latency.clone());
        let counters = [
            ("lb_placer_rp_error_count", "Runner pool errors while placing", &m.rp_error),
            ("lb_placer_rp_empty_count", "Placement passes over an empty runner set", &m.rp_empty),
            ("lb_placer_client_cancelled_count", "Calls whose client went away", &m.client_cancelled),
            ("lb_placer_timeout_count", "Calls not placed before the placer deadline", &m.timeout),
            ("lb_placer_placed_ok_count", "Calls placed and answered", &m.placed_ok),
            ("lb_placer_placed_error_count", "Calls placed that then failed (502)", &m.placed_error),
            (
                "lb_placer_placed_abort_count",
                "Calls rejected by the placer (on_placer_fault = reject)",
                &m.placed_abort,
            ),
            ("lb_placer_retry_busy_count", "Attempts refused as busy", &m.retry_busy),
            ("lb_placer_retry_error_count", "Attempts that failed before sending", &m.retry_error),
        ];
        for (name, help, counter) in counters {
            r.register(name, help, counter.clone());
        }
        r.register(
            "placerd_runner_timeouts",
            "Calls failed because their runner kept silent past runner_read_timeout_ms or took none of the request past runner_write_timeout_ms",
            m.runner_timeouts.clone(),
        );
        r.register("placerd_placer_guest_seconds", "Time in a placer's place call", m.guest_seconds.clone());
        r.register("placerd_placer_faults", "Placer faults by kind", m.faults.clone());
        r.register(
            "placerd_placer_recycles",
            "Placer instances retired for fresh ones, by reason (memory, calls, age)",
            m.recycles.clone(),
        );
        r.register("placerd_placer_loads", "Placer loads (start, folder, admin API) by result", m.reloads.clone());
        r.register(
            "placerd_config_reloads",
            "Config reloads (SIGHUP, POST /admin/reload) by result",
            m.config_reloads.clone(),
        );
        r.register(
            "placerd_tls_handshakes",
            "TLS handshakes on the proxy port by result (ok, failed, timeout, plain_http: an HTTP request sent to the TLS port)",
            m.tls_handshakes.clone(),
        );
        r.register(
            "placerd_log_lines_dropped",
            "Log lines left out by the rate limits (guest logs, placer faults, runner connects, missing placers)",
            throttle::DROPPED.clone(),
        );
        r.register("placerd_placer_info", "Running placer versions", m.placer_info.clone());
        r.register("placerd_shadow_calls", "Calls a shadow placer ordered beside the live one", m.shadow_calls.clone());
        r.register(
            "placerd_shadow_agreement",
            "Shadowed calls where the shadow put the live placer's first runner first",
            m.shadow_agreement.clone(),
        );
        r.register("placerd_shadow_faults", "Shadowed calls the shadow faulted on", m.shadow_faults.clone());
        r.register("placerd_shadow_place_seconds", "Time shadows spent in place", m.shadow_seconds.clone());
        r.register(
            "placerd_shadow_dropped",
            "Shadow decisions dropped because the shadow queue was full",
            m.shadow_dropped.clone(),
        );
        r.register("placerd_canary_calls", "Calls a canary placer placed", m.canary_calls.clone());
        r.register(
            "placerd_canary_rollbacks",
            "Canaries taken off their routes after faults or quarantine",
            m.canary_rollbacks.clone(),
        );
        r.register("placerd_requests", "Client requests by status", m.requests.clone());
        let runner_gauges = [
            ("placerd_runner_in_flight", "Calls in flight per runner", &m.runner_in_flight),
            ("placerd_runner_reported_active", "Active calls a runner last reported", &m.runner_reported_active),
            (
                "placerd_runner_recent_refusals",
                "Busy refusals per runner in the last second",
                &m.runner_recent_refusals,
            ),
            (
                "placerd_runner_healthy",
                "1 while a runner takes calls: its status polls succeed and it is not ejected",
                &m.runner_healthy,
            ),
            ("placerd_runner_ejected", "1 while a runner is ejected after connect failures", &m.runner_ejected),
        ];
        for (name, help, gauge) in runner_gauges {
            r.register(name, help, gauge.clone());
        }
        r.register(
            "placerd_runner_set_generation",
            "Generation of the current runner set (grows with every membership change)",
            m.runner_generation.clone(),
        );
        r.register(
            "placerd_worker_connections",
            "Open client connections per worker (how connections spread over the workers)",
            m.worker_connections.clone(),
        );
        let build_info = Family::<Labels, Gauge>::default();
        build_info
            .get_or_create(&labels(&[
                ("version", VERSION),
                ("commit", COMMIT),
                ("wit", crate::placer::Contract::V0_4.version()),
                ("wasmtime", WASMTIME_VERSION),
            ]))
            .set(1);
        r.register("placerd_build_info", "placerd's version, commit, placer contract and wasmtime", build_info);
        m.process.register(r);
        // Known label values at zero from the start.
        for result in ["ok", "error"] {
            drop(m.config_reloads.get_or_create(&labels(&[("result", result)])));
        }
        for status in KNOWN_STATUSES {
            drop(m.requests.get_or_create(&labels(&[("status", &status.to_string())])));
        }
        Metrics { registry, ..m }
    }

    /// A placer now running: its fault and load counters exposed at zero.
    pub fn register_placer(&self, placer: &str) {
        for kind in crate::placer::FaultKind::KINDS {
            drop(self.faults.get_or_create(&labels(&[("placer", placer), ("kind", kind)])));
        }
        for reason in [RecycleReason::Memory, RecycleReason::Calls, RecycleReason::Age] {
            drop(self.recycles.get_or_create(&labels(&[("placer", placer), ("reason", reason.as_str())])));
        }
        for result in ["ok", "error"] {
            drop(self.reloads.get_or_create(&labels(&[("placer", placer), ("result", result)])));
        }
    }

    /// The routes' shadows and canaries: their counters exposed at zero.
    pub fn register_rollouts(&self, routes: &[crate::config::Route]) {
        for route in routes {
            if let Some(shadow) = &route.shadow {
                let pair = labels(&[("live", &route.placer), ("shadow", shadow)]);
                drop(self.shadow_calls.get_or_create(&pair));
                drop(self.shadow_agreement.get_or_create(&pair));
                drop(self.shadow_faults.get_or_create(&labels(&[("shadow", shadow)])));
                drop(self.shadow_seconds.get_or_create(&labels(&[("shadow", shadow)])));
            }
            if let Some(canary) = &route.canary {
                drop(self.canary_calls.get_or_create(&labels(&[("canary", canary)])));
                drop(self.canary_rollbacks.get_or_create(&labels(&[("canary", canary)])));
            }
        }
    }

    /// The shadow counters of one live placer and its shadow, to keep and record into.
    pub fn shadow_counters(&self, live: &str, shadow: &str) -> ShadowCounters {
        let pair = labels(&[("live", live), ("shadow", shadow)]);
        let shadow = labels(&[("shadow", shadow)]);
        ShadowCounters {
            calls: self.shadow_calls.get_or_create(&pair).clone(),
            agreement: self.shadow_agreement.get_or_create(&pair).clone(),
            faults: self.shadow_faults.get_or_create(&shadow).clone(),
            seconds: self.shadow_seconds.get_or_create(&shadow).clone(),
        }
    }

    /// The gauge of worker `worker`'s open client connections, exposed from now on.
    pub fn worker_connections(&self, worker: usize) -> Gauge {
        self.worker_connections.get_or_create(&labels(&[("worker", &worker.to_string())])).clone()
    }

    /// A shadow decision dropped: the queue was full.
    pub fn record_shadow_dropped(&self) {
        self.shadow_dropped.inc();
    }

    /// A call the canary placed.
    pub fn record_canary_call(&self, canary: &str) {
        self.canary_calls.get_or_create(&labels(&[("canary", canary)])).inc();
    }

    /// A canary taken off its routes.
    pub fn record_canary_rollback(&self, canary: &str) {
        self.canary_rollbacks.get_or_create(&labels(&[("canary", canary)])).inc();
    }

    /// One config reload (`SIGHUP`, `POST /admin/reload`), applied or refused.
    pub fn record_config_reload(&self, ok: bool) {
        self.config_reloads.get_or_create(&labels(&[("result", if ok { "ok" } else { "error" })])).inc();
    }

    /// A TLS handshake on the proxy port ended with `result` (`ok`, `failed`, `timeout`,
    /// `plain_http`).
    pub fn record_tls_handshake(&self, result: &str) {
        self.tls_handshakes.get_or_create(&labels(&[("result", result)])).inc();
    }

    /// Records one finished placement, as Fn's placer tracker does.
    /// One attempt failed before sending (connect, handshake, unsent): counted when it
    /// happens, not when placement ends.
    pub fn record_retry_error(&self) {
        self.retry_error.inc();
    }

    /// Records one finished placement (attempt failures are counted as they happen by
    /// [`Metrics::record_retry_error`]).
    pub fn record_outcome<T>(&self, outcome: &Outcome<T>) {
        self.attempt_count.observe(f64::from(outcome.attempts));
        self.latency.observe(outcome.placement_time.as_secs_f64() * 1e3);
        // Counters of what most calls never meet are written only when they do.
        for (counter, n) in [
            (&self.rp_error, outcome.pool_errors),
            (&self.rp_empty, outcome.empty_passes),
            (&self.retry_busy, outcome.busy),
        ] {
            if n > 0 {
                counter.add(u64::from(n));
            }
        }
        let counter = match &outcome.result {
            Ok(_) => &self.placed_ok,
            Err(CallError::Runner(failed)) => {
                if failed.timed_out() {
                    self.runner_timeouts.inc();
                }
                &self.placed_error
            }
            Err(CallError::TooBusy | CallError::ReservationFailure) => &self.timeout,
            Err(CallError::Pool(PoolError::Service(_))) if outcome.timed_out => &self.timeout,
            Err(CallError::Placer(_)) => &self.placed_abort,
            Err(CallError::Pool(_)) => return,
        };
        counter.inc();
    }

    /// Runner discovery failed (resolver error, unreadable runner file); the last good set
    /// stays. Counted with Fn's pool errors (`lb_placer_rp_error_count`).
    pub fn record_discovery_error(&self) {
        self.rp_error.inc();
    }

    /// A runner kept silent past its read timeout while its answer's body streamed to the
    /// client (whose response is then cut short: its head had left).
    pub fn record_runner_timeout(&self) {
        self.runner_timeouts.inc();
    }

    /// A client that went away before its call was answered: hyper dropped the call, and
    /// with it the placement loop.
    pub fn record_cancelled(&self) {
        self.client_cancelled.inc();
        self.record_status(499);
    }

    /// One response to a client.
    pub fn record_status(&self, status: u16) {
        let family = || self.requests.get_or_create(&labels(&[("status", &status.to_string())])).clone();
        match self.requests_by_status.get(usize::from(status)) {
            Some(slot) => slot.get_or_init(family).inc(),
            None => family().inc(),
        };
    }

    /// One placer load attempt (`ok` or `error`).
    pub fn record_reload(&self, placer: &str, ok: bool) {
        self.reloads.get_or_create(&labels(&[("placer", placer), ("result", if ok { "ok" } else { "error" })])).inc();
    }

    /// The exposition text, with the per-scrape gauges (placers, runners) refreshed.
    pub fn render(&self, placers: &[PlacerInfo], membership: &Membership) -> String {
        self.placer_info.clear();
        for info in placers.iter().filter(|i| !i.sha256.is_empty()) {
            self.placer_info.get_or_create(&labels(&[("placer", &info.name), ("sha256", &info.sha256)])).set(1);
        }
        // Runners that left the pool must not linger as series.
        self.runner_in_flight.clear();
        self.runner_reported_active.clear();
        self.runner_recent_refusals.clear();
        self.runner_healthy.clear();
        self.runner_ejected.clear();
        self.runner_generation.set(membership.set.generation as i64);
        for state in &membership.handles {
            let runner = labels(&[("runner", &state.address)]);
            let load = state.load();
            self.runner_in_flight.get_or_create(&runner).set(i64::from(load.in_flight));
            self.runner_reported_active.get_or_create(&runner).set(i64::from(load.reported_active));
            self.runner_recent_refusals.get_or_create(&runner).set(i64::from(load.recent_refusals));
            self.runner_healthy.get_or_create(&runner).set(i64::from(load.healthy));
            self.runner_ejected.get_or_create(&runner).set(i64::from(state.ejected()));
        }
        for info in placers.iter().filter(|i| !i.sha256.is_empty()) {
            self.register_placer(&info.name);
        }
        self.process.refresh();
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// `process_*`: CPU, memory, file descriptors and start time, from `/proc/self` (Linux;
/// elsewhere they stay 0).
#[derive(Debug, Default)]
struct ProcessMetrics {
    cpu_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    resident_bytes: Gauge,
    virtual_bytes: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    start_time_seconds: Gauge,
    threads: Gauge,
}

impl ProcessMetrics {
    fn register(&self, r: &mut PromRegistry) {
        r.register("process_cpu_seconds", "User and system CPU time spent, in seconds", self.cpu_seconds.clone());
        r.register("process_resident_memory_bytes", "Resident memory size in bytes", self.resident_bytes.clone());
        r.register("process_virtual_memory_bytes", "Virtual memory size in bytes", self.virtual_bytes.clone());
        r.register("process_open_fds", "Open file descriptors", self.open_fds.clone());
        r.register("process_max_fds", "Most file descriptors the process may open", self.max_fds.clone());
        r.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
            self.start_time_seconds.clone(),
        );
        r.register("process_threads", "OS threads of the process", self.threads.clone());
    }

    /// Reads `/proc/self` now.
    fn refresh(&self) {
        let Some(stat) = ProcStat::read() else { return };
        // Counters only go up: add what was spent since the last scrape.
        let spent = stat.cpu_seconds - self.cpu_seconds.get();
        if spent > 0.0 {
            self.cpu_seconds.inc_by(spent);
        }
        self.resident_bytes.set(stat.resident_bytes);
        self.virtual_bytes.set(stat.virtual_bytes);
        self.threads.set(stat.threads);
        self.start_time_seconds.set(stat.start_time_seconds);
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(fds.count() as i64);
        }
        if let Ok(limits) = std::fs::read_to_string("/proc/self/limits")
            && let Some(max) = limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|soft| soft.parse::<i64>().ok())
        {
            self.max_fds.set(max);
        }
    }
}

/// The fields of `/proc/self/stat` the process metrics need.
#[derive(Debug, PartialEq)]
struct ProcStat {
    cpu_seconds: f64,
    resident_bytes: i64,
    virtual_bytes: i64,
    threads: i64,
    start_time_seconds: i64,
}

impl ProcStat {
    /// Clock ticks per second of `/proc`'s times (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
    const TICKS: f64 = 100.0;
    /// Page size for `rss` (4 KiB on the platforms placerd runs on).
    const PAGE: i64 = 4096;

    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let boot_time = boot.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse::<i64>().ok()?;
        Self::parse(&stat, boot_time)
    }

    /// Parses `/proc/self/stat` (fields after the parenthesised command name, which may
    /// hold spaces), given the boot time in Unix seconds.
    fn parse(stat: &str, boot_time: i64) -> Option<Self> {
        let (_, rest) = stat.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state): field N is fields[N - 3].
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<i64>().ok());
        let (utime, stime) = (field(14)?, field(15)?);
        Some(ProcStat {
            cpu_seconds: (utime + stime) as f64 / Self::TICKS,
            threads: field(20)?,
            start_time_seconds: boot_time + field(22)? / Self::TICKS as i64,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)? * Self::PAGE,
        })
    }
}

impl PlacerObserver for Metrics {
    fn guest_timer(&self, placer: &str) -> Option<GuestTimer> {
        let histogram = self.guest_seconds.get_or_create(&labels(&[("placer", placer)])).clone();
        Some(Box::new(move |seconds| histogram.observe(seconds)))
    }

    fn fault(&self, placer: &str, kind: &str) {
        self.faults.get_or_create(&labels(&[("placer", placer), ("kind", kind)])).inc();
    }

    fn reload(&self, placer: &str, ok: bool) {
        self.record_reload(placer, ok);
    }

    fn recycled(&self, placer: &str, reason: RecycleReason) {
        self.recycles.get_or_create(&labels(&[("placer", placer), ("reason", reason.as_str())])).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_are_read_after_the_command_name() {
        let stat = "4242 (place rd) S 1 4242 4242 0 -1 4194560 2000 0 0 0 250 50 0 0 20 0 7 0 1500 104857600 2560 18446744073709551615";
        let parsed = ProcStat::parse(stat, 1_700_000_000).expect("parses");
        assert_eq!(
            parsed,
            ProcStat {
                cpu_seconds: 3.0,
                threads: 7,
                start_time_seconds: 1_700_000_015,
                virtual_bytes: 104_857_600,
                resident_bytes: 2560 * 4096,
            }
        );
    }

    #[test]
    fn the_exposition_follows_the_conventions_from_the_first_scrape() {
        let m = Metrics::new();
        m.register_placer("naive");
        let membership = crate::runner::DynamicPool::new(&["127.0.0.1:1".to_string()]).membership();
        let text = m.render(&[], &membership);
        for line in [
            "placerd_requests_total{status=\"502\"} 0",
            "placerd_config_reloads_total{result=\"error\"} 0",
            "placerd_placer_faults_total{placer=\"naive\",kind=\"trap\"} 0",
            "placerd_runner_ejected{runner=\"127.0.0.1:1\"} 0",
            "lb_placer_placed_ok_count_total 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("placerd_build_info{version=\""), "{text}");
        assert!(text.contains("process_cpu_seconds_total"), "{text}");
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            assert!(
                name.starts_with("placerd_") || name.starts_with("lb_placer_") || name.starts_with("process_"),
                "{name}: one prefix for placerd's own metrics"
            );
        }
    }
}
