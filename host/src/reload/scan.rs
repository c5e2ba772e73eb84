//! Keeps the registry in step with `placers_dir`.
//!
//! Every change in the folder (see [`crate::watch`]) triggers a rescan. A rescan looks at
//! every `NAME.wasm`: a symlink is followed only when it resolves inside the folder (the
//! Kubernetes `..data` swap does; a link to `/etc` does not), a file over
//! [`MAX_COMPONENT_BYTES`] is refused from its size alone, and a file whose size, mtime and
//! inode are those of the last look is not read again. A file that did change is read and
//! installed when its content hash differs from the last one seen; names whose file is
//! gone are removed. A half-written file fails validation and the finished one passes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::{Registry, valid_name};
use crate::placer::{MAX_COMPONENT_BYTES, PlacerSource, hex};
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
    /// Name → what the last look at its file found.
    seen: HashMap<String, Seen>,
}

/// The last look at one name's file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    /// The file as the folder shows it then.
    stamp: Stamp,
    /// Hash of the content acted on (valid or not); empty when it was refused unread.
    hash: String,
}

/// What changes when a file (or the target of its symlink) is replaced or written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    target: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Stamp {
    fn of(target: PathBuf, meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Stamp { target, len: meta.len(), modified: meta.modified().ok(), inode }
    }
}

/// What to do with one `NAME.wasm`.
#[derive(Debug, PartialEq, Eq)]
enum Look {
    /// Same as last time: nothing to read.
    Unchanged,
    /// Refused without reading, with the reason.
    Refuse(Stamp, String),
    /// Changed: read it.
    Read(Stamp),
    /// Not a file (a directory, a dangling link): ignored.
    Skip,
}

/// Decides about `path` in the folder whose canonical path is `root`, given the last look.
fn look(root: &Path, path: &Path, last: Option<&Seen>) -> Look {
    let Ok(target) = std::fs::canonicalize(path) else { return Look::Skip };
    let Ok(meta) = std::fs::metadata(&target) else { return Look::Skip };
    if !meta.is_file() {
        return Look::Skip;
    }
    let stamp = Stamp::of(target, &meta);
    if last.is_some_and(|seen| seen.stamp == stamp) {
        return Look::Unchanged;
    }
    if !stamp.target.starts_with(root) {
        let reason = format!("{} resolves to {}, outside placers_dir", path.display(), stamp.target.display());
        return Look::Refuse(stamp, reason);
    }
    if stamp.len > MAX_COMPONENT_BYTES as u64 {
        let reason = format!("{} bytes is over the {MAX_COMPONENT_BYTES}-byte limit (not read)", stamp.len);
        return Look::Refuse(stamp, reason);
    }
    Look::Read(stamp)
}

/// The file at `path`, or `None` when it has more than `limit` bytes (it may have grown
/// since its size was looked at): never more than `limit + 1` bytes are read.
fn read_at_most(path: &Path, limit: usize) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(limit as u64 + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() <= limit).then_some(bytes))
}

impl Scanner {
    async fn rescan(&mut self) {
        let files = list(&self.dir);
        let root = std::fs::canonicalize(&self.dir).unwrap_or_else(|_| self.dir.clone());
        for (name, path) in &files {
            let source = PlacerSource::File(path.clone());
            let stamp = match look(&root, path, self.seen.get(name)) {
                Look::Unchanged | Look::Skip => continue,
                Look::Refuse(stamp, reason) => {
                    self.seen.insert(name.clone(), Seen { stamp, hash: String::new() });
                    self.registry.reject(name, &source, &reason);
                    continue;
                }
                Look::Read(stamp) => stamp,
            };
            let bytes = match read_at_most(&stamp.target, MAX_COMPONENT_BYTES) {
                Ok(Some(bytes)) => bytes,
                Ok(None) => {
                    let reason = format!(
                        "it grew past the {MAX_COMPONENT_BYTES}-byte limit while being read (the rest was not read)"
                    );
                    self.seen.insert(name.clone(), Seen { stamp, hash: String::new() });
                    self.registry.reject(name, &source, &reason);
                    continue;
                }
                // Gone since the listing (a `..data` swap), or a passing error: the next
                // scan tries again.
                Err(e) => {
                    tracing::debug!(placer = %name, error = %e, "could not read a placer file; trying again at the next scan");
                    continue;
                }
            };
            let hash = hex(&Sha256::digest(&bytes));
            let same = self.seen.get(name).is_some_and(|seen| seen.hash == hash);
            self.seen.insert(name.clone(), Seen { stamp, hash });
            if !same {
                let _ = self.registry.install_async(name, source, bytes).await;
            }
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

/// `NAME → path` for every `NAME.wasm` entry in `dir` with a valid name (files and
/// symlinks; [`look`] decides about each).
fn list(dir: &Path) -> HashMap<String, PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return HashMap::new() };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .filter_map(|p| {
            let name = p.file_stem()?.to_str()?.to_string();
            valid_name(&name).then_some((name, p))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_grew_past_the_limit_is_refused_without_reading_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a.wasm");
        std::fs::write(&file, b"12345").expect("write");
        assert_eq!(read_at_most(&file, 5).expect("read"), Some(b"12345".to_vec()));
        assert_eq!(read_at_most(&file, 4).expect("read"), None, "over the limit");
        assert!(read_at_most(&dir.path().join("gone.wasm"), 4).is_err());
    }

    #[test]
    fn unchanged_files_are_not_read_again_and_outside_or_oversized_ones_are_refused_unread() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = base.path().join("placers");
        std::fs::create_dir(&dir).expect("dir");
        let root = std::fs::canonicalize(&dir).expect("root");
        let file = dir.join("a.wasm");
        std::fs::write(&file, b"one").expect("write");
        let Look::Read(stamp) = look(&root, &file, None) else { panic!("a new file is read") };
        let seen = Seen { stamp, hash: "h".into() };
        assert_eq!(look(&root, &file, Some(&seen)), Look::Unchanged);
        std::fs::write(&file, b"two!").expect("rewrite");
        assert!(matches!(look(&root, &file, Some(&seen)), Look::Read(_)), "a rewrite is read");

        // A symlink out of the folder: refused. The Kubernetes layout (links through
        // `..data` inside the folder): followed.
        let outside = base.path().join("secret.wasm");
        std::fs::write(&outside, b"x").expect("outside");
        let link = dir.join("evil.wasm");
        std::os::unix::fs::symlink(&outside, &link).expect("symlink");
        assert!(matches!(look(&root, &link, None), Look::Refuse(_, r) if r.contains("outside placers_dir")));
        std::fs::create_dir(dir.join("..2026_11_28")).expect("versioned dir");
        std::fs::write(dir.join("..2026_11_28/k.wasm"), b"k").expect("k");
        std::os::unix::fs::symlink("..2026_11_28", dir.join("..data")).expect("..data");
        std::os::unix::fs::symlink("..data/k.wasm", dir.join("k.wasm")).expect("k link");
        assert!(matches!(look(&root, &dir.join("k.wasm"), None), Look::Read(_)));

        // A sparse file over the limit: refused from its size, never read.
        let big = dir.join("big.wasm");
        std::fs::File::create(&big).and_then(|f| f.set_len(200 << 20)).expect("sparse");
        assert!(matches!(look(&root, &big, None), Look::Refuse(_, r) if r.contains("not read")));
        // Directories named like placers are ignored.
        std::fs::create_dir(dir.join("d.wasm")).expect("dir");
        assert_eq!(look(&root, &dir.join("d.wasm"), None), Look::Skip);
    }
}
