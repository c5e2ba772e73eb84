//! Trying a new placer on a route before it serves: shadows and canaries.
//!
//! - **Shadow** (`shadow = "NAME"`): for a share of the route's calls the live placer's
//!   first decision (the call, the runner set and the loads it saw, and its order) is
//!   recorded, and after the call is answered the shadow orders the same inputs on a thread
//!   of its own. A bounded queue sits between: when it is full the decision is dropped and
//!   counted, so a slow shadow costs the client path nothing but the recording and a push.
//!   The thread takes the queue in batches (it sleeps a millisecond after each), so a busy
//!   route does not wake it once per call; an idle one leaves it parked. The shadow's
//!   faults fall back and quarantine only the shadow's own version.
//! - **Canary** (`canary = "NAME"`, `canary_percent = N`): N% of the route's calls, chosen
//!   from each call's random value, are placed by the canary. When the canary is quarantined
//!   or its fault rate passes [`ROLLBACK_FAULT_PERCENT`] (after [`ROLLBACK_MIN_FAULTS`]
//!   faults), every route drops it and goes back to its own placer by itself.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::routes::RouteTable;
use crate::metrics::{Metrics, ShadowCounters};
use crate::placer::{Call, Order, PlaceError, PlacedBy, PlacerVersion, RunnerLoad, RunnerSet};

/// Decisions waiting for the shadow thread; more are dropped.
pub const SHADOW_QUEUE: usize = 1024;
/// First choices compared for "overlap of the first k".
pub const OVERLAP_K: usize = 3;
/// Functions remembered for the affinity figures (the map is cleared when it is full).
const AFFINITY_KEYS: usize = 10_000;
/// A canary with at least this many faults ...
pub const ROLLBACK_MIN_FAULTS: u64 = 5;
/// ... making at least this percent of its calls is rolled back.
pub const ROLLBACK_FAULT_PERCENT: u64 = 10;

/// Which share of calls a percentage selects: a hash of the call's random value (not the
/// value itself, which placers use too), so a canary's calls are not the ones whose random
/// value a placer would treat alike.
pub(crate) fn selected(random: u64, percent: u8) -> bool {
    let mut x = random ^ 0x9e37_79b9_7f4a_7c15;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    x % 100 < u64::from(percent)
}

/// The first decision a placer made for a call: what it saw and what it said.
#[derive(Debug)]
struct Decision {
    set: RunnerSet,
    loads: Vec<RunnerLoad>,
    order: Vec<u32>,
}

/// An [`Order`] that records its first decision for the shadow.
pub(crate) struct Recording<'a> {
    inner: &'a dyn Order,
    first: Mutex<Option<Decision>>,
}

impl<'a> Recording<'a> {
    pub(crate) fn new(inner: &'a dyn Order) -> Self {
        Recording { inner, first: Mutex::new(None) }
    }
}

impl Order for Recording<'_> {
    fn order(&self, call: &Call, set: &RunnerSet, loads: &[RunnerLoad]) -> Result<Vec<u32>, PlaceError> {
        let order = self.inner.order(call, set, loads)?;
        if let Ok(mut first) = self.first.lock()
            && first.is_none()
        {
            *first = Some(Decision { set: set.clone(), loads: loads.to_vec(), order: order.clone() });
        }
        Ok(order)
    }
}

/// One call for the shadow thread.
struct Job {
    route: String,
    live: String,
    shadow: Arc<PlacerVersion>,
    call: Call,
    decision: Decision,
}

/// What one route's shadow would have done, against its live placer.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ShadowReport {
    /// The route (`app=... fn=...`).
    pub route: String,
    /// The live placer.
    pub live: String,
    /// The shadow placer.
    pub shadow: String,
    /// Calls the shadow ordered.
    pub calls: u64,
    /// Calls where both put the same runner first.
    pub agreed: u64,
    /// `agreed / calls`.
    pub agreement: f64,
    /// Mean share of the live placer's first `k` runners that are among the shadow's.
    pub overlap_first_k: f64,
    /// `k` of `overlap_first_k`.
    pub k: usize,
    /// Calls the shadow faulted on (its fallback order was compared).
    pub faults: u64,
    /// Mean time of the shadow's `place`, nanoseconds (queue wait excluded).
    pub place_ns_avg: u64,
    /// First choices per runner address: what the live placer and the shadow would send
    /// where.
    pub runners: BTreeMap<String, LiveAndShadow>,
    /// Share of calls whose affinity key (the function, or its `Fn-Slot-Hash`) was seen
    /// before and whose first choice is the runner of that key's previous call: the live
    /// placer's and the shadow's.
    pub affinity: LiveAndShadowRatio,
    #[serde(skip)]
    overlap_sum: f64,
    #[serde(skip)]
    nanos: u64,
    #[serde(skip)]
    repeats: u64,
    #[serde(skip)]
    live_same: u64,
    #[serde(skip)]
    shadow_same: u64,
    #[serde(skip)]
    last: HashMap<String, (String, String)>,
    /// The route's shadow metrics, looked up once.
    #[serde(skip)]
    counters: ShadowCounters,
}

/// Calls per runner, live and shadow.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct LiveAndShadow {
    /// The live placer's first choices.
    pub live: u64,
    /// The shadow's.
    pub shadow: u64,
}

/// A ratio for the live placer and for the shadow.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct LiveAndShadowRatio {
    /// The live placer's.
    pub live: f64,
    /// The shadow's.
    pub shadow: f64,
}

/// A canary taken off its routes.
#[derive(Debug, Clone, Serialize)]
pub struct Rollback {
    /// The canary placer.
    pub canary: String,
    /// The routes it served on.
    pub routes: Vec<String>,
    /// Why.
    pub reason: String,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

/// How long the shadow thread lets the queue fill after a batch.
const BATCH_PAUSE: Duration = Duration::from_millis(1);

/// The decisions waiting for the shadow thread.
#[derive(Default)]
struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    /// Signalled when a job arrives while the thread is parked, or at shutdown.
    arrived: Condvar,
    /// True while the thread waits on `arrived` (set under the `jobs` lock).
    parked: AtomicBool,
    closed: AtomicBool,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("parked", &self.parked).finish_non_exhaustive()
    }
}

impl Queue {
    /// The next batch, waiting while there is none; `None` once closed.
    fn take(&self) -> Option<VecDeque<Job>> {
        let mut jobs = self.jobs.lock().ok()?;
        while jobs.is_empty() {
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            self.parked.store(true, Ordering::Release);
            jobs = self.arrived.wait(jobs).ok()?;
            self.parked.store(false, Ordering::Release);
        }
        Some(std::mem::take(&mut *jobs))
    }
}

/// Shadows and canaries of every route.
#[derive(Debug)]
pub struct Rollout {
    queue: Arc<Queue>,
    reports: Arc<Mutex<BTreeMap<String, ShadowReport>>>,
    rollbacks: Mutex<Vec<Rollback>>,
    metrics: Arc<Metrics>,
}

impl Drop for Rollout {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::Release);
        if let Ok(_jobs) = self.queue.jobs.lock() {
            self.queue.arrived.notify_all();
        }
    }
}

impl Rollout {
    /// Starts the shadow thread (it ends when this is dropped).
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn new(metrics: Arc<Metrics>) -> std::io::Result<Self> {
        let queue = Arc::new(Queue::default());
        let reports = Arc::new(Mutex::new(BTreeMap::new()));
        let (jobs, written, observed) = (queue.clone(), reports.clone(), metrics.clone());
        std::thread::Builder::new().name("placerd-shadow".into()).spawn(move || {
            while let Some(batch) = jobs.take() {
                for job in batch {
                    shadow(&job, &written, &observed);
                }
                std::thread::sleep(BATCH_PAUSE);
            }
        })?;
        Ok(Rollout { queue, reports, rollbacks: Mutex::new(Vec::new()), metrics })
    }

    /// Queues the shadow's turn on `call` (dropped and counted when the queue is full).
    pub(crate) fn submit(
        &self,
        route: String,
        live: &str,
        shadow: Arc<PlacerVersion>,
        call: &Call,
        recorded: Recording<'_>,
    ) {
        let Some(decision) = recorded.first.into_inner().ok().flatten() else { return };
        let job = Job { route, live: live.to_string(), shadow, call: call.clone(), decision };
        let Ok(mut jobs) = self.queue.jobs.lock() else { return };
        if jobs.len() >= SHADOW_QUEUE {
            drop(jobs);
            self.metrics.record_shadow_dropped();
            return;
        }
        jobs.push_back(job);
        drop(jobs);
        if self.queue.parked.load(Ordering::Acquire) {
            self.queue.arrived.notify_one();
        }
    }

    /// After a call the canary placed: rolls the canary back when it is quarantined or
    /// faults too often.
    pub(crate) fn after_canary(&self, canary: &PlacerVersion, routes: &RouteTable) {
        let faults = canary.served_faults();
        let reason = if canary.quarantined() {
            "quarantined".to_string()
        } else if faults >= ROLLBACK_MIN_FAULTS && faults * 100 >= canary.served_calls() * ROLLBACK_FAULT_PERCENT {
            format!("{faults} faults in {} calls", canary.served_calls())
        } else {
            return;
        };
        let dropped = routes.drop_canary(canary.name());
        if dropped.is_empty() {
            return; // another call rolled it back first
        }
        self.metrics.record_canary_rollback(canary.name());
        tracing::warn!(canary = canary.name(), routes = ?dropped, reason = %reason,
            "canary rolled back: its routes are placed by their own placers again");
        let at = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if let Ok(mut rollbacks) = self.rollbacks.lock() {
            rollbacks.push(Rollback { canary: canary.name().to_string(), routes: dropped, reason, at });
        }
    }

    /// Every route's shadow report, and the canaries rolled back.
    pub fn reports(&self) -> (Vec<ShadowReport>, Vec<Rollback>) {
        let reports = self.reports.lock().map(|r| r.values().cloned().collect()).unwrap_or_default();
        let rollbacks = self.rollbacks.lock().map(|r| r.clone()).unwrap_or_default();
        (reports, rollbacks)
    }
}

/// The shadow's turn on one recorded decision.
fn shadow(job: &Job, reports: &Mutex<BTreeMap<String, ShadowReport>>, metrics: &Metrics) {
    let started = Instant::now();
    let placed = job.shadow.place(&job.call, &job.decision.set, &job.decision.loads);
    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let (order, faulted) = match placed {
        Ok(placement) => (placement.order, matches!(placement.by, PlacedBy::Fallback(_))),
        Err(_) => (Vec::new(), true),
    };
    let name = |order: &[u32]| {
        order.first().and_then(|&r| job.decision.set.runners.get(r as usize)).map(|r| r.address.as_str())
    };
    let (live_first, shadow_first) = (name(&job.decision.order), name(&order));
    let agreed = live_first.is_some() && live_first == shadow_first;
    let shadow_name = job.shadow.name();
    let k = OVERLAP_K.min(job.decision.order.len());
    let overlap = if k == 0 {
        1.0
    } else {
        let theirs = &order[..OVERLAP_K.min(order.len())];
        job.decision.order[..k].iter().filter(|r| theirs.contains(r)).count() as f64 / k as f64
    };
    let Ok(mut reports) = reports.lock() else { return };
    let report = reports.entry(format!("{}|{}|{}", job.route, job.live, shadow_name)).or_insert_with(|| ShadowReport {
        route: job.route.clone(),
        live: job.live.clone(),
        shadow: shadow_name.to_string(),
        k: OVERLAP_K,
        counters: metrics.shadow_counters(&job.live, shadow_name),
        ..ShadowReport::default()
    });
    report.counters.record(agreed, faulted, nanos);
    report.calls += 1;
    report.agreed += u64::from(agreed);
    report.faults += u64::from(faulted);
    report.overlap_sum += overlap;
    report.nanos = report.nanos.saturating_add(nanos);
    report.agreement = report.agreed as f64 / report.calls as f64;
    report.overlap_first_k = report.overlap_sum / report.calls as f64;
    report.place_ns_avg = report.nanos / report.calls;
    let mut count = |address: Option<&str>, bump: fn(&mut LiveAndShadow)| {
        let Some(address) = address else { return };
        match report.runners.get_mut(address) {
            Some(counts) => bump(counts),
            None => bump(report.runners.entry(address.to_string()).or_default()),
        }
    };
    count(live_first, |c| c.live += 1);
    count(shadow_first, |c| c.shadow += 1);
    let (Some(live), Some(shadow)) = (live_first, shadow_first) else { return };
    match report.last.get_mut(&job.call.slot_key) {
        Some((live_before, shadow_before)) => {
            report.repeats += 1;
            report.live_same += u64::from(live_before == live);
            report.shadow_same += u64::from(shadow_before == shadow);
            live_before.clear();
            live_before.push_str(live);
            shadow_before.clear();
            shadow_before.push_str(shadow);
            report.affinity = LiveAndShadowRatio {
                live: report.live_same as f64 / report.repeats as f64,
                shadow: report.shadow_same as f64 / report.repeats as f64,
            };
        }
        None => {
            if report.last.len() >= AFFINITY_KEYS {
                report.last.clear();
            }
            report.last.insert(job.call.slot_key.clone(), (live.to_string(), shadow.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_percentage_selects_about_that_share_of_random_values() {
        for percent in [0u8, 1, 20, 50, 100] {
            let hits = (0..20_000u64).filter(|i| selected(fastrand::u64(..) ^ i, percent)).count();
            let expected = 200.0 * f64::from(percent);
            assert!((hits as f64 - expected).abs() <= 400.0, "{percent}%: {hits} of 20000");
        }
        // Consecutive values (a placer's view of random) are spread, not banded.
        let consecutive = (0..1000u64).filter(|r| selected(*r, 20)).count();
        assert!((150..=250).contains(&consecutive), "{consecutive}");
    }
}
