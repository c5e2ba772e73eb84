//! The runner pool: the current membership (from `runners.static`, a runner file or DNS;
//! see `discovery`) and, per runner, the live state behind its handle: what placers and
//! operators see of it (in-flight calls, reported load, refusals, errors, latency, status
//! health) and its ejection. Its connections are the runner client's (`idle`).
//!
//! Membership is an immutable [`Membership`] swapped whole. A change gets the next
//! generation; runners that stay keep their state (in-flight counts, ejection), so a membership change never resets what the placers see of them. A runner
//! that leaves is marked so: a pass that still holds its handle gets
//! [`NotPlaced::Closed`](super::NotPlaced::Closed) from the client.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::{Membership, PoolError, RunnerPool};
use crate::backoff::{Backoff, BackoffPolicy};
use crate::config::OutlierDetection;
use crate::placer::{Runner, RunnerLoad, RunnerSet};
use crate::throttle::Throttle;

/// Lines a runner's connect failures may log per [`CONNECT_LOG_WINDOW`].
const CONNECT_LOG_LINES: u32 = 2;
const CONNECT_LOG_WINDOW: Duration = Duration::from_secs(10);

/// Passive ejection (`[runners.outlier_detection]`): `consecutive_failures` connect
/// failures in a row eject a runner for `base_ejection_time`, doubling on every repeat
/// without a committed call in between, up to `max_ejection_time`. Busy refusals never
/// count as failures.
fn ejection_policy(o: &OutlierDetection) -> BackoffPolicy {
    BackoffPolicy { after: o.consecutive_failures, base: o.base_ejection_time, max: o.max_ejection_time }
}

/// Live state of one runner: what its handle points to. Every worker writes it (a call
/// counts itself in flight, then records how the runner answered): a committed call writes
/// `in_flight` twice and `calls` and `latency_us` once, all in one cache line, and takes
/// no lock unless the runner has failed since its last answer.
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
    /// True once the runner has left the pool: no new calls go to it.
    left: AtomicBool,
    /// Busy refusals in the current one-second window.
    refusals: Window,
    /// Connect failures and failures after commit in the current ten-second window.
    errors: Window,
    /// Moving average of the response-head latency of committed calls, µs (0: none yet).
    latency_us: AtomicU32,
    /// Calls committed to it since it joined (the dashboard's calls per runner).
    calls: AtomicU64,
    /// Connect failures in a row and the ejection period.
    ejection: Mutex<Backoff>,
    /// True while `ejection` holds failures or an ejection an answer must clear: until
    /// then an answer reads this and skips the lock.
    troubled: AtomicBool,
    /// The end of the ejection period in `ejection`, in [`Now::nanos`] (0: none), so that
    /// a placement reads it without the lock.
    ejected_until: AtomicU64,
    /// Rate limit of the log lines its connect failures write.
    connect_log: Throttle,
}

impl RunnerState {
    fn new(address: String, policy: BackoffPolicy) -> Self {
        RunnerState {
            address,
            in_flight: AtomicU32::new(0),
            reported_active: AtomicU32::new(0),
            status_ok: AtomicBool::new(true),
            left: AtomicBool::new(false),
            refusals: Window::new(REFUSAL_WINDOW),
            errors: Window::new(ERROR_WINDOW),
            latency_us: AtomicU32::new(0),
            calls: AtomicU64::new(0),
            ejection: Mutex::new(Backoff::new(policy)),
            troubled: AtomicBool::new(false),
            ejected_until: AtomicU64::new(0),
            connect_log: Throttle::new(CONNECT_LOG_LINES, CONNECT_LOG_WINDOW),
        }
    }

    /// True while passively ejected after repeated connect failures.
    pub fn ejected(&self) -> bool {
        self.ejected_at(Now::read())
    }

    fn ejected_at(&self, now: Now) -> bool {
        now.nanos < self.ejected_until.load(Ordering::Acquire)
    }

    /// Publishes the ejection period of `ejection` (this runner's, locked) to
    /// [`RunnerState::ejected_at`].
    fn publish_ejection(&self, ejection: &Backoff) {
        let until = ejection.until().map_or(0, nanos_since_origin);
        self.ejected_until.store(until, Ordering::Release);
    }

    /// True once the runner has left the pool.
    pub fn left(&self) -> bool {
        self.left.load(Ordering::Relaxed)
    }

    /// The runner answered. Any answer (a refusal too) forgets connect failures; a
    /// committed call also ends an ejection and starts the doubling over.
    fn record_answer(&self, committed: bool) {
        if !self.troubled.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut e) = self.ejection.lock() {
            if committed {
                e.succeed();
                self.publish_ejection(&e);
            } else {
                e.clear_failures();
            }
            // Still troubled while an ejection may need ending by a committed call.
            self.troubled.store(e.failures() > 0 || e.until().is_some(), Ordering::Release);
        }
    }

    /// The runner refused a call as busy: it did not start it.
    pub(crate) fn refused(&self) {
        self.record_answer(false);
        self.refusals.count(Now::read());
    }

    /// The runner answered a call it took with a response head after `latency`.
    pub(crate) fn served(&self, latency: Duration) {
        self.record_answer(true);
        self.record_latency(latency);
        self.record_commit();
    }

    /// A call failed after it was sent (`commit`: the first news of it, so it is counted
    /// as committed too).
    pub(crate) fn failed(&self, commit: bool) {
        if commit {
            self.record_commit();
        }
        self.record_error();
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

    /// Calls committed to this runner since it joined the pool.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// A call was committed to this runner (answered, or failed after it was sent).
    pub(crate) fn record_commit(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// A connect failure or a failure after commit.
    fn record_error(&self) {
        self.errors.count(Now::read());
    }

    /// A committed call's response head came after `latency`: folded into the moving
    /// average with weight 1/8.
    fn record_latency(&self, latency: Duration) {
        let sample = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX).max(1);
        let old = self.latency_us.load(Ordering::Relaxed);
        let new = if old == 0 { sample } else { (old as u64 * 7 / 8 + sample as u64 / 8).max(1) as u32 };
        if new != old {
            self.latency_us.store(new, Ordering::Relaxed);
        }
    }

    pub(crate) fn set_status(&self, ok: bool, active: u32) {
        self.status_ok.store(ok, Ordering::Relaxed);
        if ok {
            self.reported_active.store(active, Ordering::Relaxed);
        }
    }

    /// The runner's live load as placers see it.
    pub fn load(&self) -> RunnerLoad {
        self.load_at(Now::read())
    }

    /// [`RunnerState::load`] at `now`: a placement reads the clock once for all runners.
    fn load_at(&self, now: Now) -> RunnerLoad {
        RunnerLoad {
            in_flight: self.in_flight(),
            reported_active: self.reported_active.load(Ordering::Relaxed),
            recent_refusals: self.refusals.at(now),
            healthy: self.status_ok.load(Ordering::Relaxed) && !self.ejected_at(now) && !self.left(),
            latency_us: self.latency_us.load(Ordering::Relaxed),
            recent_errors: self.errors.at(now),
        }
    }
}

/// How long a busy refusal counts in `recent-refusals`.
const REFUSAL_WINDOW: Duration = Duration::from_secs(1);
/// How long an error counts in `recent-errors`.
const ERROR_WINDOW: Duration = Duration::from_secs(10);

/// A time as the load view reads it: nanoseconds and milliseconds since a process-wide
/// origin, computed once per placement rather than once per runner.
#[derive(Debug, Clone, Copy)]
struct Now {
    nanos: u64,
    millis: u64,
}

impl Now {
    fn read() -> Self {
        Self::at(Instant::now())
    }

    fn at(at: Instant) -> Self {
        let nanos = nanos_since_origin(at);
        Now { nanos, millis: nanos / 1_000_000 }
    }
}

/// Nanoseconds from the first time this was called to `at` (0 before it).
fn nanos_since_origin(at: Instant) -> u64 {
    static ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);
    u64::try_from(at.saturating_duration_since(*ORIGIN).as_nanos()).unwrap_or(u64::MAX)
}

/// Events counted in a tumbling window, in one atomic word so that a placement reads it
/// without a lock: the window's start in [`Now::millis`] (high 40 bits, 34 years) and its
/// count (low 24 bits, saturating).
#[derive(Debug)]
struct Window {
    word: AtomicU64,
    length_ms: u64,
}

const COUNT_BITS: u32 = 24;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;

impl Window {
    /// An empty window of `length` starting now.
    fn new(length: Duration) -> Self {
        let length_ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX);
        Window { word: AtomicU64::new(Now::read().millis << COUNT_BITS), length_ms }
    }

    /// Counts one event at `now`, starting a new window if the current one has passed.
    fn count(&self, now: Now) {
        let now_ms = now.millis;
        let _ = self.word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
            let (start, count) = (word >> COUNT_BITS, word & COUNT_MAX);
            let (start, count) =
                if now_ms.saturating_sub(start) >= self.length_ms { (now_ms, 0) } else { (start, count) };
            Some(start << COUNT_BITS | (count + 1).min(COUNT_MAX))
        });
    }

    /// The events counted in the window at `now` (0 once it has passed).
    fn at(&self, now: Now) -> u32 {
        let word = self.word.load(Ordering::Relaxed);
        if now.millis.saturating_sub(word >> COUNT_BITS) < self.length_ms { (word & COUNT_MAX) as u32 } else { 0 }
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

impl Membership {
    /// The state of the runner at `address`, if it is a member.
    pub fn by_address(&self, address: &str) -> Option<&Arc<RunnerState>> {
        self.handles.iter().find(|s| s.address == address)
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

/// The runner pool. Its membership is swapped whole when a source (the static list, a
/// runner file, DNS) reports a change; readers never wait.
#[derive(Debug)]
pub struct DynamicPool {
    current: ArcSwap<Membership>,
    /// Serialises membership updates (readers never wait).
    update: Mutex<()>,
    discovery: Discovery,
    /// When connect failures eject a runner.
    outlier: OutlierDetection,
}

impl DynamicPool {
    /// A pool of the static `addresses`, in index order.
    pub fn new(addresses: &[String]) -> Self {
        let runners = addresses.iter().map(|a| Runner { address: a.clone(), labels: Vec::new() }).collect();
        Self::with_runners(runners, Discovery::Static)
    }

    /// A pool starting with `runners` (generation 1), ejecting by the default
    /// [`OutlierDetection`].
    pub fn with_runners(runners: Vec<Runner>, discovery: Discovery) -> Self {
        Self::with_outlier_detection(runners, discovery, OutlierDetection::default())
    }

    /// A pool starting with `runners` (generation 1), ejecting by `outlier`.
    pub fn with_outlier_detection(runners: Vec<Runner>, discovery: Discovery, outlier: OutlierDetection) -> Self {
        let policy = ejection_policy(&outlier);
        let handles = runners.iter().map(|r| Arc::new(RunnerState::new(r.address.clone(), policy))).collect();
        let set = Arc::new(RunnerSet { generation: 1, runners });
        let current = ArcSwap::from_pointee(Membership { set, handles });
        DynamicPool { current, update: Mutex::new(()), discovery, outlier }
    }

    /// The current membership, empty or not.
    pub fn membership(&self) -> Arc<Membership> {
        self.current.load_full()
    }

    /// Replaces the membership with `runners` (in placement order). Returns the new
    /// generation, or `None` when nothing changed (same addresses, labels and order).
    /// Runners that stay keep their live state; runners that leave are marked so.
    pub fn update(&self, runners: Vec<Runner>) -> Option<u64> {
        let _serial = self.update.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.current.load_full();
        let same = |a: &Runner, b: &Runner| a.address == b.address && a.labels == b.labels;
        if old.set.runners.len() == runners.len() && old.set.runners.iter().zip(&runners).all(|(a, b)| same(a, b)) {
            return None;
        }
        let handles: Vec<Arc<RunnerState>> = runners
            .iter()
            .map(|r| {
                old.by_address(&r.address)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(RunnerState::new(r.address.clone(), ejection_policy(&self.outlier))))
            })
            .collect();
        for gone in old.handles.iter().filter(|s| !handles.iter().any(|h| Arc::ptr_eq(h, s))) {
            gone.left.store(true, Ordering::Relaxed);
        }
        let generation = old.set.generation + 1;
        self.current.store(Arc::new(Membership { set: Arc::new(RunnerSet { generation, runners }), handles }));
        Some(generation)
    }

    /// A connect to `state` failed with `error`: logged (at most a few lines per runner
    /// every ten seconds, with the count of those left out), and after
    /// `consecutive_failures` in a row the runner is ejected, unless that would pass
    /// `max_ejection_percent` of the set.
    pub(crate) fn record_connect_failure(&self, state: &RunnerState, error: &dyn std::error::Error) {
        state.record_error();
        let now = Instant::now();
        let Ok(mut ejection) = state.ejection.lock() else { return };
        state.troubled.store(true, Ordering::Release);
        let due = ejection.fail(now);
        let failures = ejection.failures();
        drop(ejection);
        if let Some(dropped) = state.connect_log.admit() {
            let error = chain(error);
            tracing::warn!(runner = %state.address, %error, failures, dropped, "runner connect failed");
        }
        if !due {
            return;
        }
        let membership = self.membership();
        let at = Now::at(now);
        let ejected = membership.handles.iter().filter(|s| s.ejected_at(at)).count();
        let max_percent = self.outlier.max_ejection_percent as usize;
        if (ejected + 1) * 100 > membership.handles.len() * max_percent {
            if let Some(dropped) = state.connect_log.admit() {
                tracing::warn!(runner = %state.address, failures, ejected, max_ejection_percent = max_percent, dropped,
                    "not ejecting: max_ejection_percent of the runners are ejected already");
            }
            return;
        }
        if let Ok(mut ejection) = state.ejection.lock() {
            let period = ejection.start(now);
            ejection.clear_failures();
            state.publish_ejection(&ejection);
            tracing::warn!(runner = %state.address, seconds = period.as_secs(), failures, "runner ejected after repeated connect failures");
        }
    }
}

/// `error` and its sources, `: `-separated.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

impl RunnerPool for DynamicPool {
    type Handle = Arc<RunnerState>;

    fn snapshot(&self) -> Result<Arc<Membership>, PoolError> {
        let membership = self.current.load_full();
        if membership.set.is_empty() {
            return Err(match self.discovery {
                Discovery::Static => PoolError::User("no runners configured".into()),
                Discovery::Dynamic => PoolError::Service("no runners discovered yet".into()),
            });
        }
        Ok(membership)
    }

    fn loads(&self, membership: &Membership) -> Vec<RunnerLoad> {
        let now = Now::read();
        membership.handles.iter().map(|s| s.load_at(now)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> DynamicPool {
        let addresses: Vec<String> = (0..n).map(|i| format!("10.0.0.{i}:1")).collect();
        DynamicPool::new(&addresses)
    }

    fn fail_connects(p: &DynamicPool, s: &RunnerState, times: usize) {
        for _ in 0..times {
            p.record_connect_failure(s, &std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        }
    }

    #[test]
    fn five_connect_failures_in_a_row_eject_a_runner() {
        let p = pool(4);
        let m = p.membership();
        let s = &m.handles[0];
        fail_connects(&p, s, 4);
        assert!(!s.ejected());
        fail_connects(&p, s, 1);
        assert!(s.ejected());
        assert!(!s.load().healthy);
        let next = s.ejection.lock().map(|mut e| e.start(Instant::now())).unwrap_or_default();
        assert_eq!(next, Duration::from_secs(60), "the next ejection lasts twice as long");
    }

    #[test]
    fn refusals_and_answers_reset_the_count() {
        let p = pool(4);
        let m = p.membership();
        let s = &m.handles[1];
        for _ in 0..20 {
            fail_connects(&p, s, 4);
            s.record_answer(false); // a busy refusal: the runner is alive
        }
        assert!(!s.ejected());
    }

    #[test]
    fn at_most_half_the_set_is_ejected() {
        let p = pool(4);
        let m = p.membership();
        for s in &m.handles {
            fail_connects(&p, s, 5);
        }
        assert_eq!(m.handles.iter().filter(|s| s.ejected()).count(), 2);
    }

    #[test]
    fn ejection_follows_the_configured_outlier_detection() {
        let outlier = OutlierDetection {
            consecutive_failures: 2,
            base_ejection_time: Duration::from_secs(3),
            max_ejection_time: Duration::from_secs(5),
            max_ejection_percent: 75,
        };
        let addresses = runners(&["a:1", "b:1", "c:1", "d:1"]);
        let p = DynamicPool::with_outlier_detection(addresses, Discovery::Static, outlier);
        let m = p.membership();
        for s in &m.handles {
            fail_connects(&p, s, 2);
        }
        assert_eq!(m.handles.iter().filter(|s| s.ejected()).count(), 3, "75% of 4");
        let s = &m.handles[0];
        let next = s.ejection.lock().map(|mut e| e.start(Instant::now())).unwrap_or_default();
        assert_eq!(next, Duration::from_secs(5), "3 s doubled, capped at 5 s");
        // A runner that joins later gets the same policy.
        p.update(runners(&["a:1", "b:1", "c:1", "d:1", "e:1"]));
        let e = &p.membership().handles[4];
        fail_connects(&p, e, 1);
        assert_eq!(e.ejection.lock().map(|e| e.failures()).unwrap_or_default(), 1);
    }

    #[test]
    fn connect_errors_are_logged_with_their_cause() {
        assert_eq!(chain(&NotPlacedLike), "outer: inner");
    }

    #[derive(Debug)]
    struct NotPlacedLike;
    impl std::fmt::Display for NotPlacedLike {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("outer")
        }
    }
    impl std::error::Error for NotPlacedLike {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&Inner)
        }
    }
    #[derive(Debug)]
    struct Inner;
    impl std::fmt::Display for Inner {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("inner")
        }
    }
    impl std::error::Error for Inner {}

    fn runners(addresses: &[&str]) -> Vec<Runner> {
        addresses.iter().map(|a| Runner { address: (*a).to_string(), labels: Vec::new() }).collect()
    }

    #[test]
    fn an_update_bumps_the_generation_and_keeps_the_state_of_runners_that_stay() {
        let p = DynamicPool::with_runners(runners(&["a:1", "b:1"]), Discovery::Dynamic);
        let old = p.membership();
        let _call = old.handles[1].track();
        assert_eq!(p.update(runners(&["a:1", "b:1"])), None, "no change, no new generation");
        assert_eq!(p.update(runners(&["b:1", "c:1"])), Some(2));
        let new = p.membership();
        assert_eq!(new.set.generation, 2);
        assert!(Arc::ptr_eq(&new.handles[0], &old.handles[1]), "b keeps its state");
        assert_eq!(new.handles[0].in_flight(), 1);
        // Handles of the old membership, used after the change: a left, b stayed.
        assert!(old.handles[0].left(), "a left");
        assert!(!old.handles[1].left());
        let loads = p.loads(&old);
        assert!(!loads[0].healthy, "a runner that left is shown unhealthy");
        assert_eq!(loads[1].in_flight, 1);
        // Labels are part of the membership.
        let mut labelled = runners(&["b:1", "c:1"]);
        labelled[1].labels.push(("zone".into(), "a".into()));
        assert_eq!(p.update(labelled), Some(3));
    }

    #[test]
    fn latency_is_a_moving_average_and_errors_count_for_ten_seconds() {
        let p = pool(1);
        let m = p.membership();
        let s = &m.handles[0];
        assert_eq!(s.load().latency_us, 0, "unknown until a call is answered");
        s.record_latency(Duration::from_micros(800));
        assert_eq!(s.load().latency_us, 800, "the first sample is the average");
        s.record_latency(Duration::from_micros(1600));
        assert_eq!(s.load().latency_us, 900, "then each sample weighs 1/8");
        fail_connects(&p, s, 1);
        s.record_error();
        assert_eq!(s.load().recent_errors, 2);
        assert_eq!(s.errors.at(Now::at(Instant::now() + ERROR_WINDOW)), 0, "forgotten after the window");
    }

    #[test]
    fn a_window_counts_until_it_passes_then_starts_again() {
        let w = Window::new(Duration::from_secs(1));
        // The window starts when it is made: time is counted from there (a clock read
        // after it could fall a millisecond or more later on a busy machine).
        let start_ms = w.word.load(Ordering::Relaxed) >> COUNT_BITS;
        let t0 = Now { nanos: start_ms * 1_000_000, millis: start_ms };
        let later = |ms: u64| Now { nanos: t0.nanos + ms * 1_000_000, millis: t0.millis + ms };
        w.count(t0);
        w.count(later(999));
        assert_eq!(w.at(later(999)), 2);
        assert_eq!(w.at(later(1_000)), 0, "passed");
        w.count(later(1_500));
        assert_eq!(w.at(later(1_500)), 1, "a new window from the event that found the old one passed");
        assert_eq!(w.at(later(2_499)), 1);
        assert_eq!(w.at(later(2_500)), 0);
    }

    #[test]
    fn an_empty_dynamic_pool_is_retried_and_an_empty_static_one_is_a_user_error() {
        let dynamic = DynamicPool::with_runners(Vec::new(), Discovery::Dynamic);
        assert!(matches!(dynamic.snapshot(), Err(PoolError::Service(_))));
        assert!(matches!(pool(0).snapshot(), Err(PoolError::User(_))));
    }
}
