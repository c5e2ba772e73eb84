//! Fault kinds and the quarantine state machine: five consecutive faults quarantine a
//! placer version for 30 s, doubling on every repeat up to 300 s; one good call resets the
//! count. A placer that faults often but not in a row (every other call, say) is caught by
//! its fault rate: at least five faults and 20% of its calls within ten seconds quarantine
//! it the same way.

use std::fmt;
use std::time::{Duration, Instant};

use crate::backoff::{Backoff, BackoffPolicy};

/// What went wrong in a guest call. `as_str` is the metrics label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// The call ran past its epoch budget.
    Timeout,
    /// The guest tried to grow memory past the cap (and then trapped).
    MemoryCap,
    /// Any other trap (panic, unreachable, out-of-bounds ...), with the trap message.
    Trap(String),
    /// A fresh instance could not be built (a trap while instantiating).
    Instantiate(String),
    /// A fresh instance's `configure` returned this error.
    Configure(String),
    /// The version is quarantined; the guest was not called.
    Quarantined,
}

impl FaultKind {
    /// Every [`FaultKind::as_str`] label, for metrics exposed at zero before the first.
    pub const KINDS: &[&str] = &["timeout", "memory", "trap", "instantiate", "configure", "quarantined"];

    /// Short label for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            FaultKind::Timeout => "timeout",
            FaultKind::MemoryCap => "memory",
            FaultKind::Trap(_) => "trap",
            FaultKind::Instantiate(_) => "instantiate",
            FaultKind::Configure(_) => "configure",
            FaultKind::Quarantined => "quarantined",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultKind::Trap(msg) | FaultKind::Instantiate(msg) | FaultKind::Configure(msg) => {
                write!(f, "{}: {msg}", self.as_str())
            }
            FaultKind::MemoryCap => {
                f.write_str("memory: the instance needs more than placer_memory_limit_bytes allows (raise it)")
            }
            _ => f.write_str(self.as_str()),
        }
    }
}

impl std::error::Error for FaultKind {}

/// What to do with a call whose placer faulted (`on_placer_fault`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFault {
    /// Fail open: place the call in the native naive order.
    #[default]
    Fallback,
    /// Fail the call (HTTP 500).
    Reject,
}

/// When to quarantine a faulting placer, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultPolicy {
    /// Consecutive faults that trigger quarantine.
    pub quarantine_after: u32,
    /// First quarantine period.
    pub quarantine_base: Duration,
    /// Longest quarantine period; each repeat doubles up to this.
    pub quarantine_max: Duration,
    /// Share of calls (percent) that, faulting within [`FaultPolicy::rate_window`],
    /// quarantines the placer even when no faults came in a row.
    pub rate_percent: u32,
    /// Fewest faults in a window that the rate counts (a single early fault is not 100%).
    pub rate_min_faults: u32,
    /// The window of the fault rate.
    pub rate_window: Duration,
}

impl Default for FaultPolicy {
    fn default() -> Self {
        FaultPolicy {
            quarantine_after: 5,
            quarantine_base: Duration::from_secs(30),
            quarantine_max: Duration::from_secs(300),
            rate_percent: 20,
            rate_min_faults: 5,
            rate_window: Duration::from_secs(10),
        }
    }
}

/// Per-version fault bookkeeping: quarantine is a [`Backoff`] over consecutive faults,
/// also started by the fault rate of the current window.
#[derive(Debug)]
pub(crate) struct FaultState {
    backoff: Backoff,
    policy: FaultPolicy,
    /// Start of the rate window.
    window_start: Instant,
    /// Faults in the window.
    window_faults: u32,
    /// The version's call count when the window started.
    window_calls_base: u64,
}

impl FaultState {
    pub(crate) fn new(policy: FaultPolicy) -> Self {
        FaultState {
            backoff: Backoff::new(BackoffPolicy {
                after: policy.quarantine_after,
                base: policy.quarantine_base,
                max: policy.quarantine_max,
            }),
            policy,
            window_start: Instant::now(),
            window_faults: 0,
            window_calls_base: 0,
        }
    }

    /// True while quarantined at `now`.
    pub(crate) fn quarantined(&self, now: Instant) -> bool {
        self.backoff.active(now)
    }

    /// A good call: forget past faults in a row (the rate window keeps its count).
    pub(crate) fn record_success(&mut self) {
        self.backoff.succeed();
    }

    /// A fault at `now`, when the version has made `calls` calls in all. Returns the
    /// quarantine period when this fault starts one: the fifth in a row, or one that brings
    /// the window's faults to the rate. After a quarantine ends, the next fault (still
    /// without a success in between) starts the next, twice as long.
    pub(crate) fn record_fault(&mut self, now: Instant, calls: u64) -> Option<Duration> {
        // A window opens at its first fault: calls before it (validation's, a quiet
        // hour's) do not dilute the rate.
        if self.window_faults == 0 || now.duration_since(self.window_start) >= self.policy.rate_window {
            self.window_start = now;
            self.window_faults = 0;
            self.window_calls_base = calls.saturating_sub(1);
        }
        self.window_faults += 1;
        let in_window = calls.saturating_sub(self.window_calls_base).max(1);
        let over_rate = self.window_faults >= self.policy.rate_min_faults
            && u64::from(self.window_faults) * 100 >= in_window * u64::from(self.policy.rate_percent);
        let due = self.backoff.fail(now) || (over_rate && !self.backoff.active(now));
        if !due {
            return None;
        }
        self.window_faults = 0;
        self.window_calls_base = calls;
        self.window_start = now;
        Some(self.backoff.start(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> FaultPolicy {
        FaultPolicy::default()
    }

    /// A fault state and its version's call count, faulting on every call.
    struct Faulty {
        state: FaultState,
        calls: u64,
    }

    impl Faulty {
        fn new() -> Self {
            Faulty { state: FaultState::new(policy()), calls: 0 }
        }

        fn record_fault(&mut self, now: Instant) -> Option<Duration> {
            self.calls += 1;
            self.state.record_fault(now, self.calls)
        }

        fn record_success(&mut self) {
            self.calls += 1;
            self.state.record_success();
        }

        fn quarantined(&self, now: Instant) -> bool {
            self.state.quarantined(now)
        }
    }

    #[test]
    fn five_consecutive_faults_quarantine_for_thirty_seconds() {
        let mut s = Faulty::new();
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(s.record_fault(t0), None);
        }
        assert_eq!(s.record_fault(t0), Some(Duration::from_secs(30)));
        assert!(s.quarantined(t0 + Duration::from_secs(29)));
        assert!(!s.quarantined(t0 + Duration::from_secs(30)));
    }

    #[test]
    fn repeats_double_up_to_the_max_and_success_resets() {
        let mut s = Faulty::new();
        let mut now = Instant::now();
        for _ in 0..4 {
            s.record_fault(now);
        }
        let mut periods = Vec::new();
        for _ in 0..6 {
            let p = s.record_fault(now).expect("quarantines");
            periods.push(p.as_secs());
            now += p; // quarantine over; the next fault re-quarantines at once
        }
        assert_eq!(periods, vec![30, 60, 120, 240, 300, 300]);
        s.record_success();
        assert!(!s.quarantined(now));
        let later = now + Duration::from_secs(10); // a new rate window
        for _ in 0..4 {
            assert_eq!(s.record_fault(later), None);
        }
        assert_eq!(s.record_fault(later), Some(Duration::from_secs(30)));
    }

    #[test]
    fn rare_faults_between_successes_never_quarantine() {
        let mut s = Faulty::new();
        let mut now = Instant::now();
        for _ in 0..200 {
            assert_eq!(s.record_fault(now), None);
            for _ in 0..9 {
                s.record_success(); // 10%: under the 20% rate
            }
            now += Duration::from_millis(50);
        }
    }

    #[test]
    fn a_fault_on_every_other_call_quarantines_by_rate() {
        let mut s = Faulty::new();
        let now = Instant::now();
        let mut quarantined = None;
        for i in 0..20 {
            s.record_success();
            if let Some(period) = s.record_fault(now) {
                quarantined = Some((i, period));
                break;
            }
        }
        assert_eq!(quarantined, Some((4, Duration::from_secs(30))), "the fifth fault, at 50% of the calls");
        assert!(s.quarantined(now));
    }
}
