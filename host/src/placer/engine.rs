//! What every placer version shares: the wasmtime engine, the limits, the watchdog that
//! stops guest calls past their deadline, and the observer. Built once by [`super::PlacerRuntime`] and held by each version.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use wasmtime::Engine;

use super::fault::{FaultPolicy, OnFault};
use crate::shard::Padded;

/// How long the watchdog stays awake with no guest call before it parks until the next.
const IDLE: Duration = Duration::from_millis(100);
/// Guest calls the watchdog knows the deadline of at once (one slot each; a call that
/// finds none free is still stopped, at most one budget late).
const SLOTS: usize = 64;

/// Limits and fault handling applied to every placer call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// CPU budget of one `place` call (`placer_budget_ms`, default 5 ms).
    pub budget: Duration,
    /// Linear memory cap per instance (`placer_memory_limit_bytes`, default 16 MiB).
    pub memory_limit_bytes: usize,
    /// Warm instances kept per placer version; more are built on demand under
    /// concurrency and dropped when returned.
    pub max_idle_instances: usize,
    /// Instances a version has ready when it is loaded: one is built as it loads, the
    /// others right after on the `placer-recycle` thread, so the first call of each
    /// worker does not build its own (the proxy sets this to `workers`).
    pub warm_instances: usize,
    /// `on_placer_fault`.
    pub on_fault: OnFault,
    /// Quarantine thresholds.
    pub fault_policy: FaultPolicy,
    /// When an instance is retired for a fresh one.
    pub recycle: Recycle,
}

/// When a warm instance is retired and a fresh one, built ahead of need off the call path,
/// takes its place. A language runtime with a collector (Python, JavaScript) grows its
/// heap with the garbage of every call until it collects, and some grow it to whatever the
/// cap allows: retired at a mark below the cap, such an instance never faults on memory,
/// and its heap stays small enough that a collection fits the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recycle {
    /// `placer_recycle_memory_percent` (default 75): retire an instance whose memory has
    /// passed this share of `placer_memory_limit_bytes` (or, for a placer whose fresh
    /// instance already holds more than that, half way from a fresh instance's memory to
    /// the cap). 100 turns it off.
    pub memory_percent: u8,
    /// `placer_recycle_calls` (default 0, off): retire an instance after this many calls.
    pub calls: u64,
    /// `placer_recycle_seconds` (default 0, off): retire an instance this long after it
    /// was built.
    pub age: Option<Duration>,
}

impl Default for Recycle {
    fn default() -> Self {
        Recycle { memory_percent: 75, calls: 0, age: None }
    }
}

/// Why an instance was retired (the `reason` label of `placerd_placer_recycles_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecycleReason {
    /// Its memory passed the mark.
    Memory,
    /// It placed `placer_recycle_calls` calls.
    Calls,
    /// It is older than `placer_recycle_seconds`.
    Age,
}

impl RecycleReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RecycleReason::Memory => "memory",
            RecycleReason::Calls => "calls",
            RecycleReason::Age => "age",
        }
    }
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            budget: Duration::from_millis(5),
            memory_limit_bytes: 16 << 20,
            max_idle_instances: 16,
            warm_instances: 1,
            on_fault: OnFault::Fallback,
            fault_policy: FaultPolicy::default(),
            recycle: Recycle::default(),
        }
    }
}

impl SandboxLimits {
    /// How long a `place` call may run: the budget.
    pub(crate) fn place_time(&self) -> Duration {
        self.budget
    }

    /// How long `set-runners` may run: it does more work once per instance and
    /// membership change, on the call that sees the new set, so ten budgets.
    pub(crate) fn set_runners_time(&self) -> Duration {
        self.budget * 10
    }

    /// How long a new instance (instantiation, then `configure`) may take: ten budgets,
    /// and at least [`MIN_SETUP`] (a Python or JavaScript runtime's first instance, its
    /// memory image still cold, takes tens of milliseconds to instantiate).
    pub(crate) fn instantiate_time(&self) -> Duration {
        (self.budget * 10).max(MIN_SETUP)
    }

    /// The memory past which an instance that held `fresh` bytes when it was built is
    /// retired (`usize::MAX`: never).
    pub(crate) fn recycle_mark(&self, fresh: usize) -> usize {
        if self.recycle.memory_percent >= 100 {
            return usize::MAX;
        }
        let cap = self.memory_limit_bytes;
        let mark = cap / 100 * usize::from(self.recycle.memory_percent);
        mark.max(fresh + cap.saturating_sub(fresh) / 2)
    }
}

/// The least time instantiating an instance and its `configure` get, whatever the budget.
pub(crate) const MIN_SETUP: Duration = Duration::from_millis(250);

/// Receives what the placer runtime measures (metrics live outside this module).
pub trait PlacerObserver: Send + Sync + std::fmt::Debug {
    /// Where the times of `placer`'s guest `place` calls go (seconds each). Asked once per
    /// loaded version, so a call records its time without looking its placer up.
    fn guest_timer(&self, _placer: &str) -> Option<GuestTimer> {
        None
    }
    /// A fault of `kind` (`FaultKind::as_str`) in `placer`.
    fn fault(&self, _placer: &str, _kind: &str) {}
    /// A load of `placer` succeeded or failed.
    fn reload(&self, _placer: &str, _ok: bool) {}
    /// An instance of `placer` was retired for a fresh one.
    fn recycled(&self, _placer: &str, _reason: RecycleReason) {}
}

/// Records the time of one guest `place` call, in seconds ([`PlacerObserver::guest_timer`]).
pub type GuestTimer = Box<dyn Fn(f64) + Send + Sync>;

/// The observer used when nobody listens.
#[derive(Debug)]
pub(crate) struct NoObserver;

impl PlacerObserver for NoObserver {}

/// The runtime state every version of every placer shares.
pub(crate) struct Shared {
    /// The engine all components are compiled for.
    pub(crate) engine: Engine,
    /// Limits every guest call runs under.
    pub(crate) limits: SandboxLimits,
    /// Where guest timings, faults and loads are reported.
    pub(crate) observer: Arc<dyn PlacerObserver>,
    /// Advances the epoch when a guest call is past its deadline.
    watchdog: Watchdog,
    /// Work taken off the call path (building a replacement instance, dropping a retired
    /// one), done in order by the `placer-recycle` thread.
    background: std::sync::mpsc::Sender<Job>,
}

/// A piece of work for the `placer-recycle` thread.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Shared {
    /// Starts the watchdog for `engine`.
    pub(crate) fn new(
        engine: Engine,
        limits: SandboxLimits,
        observer: Arc<dyn PlacerObserver>,
    ) -> std::io::Result<Self> {
        let watchdog = Watchdog::start(engine.clone(), limits.budget)?;
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        // Ends when the last sender goes with this `Shared`: not joined, since the last
        // job may be what drops it.
        std::thread::Builder::new().name("placer-recycle".into()).spawn(move || {
            for job in queue {
                job();
            }
        })?;
        Ok(Shared { engine, limits, observer, watchdog, background: jobs })
    }

    /// Runs `job` on the `placer-recycle` thread, after the jobs before it.
    pub(crate) fn background(&self, job: Job) {
        // The thread lives as long as this sender: a send cannot fail.
        let _ = self.background.send(job);
    }

    /// Marks a guest call (or instantiation) in progress until the guard drops, waking
    /// the watchdog first if it slept. Give the guard each phase's deadline
    /// ([`Awake::until`]).
    pub(crate) fn awake(&self) -> Awake<'_> {
        self.watchdog.enter()
    }

    /// True while the watchdog sleeps (no guest call for [`IDLE`]).
    #[cfg(test)]
    pub(crate) fn watchdog_sleeping(&self) -> bool {
        self.watchdog.state.parked.load(Ordering::SeqCst)
    }

    /// Times the watchdog has woken.
    #[cfg(test)]
    pub(crate) fn watchdog_wakes(&self) -> u64 {
        self.watchdog.state.wakes.load(Ordering::Relaxed)
    }
}

/// Stops guest calls that run past their deadline. Each store traps through its epoch
/// deadline callback once the epoch advances while its call is past its own deadline
/// (`HostState::deadline`); the watchdog thread advances the epoch.
///
/// It does not tick at a fixed rate. Each guest call publishes its deadline in a slot;
/// the watchdog wakes at least once per budget, and then sleeps until the earliest
/// deadline among the calls in progress, or another budget. A call that starts while it
/// sleeps is seen by its next wake, before the call's deadline: calls are stopped at
/// their deadline, not at the next tick after it, and under load the watchdog wakes
/// once per budget instead of once per millisecond. With no guest call for [`IDLE`] it
/// parks until the next one, so an idle placerd costs no CPU.
struct Watchdog {
    state: Arc<WatchState>,
    thread: Option<JoinHandle<()>>,
    /// The watchdog thread, to unpark it.
    handle: Thread,
}

/// What guests and the watchdog share.
#[derive(Debug)]
struct WatchState {
    stop: AtomicBool,
    /// Guest calls entered (high 32 bits, wrapping) and in progress (low 32 bits): one
    /// atomic add per call and one subtract, on the calling worker's copy.
    activity: Box<[Padded<AtomicU64>]>,
    /// True while the watchdog is parked (or about to be).
    parked: AtomicBool,
    /// Per call in progress: its deadline in nanoseconds since `origin`; 0 for a free
    /// slot, `CLAIMED` for a call whose deadline is not set yet.
    slots: [Padded<AtomicU64>; SLOTS],
    origin: Instant,
    /// Calls in progress that found no free slot: while there are any, the watchdog
    /// advances the epoch at every wake and their own deadline callbacks decide.
    unslotted: AtomicU64,
    /// Wakes of the watchdog thread (for tests).
    wakes: AtomicU64,
}

const ENTERED: u64 = 1 << 32;
const RUNNING: u64 = ENTERED - 1;
const CLAIMED: u64 = u64::MAX;

impl WatchState {
    /// Every worker's copy of `activity` added up.
    fn activity(&self) -> u64 {
        self.activity.iter().map(|a| a.0.load(Ordering::SeqCst)).fold(0, u64::wrapping_add)
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(CLAIMED - 1).max(1)
    }
}

/// A guest call in progress ([`Shared::awake`]).
pub(crate) struct Awake<'a> {
    state: &'a WatchState,
    /// The copy of `activity` it added to.
    shard: usize,
    /// The slot holding this call's deadline, if one was free.
    slot: Option<usize>,
}

impl Awake<'_> {
    /// This call's current phase ends at `deadline`: the watchdog wakes for it then.
    pub(crate) fn until(&self, deadline: Instant) {
        if let Some(slot) = self.slot {
            self.state.slots[slot].0.store(self.state.nanos(deadline), Ordering::Release);
        }
    }
}

impl Drop for Awake<'_> {
    fn drop(&mut self) {
        match self.slot {
            Some(slot) => self.state.slots[slot].0.store(0, Ordering::Release),
            None => {
                self.state.unslotted.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.state.activity[self.shard].0.fetch_sub(1, Ordering::SeqCst);
    }
}

thread_local! {
    /// Where this thread starts looking for a free slot, so threads rarely contend.
    static FIRST_SLOT: usize = {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS
    };
}

impl Watchdog {
    fn start(engine: Engine, budget: Duration) -> std::io::Result<Self> {
        let state = Arc::new(WatchState {
            stop: AtomicBool::new(false),
            activity: (0..*crate::shard::SHARDS).map(|_| Padded::default()).collect(),
            parked: AtomicBool::new(false),
            slots: std::array::from_fn(|_| Padded::default()),
            origin: Instant::now(),
            unslotted: AtomicU64::new(0),
            wakes: AtomicU64::new(0),
        });
        let shared = state.clone();
        // Never longer than the budget, so every call is seen before its deadline.
        let period = budget.clamp(Duration::from_millis(1), Duration::from_secs(1));
        let thread =
            std::thread::Builder::new().name("placer-epoch".into()).spawn(move || watch(&engine, &shared, period))?;
        let handle = thread.thread().clone();
        Ok(Watchdog { state, thread: Some(thread), handle })
    }

    fn enter(&self) -> Awake<'_> {
        let state = &*self.state;
        let shard = crate::shard::index();
        state.activity[shard].0.fetch_add(ENTERED + 1, Ordering::SeqCst);
        let first = FIRST_SLOT.with(|f| *f);
        let slot = (0..SLOTS)
            .map(|i| (first + i) % SLOTS)
            .find(|&i| state.slots[i].0.compare_exchange(0, CLAIMED, Ordering::AcqRel, Ordering::Relaxed).is_ok());
        if slot.is_none() {
            state.unslotted.fetch_add(1, Ordering::SeqCst);
        }
        // Under load the watchdog never parks and this is one read.
        if state.parked.load(Ordering::SeqCst) && state.parked.swap(false, Ordering::SeqCst) {
            self.handle.unpark();
        }
        Awake { state, shard, slot }
    }
}

/// The watchdog thread's loop.
fn watch(engine: &Engine, state: &WatchState, period: Duration) {
    let mut seen = state.activity();
    let mut idle_since = Instant::now();
    while !state.stop.load(Ordering::Relaxed) {
        state.wakes.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let now_ns = state.nanos(now);
        let mut earliest = CLAIMED;
        for slot in &state.slots {
            let deadline = slot.0.load(Ordering::Acquire);
            if deadline != 0 && deadline != CLAIMED {
                earliest = earliest.min(deadline);
            }
        }
        let activity = state.activity();
        // A call past its deadline traps at its next epoch check; the others continue.
        // A call without a slot is stopped here, at most one period past its deadline.
        if earliest <= now_ns || state.unslotted.load(Ordering::SeqCst) > 0 {
            engine.increment_epoch();
        }
        if activity != seen || activity & RUNNING != 0 {
            (seen, idle_since) = (activity, now);
        } else if now.duration_since(idle_since) >= IDLE {
            // Park, unless a guest entered meanwhile: it either sees `parked` and unparks
            // us, or we see its entry here (both sides use SeqCst).
            state.parked.store(true, Ordering::SeqCst);
            if state.activity() == seen {
                while state.parked.load(Ordering::SeqCst) && !state.stop.load(Ordering::Relaxed) {
                    std::thread::park();
                }
            }
            state.parked.store(false, Ordering::SeqCst);
            (seen, idle_since) = (state.activity(), Instant::now());
            continue;
        }
        let until = if earliest > now_ns && earliest != CLAIMED {
            Duration::from_nanos(earliest - now_ns).min(period)
        } else if earliest <= now_ns {
            // A call past its deadline is given more time in steps while its thread is
            // found off the CPU (`HostState::overran`): its store looks again at each
            // epoch change, twice per step.
            grace(period) / 2
        } else {
            period
        };
        std::thread::park_timeout(until);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        self.state.parked.store(false, Ordering::SeqCst);
        self.handle.unpark();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How much longer a call past its deadline is given each time its thread is found to
/// have spent less than half of the last step on the CPU: half the budget, at most 1 ms.
pub(crate) fn grace(budget: Duration) -> Duration {
    (budget / 2).min(Duration::from_millis(1))
}

/// CPU time this thread has used (a system call: about 250 ns here, so read only once a
/// call is past its deadline, never per call).
pub(crate) fn thread_cpu_time() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(now.tv_sec.unsigned_abs(), now.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeping_within(shared: &Shared, limit: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if shared.watchdog_sleeping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    fn shared() -> Shared {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).expect("engine");
        Shared::new(engine, SandboxLimits::default(), Arc::new(NoObserver)).expect("watchdog")
    }

    #[test]
    fn the_watchdog_sleeps_when_no_guest_runs_and_wakes_for_the_next() {
        let shared = shared();
        assert!(sleeping_within(&shared, Duration::from_secs(5)), "asleep after 100 idle ms");
        {
            let guest = shared.awake();
            guest.until(Instant::now() + Duration::from_secs(10));
            assert!(!shared.watchdog_sleeping(), "a guest call wakes it");
            // A long guest call keeps it awake however long it runs.
            std::thread::sleep(Duration::from_millis(300));
            assert!(!shared.watchdog_sleeping());
        }
        assert!(sleeping_within(&shared, Duration::from_secs(5)), "asleep again after the call");
    }

    #[test]
    fn under_a_stream_of_short_calls_the_watchdog_wakes_about_once_per_budget() {
        let shared = shared();
        let started = Instant::now();
        let wakes = shared.watchdog_wakes();
        // 300 ms of back-to-back short calls, each with the 5 ms budget.
        while started.elapsed() < Duration::from_millis(300) {
            let guest = shared.awake();
            guest.until(Instant::now() + shared.limits.place_time());
        }
        let wakes = shared.watchdog_wakes() - wakes;
        // Once per 5 ms is 60; a 1 ms ticker woke 300 times. Allow for wake-ups at
        // deadlines of calls that ended just then.
        assert!(wakes <= 150, "{wakes} wakes in 300 ms");
        assert!(wakes >= 20, "{wakes} wakes in 300 ms: it must look at least once per budget");
    }
}
