//! The admin dashboard: `GET /` on the admin listener serves one self-contained HTML page
//! (inline CSS, script and SVG; no external assets) that polls the admin API every two
//! seconds and shows the runners, the placers, the routes and a chart of calls per runner.
//!
//! The chart's data is `GET /admin/history`: calls committed per runner in each interval
//! of the last [`HISTORY_SAMPLES`] intervals, sampled by [`sample`] from the runners'
//! `calls` counters, so the call path pays one relaxed add per call and nothing else.
//!
//! The page is static and carries no data: it is served without the admin token (the Host
//! check applies as to every admin request), and its script asks for the token when the
//! API answers 401. A strict `Content-Security-Policy` allows only its inline script and
//! style and same-origin fetches; everything it inserts from the API is text.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use hyper::{Response, StatusCode};
use serde::Serialize;

use crate::proxy::{ProxyBody, json};
use crate::runner::DynamicPool;

/// The page: HTML with inline CSS and script.
const PAGE: &str = include_str!("dashboard.html");

/// Only the page's own inline script and style, and fetches to the admin API.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// Samples kept: ten minutes at the default five-second interval.
pub const HISTORY_SAMPLES: usize = 120;

/// `GET /`: the dashboard page.
pub(crate) fn page() -> Response<ProxyBody> {
    let mut r = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())).map_err(|never| match never {}).boxed());
    *r.status_mut() = StatusCode::OK;
    let headers = r.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// Calls per runner over the last [`HISTORY_SAMPLES`] intervals (`GET /admin/history`).
#[derive(Debug)]
pub struct History {
    /// Time between samples.
    interval: Duration,
    state: Mutex<HistoryState>,
}

#[derive(Debug, Default)]
struct HistoryState {
    /// Oldest first, at most [`HISTORY_SAMPLES`].
    samples: VecDeque<Sample>,
    /// Each runner's `calls` at the last sample: the next sample's deltas start here.
    /// Runners that left are dropped from it.
    last: HashMap<String, u64>,
}

/// One interval: calls committed per runner address.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
struct Sample {
    /// End of the interval, seconds since the Unix epoch.
    t: u64,
    runners: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct HistoryJson<'a> {
    interval_s: f64,
    samples: &'a VecDeque<Sample>,
}

impl History {
    /// An empty history sampled every `interval`.
    pub fn new(interval: Duration) -> Self {
        History { interval, state: Mutex::new(HistoryState::default()) }
    }

    /// Records the interval ending at `t` (Unix seconds), given each current runner's
    /// address and total committed calls. A runner not seen at the last sample counts
    /// from zero (it joined since, with a fresh counter); a counter that went back means
    /// the runner left and came back, and counts from zero too.
    pub fn record(&self, t: u64, totals: impl IntoIterator<Item = (String, u64)>) {
        let Ok(mut state) = self.state.lock() else { return };
        let mut runners = BTreeMap::new();
        let mut last = HashMap::new();
        for (address, total) in totals {
            let before = state.last.get(&address).copied().unwrap_or(0);
            runners.insert(address.clone(), total.checked_sub(before).unwrap_or(total));
            last.insert(address, total);
        }
        state.last = last;
        if state.samples.len() == HISTORY_SAMPLES {
            state.samples.pop_front();
        }
        state.samples.push_back(Sample { t, runners });
    }

    /// `{"interval_s":5,"samples":[{"t":…,"runners":{"host:port":calls,…}},…]}`.
    fn to_json(&self) -> String {
        let state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let body = HistoryJson { interval_s: self.interval.as_secs_f64(), samples: &state.samples };
        serde_json::to_string(&body).unwrap_or_else(|e| format!("{{\"message\":\"{e}\"}}"))
    }

    /// `GET /admin/history`.
    pub(crate) fn response(&self) -> Response<ProxyBody> {
        json(StatusCode::OK, self.to_json())
    }
}

/// Samples `pool`'s runners into `history` every interval, forever (abort the task to stop).
pub async fn sample(history: Arc<History>, pool: Arc<DynamicPool>) {
    let period = history.interval.max(Duration::from_millis(10));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let membership = pool.membership();
        history.record(t, membership.handles.iter().map(|s| (s.address.clone(), s.calls())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
        pairs.iter().map(|(a, n)| ((*a).to_string(), *n)).collect()
    }

    fn samples(h: &History) -> Vec<Sample> {
        h.state.lock().expect("lock").samples.iter().cloned().collect()
    }

    fn runners(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(a, n)| ((*a).to_string(), *n)).collect()
    }

    #[test]
    fn samples_are_the_calls_of_each_interval() {
        let h = History::new(Duration::from_secs(5));
        h.record(100, totals(&[("a:1", 3), ("b:1", 0)]));
        h.record(105, totals(&[("a:1", 10), ("b:1", 4)]));
        h.record(110, totals(&[("a:1", 10), ("b:1", 5)]));
        let s = samples(&h);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0], Sample { t: 100, runners: runners(&[("a:1", 3), ("b:1", 0)]) });
        assert_eq!(s[1].runners, runners(&[("a:1", 7), ("b:1", 4)]));
        assert_eq!(s[2].runners, runners(&[("a:1", 0), ("b:1", 1)]));
        let v: serde_json::Value = serde_json::from_str(&h.to_json()).expect("JSON");
        assert_eq!(v["interval_s"], 5.0);
        assert_eq!(v["samples"][1]["t"], 105);
        assert_eq!(v["samples"][1]["runners"]["a:1"], 7);
    }

    #[test]
    fn a_runner_that_leaves_disappears_and_one_that_comes_back_counts_from_zero() {
        let h = History::new(Duration::from_secs(5));
        h.record(1, totals(&[("a:1", 5), ("b:1", 5)]));
        h.record(2, totals(&[("a:1", 6)]));
        h.record(3, totals(&[("a:1", 6), ("b:1", 2), ("c:1", 1)]));
        // Back between two samples with a fresh, smaller counter.
        h.record(4, totals(&[("a:1", 1)]));
        let s = samples(&h);
        assert_eq!(s[1].runners, runners(&[("a:1", 1)]), "b left");
        assert_eq!(s[2].runners, runners(&[("a:1", 0), ("b:1", 2), ("c:1", 1)]), "b back from zero, c new");
        assert_eq!(s[3].runners, runners(&[("a:1", 1)]));
    }

    #[test]
    fn at_most_120_samples_are_kept_oldest_dropped_first() {
        let h = History::new(Duration::from_secs(5));
        for t in 0..300u64 {
            h.record(t, totals(&[("a:1", t * 2)]));
        }
        let s = samples(&h);
        assert_eq!(s.len(), HISTORY_SAMPLES);
        assert_eq!(s[0].t, 300 - HISTORY_SAMPLES as u64);
        assert_eq!(s[HISTORY_SAMPLES - 1].t, 299);
        assert!(s.iter().all(|s| s.runners["a:1"] == 2));
    }

    #[tokio::test(start_paused = true)]
    async fn the_sampler_reads_the_pool_every_interval() {
        let pool = Arc::new(DynamicPool::new(&["a:1".to_string()]));
        let history = Arc::new(History::new(Duration::from_secs(5)));
        let task = tokio::spawn(sample(history.clone(), pool.clone()));
        tokio::time::sleep(Duration::from_millis(4900)).await;
        assert!(samples(&history).is_empty(), "the first sample ends the first interval");
        pool.membership().handles[0].record_commit();
        tokio::time::sleep(Duration::from_millis(5200)).await;
        task.abort();
        let s = samples(&history);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].runners["a:1"], 1);
        assert_eq!(s[1].runners["a:1"], 0);
    }
}
