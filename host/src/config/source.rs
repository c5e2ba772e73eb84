//! Where a config comes from: the file, then the `PLACERD_<KEY>` environment, then the
//! command line's flags, each over the one before. Kept with the running config so a
//! reload (`SIGHUP`, `POST /admin/reload`) reads all three again exactly as start-up did.

use std::path::PathBuf;

use super::{Config, ConfigError, FileConfig, apply_env};

/// Command-line flags of `serve` that replace config keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--admin-listen`.
    pub admin_listen: Option<String>,
    /// `--admin-token-file`.
    pub admin_token_file: Option<String>,
    /// `--runner` (repeatable): replaces `[runners]`, whatever its source.
    pub runners: Vec<String>,
    /// `--placers-dir`.
    pub placers_dir: Option<String>,
    /// `--default-placer`.
    pub default_placer: Option<String>,
}

/// The variable that set tokio's worker threads before `workers` existed.
const TOKIO_WORKER_THREADS: &str = "TOKIO_WORKER_THREADS";

/// A config file (or none), the process environment and the flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigSource {
    /// `--config FILE`.
    pub path: Option<PathBuf>,
    /// The flags given.
    pub overrides: Overrides,
}

/// A config read from its source, with what was odd but not wrong.
#[derive(Debug)]
pub struct Loaded {
    /// The validated config (its `source` set, for reloads).
    pub config: Config,
    /// Environment variables that name no key.
    pub warnings: Vec<String>,
}

impl ConfigSource {
    /// Where errors say the config came from: the file, or "command line".
    pub fn describe(&self) -> String {
        self.path.as_ref().map_or_else(|| "command line".to_string(), |p| p.display().to_string())
    }

    /// Reads the file, applies the environment and the flags, and validates the result.
    ///
    /// # Errors
    /// The file cannot be read or parsed, or a key is invalid (every bad key is named).
    pub fn read(&self) -> Result<Loaded, ConfigError> {
        self.read_with_env(std::env::vars())
    }

    /// [`ConfigSource::read`] with the given environment.
    ///
    /// # Errors
    /// As [`ConfigSource::read`].
    pub fn read_with_env(&self, vars: impl IntoIterator<Item = (String, String)>) -> Result<Loaded, ConfigError> {
        let mut table = match &self.path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::Parse(format!("cannot read {}: {e}", path.display())))?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse(format!("{}: {}", path.display(), e.to_string().trim_end())))?
            }
            None => toml::Table::new(),
        };
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let mut warnings = apply_env(&mut table, vars.iter().cloned())?;
        // Before `workers`, tokio's own variable chose placerd's threads: it still does
        // where nothing else sets `workers`, and says what to use instead.
        if !table.contains_key("workers")
            && let Some((_, threads)) = vars.iter().find(|(name, _)| name == TOKIO_WORKER_THREADS)
        {
            table.insert("workers".into(), toml::Value::String(threads.trim().to_string()));
            warnings.push(format!(
                "{TOKIO_WORKER_THREADS}={threads} is read as workers = {threads}; set workers in placerd.toml or PLACERD_WORKERS instead"
            ));
        }
        let mut file: FileConfig = table.try_into().map_err(|e: toml::de::Error| {
            ConfigError::Parse(format!("{}: {}", self.describe(), e.to_string().trim_end()))
        })?;
        let o = &self.overrides;
        if let Some(listen) = &o.listen {
            file.listen.clone_from(listen);
        }
        if let Some(admin_listen) = &o.admin_listen {
            file.admin_listen.clone_from(admin_listen);
        }
        if let Some(token) = &o.admin_token_file {
            file.admin_token_file.clone_from(token);
        }
        if !o.runners.is_empty() {
            file.runners.static_.clone_from(&o.runners);
            file.runners.file.clear();
            file.runners.dns.clear();
        }
        if let Some(dir) = &o.placers_dir {
            file.placers_dir.clone_from(dir);
        }
        if let Some(placer) = &o.default_placer {
            file.default_placer.clone_from(placer);
        }
        let mut config = file.validate()?;
        config.source = Some(self.clone());
        Ok(Loaded { config, warnings })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_environment_which_wins_over_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("placerd.toml");
        std::fs::write(&path, "default_placer = \"least-loaded\"\nplacers_dir = \"a\"\n[runners]\nfile = \"r\"\n")
            .expect("write");
        let source = ConfigSource {
            path: Some(path),
            overrides: Overrides {
                default_placer: Some("naive".into()),
                runners: vec!["127.0.0.1:9001".into()],
                ..Overrides::default()
            },
        };
        let env = [("PLACERD_DEFAULT_PLACER".to_string(), "x".to_string()), ("PLACERD_PLACERS_DIR".into(), "b".into())];
        let loaded = source.read_with_env(env).expect("valid");
        assert_eq!(loaded.config.default_placer, "naive");
        assert_eq!(loaded.config.placers_dir, PathBuf::from("b"));
        assert_eq!(loaded.config.runners, ["127.0.0.1:9001"], "--runner replaces the file source");
        assert_eq!(loaded.config.source.as_ref(), Some(&source));
    }

    #[test]
    fn tokio_worker_threads_sets_workers_only_where_nothing_else_does() {
        let source = ConfigSource::default();
        let tokio = ("TOKIO_WORKER_THREADS".to_string(), "3".to_string());
        let loaded = source.read_with_env([tokio.clone()]).expect("valid");
        assert_eq!(loaded.config.workers, 3);
        assert!(loaded.warnings.iter().any(|w| w.contains("PLACERD_WORKERS")), "{:?}", loaded.warnings);
        let ours = ("PLACERD_WORKERS".to_string(), "2".to_string());
        let loaded = source.read_with_env([tokio.clone(), ours]).expect("valid");
        assert_eq!(loaded.config.workers, 2, "PLACERD_WORKERS wins");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let bad = ("TOKIO_WORKER_THREADS".to_string(), "lots".to_string());
        let e = source.read_with_env([bad]).expect_err("not a count").to_string();
        assert!(e.contains("workers"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("placerd.toml");
        std::fs::write(&path, "retry_all_delay_ms = 0\non_placer_fault = \"explode\"\n[runners]\nstatic = [\"http://127.0.0.1:9001\", \"a:1,b:2\"]\n")
            .expect("write");
        let source = ConfigSource { path: Some(path), overrides: Overrides::default() };
        let err = source.read_with_env([]).expect_err("invalid");
        let problems = err.problems();
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(
            problems.iter().any(|p| p.contains("runners.static[0]") && p.contains("drop the http://")),
            "{problems:#?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("runners.static[1]") && p.contains("one address per entry")),
            "{problems:#?}"
        );
    }
}
