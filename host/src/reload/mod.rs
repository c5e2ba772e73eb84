//! The registry of placers and hot reload.
//!
//! Sources: the embedded built-ins, `placers_dir/NAME.wasm` ([`watch_dir`]) and
//! `PUT /admin/placers/{name}`. Every new version is built completely off the request path
//! (compile with a time limit, check the world, instantiate, `configure`, then
//! [`PlacerVersion::check`]: `set-runners` on a synthetic set and sample placements) and
//! only then published with one atomic swap of the name → version map. A failure keeps the
//! running version and is recorded as the name's `last_error`. Calls hold the `Arc` of the
//! version they started with, so a swap never touches an in-flight call.
//!
//! Installs are bounded: one compile per name at a time, at most [`MAX_COMPILES`] at once,
//! and an install given up at its time limit never publishes (the compile it started runs
//! to its end on its blocking thread, then its result is dropped).

mod scan;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::placer::{BUILTINS, LoadError, PlacerRuntime, PlacerSource, PlacerVersion};

pub use scan::watch_dir;

/// Longest a new version may take to compile and validate before it is given up.
pub const VALIDATE_TIME_LIMIT: Duration = Duration::from_secs(10);
/// Most components compiled at once (each compile keeps a core busy).
pub const MAX_COMPILES: usize = 2;

/// What `GET /admin/placers` shows of one placer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PlacerInfo {
    /// Placer name.
    pub name: String,
    /// `builtin`, `file:PATH` or `admin`.
    pub source: String,
    /// Hex SHA-256 of the running component.
    pub sha256: String,
    /// Seconds since the Unix epoch when the running version was loaded.
    pub loaded_at: u64,
    /// Why the latest attempt to replace it failed, if it did.
    pub last_error: Option<String>,
    /// Calls the running version's guest has served (validation samples not counted).
    pub calls: u64,
    /// Of `calls`, those answered with an order the running version gave an earlier call
    /// of the same key, without a guest call (contract 0.4, `by-slot-hash`).
    pub reused_calls: u64,
    /// Faults of the running version on served calls.
    pub faults: u64,
    /// True while the running version is quarantined (calls go to the fallback order).
    pub quarantined: bool,
    /// Average guest time per call of the running version, nanoseconds (a reused order
    /// counts with none).
    pub place_ns_avg: u64,
    /// The contract version the running component implements (`0.4.0`); empty if none.
    pub contract: String,
    /// Instances of the running version retired for fresh ones (`placer_recycle_*`).
    pub recycles: u64,
    /// Of `recycles`, those whose replacement was not ready before the instance ran out
    /// of memory: that call waited for a fresh instance.
    pub late_recycles: u64,
    /// Average time to build a replacement instance off the call path, nanoseconds.
    pub replacement_ns_avg: u64,
    /// The largest linear memory of an instance, bytes.
    pub instance_memory_bytes: usize,
}

/// Name → running version, swapped whole on every change.
pub struct Registry {
    runtime: Arc<PlacerRuntime>,
    /// `[placers.NAME.config]`: what a new version of NAME is configured with. Replaced
    /// by a config reload.
    placer_config: ArcSwap<BTreeMap<String, Vec<(String, String)>>>,
    current: ArcSwap<HashMap<String, Arc<PlacerVersion>>>,
    /// The built-ins with their current configs: what `remove` goes back to.
    builtins: ArcSwap<HashMap<String, Arc<PlacerVersion>>>,
    /// Last failure per name (cleared by a success).
    errors: Mutex<HashMap<String, String>>,
    /// Serialises publishers; readers never take it.
    publish: Mutex<()>,
    /// How long an asynchronous install may take ([`VALIDATE_TIME_LIMIT`]).
    time_limit: Duration,
    /// One install per name at a time: name → its lock.
    installing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Compiles at once.
    compiles: Arc<tokio::sync::Semaphore>,
}

/// Whether an install may still publish: decided once, by the install (when it is done)
/// or by its caller (when the time limit passes), whichever comes first.
#[derive(Debug, Default)]
struct Ticket(AtomicU8);

const PENDING: u8 = 0;
const PUBLISHING: u8 = 1;
const ABANDONED: u8 = 2;

impl Ticket {
    fn claim(&self, to: u8) -> bool {
        self.0.compare_exchange(PENDING, to, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("placers", &self.names()).finish_non_exhaustive()
    }
}

fn source_label(source: &PlacerSource) -> String {
    match source {
        PlacerSource::Builtin => "builtin".into(),
        PlacerSource::File(path) => format!("file:{}", path.display()),
        PlacerSource::Admin => "admin".into(),
    }
}

impl Registry {
    /// Loads and checks the built-ins with their `[placers.NAME.config]`.
    ///
    /// # Errors
    /// A built-in failing to load or check (a build defect, or a bad config for it).
    pub fn new(
        runtime: Arc<PlacerRuntime>,
        placer_config: BTreeMap<String, Vec<(String, String)>>,
    ) -> Result<Self, LoadError> {
        let mut builtins = HashMap::new();
        for (name, bytes) in BUILTINS {
            let config = placer_config.get(*name).cloned().unwrap_or_default();
            let version = runtime.load(name, PlacerSource::Builtin, bytes, config)?;
            version.check()?;
            builtins.insert((*name).to_string(), version);
        }
        Ok(Registry {
            runtime,
            placer_config: ArcSwap::from_pointee(placer_config),
            current: ArcSwap::from_pointee(builtins.clone()),
            builtins: ArcSwap::from_pointee(builtins),
            errors: Mutex::new(HashMap::new()),
            publish: Mutex::new(()),
            time_limit: VALIDATE_TIME_LIMIT,
            installing: Mutex::new(HashMap::new()),
            compiles: Arc::new(tokio::sync::Semaphore::new(MAX_COMPILES)),
        })
    }

    /// The same registry with asynchronous installs given up after `limit`.
    #[must_use]
    pub fn with_time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = limit;
        self
    }

    /// Records why `name` could not be loaded from `source` without trying to build it (a
    /// file too large, or one outside the placers folder).
    pub(crate) fn reject(&self, name: &str, source: &PlacerSource, reason: &str) {
        self.record_failure(name, source, format!("placer `{name}`: {reason}"));
    }

    /// A version of `name` was kept out: counted, logged and, for a file (whose writer
    /// sees no answer), kept as its `last_error`. A failed admin install leaves nothing
    /// behind: its caller got the error in the response.
    fn record_failure(&self, name: &str, source: &PlacerSource, report: String) {
        self.runtime.observer().reload(name, false);
        tracing::warn!(placer = name, source = %source_label(source), error = %report, "placer rejected; keeping the running version");
        if *source == PlacerSource::Admin {
            return;
        }
        if let Ok(mut errors) = self.errors.lock() {
            errors.insert(name.to_string(), report);
        }
    }

    /// The running version of `name`.
    pub fn get(&self, name: &str) -> Option<Arc<PlacerVersion>> {
        self.current.load().get(name).cloned()
    }

    /// Names of the running placers, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.current.load().keys().cloned().collect();
        names.sort();
        names
    }

    /// One [`PlacerInfo`] per running placer, plus names whose only version failed.
    pub fn infos(&self) -> Vec<PlacerInfo> {
        let current = self.current.load();
        let errors = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        let mut infos: Vec<PlacerInfo> = current
            .iter()
            .map(|(name, v)| PlacerInfo {
                name: name.clone(),
                source: source_label(v.source()),
                sha256: v.sha256().to_string(),
                loaded_at: v.loaded_at().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                last_error: errors.get(name).cloned(),
                calls: v.served_calls(),
                reused_calls: v.reused_calls(),
                faults: v.served_faults(),
                quarantined: v.quarantined(),
                place_ns_avg: v.place_nanos_avg(),
                contract: v.contract().version().to_string(),
                recycles: v.recycles(),
                late_recycles: v.late_recycles(),
                replacement_ns_avg: v.replacement_nanos_avg(),
                instance_memory_bytes: v.instance_memory_bytes(),
            })
            .collect();
        for (name, error) in errors.iter().filter(|(name, _)| !current.contains_key(*name)) {
            infos.push(PlacerInfo {
                name: name.clone(),
                source: "none".into(),
                sha256: String::new(),
                loaded_at: 0,
                last_error: Some(error.clone()),
                calls: 0,
                reused_calls: 0,
                faults: 0,
                quarantined: false,
                place_ns_avg: 0,
                contract: String::new(),
                recycles: 0,
                late_recycles: 0,
                replacement_ns_avg: 0,
                instance_memory_bytes: 0,
            });
        }
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        infos
    }

    /// Builds and validates `bytes` as placer `name` (blocking: compiles), then publishes
    /// it. On failure the running version stays and the error is recorded.
    ///
    /// # Errors
    /// The [`LoadError`] that kept the version out.
    pub fn install(&self, name: &str, source: PlacerSource, bytes: &[u8]) -> Result<Arc<PlacerVersion>, LoadError> {
        self.install_once(name, source, bytes, &Ticket::default())
    }

    /// [`Registry::install`] that publishes only if `ticket` was not abandoned meanwhile.
    fn install_once(
        &self,
        name: &str,
        source: PlacerSource,
        bytes: &[u8],
        ticket: &Ticket,
    ) -> Result<Arc<PlacerVersion>, LoadError> {
        let config = self.placer_config.load().get(name).cloned().unwrap_or_default();
        let built = self.runtime.load(name, source.clone(), bytes, config).and_then(|v| v.check().map(|_| v));
        if !ticket.claim(PUBLISHING) {
            tracing::warn!(placer = name, source = %source_label(&source), "placer install finished after its time limit; not published");
            return Err(LoadError::TimedOut { placer: name.into(), limit: self.time_limit });
        }
        match built {
            Ok(version) => {
                self.runtime.observer().reload(name, true);
                self.publish_version(name, Some(version.clone()));
                if let Ok(mut errors) = self.errors.lock() {
                    errors.remove(name);
                }
                tracing::info!(placer = name, source = %source_label(&source), sha256 = &version.sha256()[..12], "placer published");
                Ok(version)
            }
            Err(e) => {
                self.record_failure(name, &source, e.report());
                Err(e)
            }
        }
    }

    /// [`Registry::install`] on blocking threads: first the compile (or its cached code),
    /// which takes as long as it takes (seconds for a 20 MB component, logged), then
    /// instantiation, `configure` and the sample placements, given up after the time limit
    /// ([`VALIDATE_TIME_LIMIT`]); a version given up is never published. Waits first for
    /// an install of the same name and for a compile slot ([`MAX_COMPILES`]).
    ///
    /// # Errors
    /// The [`LoadError`], or [`LoadError::TimedOut`] when the time limit passed.
    pub async fn install_async(
        self: &Arc<Self>,
        name: &str,
        source: PlacerSource,
        bytes: Vec<u8>,
    ) -> Result<Arc<PlacerVersion>, LoadError> {
        let lock = {
            let mut installing = self.installing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            installing.entry(name.to_string()).or_default().clone()
        };
        let same_name = lock.lock_owned().await;
        let Ok(slot) = self.compiles.clone().acquire_owned().await else {
            unreachable!("the compile semaphore is never closed")
        };
        // 1. Compile: no time limit (compiling is not validating).
        let (runtime, owned) = (self.runtime.clone(), name.to_string());
        let compiled = tokio::task::spawn_blocking(move || runtime.precompile(&owned, &bytes).map(|()| bytes)).await;
        let bytes = match compiled {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => {
                self.record_failure(name, &source, e.report());
                return Err(e);
            }
            Err(join) => {
                let reason = format!("compile task failed: {join}");
                return Err(LoadError::Validation { placer: name.into(), reason, fault: None });
            }
        };
        // 2. Validate within the time limit, then publish unless given up.
        let ticket = Arc::new(Ticket::default());
        let (registry, owned, decided) = (self.clone(), name.to_string(), ticket.clone());
        let shown = source.clone();
        // The locks go with the blocking task: a compile given up still holds its name and
        // its slot until it really ends.
        let task = tokio::task::spawn_blocking(move || {
            let result = registry.install_once(&owned, source, &bytes, &decided);
            drop((same_name, slot));
            result
        });
        tokio::pin!(task);
        let finished = match tokio::time::timeout(self.time_limit, &mut task).await {
            Ok(finished) => finished,
            // Too late to give up: it is publishing now.
            Err(_) if !ticket.claim(ABANDONED) => task.await,
            Err(_) => {
                let error = LoadError::TimedOut { placer: name.into(), limit: self.time_limit };
                self.record_failure(name, &shown, error.report());
                return Err(error);
            }
        };
        finished.unwrap_or_else(|join| {
            Err(LoadError::Validation {
                placer: name.into(),
                reason: format!("validation task failed: {join}"),
                fault: None,
            })
        })
    }

    /// Removes the user version of `name`: the built-in of that name takes over again, or
    /// the name disappears (calls routed to it then use the default placer). Returns false
    /// when there was nothing to remove.
    pub fn remove(&self, name: &str) -> bool {
        let running = self.get(name);
        let is_builtin_running = running.as_ref().is_some_and(|v| *v.source() == PlacerSource::Builtin);
        let had_error = self.errors.lock().is_ok_and(|mut errors| errors.remove(name).is_some());
        if running.is_none() || is_builtin_running {
            return had_error;
        }
        let builtins = self.builtins.load();
        self.publish_version(name, builtins.get(name).cloned());
        match builtins.get(name) {
            Some(_) => tracing::info!(placer = name, "placer removed; the built-in of that name is back"),
            None => tracing::warn!(placer = name, "placer removed; routes naming it now use the default placer"),
        }
        true
    }

    /// The config a new version of `name` gets now.
    pub fn config_of(&self, name: &str) -> Vec<(String, String)> {
        self.placer_config.load().get(name).cloned().unwrap_or_default()
    }

    /// The running version of `name` rebuilt with `config` (built-ins from their embedded
    /// bytes, others from their compiled component) and checked, not published: a config
    /// reload builds every changed placer first and publishes only if all of them pass.
    /// `None` when no placer of that name runs.
    ///
    /// # Errors
    /// `configure` rejected `config`, or the new version failed its sample placements.
    pub fn reconfigured(
        &self,
        name: &str,
        config: Vec<(String, String)>,
    ) -> Option<Result<Arc<PlacerVersion>, LoadError>> {
        let running = self.get(name)?;
        Some(running.reconfigured(config).and_then(|v| v.check().map(|_| v)))
    }

    /// Publishes a config reload: the new `[placers.*.config]` tables (for versions loaded
    /// from now on) and the versions built for it by [`Registry::reconfigured`].
    pub fn publish_config(
        &self,
        placer_config: BTreeMap<String, Vec<(String, String)>>,
        versions: Vec<Arc<PlacerVersion>>,
    ) {
        self.placer_config.store(Arc::new(placer_config));
        let mut builtins = HashMap::clone(&self.builtins.load());
        for version in versions {
            if *version.source() == PlacerSource::Builtin {
                builtins.insert(version.name().to_string(), version.clone());
            }
            tracing::info!(placer = version.name(), config = ?version.config(), "placer reconfigured");
            let name = version.name().to_string();
            self.publish_version(&name, Some(version));
        }
        self.builtins.store(Arc::new(builtins));
    }

    fn publish_version(&self, name: &str, version: Option<Arc<PlacerVersion>>) {
        let _guard = self.publish.lock();
        let mut next = HashMap::clone(&self.current.load());
        match version {
            Some(v) => next.insert(name.to_string(), v),
            None => next.remove(name),
        };
        self.current.store(Arc::new(next));
    }
}

/// Whether `name` may name a placer: `[A-Za-z0-9._-]`, 1–64 characters, not starting with
/// a dot (hidden files, Kubernetes' `..data`).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placer::{SandboxLimits, builtin};

    fn registry(limit: Duration) -> Arc<Registry> {
        // A roomy budget: wall-clock, and these run beside other tests.
        let limits = SandboxLimits { budget: Duration::from_secs(1), ..SandboxLimits::default() };
        let runtime = Arc::new(PlacerRuntime::new(limits).expect("runtime"));
        Arc::new(Registry::new(runtime, BTreeMap::new()).expect("built-ins").with_time_limit(limit))
    }

    #[tokio::test]
    async fn an_install_given_up_at_its_time_limit_is_never_published() {
        let r = registry(Duration::from_millis(20));
        // The `loops-forever` fixture spins in `place` until its budget (1 s here) stops it:
        // its first sample placement alone is far past the 20 ms limit, however the
        // threads are scheduled.
        let fixtures = std::path::Path::new(env!("PLACERD_FIXTURES_DIR"));
        let bytes = std::fs::read(fixtures.join("loops-forever.wasm")).expect("fixture");
        let e = r.install_async("late", PlacerSource::Admin, bytes).await.expect_err("too slow to validate");
        assert!(matches!(e, LoadError::TimedOut { .. }), "{e}");
        // The validation ran on; once it is over (the name's lock is free) nothing was
        // published.
        let lock = r.installing.lock().expect("lock").get("late").cloned().expect("entry");
        let _done = lock.lock().await;
        assert!(r.get("late").is_none(), "published after it was given up");
        assert!(e.report().contains("longer than"), "{}", e.report());
        assert!(!r.infos().iter().any(|i| i.name == "late"), "a failed admin install leaves nothing behind");
    }

    #[tokio::test]
    async fn installs_within_the_limit_publish() {
        let r = registry(VALIDATE_TIME_LIMIT);
        let bytes = builtin("naive").expect("embedded").to_vec();
        let (a, b) = tokio::join!(
            r.install_async("mine", PlacerSource::Admin, bytes.clone()),
            r.install_async("mine", PlacerSource::Admin, bytes)
        );
        assert!(a.is_ok() && b.is_ok());
        assert!(r.get("mine").is_some());
    }

    /// Lets the spawned installs run as far as they can.
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn installs_wait_for_one_of_the_same_name_and_for_a_compile_slot() {
        let r = registry(VALIDATE_TIME_LIMIT);
        let bytes = builtin("naive").expect("embedded").to_vec();
        let install = |name: &'static str| {
            let (r, bytes) = (r.clone(), bytes.clone());
            tokio::spawn(async move { r.install_async(name, PlacerSource::Admin, bytes).await })
        };

        // An install of `a` is under way (its lock held): a second `a` waits, `b` does not.
        let lock = r.installing.lock().expect("lock").entry("a".into()).or_default().clone();
        let held = lock.lock_owned().await;
        let (a, b) = (install("a"), install("b"));
        assert!(b.await.expect("task").is_ok());
        settle().await;
        assert!(!a.is_finished() && r.get("a").is_none(), "a second install of a name waits for the first");
        drop(held);
        assert!(a.await.expect("task").is_ok());

        // Both compile slots taken: a third install waits until one frees.
        let slots = r.compiles.clone().acquire_many_owned(MAX_COMPILES as u32).await.expect("slots");
        let c = install("c");
        settle().await;
        assert!(!c.is_finished() && r.get("c").is_none(), "no compile past MAX_COMPILES");
        drop(slots);
        assert!(c.await.expect("task").is_ok());
    }
}
