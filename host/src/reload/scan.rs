//! Keeps the registry in step with `placers_dir`.
//!
//! Every change in the folder (see [`crate::watch`]) triggers a rescan. A rescan reads
//! every `NAME.wasm` (following symlinks), installs those whose content hash differs from
//! the last one seen, and removes names whose file is gone. A half-written file fails
//! validation and the finished one passes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::{Registry, valid_name};
use crate::placer::{PlacerSource, hex};
use crate::watch::{FolderWatch, watch};

/// Scans `dir` once now, then on every change.
///
/// # Errors
/// The folder cannot be created or watched.
pub async fn watch_dir(registry: Arc<Registry>, dir: PathBuf) -> std::io::Result<FolderWatch> {
    std::fs::create_dir_all(&dir)?;
    let scanner = Arc::new(Mutex::new(Scanner { registry, dir: dir.clone(), seen: HashMap::new() }));
    // Watch first, so a file written during the first scan is seen by the next one.
    let watching = scanner.clone();
    let watch = watch(&dir, move || {
        let scanner = watching.clone();
        async move { scanner.lock().await.rescan().await }
    })?;
    scanner.lock().await.rescan().await;
    Ok(watch)
}

struct Scanner {
    registry: Arc<Registry>,
    dir: PathBuf,
    /// Name → hash of the file content last acted on (valid or not).
    seen: HashMap<String, String>,
}

impl Scanner {
    async fn rescan(&mut self) {
        let files = list(&self.dir);
        for (name, path) in &files {
            let Ok(bytes) = std::fs::read(path) else { continue };
            let hash = hex(&Sha256::digest(&bytes));
            if self.seen.get(name) == Some(&hash) {
                continue;
            }
            self.seen.insert(name.clone(), hash);
            let _ = self.registry.install_async(name, PlacerSource::File(path.clone()), bytes).await;
        }
        let gone: Vec<String> = self.seen.keys().filter(|n| !files.contains_key(*n)).cloned().collect();
        for name in gone {
            self.seen.remove(&name);
            let from_file = self.registry.get(&name).is_some_and(|v| matches!(v.source(), PlacerSource::File(_)));
            if from_file {
                self.registry.remove(&name);
            }
        }
    }
}

/// `NAME → path` for every readable `NAME.wasm` in `dir` with a valid name.
fn list(dir: &Path) -> HashMap<String, PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return HashMap::new() };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file())
        .filter_map(|p| {
            let name = p.file_stem()?.to_str()?.to_string();
            valid_name(&name).then_some((name, p))
        })
        .collect()
}
