//! The static runner pool: membership from config, per-runner live state (in-flight,
//! reported load, refusals, status health) and keep-alive connections.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;

use super::RunnerSet;
use crate::lifecycle::{PoolError, RunnerPool};
use crate::placer::RunnerLoad;

/// Idle keep-alive connections kept per runner.
const MAX_IDLE_CONNECTIONS: usize = 64;
/// Consecutive connect failures that eject a runner (busy refusals never count).
const EJECT_AFTER: u32 = 5;
/// First ejection period; it doubles on every repeat without a success in between.
const EJECT_BASE: Duration = Duration::from_secs(30);
/// Longest ejection period.
const EJECT_MAX: Duration = Duration::from_secs(300);

/// Live state of one runner.
#[derive(Debug)]
pub struct RunnerState {
    /// `host:port`.
    pub address: String,
    /// Calls placed on it by this host and not finished (feeds `runner-load.in-flight`).
    in_flight: AtomicU32,
    /// `active_request_count` from its last status.
    reported_active: AtomicU32,
    /// False while status polling fails.
    status_ok: AtomicBool,
    /// Busy refusals in the current one-second window.
    refusals: Mutex<(Instant, u32)>,
    /// Idle HTTP/1.1 connections (some may still be finishing a response).
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    /// Connect failures in a row (reset by any answer, refusals included).
    connect_failures: AtomicU32,
    /// Passive ejection: until when, and how long the next one lasts.
    ejection: Mutex<Ejection>,
}

#[derive(Debug)]
struct Ejection {
    until: Option<Instant>,
    next: Duration,
}

impl RunnerState {
    fn new(address: String) -> Self {
        RunnerState {
            address,
            in_flight: AtomicU32::new(0),
            reported_active: AtomicU32::new(0),
            status_ok: AtomicBool::new(true),
            refusals: Mutex::new((Instant::now(), 0)),
            idle: Mutex::new(Vec::new()),
            connect_failures: AtomicU32::new(0),
            ejection: Mutex::new(Ejection { until: None, next: EJECT_BASE }),
        }
    }

    /// True while passively ejected after repeated connect failures.
    pub fn ejected(&self) -> bool {
        self.ejected_at(Instant::now())
    }

    fn ejected_at(&self, now: Instant) -> bool {
        self.ejection.lock().is_ok_and(|e| e.until.is_some_and(|until| now < until))
    }

    /// The runner answered (a refusal counts as an answer): forget connect failures.
    pub(crate) fn record_answer(&self, committed: bool) {
        self.connect_failures.store(0, Ordering::Relaxed);
        if committed && let Ok(mut e) = self.ejection.lock() {
            e.next = EJECT_BASE;
        }
    }

    /// Calls in flight on this runner from this host.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts one call in flight until the guard drops.
    pub(crate) fn track(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    pub(crate) fn record_refusal(&self) {
        if let Ok(mut w) = self.refusals.lock() {
            let now = Instant::now();
            if now.duration_since(w.0) >= Duration::from_secs(1) {
                *w = (now, 0);
            }
            w.1 += 1;
        }
    }

    fn recent_refusals_at(&self, now: Instant) -> u32 {
        self.refusals.lock().map_or(0, |w| if now.duration_since(w.0) < Duration::from_secs(1) { w.1 } else { 0 })
    }

    pub(crate) fn set_status(&self, ok: bool, active: u32) {
        self.status_ok.store(ok, Ordering::Relaxed);
        if ok {
            self.reported_active.store(active, Ordering::Relaxed);
        }
    }

    /// A ready idle connection, dropping closed ones.
    pub(crate) fn checkout(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().ok()?;
        idle.retain(|c| !c.is_closed());
        let i = idle.iter().position(|c| c.is_ready())?;
        Some(idle.swap_remove(i))
    }

    /// Returns a connection; it becomes ready again once its response body is read.
    pub(crate) fn checkin(&self, conn: SendRequest<Full<Bytes>>) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE_CONNECTIONS
            && !conn.is_closed()
        {
            idle.push(conn);
        }
    }

    /// The runner's live load as placers see it.
    pub fn load(&self) -> RunnerLoad {
        self.load_at(Instant::now())
    }

    /// [`RunnerState::load`] at `now`: a placement reads the clock once for all runners.
    fn load_at(&self, now: Instant) -> RunnerLoad {
        RunnerLoad {
            in_flight: self.in_flight(),
            reported_active: self.reported_active.load(Ordering::Relaxed),
            recent_refusals: self.recent_refusals_at(now),
            healthy: self.status_ok.load(Ordering::Relaxed) && !self.ejected_at(now),
        }
    }
}

/// Decrements a runner's in-flight count when dropped (with the response body).
#[derive(Debug)]
pub(crate) struct InFlight(Arc<RunnerState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A fixed list of runners from `runners.static`.
#[derive(Debug)]
pub struct StaticPool {
    set: Arc<RunnerSet>,
    states: Vec<Arc<RunnerState>>,
    /// TCP connect timeout for runner connections.
    pub(crate) connect_timeout: Duration,
}

impl StaticPool {
    /// A pool of `addresses`, in index order.
    pub fn new(addresses: &[String], connect_timeout: Duration) -> Self {
        StaticPool {
            set: Arc::new(RunnerSet::from_addresses(1, addresses.iter().cloned())),
            states: addresses.iter().map(|a| Arc::new(RunnerState::new(a.clone()))).collect(),
            connect_timeout,
        }
    }

    /// The live state of runner `index`.
    pub fn state(&self, index: usize) -> Option<&Arc<RunnerState>> {
        self.states.get(index)
    }

    /// Every runner's state, in index order.
    pub fn states(&self) -> &[Arc<RunnerState>] {
        &self.states
    }
}

impl StaticPool {
    /// A connect to `state` failed. After [`EJECT_AFTER`] in a row the runner is ejected
    /// (30 s, doubling to 300 s), unless half the set is ejected already.
    pub(crate) fn record_connect_failure(&self, state: &RunnerState) {
        let failures = state.connect_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < EJECT_AFTER || state.ejected() {
            return;
        }
        let ejected = self.states.iter().filter(|s| s.ejected()).count();
        if (ejected + 1) * 2 > self.states.len() {
            tracing::warn!(runner = %state.address, failures, "not ejecting: half the runners are ejected already");
            return;
        }
        if let Ok(mut e) = state.ejection.lock() {
            let period = e.next;
            e.until = Some(Instant::now() + period);
            e.next = (period * 2).min(EJECT_MAX);
            state.connect_failures.store(0, Ordering::Relaxed);
            tracing::warn!(runner = %state.address, seconds = period.as_secs(), "runner ejected after repeated connect failures");
        }
    }
}

impl RunnerPool for StaticPool {
    fn snapshot(&self) -> Result<Arc<RunnerSet>, PoolError> {
        if self.set.is_empty() {
            return Err(PoolError::User("no runners configured".into()));
        }
        Ok(self.set.clone())
    }

    fn loads(&self, set: &RunnerSet) -> Vec<RunnerLoad> {
        debug_assert_eq!(set.generation, self.set.generation);
        let now = Instant::now();
        self.states.iter().map(|s| s.load_at(now)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> StaticPool {
        let addresses: Vec<String> = (0..n).map(|i| format!("10.0.0.{i}:1")).collect();
        StaticPool::new(&addresses, Duration::from_millis(10))
    }

    #[test]
    fn five_connect_failures_in_a_row_eject_a_runner() {
        let p = pool(4);
        let s = &p.states()[0];
        for _ in 0..4 {
            p.record_connect_failure(s);
        }
        assert!(!s.ejected());
        p.record_connect_failure(s);
        assert!(s.ejected());
        assert!(!s.load().healthy);
        let e = s.ejection.lock().map(|e| e.next).unwrap_or_default();
        assert_eq!(e, Duration::from_secs(60), "the next ejection lasts twice as long");
    }

    #[test]
    fn refusals_and_answers_reset_the_count() {
        let p = pool(4);
        let s = &p.states()[1];
        for _ in 0..20 {
            for _ in 0..4 {
                p.record_connect_failure(s);
            }
            s.record_answer(false); // a busy refusal: the runner is alive
        }
        assert!(!s.ejected());
    }

    #[test]
    fn at_most_half_the_set_is_ejected() {
        let p = pool(4);
        for s in p.states() {
            for _ in 0..5 {
                p.record_connect_failure(s);
            }
        }
        assert_eq!(p.states().iter().filter(|s| s.ejected()).count(), 2);
    }
}
