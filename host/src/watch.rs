//! Folder watching, shared by the placers folder (`reload`) and the runner file
//! (`runner::discovery`).
//!
//! Creating, writing, renaming and removing a file count as a change, and changes are
//! debounced: [`DEBOUNCE`] of quiet while a file may still be written, only [`SETTLE`]
//! after an event that ends a write (close after writing, rename, remove), so a placer
//! renamed into place is picked up at once. Reads and metadata do not count: opening or closing
//! a file unwritten is reported too (inotify's `IN_OPEN`, `IN_CLOSE_NOWRITE`), and so is
//! an access time or mode change (`IN_ATTRIB`); counting them would make every rescan,
//! which reads the files, trigger the next one. Callers then re-read what they care about
//! whole instead of interpreting events: that handles write-in-place, atomic renames, deletes and Kubernetes
//! ConfigMap updates (files are symlinks through `..data`, swapped atomically) the same way.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};

/// Quiet time after the last event before a change is reported, while a file may still
/// be being written.
pub const DEBOUNCE: Duration = Duration::from_millis(50);
/// Quiet time after an event that ends a write (a file closed after writing, renamed into
/// place, or removed): only long enough to take the rest of its burst along.
pub const SETTLE: Duration = Duration::from_millis(5);

/// A running folder watch; dropping it stops watching and the task that reacts.
pub struct FolderWatch {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
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

/// Watches `dir` (not recursively) and runs `on_change` after every debounced change,
/// one run at a time, until the returned watch is dropped.
///
/// # Errors
/// The folder cannot be watched.
pub fn watch<F, Fut>(dir: &Path, mut on_change: F) -> std::io::Result<FolderWatch>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event
            && may_change(&e.kind)
        {
            let _ = tx.send(ends_a_write(&e.kind));
        }
    })
    .map_err(std::io::Error::other)?;
    watcher.watch(dir, RecursiveMode::NonRecursive).map_err(std::io::Error::other)?;
    let task = tokio::spawn(async move {
        while changed(&mut rx).await {
            on_change().await;
        }
    });
    Ok(FolderWatch { _watcher: watcher, task })
}

/// True for events after which the file is whole: closed after writing, renamed (an
/// atomic replace, a Kubernetes `..data` swap) or removed. A create or a write in progress
/// is not: more may follow.
fn ends_a_write(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(_))
            | EventKind::Remove(_)
    )
}

/// True for a create, a write, a rename or a remove; false for reads (open, close without
/// writing) and metadata (access time, mode, owner).
fn may_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Other => false,
    }
}

/// Waits for an event, then until the folder has been quiet for [`DEBOUNCE`] (or only
/// [`SETTLE`] when the last event ended a write). False once the watcher is gone.
async fn changed(rx: &mut tokio::sync::mpsc::UnboundedReceiver<bool>) -> bool {
    let Some(mut ended) = rx.recv().await else { return false };
    loop {
        let quiet = if ended { SETTLE } else { DEBOUNCE };
        match tokio::time::timeout(quiet, rx.recv()).await {
            Ok(Some(e)) => ended = e,
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn a_rename_a_close_after_writing_or_a_remove_ends_a_write_and_a_create_does_not() {
        use notify::event::{CreateKind, DataChange, RemoveKind, RenameMode};
        assert!(ends_a_write(&EventKind::Modify(ModifyKind::Name(RenameMode::To))));
        assert!(ends_a_write(&EventKind::Access(AccessKind::Close(AccessMode::Write))));
        assert!(ends_a_write(&EventKind::Remove(RemoveKind::File)));
        assert!(!ends_a_write(&EventKind::Create(CreateKind::File)));
        assert!(!ends_a_write(&EventKind::Modify(ModifyKind::Data(DataChange::Content))));
    }

    #[tokio::test]
    async fn reading_files_is_not_a_change_and_writing_one_is() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("a.wasm");
        std::fs::write(&file, b"one").expect("write");
        let changes = Arc::new(AtomicUsize::new(0));
        let counter = changes.clone();
        let _watch = watch(dir.path(), move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {}
        })
        .expect("watch");
        for _ in 0..5 {
            assert_eq!(std::fs::read(&file).expect("read"), b"one");
            let _ = std::fs::read_dir(dir.path()).expect("list").count();
        }
        // Metadata only: access and modification times, mode.
        let f = std::fs::File::open(&file).expect("open");
        f.set_times(std::fs::FileTimes::new().set_accessed(std::time::SystemTime::UNIX_EPOCH)).expect("touch");
        drop(f);
        let mut mode = std::fs::metadata(&file).expect("metadata").permissions();
        mode.set_readonly(true);
        std::fs::set_permissions(&file, mode).expect("chmod");
        tokio::time::sleep(DEBOUNCE * 6).await;
        assert_eq!(changes.load(Ordering::SeqCst), 0, "reads or metadata reported as changes");
        std::fs::write(&file, b"two").expect("write");
        for _ in 0..100 {
            if changes.load(Ordering::SeqCst) > 0 {
                return;
            }
            tokio::time::sleep(DEBOUNCE).await;
        }
        panic!("a write in place was never reported");
    }
}
