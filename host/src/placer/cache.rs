//! The compiled-component cache on disk (`cache_dir`): a restart with a 20 MB placer
//! (a Python or JavaScript runtime) deserializes its machine code instead of spending
//! seconds in Cranelift.
//!
//! An entry is `SHA256-ENGINE.cwasm`: the component's SHA-256 and a hash of the engine's
//! compile configuration (wasmtime's version, target and settings), so a different
//! placerd build never reads another's entries. Its content is the SHA-256 of the
//! serialized code followed by the code; an entry whose checksum does not match (cut short,
//! corrupted) or that wasmtime refuses is deleted and rebuilt. Entries are written to a
//! temporary file and renamed into place.
//!
//! Deserializing trusts the bytes as machine code, so whoever can write the folder can run
//! code in placerd: the folder is created `0700` and refused when it is writable by the
//! group or others, or owned by another user.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Compiled components on disk, for one engine configuration.
#[derive(Debug)]
pub(crate) struct DiskCache {
    dir: PathBuf,
    /// Hash of the engine's compile configuration, in every entry's name.
    engine_key: String,
}

impl DiskCache {
    /// Opens (creating, `0700`) the cache in `dir` for components compiled by `engine`.
    ///
    /// # Errors
    /// The folder cannot be created, or others could write it.
    pub(crate) fn open(dir: &Path, engine: &Engine) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let meta = std::fs::metadata(dir)?;
            if meta.mode() & 0o022 != 0 {
                return Err(std::io::Error::other(format!(
                    "{} is writable by others (mode {:o}): compiled code there would run in placerd",
                    dir.display(),
                    meta.mode() & 0o777
                )));
            }
            // Owned by us: compare with a file we create there.
            let probe = tempfile::NamedTempFile::new_in(dir)?;
            if probe.as_file().metadata()?.uid() != meta.uid() {
                return Err(std::io::Error::other(format!("{} belongs to another user", dir.display())));
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(DiskCache { dir: dir.to_path_buf(), engine_key: format!("{:016x}", hasher.finish()) })
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key))
    }

    /// The component with content hash `sha256`, if a sound entry is on disk. A broken
    /// entry is deleted.
    pub(crate) fn get(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let path = self.path(sha256);
        let bytes = std::fs::read(&path).ok()?;
        let sound = bytes.len() > 32 && Sha256::digest(&bytes[32..]).as_slice() == &bytes[..32];
        let component = sound.then(|| {
            // SAFETY: the code was written by `put` of a placerd with this engine
            // configuration (the entry's name) into a folder only placerd's user can write
            // (checked in `open`), and its checksum matches: these are the bytes
            // `Component::serialize` produced. wasmtime also checks its header.
            #[allow(unsafe_code)]
            unsafe {
                Component::deserialize(engine, &bytes[32..])
            }
        });
        match component {
            Some(Ok(component)) => Some(component),
            Some(Err(e)) => {
                tracing::warn!(entry = %path.display(), error = %e, "compiled-component cache entry refused; rebuilding it");
                let _ = std::fs::remove_file(&path);
                None
            }
            None => {
                tracing::warn!(entry = %path.display(), "compiled-component cache entry is damaged; rebuilding it");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores `component` as the entry of `sha256`. Failures are logged, never fatal.
    pub(crate) fn put(&self, sha256: &str, component: &Component) {
        let written = component.serialize().map_err(std::io::Error::other).and_then(|code| {
            let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
            tmp.write_all(&Sha256::digest(&code))?;
            tmp.write_all(&code)?;
            tmp.as_file().sync_all()?;
            tmp.persist(self.path(sha256)).map_err(|e| e.error)?;
            Ok(())
        });
        if let Err(e) = written {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not write the compiled-component cache");
        }
    }
}

/// The default `cache_dir`: `$XDG_CACHE_HOME/placerd`, else `$HOME/.cache/placerd`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()).map(PathBuf::from);
    let home = || std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache"));
    xdg.or_else(home).map(|base| base.join("placerd"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_engine(epochs: bool) -> Engine {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(epochs);
        Engine::new(&config).expect("engine")
    }

    #[test]
    fn entries_round_trip_and_damaged_or_foreign_ones_are_rebuilt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = new_engine(true);
        let cache = DiskCache::open(dir.path(), &engine).expect("open");
        let bytes = crate::placer::builtin("naive").expect("embedded");
        let component = Component::new(&engine, bytes).expect("compiles");
        assert!(cache.get(&engine, "abc").is_none(), "empty");
        cache.put("abc", &component);
        assert!(cache.get(&engine, "abc").is_some(), "read back");
        // Another engine configuration never sees this one's entries.
        let other = new_engine(false);
        let foreign = DiskCache::open(dir.path(), &other).expect("open");
        assert!(foreign.get(&other, "abc").is_none());
        // A damaged entry (one byte flipped) is refused and deleted.
        let path = cache.path("abc");
        let mut damaged = std::fs::read(&path).expect("entry");
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        std::fs::write(&path, &damaged).expect("damage");
        assert!(cache.get(&engine, "abc").is_none());
        assert!(!path.exists(), "deleted, to be rebuilt");
        // Cut short.
        std::fs::write(&path, b"short").expect("cut");
        assert!(cache.get(&engine, "abc").is_none());
    }

    #[cfg(unix)]
    #[test]
    fn a_folder_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = DiskCache::open(dir.path(), &new_engine(true)).expect_err("refused");
        assert!(e.to_string().contains("writable by others"), "{e}");
    }
}
