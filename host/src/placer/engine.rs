//! What every placer version shares: the wasmtime engine, the limits, the epoch ticker and
//! the observer. Built once by [`super::PlacerRuntime`] and held by each version.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use wasmtime::Engine;

use super::fault::{FaultPolicy, OnFault};

/// The epoch ticker's period: budgets are counted in these ticks.
const TICK: Duration = Duration::from_millis(1);
/// Ticks without a guest call after which the ticker sleeps until the next one.
const IDLE_TICKS: u32 = 100;

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
    /// `on_placer_fault`.
    pub on_fault: OnFault,
    /// Quarantine thresholds.
    pub fault_policy: FaultPolicy,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            budget: Duration::from_millis(5),
            memory_limit_bytes: 16 << 20,
            max_idle_instances: 16,
            on_fault: OnFault::Fallback,
            fault_policy: FaultPolicy::default(),
        }
    }
}

impl SandboxLimits {
    /// Epoch ticks for a `place` call: the budget in ticks plus one, because the call
    /// starts somewhere inside the current tick.
    pub(crate) fn place_ticks(&self) -> u64 {
        ticks(self.budget) + 1
    }

    /// Epoch ticks for `set-runners`, which does more work once per instance and
    /// membership change, on the call that sees the new set: ten budgets.
    pub(crate) fn set_runners_ticks(&self) -> u64 {
        ticks(self.budget * 10) + 1
    }

    /// Epoch ticks for a new instance (instantiation, then `configure`): ten budgets, and
    /// at least [`MIN_SETUP`] (a Python or JavaScript runtime's first instance, its memory
    /// image still cold, takes tens of milliseconds to instantiate).
    pub(crate) fn instantiate_ticks(&self) -> u64 {
        ticks((self.budget * 10).max(MIN_SETUP)) + 1
    }
}

/// The least time instantiating an instance and its `configure` get, whatever the budget.
pub(crate) const MIN_SETUP: Duration = Duration::from_millis(250);

fn ticks(d: Duration) -> u64 {
    let tick = TICK.as_nanos();
    (d.as_nanos().div_ceil(tick)).max(1) as u64
}

/// Receives what the placer runtime measures (metrics live outside this module).
pub trait PlacerObserver: Send + Sync + std::fmt::Debug {
    /// One guest `place` call took `seconds`.
    fn guest_call(&self, _placer: &str, _seconds: f64) {}
    /// A fault of `kind` (`FaultKind::as_str`) in `placer`.
    fn fault(&self, _placer: &str, _kind: &str) {}
    /// A load of `placer` succeeded or failed.
    fn reload(&self, _placer: &str, _ok: bool) {}
}

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
    /// Advances the epoch while guests run (and for a moment after).
    ticker: Ticker,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Shared {
    /// Starts the epoch ticker for `engine`.
    pub(crate) fn new(
        engine: Engine,
        limits: SandboxLimits,
        observer: Arc<dyn PlacerObserver>,
    ) -> std::io::Result<Self> {
        let ticker = Ticker::start(engine.clone())?;
        Ok(Shared { engine, limits, observer, ticker })
    }

    /// Marks a guest call (or instantiation) in progress until the guard drops: the epoch
    /// ticker runs while any is, waking first if it slept.
    pub(crate) fn awake(&self) -> Awake<'_> {
        self.ticker.enter()
    }

    /// True while the ticker sleeps (no guest call for [`IDLE_TICKS`] ticks).
    #[cfg(test)]
    pub(crate) fn ticker_sleeping(&self) -> bool {
        self.ticker.state.parked.load(Ordering::SeqCst)
    }
}

/// Advances the engine's epoch every [`TICK`] on its own thread, against absolute
/// deadlines so sleep overshoot does not accumulate. With no guest call for [`IDLE_TICKS`]
/// ticks it parks, so an idle placerd costs no CPU; the next guest call wakes it. Guests
/// set their deadlines relative to the current epoch, so the pause loses no budget.
struct Ticker {
    state: Arc<TickerState>,
    thread: Option<JoinHandle<()>>,
    /// The ticker thread, to unpark it.
    handle: Thread,
}

/// What guests and the ticker share.
#[derive(Debug, Default)]
struct TickerState {
    stop: AtomicBool,
    /// Guest calls entered (high 32 bits, wrapping) and in progress (low 32 bits): one
    /// atomic add per call and one subtract.
    activity: AtomicU64,
    /// True while the ticker is parked (or about to be).
    parked: AtomicBool,
}

const ENTERED: u64 = 1 << 32;
const RUNNING: u64 = ENTERED - 1;

/// A guest call in progress ([`Shared::awake`]).
pub(crate) struct Awake<'a>(&'a TickerState);

impl Drop for Awake<'_> {
    fn drop(&mut self) {
        self.0.activity.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Ticker {
    fn start(engine: Engine) -> std::io::Result<Self> {
        let state = Arc::new(TickerState::default());
        let shared = state.clone();
        let thread = std::thread::Builder::new().name("placer-epoch".into()).spawn(move || tick(&engine, &shared))?;
        let handle = thread.thread().clone();
        Ok(Ticker { state, thread: Some(thread), handle })
    }

    fn enter(&self) -> Awake<'_> {
        let state = &*self.state;
        state.activity.fetch_add(ENTERED + 1, Ordering::SeqCst);
        // Under load the ticker never parks and this is one relaxed-cost read.
        if state.parked.load(Ordering::SeqCst) && state.parked.swap(false, Ordering::SeqCst) {
            self.handle.unpark();
        }
        Awake(state)
    }
}

/// The ticker thread's loop.
fn tick(engine: &Engine, state: &TickerState) {
    let mut next = Instant::now() + TICK;
    let mut seen = state.activity.load(Ordering::SeqCst);
    let mut idle = 0;
    while !state.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        engine.increment_epoch();
        next += TICK;
        // After a long stall (suspended process), do not fire a burst of ticks.
        let now = Instant::now();
        if now > next + 10 * TICK {
            next = now + TICK;
        }
        let activity = state.activity.load(Ordering::SeqCst);
        if activity != seen || activity & RUNNING != 0 {
            (seen, idle) = (activity, 0);
            continue;
        }
        idle += 1;
        if idle < IDLE_TICKS {
            continue;
        }
        // Park, unless a guest entered meanwhile: it either sees `parked` and unparks us,
        // or we see its entry here (both sides use SeqCst).
        state.parked.store(true, Ordering::SeqCst);
        if state.activity.load(Ordering::SeqCst) != seen {
            state.parked.store(false, Ordering::SeqCst);
            idle = 0;
            continue;
        }
        while state.parked.load(Ordering::SeqCst) && !state.stop.load(Ordering::Relaxed) {
            std::thread::park();
        }
        (seen, idle) = (state.activity.load(Ordering::SeqCst), 0);
        next = Instant::now() + TICK;
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Relaxed);
        self.state.parked.store(false, Ordering::SeqCst);
        self.handle.unpark();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
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
            if shared.ticker_sleeping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn the_ticker_sleeps_when_no_guest_runs_and_wakes_for_the_next() {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).expect("engine");
        let shared = Shared::new(engine, SandboxLimits::default(), Arc::new(NoObserver)).expect("ticker");
        assert!(sleeping_within(&shared, Duration::from_secs(5)), "asleep after 100 idle ticks");
        {
            let _guest = shared.awake();
            assert!(!shared.ticker_sleeping(), "a guest call wakes it");
            // A long guest call keeps it ticking however long it runs.
            std::thread::sleep(Duration::from_millis(300));
            assert!(!shared.ticker_sleeping());
        }
        assert!(sleeping_within(&shared, Duration::from_secs(5)), "asleep again after the call");
    }
}
