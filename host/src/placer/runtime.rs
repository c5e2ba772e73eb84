//! The placer runtime: the engine and linker, and loading a component into a
//! [`PlacerVersion`].

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, types::ComponentItem};
use wasmtime::{Config, Engine};

use super::cache::DiskCache;
use super::contract::{Contract, Pre, v01, v04};
use super::engine::{NoObserver, PlacerObserver, SandboxLimits, Shared, hex};
use super::error::{LoadError, what_is};
use super::sandbox::HostState;
use super::version::{PlacerSource, PlacerVersion};

/// Exports a component must have to be a placer.
const REQUIRED_EXPORTS: [&str; 3] = ["configure", "set-runners", "place"];
/// Largest component placerd will compile.
pub const MAX_COMPONENT_BYTES: usize = 32 << 20;
/// Compiled components kept by content hash, so swapping back to a recent version (a
/// rollback, or a ConfigMap flipping between two files) skips Cranelift.
const COMPILED_CACHE: usize = 8;
/// A compile longer than this is logged at info: the operator sees why start-up waits.
const SLOW_COMPILE: Duration = Duration::from_secs(1);
/// A component at least this large is announced before it is compiled (a Python or
/// JavaScript runtime: seconds of Cranelift).
const LARGE_COMPONENT: usize = 4 << 20;

/// One wasmtime engine, its linker and the deadline watchdog. Cheap to share behind an `Arc`;
/// every placer version loaded from it shares the compiled-code machinery.
pub struct PlacerRuntime {
    linker: Linker<HostState>,
    /// Engine, limits, watchdog and observer, shared with every loaded version: the epoch
    /// thread runs while any of them lives.
    shared: Arc<Shared>,
    /// The last [`COMPILED_CACHE`] compiled components by SHA-256, most recent last.
    compiled: std::sync::Mutex<Vec<(String, Component)>>,
    /// Compiled components on disk (`cache_dir`), if enabled.
    disk: Option<DiskCache>,
}

impl std::fmt::Debug for PlacerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlacerRuntime").field("limits", &self.shared.limits).finish_non_exhaustive()
    }
}

impl PlacerRuntime {
    /// Builds the engine and linker and starts the deadline watchdog thread (stopped when
    /// the runtime is dropped).
    ///
    /// # Errors
    /// [`LoadError::Engine`] if wasmtime rejects the configuration or the linker.
    pub fn new(limits: SandboxLimits) -> Result<Self, LoadError> {
        Self::with_observer(limits, Arc::new(NoObserver))
    }

    /// [`PlacerRuntime::new`], reporting guest timings, faults and loads to `observer`
    /// (metrics).
    ///
    /// # Errors
    /// [`LoadError::Engine`] if wasmtime rejects the configuration or the linker,
    /// [`LoadError::Ticker`] if the watchdog thread cannot start.
    pub fn with_observer(limits: SandboxLimits, observer: Arc<dyn PlacerObserver>) -> Result<Self, LoadError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // Traps are expected (hostile or buggy placers) and only their message is logged;
        // capturing a wasm backtrace would make each one slower and the message noisier.
        config.wasm_backtrace_max_frames(None);
        let engine = Engine::new(&config).map_err(LoadError::Engine)?;
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(LoadError::Engine)?;
        super::sandbox::replace_blocking_wasi(&mut linker).map_err(LoadError::Engine)?;
        v04::Placer::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |state| state)
            .map_err(LoadError::Engine)?;
        // 0.1 components import the same `log`: its definition replaces 0.4's and behaves
        // the same.
        linker.allow_shadowing(true);
        v01::Placer::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |state| state)
            .map_err(LoadError::Engine)?;
        linker.allow_shadowing(false);
        let shared = Shared::new(engine, limits, observer).map_err(LoadError::Ticker)?;
        Ok(PlacerRuntime { linker, shared: Arc::new(shared), compiled: std::sync::Mutex::new(Vec::new()), disk: None })
    }

    /// Keeps compiled components in `dir` too (`cache_dir`), so a restart skips Cranelift.
    ///
    /// # Errors
    /// The folder cannot be created, or others could write it (compiled code there runs in
    /// placerd).
    pub fn set_cache_dir(&mut self, dir: &Path) -> std::io::Result<()> {
        self.disk = Some(DiskCache::open(dir, &self.shared.engine)?);
        Ok(())
    }

    /// Compiles `bytes` as placer `name` (or finds its compiled code in memory or in
    /// `cache_dir`), so a [`PlacerRuntime::load`] that follows does not compile. Compiling
    /// a 20 MB component takes seconds; it is logged when it takes over a second.
    ///
    /// # Errors
    /// [`LoadError::TooLarge`], or [`LoadError::Compile`] when the bytes are not a
    /// component.
    pub fn precompile(&self, name: &str, bytes: &[u8]) -> Result<(), LoadError> {
        let placer = name.to_string();
        if bytes.len() > MAX_COMPONENT_BYTES {
            return Err(LoadError::TooLarge { placer, size: bytes.len(), limit: MAX_COMPONENT_BYTES });
        }
        self.component(&placer, &hex(&Sha256::digest(bytes)), bytes).map(drop)
    }

    /// The compiled component of `bytes` (content hash `sha256`): from memory, from disk,
    /// or compiled now (and then kept in both).
    fn component(&self, placer: &str, sha256: &str, bytes: &[u8]) -> Result<Component, LoadError> {
        if let Some(component) = self.cached(sha256) {
            return Ok(component);
        }
        let started = Instant::now();
        if let Some(component) = self.disk.as_ref().and_then(|d| d.get(&self.shared.engine, sha256)) {
            tracing::debug!(
                placer,
                sha256 = &sha256[..12],
                ms = started.elapsed().as_millis() as u64,
                "compiled placer read from cache_dir"
            );
            self.remember(sha256, &component);
            return Ok(component);
        }
        if bytes.len() >= LARGE_COMPONENT {
            // Seconds of Cranelift ahead: say so before, not only after.
            tracing::info!(
                placer,
                sha256 = &sha256[..12],
                bytes = bytes.len(),
                "compiling a large placer (this takes seconds; cache_dir keeps the result)"
            );
        }
        let component = Component::new(&self.shared.engine, bytes).map_err(|source| LoadError::Compile {
            placer: placer.to_string(),
            hint: what_is(bytes),
            source,
        })?;
        let took = started.elapsed();
        if took >= SLOW_COMPILE {
            tracing::info!(
                placer,
                sha256 = &sha256[..12],
                bytes = bytes.len(),
                seconds = took.as_secs_f64(),
                cached = self.disk.is_some(),
                "compiled a large placer"
            );
        }
        if let Some(disk) = &self.disk {
            disk.put(sha256, &component);
        }
        self.remember(sha256, &component);
        Ok(component)
    }

    /// Where timings, faults and loads are reported.
    pub fn observer(&self) -> &Arc<dyn PlacerObserver> {
        &self.shared.observer
    }

    /// The limits every version loaded from this runtime runs under.
    pub fn limits(&self) -> &SandboxLimits {
        &self.shared.limits
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
            return Err(LoadError::TooLarge { placer, size: bytes.len(), limit: MAX_COMPONENT_BYTES });
        }
        let sha256 = hex(&Sha256::digest(bytes));
        let started = Instant::now();
        let component = self.component(&placer, &sha256, bytes)?;
        self.check_exports(&placer, &component)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|source| LoadError::Imports { placer: placer.clone(), source })?;
        let contract =
            Contract::of(&component).map_err(|detail| LoadError::WrongWorld { placer: placer.clone(), detail })?;
        let pre = Pre::new(instance_pre, contract).map_err(|source| LoadError::WrongTypes {
            placer: placer.clone(),
            contract,
            source,
        })?;
        tracing::debug!(
            placer = name,
            sha256 = &sha256[..12],
            contract = contract.version(),
            ms = started.elapsed().as_millis() as u64,
            "loaded placer (compiled code from memory, cache_dir or Cranelift)"
        );
        let version = PlacerVersion::new(name, source, sha256, config, pre, self.shared.clone());
        version.warm_up()?;
        Ok(version)
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
            .exports(&self.shared.engine)
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
