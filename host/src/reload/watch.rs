//! Watches `placers_dir` and keeps the registry in step with it.
//!
//! Every event (of any kind) in the folder schedules a rescan after ~50 ms of quiet. A
//! rescan reads every `NAME.wasm` (following symlinks), installs those whose content hash
//! differs from the last one seen, and removes names whose file is gone. Rescanning
//! instead of interpreting events handles write-in-place (a half-written file fails
//! validation, the finished one passes), atomic renames, deletes and Kubernetes ConfigMap
//! updates (files are symlinks through `..data`, which is swapped atomically) the same way.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};

use super::{Registry, valid_name};
use crate::placer::PlacerSource;
use crate::placer::hex;

/// Quiet time after the last event before a rescan.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// A running folder watch; dropping it stops watching and its task.
pub struct FolderWatch {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

/// The placers folder's watch.
pub type DirWatch = FolderWatch;

impl FolderWatch {
    /// Keeps `watcher` and `task` (the loop reading its events) alive together.
    pub fn new(watcher: notify::RecommendedWatcher, task: tokio::task::JoinHandle<()>) -> Self {
        FolderWatch { _watcher: watcher, task }
    }
}

impl std::fmt::Debug for FolderWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FolderWatch").finish_non_exhaustive()
    }
}

impl Drop for FolderWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every event in one folder, debounced.
#[derive(Debug)]
pub struct FolderEvents {
    rx: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl FolderEvents {
    /// Waits for a change, then until the folder has been quiet for [`DEBOUNCE`]. False
    /// once the watcher is gone.
    pub async fn changed(&mut self) -> bool {
        if self.rx.recv().await.is_none() {
            return false;
        }
        loop {
            match tokio::time::timeout(DEBOUNCE, self.rx.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return false,
                Err(_) => return true,
            }
        }
    }
}

/// Watches `dir` (not recursively): any event of any kind counts as a change. Keep the
/// watcher alive as long as the events are read.
///
/// # Errors
/// The folder cannot be watched.
pub fn watch_folder(dir: &Path) -> std::io::Result<(notify::RecommendedWatcher, FolderEvents)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.send(());
        }
    })
    .map_err(std::io::Error::other)?;
    watcher.watch(dir, RecursiveMode::NonRecursive).map_err(std::io::Error::other)?;
    Ok((watcher, FolderEvents { rx }))
}

/// Scans `dir` once now, then on every change.
///
/// # Errors
/// The folder cannot be created or watched.
pub async fn watch_dir(registry: Arc<Registry>, dir: PathBuf) -> std::io::Result<DirWatch> {
    std::fs::create_dir_all(&dir)?;
    let (watcher, mut events) = watch_folder(&dir)?;
    let mut scanner = Scanner { registry, dir, seen: HashMap::new() };
    scanner.rescan().await;
    let task = tokio::spawn(async move {
        while events.changed().await {
            scanner.rescan().await;
        }
    });
    Ok(FolderWatch::new(watcher, task))
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
