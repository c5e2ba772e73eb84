//! `state_dir`: what the admin API changes, kept across restarts.
//!
//! Layout: `placers/NAME.wasm` for each placer installed with `PUT /admin/placers/NAME`,
//! and `routes.json` for the routes set with `PUT /admin/routes`. Every write goes to a
//! temporary file in the same folder, is synced, then renamed over the old one (and the
//! folder synced): a crash leaves the old state or the new, never half of one.
//!
//! Precedence: the admin API's changes win over the config file until they are undone. A
//! placer saved here is loaded after `placers_dir` at start (so it replaces a file of the
//! same name; from then on the newest write wins); saved routes replace the file's
//! `[[routes]]` at start and on every reload, until `DELETE /admin/routes`.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::Route;

/// The state folder.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens (creating it, owner-only) the state folder at `dir`.
    ///
    /// # Errors
    /// The folder cannot be created.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir.join("placers"))?;
        Ok(StateDir { dir: dir.to_path_buf() })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Every saved placer, name and bytes, sorted by name.
    ///
    /// # Errors
    /// The placers folder cannot be listed, or a file in it cannot be read.
    pub fn placers(&self) -> std::io::Result<Vec<(String, Vec<u8>)>> {
        let mut placers = Vec::new();
        for entry in std::fs::read_dir(self.dir.join("placers"))? {
            let path = entry?.path();
            let name = match (path.file_stem().and_then(|s| s.to_str()), path.extension()) {
                (Some(name), Some(ext)) if ext == "wasm" && crate::reload::valid_name(name) => name.to_string(),
                _ => continue,
            };
            placers.push((name, std::fs::read(&path)?));
        }
        placers.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(placers)
    }

    /// Saves `bytes` as placer `name`.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn save_placer(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        write_atomically(&self.placer_path(name), bytes)
    }

    /// Forgets placer `name` (nothing to do when it was not saved).
    ///
    /// # Errors
    /// The file exists and cannot be removed.
    pub fn remove_placer(&self, name: &str) -> std::io::Result<()> {
        remove_if_present(&self.placer_path(name))
    }

    /// The saved routes, if routes were set through the admin API.
    ///
    /// # Errors
    /// `routes.json` exists and cannot be read or parsed.
    pub fn routes(&self) -> std::io::Result<Option<Vec<Route>>> {
        match std::fs::read(self.routes_path()) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", self.routes_path().display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Saves `routes` as the admin API's routes.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn save_routes(&self, routes: &[Route]) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(routes).map_err(std::io::Error::other)?;
        write_atomically(&self.routes_path(), &json)
    }

    /// Forgets the admin API's routes: the config file's apply again.
    ///
    /// # Errors
    /// The file exists and cannot be removed.
    pub fn clear_routes(&self) -> std::io::Result<()> {
        remove_if_present(&self.routes_path())
    }

    fn placer_path(&self, name: &str) -> PathBuf {
        self.dir.join("placers").join(format!("{name}.wasm"))
    }

    fn routes_path(&self) -> PathBuf {
        self.dir.join("routes.json")
    }
}

/// Writes `bytes` to `path` through a synced temporary file renamed over it.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_dir(path.parent().unwrap_or(Path::new("."))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placers_and_routes_survive_a_reopen() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(&tmp.path().join("state")).expect("open");
        assert_eq!(state.routes().expect("read"), None);
        state.save_placer("mine", b"\0asm-bytes").expect("save");
        state.save_placer("other", b"x").expect("save");
        let routes =
            vec![Route { app: Some("billing".into()), fn_id: None, placer: "mine".into(), ..Route::default() }];
        state.save_routes(&routes).expect("save");
        state.remove_placer("other").expect("remove");
        state.remove_placer("never-saved").expect("nothing to remove is fine");

        let again = StateDir::open(&tmp.path().join("state")).expect("reopen");
        assert_eq!(again.placers().expect("read"), vec![("mine".to_string(), b"\0asm-bytes".to_vec())]);
        assert_eq!(again.routes().expect("read"), Some(routes));
        again.clear_routes().expect("clear");
        assert_eq!(again.routes().expect("read"), None);
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("state")).expect("ls").collect();
        assert_eq!(leftovers.len(), 1, "only placers/ is left: no temporary files");
    }

    #[test]
    fn a_corrupt_routes_file_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(tmp.path()).expect("open");
        std::fs::write(tmp.path().join("routes.json"), "[{").expect("write");
        let e = state.routes().expect_err("corrupt");
        assert!(e.to_string().contains("routes.json"), "{e}");
    }
}
