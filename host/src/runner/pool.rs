//! The runner pool: the current membership (from `runners.static`, a runner file or DNS;
//! see `discovery`), per-runner live state (in-flight, reported load, refusals, status
//! health) and keep-alive connections.
//!
//! Membership is an immutable [`Membership`] swapped whole. A change gets the next
//! generation; runners that stay keep their state (in-flight counts, connections,
//! ejection), so a membership change never resets what the placers see of them.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;

use super::RunnerSet;
use crate::lifecycle::{PoolError, RunnerPool};
use crate::placer::{Runner, RunnerLoad};

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

/// One membership of the pool: the set the placers see and each runner's live state, in
/// the same order.
#[derive(Debug)]
pub struct Membership {
    /// What placers are told (`set-runners`).
    pub set: Arc<RunnerSet>,
    /// Live state per runner of `set`, same order.
    pub states: Vec<Arc<RunnerState>>,
}

impl Membership {
    /// The state of the runner at `address`, if it is a member.
    pub fn by_address(&self, address: &str) -> Option<&Arc<RunnerState>> {
        self.states.iter().find(|s| s.address == address)
    }
}

/// Where a pool's membership comes from; decides what an empty pool means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// `runners.static`: an empty list is a configuration error (fails calls fast, 502).
    Static,
    /// A runner file or DNS: an empty set may fill in later (calls wait and retry).
    Dynamic,
}

/// The runner pool.
#[derive(Debug)]
pub struct StaticPool {
    current: ArcSwap<Membership>,
    /// Serialises membership updates (readers never wait).
    update: Mutex<()>,
    discovery: Discovery,
    /// TCP connect timeout for runner connections.
    pub(crate) connect_timeout: Duration,
}

impl StaticPool {
    /// A pool of `addresses`, in index order.
    pub fn new(addresses: &[String], connect_timeout: Duration) -> Self {
        let runners = addresses.iter().map(|a| Runner { address: a.clone(), labels: Vec::new() }).collect();
        Self::with_runners(runners, Discovery::Static, connect_timeout)
    }

    /// A pool starting with `runners` (generation 1).
    pub fn with_runners(runners: Vec<Runner>, discovery: Discovery, connect_timeout: Duration) -> Self {
        let states = runners.iter().map(|r| Arc::new(RunnerState::new(r.address.clone()))).collect();
        let set = Arc::new(RunnerSet { generation: 1, runners });
        StaticPool {
            current: ArcSwap::from_pointee(Membership { set, states }),
            update: Mutex::new(()),
            discovery,
            connect_timeout,
        }
    }

    /// The current membership.
    pub fn membership(&self) -> Arc<Membership> {
        self.current.load_full()
    }

    /// Replaces the membership with `runners` (in placement order). Returns the new
    /// generation, or `None` when nothing changed (same addresses, labels and order).
    /// Runners that stay keep their live state.
    pub fn update(&self, runners: Vec<Runner>) -> Option<u64> {
        let _serial = self.update.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.current.load_full();
        let same = |a: &Runner, b: &Runner| a.address == b.address && a.labels == b.labels;
        if old.set.runners.len() == runners.len() && old.set.runners.iter().zip(&runners).all(|(a, b)| same(a, b)) {
            return None;
        }
        let states = runners
            .iter()
            .map(|r| {
                old.by_address(&r.address).cloned().unwrap_or_else(|| Arc::new(RunnerState::new(r.address.clone())))
            })
            .collect();
        let generation = old.set.generation + 1;
        self.current.store(Arc::new(Membership { set: Arc::new(RunnerSet { generation, runners }), states }));
        Some(generation)
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
        let membership = self.membership();
        let ejected = membership.states.iter().filter(|s| s.ejected()).count();
        if (ejected + 1) * 2 > membership.states.len() {
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
        let membership = self.current.load();
        if membership.set.is_empty() {
            return Err(match self.discovery {
                Discovery::Static => PoolError::User("no runners configured".into()),
                Discovery::Dynamic => PoolError::Service("no runners discovered yet".into()),
            });
        }
        Ok(membership.set.clone())
    }

    fn loads(&self, set: &RunnerSet) -> Vec<RunnerLoad> {
        let now = Instant::now();
        let membership = self.current.load();
        if membership.set.generation == set.generation {
            return membership.states.iter().map(|s| s.load_at(now)).collect();
        }
        // The membership changed since `set` was taken: match by address; a runner that
        // left is shown unhealthy (trying it gives `Closed`, and the loop moves on).
        set.runners
            .iter()
            .map(|r| {
                membership
                    .by_address(&r.address)
                    .map_or(RunnerLoad { in_flight: 0, reported_active: 0, recent_refusals: 0, healthy: false }, |s| {
                        s.load_at(now)
                    })
            })
            .collect()
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
        let m = p.membership();
        let s = &m.states[0];
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
        let m = p.membership();
        let s = &m.states[1];
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
        let m = p.membership();
        for s in &m.states {
            for _ in 0..5 {
                p.record_connect_failure(s);
            }
        }
        assert_eq!(m.states.iter().filter(|s| s.ejected()).count(), 2);
    }

    fn runners(addresses: &[&str]) -> Vec<Runner> {
        addresses.iter().map(|a| Runner { address: (*a).to_string(), labels: Vec::new() }).collect()
    }

    #[test]
    fn an_update_bumps_the_generation_and_keeps_the_state_of_runners_that_stay() {
        let p = StaticPool::with_runners(runners(&["a:1", "b:1"]), Discovery::Dynamic, Duration::from_millis(10));
        let old = p.membership();
        let _call = old.states[1].track();
        assert_eq!(p.update(runners(&["a:1", "b:1"])), None, "no change, no new generation");
        assert_eq!(p.update(runners(&["b:1", "c:1"])), Some(2));
        let new = p.membership();
        assert_eq!(new.set.generation, 2);
        assert!(Arc::ptr_eq(&new.states[0], &old.states[1]), "b keeps its state");
        assert_eq!(new.states[0].in_flight(), 1);
        // Loads for the old set, asked after the change: matched by address.
        let loads = p.loads(&old.set);
        assert!(!loads[0].healthy, "a left");
        assert_eq!(loads[1].in_flight, 1);
        // Labels are part of the membership.
        let mut labelled = runners(&["b:1", "c:1"]);
        labelled[1].labels.push(("zone".into(), "a".into()));
        assert_eq!(p.update(labelled), Some(3));
    }

    #[test]
    fn an_empty_dynamic_pool_is_retried_and_an_empty_static_one_is_a_user_error() {
        let dynamic = StaticPool::with_runners(Vec::new(), Discovery::Dynamic, Duration::from_millis(10));
        assert!(matches!(dynamic.snapshot(), Err(PoolError::Service(_))));
        assert!(matches!(pool(0).snapshot(), Err(PoolError::User(_))));
    }
}
