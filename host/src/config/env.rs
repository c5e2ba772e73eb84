//! `PLACERD_<KEY>` environment overrides: every config key can be set from the
//! environment, as containers and systemd units expect. `PLACERD_DEFAULT_PLACER=naive` sets
//! `default_placer`; a double underscore goes one table down
//! (`PLACERD_RUNNERS__STATIC='["10.0.0.1:8080"]'`,
//! `PLACERD_PLACERS__CONSISTENT-HASH__CONFIG__MAX_LOAD_FACTOR=1.5`). A value is read as a
//! TOML value when it is one (numbers, booleans, arrays) and as a string otherwise.

use super::{ConfigError, FileConfig};

/// The prefix of every override.
const PREFIX: &str = "PLACERD_";

/// Applies every `PLACERD_*` variable of `vars` to `table` (the parsed config file), over
/// what the file says. Returns a warning for each variable that names no config key (it
/// is ignored: `PLACERD_` variables of other tools must not stop placerd).
///
/// # Errors
/// A variable whose path runs through a key that is not a table.
pub fn apply_env(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<String>, ConfigError> {
    let known = toml::Table::try_from(FileConfig::default()).unwrap_or_default();
    let mut warnings = Vec::new();
    let mut vars: Vec<(String, String)> = vars.into_iter().filter(|(name, _)| name.starts_with(PREFIX)).collect();
    vars.sort();
    for (name, value) in vars {
        let path: Vec<String> = name[PREFIX.len()..].split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) || !is_known(&known, &path) {
            warnings.push(format!("{name} names no config key; ignored"));
            continue;
        }
        let key = path.join(".");
        insert(table, &path, parse_value(&value))
            .map_err(|reason| ConfigError::Invalid { key: format!("{name} ({key})"), reason })?;
    }
    Ok(warnings)
}

/// Whether `path` names a key of the config: a key of the defaults' tables, or anything
/// under `placers` (placer names and their config keys are the user's).
fn is_known(known: &toml::Table, path: &[String]) -> bool {
    let mut table = known;
    for (i, segment) in path.iter().enumerate() {
        if i == 0 && segment == "placers" {
            return true;
        }
        match table.get(segment.as_str()) {
            Some(toml::Value::Table(inner)) => table = inner,
            Some(_) => return i + 1 == path.len(),
            None => return false,
        }
    }
    true
}

/// `value` as TOML (`5`, `true`, `["a:1"]`, `{ app = "x", placer = "naive" }`), else as a
/// string.
fn parse_value(value: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()))
}

fn insert(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else { return Ok(()) };
    let mut table = table;
    for segment in parents {
        let entry = table.entry(segment.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(inner) => inner,
            _ => return Err(format!("`{segment}` is not a table in the config file")),
        };
    }
    table.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(file: &str, vars: &[(&str, &str)]) -> (Result<super::super::Config, ConfigError>, Vec<String>) {
        let mut table: toml::Table = file.parse().expect("toml");
        let vars = vars.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string()));
        let warnings = apply_env(&mut table, vars).expect("applies");
        let config = table.try_into::<FileConfig>().map_err(|e| ConfigError::Parse(e.to_string()));
        (config.and_then(FileConfig::validate), warnings)
    }

    #[test]
    fn variables_override_the_file_key_by_key() {
        let (config, warnings) = apply(
            "default_placer = \"least-loaded\"\nmax_body_bytes = 10\n",
            &[
                ("PLACERD_DEFAULT_PLACER", "naive"),
                ("PLACERD_BODY_TIMEOUT_MS", "500"),
                ("PLACERD_RUNNERS__STATIC", r#"["10.0.0.1:8080", "10.0.0.2:8080"]"#),
                ("PLACERD_RUNNERS__OUTLIER_DETECTION__CONSECUTIVE_FAILURES", "3"),
                ("PLACERD_PLACERS__CONSISTENT-HASH__CONFIG__MAX_LOAD_FACTOR", "1.5"),
                ("PLACERD_LISTEN", "127.0.0.1:18080"),
                ("HOME", "/root"),
            ],
        );
        let config = config.expect("valid");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.default_placer, "naive");
        assert_eq!(config.max_body_bytes, 10, "keys without a variable keep the file's value");
        assert_eq!(config.body_timeout, std::time::Duration::from_millis(500));
        assert_eq!(config.runners, ["10.0.0.1:8080", "10.0.0.2:8080"]);
        assert_eq!(config.outlier_detection.consecutive_failures, 3);
        assert_eq!(config.placer_config["consistent-hash"], [("max_load_factor".to_string(), "1.5".to_string())]);
        assert_eq!(config.listen.port(), 18080);
    }

    #[test]
    fn unknown_variables_are_reported_and_ignored() {
        let (config, warnings) = apply("", &[("PLACERD_BASELINE", "/tmp/x"), ("PLACERD_RUNNERS__STATIK", "[]")]);
        assert!(config.is_ok());
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("PLACERD_BASELINE"), "{warnings:?}");
    }

    #[test]
    fn a_bad_value_is_an_error_naming_the_key() {
        let (config, _) = apply("", &[("PLACERD_MAX_BODY_BYTES", "lots")]);
        let err = config.expect_err("a string is not a size").to_string();
        assert!(err.contains("max_body_bytes"), "{err}");
    }
}
