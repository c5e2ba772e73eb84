//! Fault kinds and the quarantine state machine: five consecutive faults quarantine a
//! placer version for 30 s, doubling on every repeat up to 300 s; one good call resets it.

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
}

impl Default for FaultPolicy {
    fn default() -> Self {
        FaultPolicy {
            quarantine_after: 5,
            quarantine_base: Duration::from_secs(30),
            quarantine_max: Duration::from_secs(300),
        }
    }
}

/// Per-version fault bookkeeping: quarantine is a [`Backoff`] over consecutive faults.
#[derive(Debug)]
pub(crate) struct FaultState(Backoff);

impl FaultState {
    pub(crate) fn new(policy: FaultPolicy) -> Self {
        FaultState(Backoff::new(BackoffPolicy {
            after: policy.quarantine_after,
            base: policy.quarantine_base,
            max: policy.quarantine_max,
        }))
    }

    /// True while quarantined at `now`.
    pub(crate) fn quarantined(&self, now: Instant) -> bool {
        self.0.active(now)
    }

    /// A good call: forget past faults.
    pub(crate) fn record_success(&mut self) {
        self.0.succeed();
    }

    /// A fault at `now`. Returns the quarantine period when this fault starts one. After a
    /// quarantine ends, the next fault (still without a success in between) starts the next,
    /// twice as long.
    pub(crate) fn record_fault(&mut self, now: Instant) -> Option<Duration> {
        self.0.fail(now).then(|| self.0.start(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> FaultPolicy {
        FaultPolicy {
            quarantine_after: 5,
            quarantine_base: Duration::from_secs(30),
            quarantine_max: Duration::from_secs(300),
        }
    }

    #[test]
    fn five_consecutive_faults_quarantine_for_thirty_seconds() {
        let mut s = FaultState::new(policy());
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
        let mut s = FaultState::new(policy());
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
        for _ in 0..4 {
            assert_eq!(s.record_fault(now), None);
        }
        assert_eq!(s.record_fault(now), Some(Duration::from_secs(30)));
    }

    #[test]
    fn interleaved_success_prevents_quarantine() {
        let mut s = FaultState::new(policy());
        let now = Instant::now();
        for _ in 0..20 {
            for _ in 0..4 {
                assert_eq!(s.record_fault(now), None);
            }
            s.record_success();
        }
    }
}
