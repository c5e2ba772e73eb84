//! Prometheus metrics, served as text at `GET /metrics` on the admin listener.
//!
//! Fn's `lb_placer_*` metrics are recorded at the points Fn's placer tracker records them
//! (from the lifecycle's [`Outcome`]): one attempt-count and one latency sample per
//! placement, the latency excluding the committed attempt's run time. Counters carry the
//! OpenMetrics `_total` suffix (`lb_placer_placed_ok_count_total`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry as PromRegistry;

use crate::lifecycle::{CallError, Outcome};
use crate::placer::PlacerObserver;
use crate::reload::PlacerInfo;
use crate::runner::{Membership, PoolError};

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
}

/// Every metric placerd exports.
#[derive(Debug)]
pub struct Metrics {
    registry: PromRegistry,
    attempt_count: Histogram,
    latency: Histogram,
    rp_error: Counter,
    rp_empty: Counter,
    client_cancelled: Counter,
    timeout: Counter,
    placed_ok: Counter,
    placed_error: Counter,
    placed_abort: Counter,
    retry_busy: Counter,
    retry_error: Counter,
    guest_seconds: Family<Labels, Histogram>,
    faults: Family<Labels, Counter>,
    reloads: Family<Labels, Counter>,
    placer_info: Family<Labels, Gauge>,
    requests: Family<Labels, Counter>,
    /// Handles into `requests` by status code, so counting a response allocates nothing
    /// after the first of its status.
    requests_by_status: Box<[std::sync::OnceLock<Counter>]>,
    /// Handles into `guest_seconds` by placer name (read-mostly).
    guest_seconds_by_placer: std::sync::RwLock<std::collections::HashMap<String, Histogram>>,
    runner_in_flight: Family<Labels, Gauge>,
    runner_reported_active: Family<Labels, Gauge>,
    runner_recent_refusals: Family<Labels, Gauge>,
    runner_healthy: Family<Labels, Gauge>,
    runner_generation: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = PromRegistry::default();
        let attempt_count = Histogram::new([0.0, 2.0, 3.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]);
        let latency =
            Histogram::new([1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0, 30000.0, 360000.0]);
        let guest_seconds = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new([1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 1e-3, 5e-3, 1e-2])
        });
        let m = Metrics {
            attempt_count,
            latency,
            rp_error: Counter::default(),
            rp_empty: Counter::default(),
            client_cancelled: Counter::default(),
            timeout: Counter::default(),
            placed_ok: Counter::default(),
            placed_error: Counter::default(),
            placed_abort: Counter::default(),
            retry_busy: Counter::default(),
            retry_error: Counter::default(),
            guest_seconds,
            faults: Family::default(),
            reloads: Family::default(),
            placer_info: Family::default(),
            requests: Family::default(),
            requests_by_status: (0..600).map(|_| std::sync::OnceLock::new()).collect(),
            guest_seconds_by_placer: std::sync::RwLock::default(),
            runner_in_flight: Family::default(),
            runner_reported_active: Family::default(),
            runner_recent_refusals: Family::default(),
            runner_healthy: Family::default(),
            runner_generation: Gauge::default(),
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
        r.register("placer_guest_seconds", "Time in a placer's place call", m.guest_seconds.clone());
        r.register("placer_faults", "Placer faults by kind", m.faults.clone());
        r.register("placer_reloads", "Placer loads by result", m.reloads.clone());
        r.register("placer_info", "Running placer versions", m.placer_info.clone());
        r.register("placerd_requests", "Client requests by status", m.requests.clone());
        let runner_gauges = [
            ("runner_in_flight", "Calls in flight per runner", &m.runner_in_flight),
            ("runner_reported_active", "Active calls a runner last reported", &m.runner_reported_active),
            ("runner_recent_refusals", "Busy refusals per runner in the last second", &m.runner_recent_refusals),
            ("runner_healthy", "1 while a runner's status polls succeed", &m.runner_healthy),
        ];
        for (name, help, gauge) in runner_gauges {
            r.register(name, help, gauge.clone());
        }
        r.register(
            "runner_set_generation",
            "Generation of the current runner set (grows with every membership change)",
            m.runner_generation.clone(),
        );
        Metrics { registry, ..m }
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
        self.rp_error.inc_by(u64::from(outcome.pool_errors));
        self.rp_empty.inc_by(u64::from(outcome.empty_passes));
        self.retry_busy.inc_by(u64::from(outcome.busy));
        let counter = match &outcome.result {
            Ok(_) => &self.placed_ok,
            Err(CallError::Runner(_)) => &self.placed_error,
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
        self.runner_generation.set(membership.set.generation as i64);
        for state in &membership.handles {
            let runner = labels(&[("runner", &state.address)]);
            let load = state.load();
            self.runner_in_flight.get_or_create(&runner).set(i64::from(load.in_flight));
            self.runner_reported_active.get_or_create(&runner).set(i64::from(load.reported_active));
            self.runner_recent_refusals.get_or_create(&runner).set(i64::from(load.recent_refusals));
            self.runner_healthy.get_or_create(&runner).set(i64::from(load.healthy));
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl PlacerObserver for Metrics {
    fn guest_call(&self, placer: &str, seconds: f64) {
        if let Ok(cached) = self.guest_seconds_by_placer.read()
            && let Some(histogram) = cached.get(placer)
        {
            histogram.observe(seconds);
            return;
        }
        let histogram = self.guest_seconds.get_or_create(&labels(&[("placer", placer)])).clone();
        histogram.observe(seconds);
        if let Ok(mut cached) = self.guest_seconds_by_placer.write() {
            cached.insert(placer.to_string(), histogram);
        }
    }

    fn fault(&self, placer: &str, kind: &str) {
        self.faults.get_or_create(&labels(&[("placer", placer), ("kind", kind)])).inc();
    }

    fn reload(&self, placer: &str, ok: bool) {
        self.record_reload(placer, ok);
    }
}
