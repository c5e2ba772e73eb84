//! Rate limits for log lines that someone outside placerd can repeat at will (a guest's
//! log, a runner that refuses connections, a route to a placer that is gone): at most a
//! few lines per window, and the next line that goes out says how many were dropped.

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

/// Events dropped by every throttle since the process started: registered as
/// `placerd_log_lines_dropped_total`.
pub static DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);

/// At most `per_window` events per `window`.
#[derive(Debug)]
pub struct Throttle {
    per_window: u32,
    window: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Start of the current window (`None` before the first event).
    start: Option<Instant>,
    /// Events let through in the current window.
    admitted: u32,
    /// Events dropped since the last one let through.
    dropped: u64,
}

impl Throttle {
    /// Lets through `per_window` events every `window`.
    pub const fn new(per_window: u32, window: Duration) -> Self {
        Throttle { per_window, window, state: Mutex::new(State { start: None, admitted: 0, dropped: 0 }) }
    }

    /// `Some(dropped)` when one more event may go out now, with the number dropped since
    /// the last one that went out; `None` when it is dropped (and counted).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if s.start.is_none_or(|start| now.duration_since(start) >= self.window) {
            s.start = Some(now);
            s.admitted = 0;
        }
        if s.admitted < self.per_window {
            s.admitted += 1;
            Some(std::mem::take(&mut s.dropped))
        } else {
            s.dropped += 1;
            DROPPED.inc();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_a_few_through_per_window_and_reports_the_rest_with_the_next() {
        let t = Throttle::new(2, Duration::from_secs(10));
        let before = DROPPED.get();
        let t0 = Instant::now();
        assert_eq!(t.admit_at(t0), Some(0));
        assert_eq!(t.admit_at(t0), Some(0));
        for _ in 0..5 {
            assert_eq!(t.admit_at(t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(t.admit_at(t0 + Duration::from_secs(10)), Some(5));
        assert!(DROPPED.get() >= before + 5, "counted process-wide");
        assert_eq!(t.admit_at(t0 + Duration::from_secs(10)), Some(0));
    }
}
