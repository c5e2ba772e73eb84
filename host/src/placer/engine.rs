//! What every placer version shares: the wasmtime engine, the limits, the epoch ticker and
//! the observer. Built once by [`super::PlacerRuntime`] and held by each version.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::Engine;

use super::fault::{FaultPolicy, OnFault};

/// The epoch ticker's period: budgets are counted in these ticks.
const TICK: Duration = Duration::from_millis(1);

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

    /// Epoch ticks for instantiation, `configure` and `set-runners`, which do more work
    /// once per instance or per membership change: ten budgets.
    pub(crate) fn setup_ticks(&self) -> u64 {
        ticks(self.budget) * 10 + 1
    }
}

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
    /// Advances the epoch while any version (and so this state) lives.
    _ticker: Ticker,
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
        Ok(Shared { engine, limits, observer, _ticker: ticker })
    }
}

/// Advances the engine's epoch every [`TICK`] on its own thread, against absolute
/// deadlines so sleep overshoot does not accumulate.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name("placer-epoch".into()).spawn(move || {
            let mut next = Instant::now() + TICK;
            while !flag.load(Ordering::Relaxed) {
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
            }
        })?;
        Ok(Ticker { stop, thread: Some(thread) })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
