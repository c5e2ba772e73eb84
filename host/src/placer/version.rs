//! One loaded placer version, its pool of warm instances and the placement call.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use thread_local::ThreadLocal;
use wasmtime::{Store, Trap, UpdateDeadline};

use super::contract::{Contract, Guest, Placed, Pre, slot_hash};
use super::engine::{Awake, GuestTimer, RecycleReason, Shared};
use super::error::{LoadError, PlaceError, printable};
use super::fault::{FaultKind, FaultState, OnFault};
use super::order::{fallback_order, sanitize};
use super::sandbox::{GuestLog, HostState};
use super::{Call, Order, RunnerLoad, RunnerSet};
use crate::throttle::Throttle;

/// "placer fault" lines one version may log every ten seconds (each with the count of
/// those left out); quarantine and the fault metrics count every fault.
const FAULT_LOG_LINES: u32 = 5;

/// Where a placer version came from (shown by the admin API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacerSource {
    /// Embedded in the binary.
    Builtin,
    /// A file in `placers_dir` (or given to `placerd check`).
    File(std::path::PathBuf),
    /// Pushed through `PUT /admin/placers/{name}`.
    Admin,
}

/// Who produced a call's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlacedBy {
    /// The placer component.
    Guest {
        /// Entries the host dropped from the guest's output (out of range, repeated, past
        /// the set size).
        cleaned: usize,
    },
    /// The native naive order, because the placer faulted or is quarantined.
    Fallback(FaultKind),
}

/// A call's order of runners and who produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Indices into the runner set, most preferred first; valid and without repeats.
    pub order: Vec<u32>,
    /// The guest, or the fallback and why.
    pub by: PlacedBy,
}

/// A warm instance: its store, its bindings and the runner generation it has been told.
struct Warm {
    store: Store<HostState>,
    guest: Guest,
    generation: Option<u64>,
    /// The version's [`PlacerVersion::forgets`] when `generation` was told.
    forgets: u64,
    /// Calls placed on it.
    calls: u64,
    /// When it was built.
    born: Instant,
    /// Its memory past which it is retired ([`super::SandboxLimits::recycle_mark`]).
    mark: usize,
    /// Due for retirement, and a replacement asked for: it serves until one is ready.
    replacing: bool,
}

/// A compiled placer with its config: immutable once built. A reload builds a new version
/// and swaps it in; calls keep the `Arc` of the version they started with.
pub struct PlacerVersion {
    /// This version, for the jobs it gives the `placer-recycle` thread.
    me: Weak<PlacerVersion>,
    name: Arc<str>,
    /// `NAME/SHA256-PREFIX`, sent as `Fn-Placer` on every response: built once here.
    label: String,
    source: PlacerSource,
    sha256: String,
    loaded_at: SystemTime,
    config: Vec<(String, String)>,
    pre: Pre,
    /// Engine, limits, deadline watchdog and observer: the runtime's, shared by every version.
    pub(super) shared: Arc<Shared>,
    log: Arc<GuestLog>,
    /// Each placing thread's warm instance, taken and put back without a lock.
    local: ThreadLocal<RefCell<Option<Warm>>>,
    /// Warm instances beyond one per thread (a thread that placed two calls at once, or a
    /// call that moved threads between taking and returning).
    idle: Mutex<Vec<Warm>>,
    /// Bumped by [`PlacerVersion::forget_runners`]: an instance told its runners at an
    /// older count is told again.
    forgets: AtomicU64,
    /// The largest linear memory of an instance when it was last put back, in bytes.
    memory_high: AtomicUsize,
    /// Where the guest time of each `place` call is recorded, if anywhere.
    guest_timer: Option<GuestTimer>,
    faults: Mutex<FaultState>,
    /// True while no fault is on record since the last success: then the version is not
    /// quarantined and a success has nothing to forget, and a call skips the `faults` lock
    /// and its clock read. Cleared under the lock before a fault is recorded.
    fault_free: AtomicBool,
    /// `place` calls so far (the fault rate's denominator). This and the other counters
    /// every call writes keep one copy per worker.
    calls: crate::shard::Counter,
    /// Of `calls`, the validation samples: the rest were served (quarantined calls, which
    /// do not reach the guest, are in neither).
    pub(super) sampled: AtomicU64,
    /// Of `calls`, those answered with an order the guest gave an earlier call of the key
    /// (contract 0.4, `by-slot-hash`).
    reused: crate::shard::Counter,
    /// Guest time of the served calls, nanoseconds: with their number, the average cost
    /// of a call the admin API shows.
    served_nanos: crate::shard::Counter,
    /// Faults of served calls (validation samples not counted).
    served_faults: AtomicU64,
    /// Rate limit of the "placer fault" log lines.
    fault_log: Throttle,
    /// Instances built so far (a trapped instance is replaced, never reused).
    instances_created: AtomicU64,
    /// `set-runners` calls so far: once per instance per runner generation.
    set_runners_calls: AtomicU64,
    /// Instances retired for fresh ones ([`super::Recycle`]).
    recycles: AtomicU64,
    /// Of `recycles`, those whose instance ran out of memory before its replacement was
    /// ready: its call was placed again on a fresh instance built then, on the call path.
    late_recycles: AtomicU64,
    /// Time spent building instances off the call path (replacements, and the warm ones
    /// past the first: instantiate, `configure`, `set-runners`), nanoseconds, and how many
    /// were built.
    replacement_nanos: AtomicU64,
    replacements: AtomicU64,
    /// Set once its calls average [`COSTLY_CALL`] or more: then each call reads its
    /// thread's CPU clock at its start, so an overrun is judged by the CPU time it used
    /// (a system call of a quarter microsecond, a few percent of such a call, and half of
    /// a built-in's call).
    costly: AtomicBool,
}

/// The average guest time per call from which a version's calls read their thread's CPU
/// clock at their start ([`PlacerVersion::costly`]).
const COSTLY_CALL: Duration = Duration::from_micros(4);
/// Served calls before a version is judged costly: its first calls (instances warming,
/// caches cold) cost far more than its usual ones, and would mark a built-in costly.
const COSTLY_AFTER: u64 = 1024;

impl std::fmt::Debug for PlacerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlacerVersion")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// A guest call that faulted: the fault, and the raw cause for logs.
type GuestResult<T> = Result<T, FaultKind>;

impl PlacerVersion {
    pub(crate) fn new(
        name: &str,
        source: PlacerSource,
        sha256: String,
        config: Vec<(String, String)>,
        pre: Pre,
        shared: Arc<Shared>,
    ) -> Arc<Self> {
        let name: Arc<str> = name.into();
        Arc::new_cyclic(|me| PlacerVersion {
            me: me.clone(),
            log: Arc::new(GuestLog::new(name.clone())),
            local: ThreadLocal::new(),
            forgets: AtomicU64::new(0),
            memory_high: AtomicUsize::new(0),
            guest_timer: shared.observer.guest_timer(&name),
            label: format!("{name}/{}", &sha256[..12.min(sha256.len())]),
            name,
            source,
            sha256,
            loaded_at: SystemTime::now(),
            config,
            pre,
            idle: Mutex::new(Vec::new()),
            faults: Mutex::new(FaultState::new(shared.limits.fault_policy)),
            fault_free: AtomicBool::new(true),
            calls: crate::shard::Counter::default(),
            sampled: AtomicU64::new(0),
            reused: crate::shard::Counter::default(),
            served_nanos: crate::shard::Counter::default(),
            served_faults: AtomicU64::new(0),
            fault_log: Throttle::new(FAULT_LOG_LINES, Duration::from_secs(10)),
            instances_created: AtomicU64::new(0),
            set_runners_calls: AtomicU64::new(0),
            recycles: AtomicU64::new(0),
            late_recycles: AtomicU64::new(0),
            replacement_nanos: AtomicU64::new(0),
            replacements: AtomicU64::new(0),
            costly: AtomicBool::new(false),
            shared,
        })
    }

    /// The placer's name (`NAME` of `NAME.wasm`, or the built-in's name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `NAME/SHA256-PREFIX`: which version placed a call.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Where it came from.
    pub fn source(&self) -> &PlacerSource {
        &self.source
    }

    /// The contract the component implements.
    pub fn contract(&self) -> Contract {
        match self.pre {
            Pre::V04 { .. } => Contract::V0_4,
            Pre::V01(_) => Contract::V0_1,
        }
    }

    /// Hex SHA-256 of the component bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// When this version was loaded.
    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }

    /// The `config` table handed to `configure`.
    pub fn config(&self) -> &[(String, String)] {
        &self.config
    }

    /// Instances built so far.
    pub fn instances_created(&self) -> u64 {
        self.instances_created.load(Ordering::Relaxed)
    }

    /// `set-runners` calls made so far.
    pub fn set_runners_calls(&self) -> u64 {
        self.set_runners_calls.load(Ordering::Relaxed)
    }

    /// Instances retired for fresh ones so far ([`super::Recycle`]).
    pub fn recycles(&self) -> u64 {
        self.recycles.load(Ordering::Relaxed)
    }

    /// Of [`PlacerVersion::recycles`], those whose replacement was not ready in time: the
    /// instance ran out of memory first, and its call waited for a fresh instance.
    pub fn late_recycles(&self) -> u64 {
        self.late_recycles.load(Ordering::Relaxed)
    }

    /// Average time to build an instance off the call path (a replacement, or a warm one
    /// past the first: instantiate, `configure`, `set-runners`), nanoseconds (0 before the
    /// first).
    pub fn replacement_nanos_avg(&self) -> u64 {
        self.replacement_nanos
            .load(Ordering::Relaxed)
            .checked_div(self.replacements.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// The largest linear memory (all memories together) of this version's warm
    /// instances, in bytes, as of their last call (a linear memory never shrinks).
    pub fn instance_memory_bytes(&self) -> usize {
        self.memory_high.load(Ordering::Relaxed)
    }

    /// Whether the host reuses this placer's orders for the runner set its instances were
    /// told last (a 0.4 placer that answered `by-slot-hash`); false before any set.
    pub fn reuses_orders(&self) -> bool {
        let Some(warm) = self.check_out() else {
            return false;
        };
        let reuses = warm.guest.reuses_orders();
        self.check_in(warm, None);
        reuses
    }

    /// Calls this version's guest has placed or faulted on since it was loaded
    /// (validation samples and calls placed by the fallback during quarantine not counted).
    pub fn served_calls(&self) -> u64 {
        let sampled = self.sampled.load(Ordering::Relaxed);
        self.calls.get().saturating_sub(sampled)
    }

    /// Calls answered with an order the guest gave an earlier call of the same key, for
    /// the same runner set, without calling it (contract 0.4, `by-slot-hash`).
    pub fn reused_calls(&self) -> u64 {
        self.reused.get()
    }

    /// Faults of the guest on served calls since this version was loaded.
    pub fn served_faults(&self) -> u64 {
        self.served_faults.load(Ordering::Relaxed)
    }

    /// Average guest time per served call, nanoseconds (0 before the first): what the
    /// placer costs a call. A call answered with a reused order
    /// ([`PlacerVersion::reused_calls`]) counts with no guest time.
    pub fn place_nanos_avg(&self) -> u64 {
        self.served_nanos.get().checked_div(self.served_calls()).unwrap_or(0)
    }

    /// True while this version is quarantined after repeated faults.
    pub fn quarantined(&self) -> bool {
        !self.fault_free.load(Ordering::Acquire) && self.faults.lock().is_ok_and(|f| f.quarantined(Instant::now()))
    }

    /// The same component with `config`: a new version, built and warmed as a load is
    /// (no compile), for a reload that changes `[placers.NAME.config]`. Run
    /// [`PlacerVersion::check`] on it before publishing it.
    ///
    /// # Errors
    /// `configure` rejected `config`, or the first instance faulted.
    pub fn reconfigured(&self, config: Vec<(String, String)>) -> Result<Arc<PlacerVersion>, LoadError> {
        let version = PlacerVersion::new(
            &self.name,
            self.source.clone(),
            self.sha256.clone(),
            config,
            self.pre.clone(),
            self.shared.clone(),
        );
        version.warm_up()?;
        Ok(version)
    }

    /// Builds the first instance (running `configure`) and keeps it warm in the shared
    /// pool: the loading thread is seldom one that places. The other `warm_instances` are
    /// built after, off the loading thread.
    pub(crate) fn warm_up(&self) -> Result<(), LoadError> {
        let warm = self.instantiate().map_err(|fault| match fault {
            FaultKind::Configure(message) => LoadError::Configure { placer: self.name.to_string(), message },
            fault => LoadError::Instantiate { placer: self.name.to_string(), fault },
        })?;
        self.pool(warm);
        for _ in 1..self.shared.limits.warm_instances.min(self.shared.limits.max_idle_instances) {
            self.build_spare(None);
        }
        Ok(())
    }

    /// Moves this thread's warm instance to the shared pool, for a thread that placed
    /// once (a check) and will not place again.
    pub(crate) fn release_local(&self) {
        if let Some(warm) = self.take_local() {
            self.pool(warm);
        }
    }

    /// This thread's warm instance, if it has one and is not using it.
    fn take_local(&self) -> Option<Warm> {
        self.local.get()?.try_borrow_mut().ok()?.take()
    }

    /// Orders `set`'s runners for `call`, given one [`RunnerLoad`] per runner.
    ///
    /// Runs the guest under the sandbox limits and cleans its output. When the guest
    /// faults or the version is quarantined, the order is the native naive order
    /// ([`PlacedBy::Fallback`]), unless `on_placer_fault = "reject"`.
    ///
    /// # Errors
    /// [`PlaceError::Rejected`] when the placer faulted and the policy is reject.
    pub fn place(&self, call: &Call, set: &RunnerSet, loads: &[RunnerLoad]) -> Result<Placement, PlaceError> {
        debug_assert_eq!(set.len(), loads.len(), "one load per runner");
        let fault = if self.quarantined() {
            self.shared.observer.fault(&self.name, FaultKind::Quarantined.as_str());
            FaultKind::Quarantined
        } else {
            let started = Instant::now();
            let placed = self.place_raw(call, set, loads, started);
            // A reused order did not enter the guest: the guest's time is of guest calls.
            if !placed.as_ref().is_ok_and(|p| p.reused) {
                let elapsed = started.elapsed();
                if let Some(timer) = &self.guest_timer {
                    timer(elapsed.as_secs_f64());
                }
                self.served_nanos.add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
                if elapsed >= COSTLY_CALL && !self.costly.load(Ordering::Relaxed) && self.served_calls() >= COSTLY_AFTER
                {
                    let average = Duration::from_nanos(self.place_nanos_avg());
                    self.costly.store(average >= COSTLY_CALL, Ordering::Relaxed);
                }
            }
            match placed {
                Ok(Placed { mut order, clean, .. }) => {
                    let cleaned = if clean { 0 } else { sanitize(&mut order, set.len()) };
                    if cleaned > 0 {
                        tracing::debug!(placer = &*self.name, cleaned, "dropped invalid indices from a placer's order");
                    }
                    return Ok(Placement { order, by: PlacedBy::Guest { cleaned } });
                }
                Err(kind) => {
                    self.served_faults.fetch_add(1, Ordering::Relaxed);
                    kind
                }
            }
        };
        match self.shared.limits.on_fault {
            OnFault::Fallback => {
                Ok(Placement { order: fallback_order(call.seq, loads), by: PlacedBy::Fallback(fault) })
            }
            OnFault::Reject => Err(PlaceError::Rejected { placer: self.name.to_string(), kind: fault }),
        }
    }

    /// One guest `place` call on a pooled instance, uncleaned. Records success or fault
    /// for quarantine. Used by [`PlacerVersion::place`] and by validation, which needs
    /// to see the raw order. `now` is the time of the call's start.
    pub(crate) fn place_raw(
        &self,
        call: &Call,
        set: &RunnerSet,
        loads: &[RunnerLoad],
        now: Instant,
    ) -> GuestResult<Placed> {
        self.calls.inc();
        let result = self.try_place(call, set, loads, now);
        if result.is_ok() && self.fault_free.load(Ordering::Acquire) {
            return result;
        }
        if let Ok(mut faults) = self.faults.lock() {
            match &result {
                Ok(_) => {
                    faults.record_success();
                    self.fault_free.store(true, Ordering::Release);
                }
                Err(kind) => {
                    self.fault_free.store(false, Ordering::Release);
                    let name = &*self.name;
                    self.shared.observer.fault(name, kind.as_str());
                    if let Some(dropped) = self.fault_log.admit() {
                        tracing::warn!(placer = name, fault = %kind, call_id = %call.id, dropped, "placer fault");
                    }
                    if let Some(period) = faults.record_fault(Instant::now(), self.calls.get()) {
                        tracing::error!(
                            placer = name,
                            seconds = period.as_secs_f64(),
                            "placer quarantined after repeated faults or a high fault rate"
                        );
                    }
                }
            }
        }
        result
    }

    fn try_place(&self, call: &Call, set: &RunnerSet, loads: &[RunnerLoad], mut now: Instant) -> GuestResult<Placed> {
        let mut warm = match self.check_out() {
            Some(warm) => warm,
            None => {
                let warm = self.instantiate()?;
                now = Instant::now();
                warm
            }
        };
        let forgets = self.forgets.load(Ordering::Relaxed);
        let told = warm.generation == Some(set.generation) && warm.forgets == forgets;
        let hash = slot_hash(&call.slot_key);
        if told && let Some(placed) = warm.guest.reused(hash, loads) {
            // An order the guest gave for this key and set: no guest call, so no deadline
            // to arm and nothing for the watchdog to watch.
            self.reused.inc();
            self.check_in(warm, Some(set));
            return Ok(placed);
        }
        let awake = self.shared.awake();
        if !told {
            self.tell(&mut warm, set, forgets, &awake, now)?;
            now = Instant::now();
        }
        arm(&mut warm.store, &awake, now, self.shared.limits.place_time(), self.costly.load(Ordering::Relaxed));
        warm.store.data().seed(call.random);
        // On error the instance is dropped here, never returned to the pool.
        let order = match warm.guest.place(&mut warm.store, call, hash, loads) {
            Ok(order) => order,
            Err(e) => {
                let kind = classify(&warm.store, &e);
                let recycling = self.shared.limits.recycle.memory_percent < 100;
                if kind != FaultKind::MemoryCap || !recycling || (warm.calls == 0 && !warm.replacing) {
                    return Err(kind);
                }
                // Garbage of earlier calls, maybe, not this call's need: the instance ran
                // out before its replacement was ready (past its recycle mark, or grown
                // past the mark and the cap in one step). The call is placed again on a
                // fresh instance, built now if no spare is ready; if it runs out there too,
                // that is this call's fault.
                drop(awake);
                return self.place_on_fresh(call, set, loads);
            }
        };
        warm.calls += 1;
        self.check_in(warm, Some(set));
        Ok(order)
    }

    /// Places `call` on a fresh instance, in place of one retired late (it ran out of
    /// memory after serving calls).
    fn place_on_fresh(&self, call: &Call, set: &RunnerSet, loads: &[RunnerLoad]) -> GuestResult<Placed> {
        self.retired(RecycleReason::Memory);
        self.late_recycles.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(placer = &*self.name, "instance ran out of memory before its replacement was ready");
        let mut warm = match self.take_spare() {
            Some(warm) => warm,
            None => self.instantiate()?,
        };
        let forgets = self.forgets.load(Ordering::Relaxed);
        let awake = self.shared.awake();
        let now = Instant::now();
        if warm.generation != Some(set.generation) || warm.forgets != forgets {
            self.tell(&mut warm, set, forgets, &awake, now)?;
        }
        arm(&mut warm.store, &awake, Instant::now(), self.shared.limits.place_time(), true);
        warm.store.data().seed(call.random);
        let order = warm
            .guest
            .place(&mut warm.store, call, slot_hash(&call.slot_key), loads)
            .map_err(|e| classify(&warm.store, &e))?;
        warm.calls += 1;
        self.check_in(warm, Some(set));
        Ok(order)
    }

    /// Tells `warm` the runner set `set` (`set-runners`), as of `forgets`.
    fn tell(&self, warm: &mut Warm, set: &RunnerSet, forgets: u64, awake: &Awake<'_>, now: Instant) -> GuestResult<()> {
        arm(&mut warm.store, awake, now, self.shared.limits.set_runners_time(), true);
        warm.store.data().seed(set.generation);
        let told = warm.guest.set_runners(&mut warm.store, set.generation, &set.runners);
        self.set_runners_calls.fetch_add(1, Ordering::Relaxed);
        told.map_err(|e| classify(&warm.store, &e))?;
        (warm.generation, warm.forgets) = (Some(set.generation), forgets);
        Ok(())
    }

    /// A warm instance: this thread's, else one from the shared pool.
    fn check_out(&self) -> Option<Warm> {
        self.take_local().or_else(|| self.idle.lock().ok().and_then(|mut idle| idle.pop()))
    }

    /// An instance from the shared pool that is not due for retirement (one that is goes
    /// now).
    fn take_spare(&self) -> Option<Warm> {
        loop {
            let warm = self.idle.lock().ok()?.pop()?;
            match self.due(&warm) {
                None => return Some(warm),
                Some(reason) => self.retire(warm, reason),
            }
        }
    }

    /// Makes every idle instance forget the runner set it was told: a check's synthetic
    /// sets use small generation numbers that the real pool's may repeat, so after a check
    /// the first real call must tell each instance the real set.
    pub(crate) fn forget_runners(&self) {
        self.forgets.fetch_add(1, Ordering::Relaxed);
    }

    /// Puts `warm` back: in this thread's slot if it is empty, else in the shared pool
    /// while it holds fewer than `max_idle_instances`. An instance due for retirement is
    /// swapped for a spare if one is ready (and another spare is built), and otherwise
    /// asks for one (built and told `set`) and serves until it is: after a version's first
    /// recycle a spare waits in the pool, so an instance is retired at its mark.
    fn check_in(&self, mut warm: Warm, set: Option<&RunnerSet>) {
        let used = warm.store.data().limiter.used();
        if used > self.memory_high.load(Ordering::Relaxed) {
            self.memory_high.fetch_max(used, Ordering::Relaxed);
        }
        if let Some(reason) = self.due(&warm) {
            match self.take_spare() {
                Some(spare) => {
                    self.retire(warm, reason);
                    warm = spare;
                    // Another spare, so the next instance due is swapped at once too.
                    self.build_spare(set);
                }
                None if !warm.replacing => {
                    warm.replacing = true;
                    self.build_spare(set);
                }
                None => {}
            }
        }
        let warm = match self.local.get_or_default().try_borrow_mut() {
            Ok(mut slot) if slot.is_none() => {
                *slot = Some(warm);
                return;
            }
            _ => warm,
        };
        self.pool(warm);
    }

    /// Why `warm` should be retired, if it should.
    fn due(&self, warm: &Warm) -> Option<RecycleReason> {
        let recycle = &self.shared.limits.recycle;
        if warm.store.data().limiter.used() > warm.mark {
            Some(RecycleReason::Memory)
        } else if recycle.calls > 0 && warm.calls >= recycle.calls {
            Some(RecycleReason::Calls)
        } else if recycle.age.is_some_and(|age| warm.born.elapsed() >= age) {
            Some(RecycleReason::Age)
        } else {
            None
        }
    }

    /// Retires `warm`: counted, and dropped off the call path (a language runtime's store
    /// holds megabytes to unmap).
    fn retire(&self, warm: Warm, reason: RecycleReason) {
        self.retired(reason);
        self.shared.background(Box::new(move || drop(warm)));
    }

    /// Counts an instance retired for `reason`.
    fn retired(&self, reason: RecycleReason) {
        self.recycles.fetch_add(1, Ordering::Relaxed);
        self.shared.observer.recycled(&self.name, reason);
    }

    /// Builds a fresh instance into the shared pool on the `placer-recycle` thread, told
    /// `set` when given, so the call that takes it does not wait for either.
    fn build_spare(&self, set: Option<&RunnerSet>) {
        let Some(version) = self.me.upgrade() else {
            return;
        };
        let set = set.cloned();
        self.shared.background(Box::new(move || {
            // A version no longer published (swapped out, its last calls done) needs none.
            if Arc::strong_count(&version) == 1 {
                return;
            }
            let started = Instant::now();
            let built = version.instantiate().and_then(|mut warm| {
                if let Some(set) = &set {
                    let forgets = version.forgets.load(Ordering::Relaxed);
                    let awake = version.shared.awake();
                    version.tell(&mut warm, set, forgets, &awake, Instant::now())?;
                }
                Ok(warm)
            });
            match built {
                Ok(warm) => {
                    let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    version.replacement_nanos.fetch_add(took, Ordering::Relaxed);
                    version.replacements.fetch_add(1, Ordering::Relaxed);
                    version.pool(warm);
                }
                Err(fault) => {
                    // The instance due for retirement keeps serving; the next call asks again.
                    tracing::warn!(placer = &*version.name, %fault, "could not build a replacement placer instance");
                }
            }
        }));
    }

    /// Puts `warm` in the shared pool while it holds fewer than `max_idle_instances`.
    fn pool(&self, warm: Warm) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.shared.limits.max_idle_instances
        {
            idle.push(warm);
        }
    }

    /// A fresh instance: new store with the memory limiter, instantiate and `configure`,
    /// together under the instantiation budget.
    fn instantiate(&self) -> GuestResult<Warm> {
        let awake = self.shared.awake();
        let mut store =
            Store::new(&self.shared.engine, HostState::new(self.shared.limits.memory_limit_bytes, self.log.clone()));
        store.limiter(|state| &mut state.limiter);
        // The watchdog advances the epoch when some call is past its deadline, or at most
        // once per budget: each store stops only if its own call is past its own, and its
        // thread spent that time on the CPU (`HostState::overran`).
        let budget = self.shared.limits.budget;
        store.epoch_deadline_callback(move |mut store| {
            let now = Instant::now();
            let state = store.data_mut();
            Ok(if now >= state.deadline && state.overran(now, budget) {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Continue(1)
            })
        });
        // Set before instantiating: the epoch has long advanced past the default deadline.
        arm(&mut store, &awake, Instant::now(), self.shared.limits.instantiate_time(), true);
        self.instances_created.fetch_add(1, Ordering::Relaxed);
        let guest = self.pre.instantiate(&mut store).map_err(|e| match classify(&store, &e) {
            FaultKind::Trap(msg) => FaultKind::Instantiate(msg),
            kind => kind,
        })?;
        match guest.configure(&mut store, &self.config) {
            Ok(Ok(())) => {
                let mark = self.shared.limits.recycle_mark(store.data().limiter.used());
                Ok(Warm {
                    store,
                    guest,
                    generation: None,
                    forgets: 0,
                    calls: 0,
                    born: Instant::now(),
                    mark,
                    replacing: false,
                })
            }
            Ok(Err(message)) => Err(FaultKind::Configure(printable(&message, MAX_GUEST_TEXT).into_owned())),
            Err(e) => Err(classify(&store, &e)),
        }
    }
}

/// Gives the guest call about to run on `store`, starting at `start`, `phase` of wall time
/// (more if its thread is preempted, at most ten times that: [`HostState::overran`]): its
/// store stops it at the first epoch change past that, and the watchdog wakes then to make
/// one. `exact`: read the thread's CPU clock now, to judge an overrun by the CPU time used
/// (for calls costly enough that a system call does not matter).
fn arm(store: &mut Store<HostState>, awake: &Awake<'_>, start: Instant, phase: Duration, exact: bool) {
    let deadline = start + phase;
    store.data_mut().arm(start, deadline, deadline + phase * 9, exact);
    store.set_epoch_deadline(1);
    awake.until(deadline);
}

/// The longest `configure` error or trap text a fault keeps (it names guest functions).
const MAX_GUEST_TEXT: usize = 2048;

/// Names a guest error: timeout, memory cap, or another trap with its message.
fn classify(store: &Store<HostState>, e: &wasmtime::Error) -> FaultKind {
    if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        FaultKind::Timeout
    } else if store.data().limiter.refused {
        FaultKind::MemoryCap
    } else {
        FaultKind::Trap(printable(&format!("{e:#}"), MAX_GUEST_TEXT).into_owned())
    }
}

/// A placer version orders calls through its guest (with the fallback on faults).
impl Order for PlacerVersion {
    fn order(&self, call: &Call, set: &RunnerSet, loads: &[RunnerLoad]) -> Result<Vec<u32>, PlaceError> {
        self.place(call, set, loads).map(|p| p.order)
    }
}
