//! The registry of placers: name → current [`PlacerVersion`], published atomically.
//!
//! At startup it holds the embedded built-ins, overridden by `placers_dir/NAME.wasm`.
//! Every version is loaded and validated (`check`) before it is published; a file that
//! fails keeps the built-in (or no placer) and is reported. Watching the folder and the
//! admin API arrive with hot reload (issue 4).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::placer::{BUILTINS, LoadError, PlacerRuntime, PlacerSource, PlacerVersion};

/// Name → version map, swapped whole on every change.
#[derive(Debug)]
pub struct Registry {
    current: ArcSwap<HashMap<String, Arc<PlacerVersion>>>,
}

impl Registry {
    /// Loads and validates the built-ins, then every `*.wasm` of `placers_dir` (if it
    /// exists). Returns the registry and the files that were rejected, with reasons.
    ///
    /// # Errors
    /// A built-in failing to load: a build defect, not a user error.
    pub fn load(
        runtime: &PlacerRuntime,
        placers_dir: &Path,
        config_for: impl Fn(&str) -> Vec<(String, String)>,
    ) -> Result<(Self, Vec<LoadError>), LoadError> {
        let mut map = HashMap::new();
        for (name, bytes) in BUILTINS {
            let version = runtime.load(name, PlacerSource::Builtin, bytes, config_for(name))?;
            version.check()?;
            map.insert((*name).to_string(), version);
        }
        let mut rejected = Vec::new();
        if let Ok(entries) = std::fs::read_dir(placers_dir) {
            let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for path in paths.into_iter().filter(|p| p.extension().is_some_and(|e| e == "wasm")) {
                let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_string) else { continue };
                let loaded = std::fs::read(&path)
                    .map_err(|e| LoadError::Compile {
                        placer: name.clone(),
                        reason: format!("{}: {e}", path.display()),
                    })
                    .and_then(|bytes| runtime.load(&name, PlacerSource::File(path.clone()), &bytes, config_for(&name)))
                    .and_then(|v| v.check().map(|_| v));
                match loaded {
                    Ok(version) => {
                        tracing::info!(placer = %name, sha256 = &version.sha256()[..12], file = %path.display(), "loaded placer");
                        map.insert(name, version);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "placer file rejected");
                        rejected.push(e);
                    }
                }
            }
        }
        Ok((Registry { current: ArcSwap::from_pointee(map) }, rejected))
    }

    /// The current version of `name`.
    pub fn get(&self, name: &str) -> Option<Arc<PlacerVersion>> {
        self.current.load().get(name).cloned()
    }

    /// Names of the loaded placers, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.current.load().keys().cloned().collect();
        names.sort();
        names
    }
}
