//! The engine every placer shares, and loading a component into a [`PlacerVersion`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, types::ComponentItem};
use wasmtime::{Config, Engine};

use super::bindings::{Placer, PlacerPre};
use super::error::LoadError;
use super::fault::{FaultPolicy, OnFault};
use super::sandbox::HostState;
use super::version::{PlacerSource, PlacerVersion};

/// The epoch ticker's period: budgets are counted in these ticks.
const TICK: Duration = Duration::from_millis(1);
/// Exports a component must have to be a placer.
const REQUIRED_EXPORTS: [&str; 3] = ["configure", "set-runners", "place"];
/// Largest component placerd will compile.
pub(crate) const MAX_COMPONENT_BYTES: usize = 32 << 20;
/// Compiled components kept by content hash, so swapping back to a recent version (a
/// rollback, or a ConfigMap flipping between two files) skips Cranelift.
const COMPILED_CACHE: usize = 8;

/// Limits and fault handling applied to every placer call (DESIGN §5, §8).
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
struct NoObserver;

impl PlacerObserver for NoObserver {}

/// One wasmtime engine, its linker and the epoch ticker. Cheap to share behind an `Arc`;
/// every placer version loaded from it shares the compiled-code machinery.
pub struct PlacerRuntime {
    engine: Engine,
    linker: Linker<HostState>,
    limits: SandboxLimits,
    /// Shared with every loaded version: the epoch thread runs while any of them lives.
    ticker: Arc<Ticker>,
    /// The last [`COMPILED_CACHE`] compiled components by SHA-256, most recent last.
    compiled: std::sync::Mutex<Vec<(String, Component)>>,
    /// Where guest timings and faults are reported.
    observer: Arc<dyn PlacerObserver>,
}

impl std::fmt::Debug for PlacerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlacerRuntime").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl PlacerRuntime {
    /// Builds the engine and linker and starts the 1 ms epoch ticker thread (stopped when
    /// the runtime is dropped).
    ///
    /// # Errors
    /// [`LoadError::Engine`] if wasmtime rejects the configuration or the linker.
    pub fn new(limits: SandboxLimits) -> Result<Self, LoadError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // Traps are expected (hostile or buggy placers) and only their message is logged;
        // capturing a wasm backtrace would make each one slower and the message noisier.
        config.wasm_backtrace_max_frames(None);
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        super::sandbox::replace_blocking_wasi(&mut linker).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        Placer::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        let ticker = Ticker::start(engine.clone())
            .map_err(|e| LoadError::Engine(format!("cannot start the epoch ticker thread: {e}")))?;
        Ok(PlacerRuntime {
            engine,
            linker,
            limits,
            ticker: Arc::new(ticker),
            compiled: std::sync::Mutex::new(Vec::new()),
            observer: Arc::new(NoObserver),
        })
    }

    /// Reports guest timings, faults and loads to `observer` (metrics).
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn PlacerObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// Where timings, faults and loads are reported.
    pub fn observer(&self) -> &Arc<dyn PlacerObserver> {
        &self.observer
    }

    /// The limits every version loaded from this runtime runs under.
    pub fn limits(&self) -> &SandboxLimits {
        &self.limits
    }

    /// Compiles `bytes` as placer `name`, checks it implements the placer world and imports
    /// nothing placerd does not provide, then builds one instance and runs `configure` with
    /// `config`. The instance is kept warm in the new version's pool.
    ///
    /// This does not run sample placements; [`PlacerVersion::check`] does, and the reload
    /// path runs both before publishing a version.
    ///
    /// # Errors
    /// [`LoadError`] naming the placer: not a component, wrong world, unknown imports,
    /// `configure` error, or a fault while instantiating.
    pub fn load(
        &self,
        name: &str,
        source: PlacerSource,
        bytes: &[u8],
        config: Vec<(String, String)>,
    ) -> Result<Arc<PlacerVersion>, LoadError> {
        let placer = name.to_string();
        if bytes.len() > MAX_COMPONENT_BYTES {
            return Err(LoadError::Compile {
                placer,
                reason: format!("{} bytes is over the {MAX_COMPONENT_BYTES}-byte limit", bytes.len()),
            });
        }
        let sha256 = hex(&Sha256::digest(bytes));
        let started = Instant::now();
        let component = match self.cached(&sha256) {
            Some(component) => component,
            None => {
                let component = Component::new(&self.engine, bytes)
                    .map_err(|e| LoadError::Compile { placer: placer.clone(), reason: root_cause(&e) })?;
                self.remember(&sha256, &component);
                component
            }
        };
        self.check_exports(&placer, &component)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Imports { placer: placer.clone(), reason: root_cause(&e) })?;
        let pre = PlacerPre::new(instance_pre)
            .map_err(|e| LoadError::WrongWorld { placer: placer.clone(), detail: root_cause(&e) })?;
        tracing::debug!(
            placer = name,
            sha256 = &sha256[..12],
            compile_ms = started.elapsed().as_millis() as u64,
            "compiled placer"
        );
        let version = PlacerVersion::new(
            name,
            source,
            sha256,
            config,
            pre,
            self.engine.clone(),
            self.limits,
            self.ticker.clone(),
            self.observer.clone(),
        );
        version.warm_up()?;
        Ok(Arc::new(version))
    }

    fn cached(&self, sha256: &str) -> Option<Component> {
        let mut compiled = self.compiled.lock().ok()?;
        let i = compiled.iter().position(|(sha, _)| sha == sha256)?;
        let entry = compiled.remove(i);
        let component = entry.1.clone();
        compiled.push(entry);
        Some(component)
    }

    fn remember(&self, sha256: &str, component: &Component) {
        if let Ok(mut compiled) = self.compiled.lock() {
            if compiled.len() >= COMPILED_CACHE {
                compiled.remove(0);
            }
            compiled.push((sha256.to_string(), component.clone()));
        }
    }

    /// Names every required export the component lacks, so a user sees what to add.
    fn check_exports(&self, placer: &str, component: &Component) -> Result<(), LoadError> {
        let ty = component.component_type();
        let exports: Vec<(&str, bool)> = ty
            .exports(&self.engine)
            .map(|(name, item)| (name, matches!(item.ty, ComponentItem::ComponentFunc(_))))
            .collect();
        let missing: Vec<String> = REQUIRED_EXPORTS
            .iter()
            .filter(|required| !exports.iter().any(|(name, is_func)| name == *required && *is_func))
            .map(|name| format!("`{name}`"))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let found: Vec<&str> = exports.iter().map(|(name, _)| *name).collect();
        Err(LoadError::WrongWorld {
            placer: placer.to_string(),
            detail: format!(
                "missing export function {} (it exports: {})",
                missing.join(", "),
                if found.is_empty() { "nothing".into() } else { found.join(", ") }
            ),
        })
    }
}

/// The innermost message of a wasmtime error chain, plus its context, on one line.
pub(crate) fn root_cause(e: &wasmtime::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Advances the engine's epoch every [`TICK`] on its own thread, against absolute
/// deadlines so sleep overshoot does not accumulate.
pub(crate) struct Ticker {
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
