//! Back-off after repeated failures, shared by placer quarantine and runner ejection.
//!
//! A [`Backoff`] counts failures in a row. When the count reaches the policy's threshold
//! and no period is running, the caller may start a period: the first lasts `base`, each
//! later one twice the one before, up to `max`. A success forgets the failures, ends the
//! period and starts the doubling over.

use std::time::{Duration, Instant};

/// When to back off, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Failures in a row that make a period due.
    pub after: u32,
    /// First period.
    pub base: Duration,
    /// Longest period; each repeat doubles up to this.
    pub max: Duration,
}

/// Failures in a row and the current back-off period, if any.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    /// Failures since the last success (or since the caller cleared them).
    failures: u32,
    /// End of the current period.
    until: Option<Instant>,
    /// Length of the next period.
    next: Duration,
}

impl Backoff {
    /// No failures, no period.
    pub fn new(policy: BackoffPolicy) -> Self {
        Backoff { policy, failures: 0, until: None, next: policy.base }
    }

    /// True while a period runs at `now`.
    pub fn active(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    /// End of the current period (past or running), if one was started since the last
    /// success.
    pub fn until(&self) -> Option<Instant> {
        self.until
    }

    /// Failures counted since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Counts one failure. True when a period is due: the threshold is reached and no
    /// period runs at `now`. The caller then [`Backoff::start`]s one, or decides not to.
    pub fn fail(&mut self, now: Instant) -> bool {
        self.failures = self.failures.saturating_add(1);
        self.failures >= self.policy.after && !self.active(now)
    }

    /// Starts a period at `now` and returns its length; the next one will be twice as long.
    pub fn start(&mut self, now: Instant) -> Duration {
        let period = self.next;
        self.until = Some(now + period);
        self.next = (period * 2).min(self.policy.max);
        period
    }

    /// Forgets the failures counted so far; a running period goes on.
    pub fn clear_failures(&mut self) {
        self.failures = 0;
    }

    /// A success: no failures, no period, and the next period is `base` again.
    pub fn succeed(&mut self) {
        self.failures = 0;
        self.until = None;
        self.next = self.policy.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BackoffPolicy =
        BackoffPolicy { after: 3, base: Duration::from_secs(30), max: Duration::from_secs(100) };

    #[test]
    fn a_period_is_due_at_the_threshold_and_doubles_up_to_the_max() {
        let mut b = Backoff::new(POLICY);
        let mut now = Instant::now();
        assert!(!b.fail(now));
        assert!(!b.fail(now));
        assert!(b.fail(now));
        let mut periods = Vec::new();
        for _ in 0..4 {
            periods.push(b.start(now).as_secs());
            assert!(b.active(now));
            assert!(!b.fail(now), "no new period while one runs");
            now += Duration::from_secs(100);
            assert!(!b.active(now));
        }
        assert_eq!(periods, [30, 60, 100, 100]);
    }

    #[test]
    fn success_resets_everything_and_clearing_keeps_the_period() {
        let mut b = Backoff::new(POLICY);
        let now = Instant::now();
        for _ in 0..3 {
            b.fail(now);
        }
        b.start(now);
        b.clear_failures();
        assert_eq!(b.failures(), 0);
        assert!(b.active(now));
        b.succeed();
        assert!(!b.active(now));
        for _ in 0..2 {
            assert!(!b.fail(now));
        }
        assert!(b.fail(now));
        assert_eq!(b.start(now), Duration::from_secs(30));
    }
}
