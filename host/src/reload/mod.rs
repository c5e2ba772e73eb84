//! The registry of placers and hot reload.
//!
//! Sources: the embedded built-ins, `placers_dir/NAME.wasm` ([`watch_dir`]) and
//! `PUT /admin/placers/{name}`. Every new version is built completely off the request path
//! (compile with a time limit, check the world, instantiate, `configure`, then
//! [`PlacerVersion::check`]: `set-runners` on a synthetic set and sample placements) and
//! only then published with one atomic swap of the name → version map. A failure keeps the
//! running version and is recorded as the name's `last_error`. Calls hold the `Arc` of the
//! version they started with, so a swap never touches an in-flight call.

mod scan;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::placer::{BUILTINS, LoadError, PlacerRuntime, PlacerSource, PlacerVersion};

pub use scan::watch_dir;

/// Longest a new version may take to compile and validate before it is given up.
pub const VALIDATE_TIME_LIMIT: Duration = Duration::from_secs(10);

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
}

/// Name → running version, swapped whole on every change.
pub struct Registry {
    runtime: Arc<PlacerRuntime>,
    placer_config: BTreeMap<String, Vec<(String, String)>>,
    current: ArcSwap<HashMap<String, Arc<PlacerVersion>>>,
    builtins: HashMap<String, Arc<PlacerVersion>>,
    /// Last failure per name (cleared by a success).
    errors: Mutex<HashMap<String, String>>,
    /// Serialises publishers; readers never take it.
    publish: Mutex<()>,
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
            placer_config,
            current: ArcSwap::from_pointee(builtins.clone()),
            builtins,
            errors: Mutex::new(HashMap::new()),
            publish: Mutex::new(()),
        })
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
            })
            .collect();
        for (name, error) in errors.iter().filter(|(name, _)| !current.contains_key(*name)) {
            infos.push(PlacerInfo {
                name: name.clone(),
                source: "none".into(),
                sha256: String::new(),
                loaded_at: 0,
                last_error: Some(error.clone()),
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
        let config = self.placer_config.get(name).cloned().unwrap_or_default();
        let built = self.runtime.load(name, source.clone(), bytes, config).and_then(|v| v.check().map(|_| v));
        self.runtime.observer().reload(name, built.is_ok());
        match built {
            Ok(version) => {
                self.publish_version(name, Some(version.clone()));
                if let Ok(mut errors) = self.errors.lock() {
                    errors.remove(name);
                }
                tracing::info!(placer = name, source = %source_label(&source), sha256 = &version.sha256()[..12], "placer published");
                Ok(version)
            }
            Err(e) => {
                let report = e.report();
                tracing::warn!(placer = name, source = %source_label(&source), error = %report, "placer rejected; keeping the running version");
                if let Ok(mut errors) = self.errors.lock() {
                    errors.insert(name.to_string(), report);
                }
                Err(e)
            }
        }
    }

    /// [`Registry::install`] on a blocking thread, given up after [`VALIDATE_TIME_LIMIT`].
    ///
    /// # Errors
    /// The [`LoadError`], or a validation error when the time limit passed.
    pub async fn install_async(
        self: &Arc<Self>,
        name: &str,
        source: PlacerSource,
        bytes: Vec<u8>,
    ) -> Result<Arc<PlacerVersion>, LoadError> {
        let (registry, owned) = (self.clone(), name.to_string());
        let task = tokio::task::spawn_blocking(move || registry.install(&owned, source, &bytes));
        match tokio::time::timeout(VALIDATE_TIME_LIMIT, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(LoadError::Validation {
                placer: name.into(),
                reason: format!("validation task failed: {join}"),
                fault: None,
            }),
            Err(_) => {
                let error = LoadError::TimedOut { placer: name.into(), limit: VALIDATE_TIME_LIMIT };
                if let Ok(mut errors) = self.errors.lock() {
                    errors.insert(name.to_string(), error.report());
                }
                Err(error)
            }
        }
    }

    /// Removes the user version of `name`: the built-in of that name takes over again, or
    /// the name disappears (calls routed to it then use the default placer). Returns false
    /// when there was nothing to remove.
    pub fn remove(&self, name: &str) -> bool {
        let running = self.get(name);
        let is_builtin_running = running.as_ref().is_some_and(|v| *v.source() == PlacerSource::Builtin);
        if running.is_none() || is_builtin_running {
            return false;
        }
        self.publish_version(name, self.builtins.get(name).cloned());
        if let Ok(mut errors) = self.errors.lock() {
            errors.remove(name);
        }
        match self.builtins.get(name) {
            Some(_) => tracing::info!(placer = name, "placer removed; the built-in of that name is back"),
            None => tracing::warn!(placer = name, "placer removed; routes naming it now use the default placer"),
        }
        true
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
