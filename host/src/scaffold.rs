//! `placerd new NAME --lang rust|python|js`: a placer project in `./NAME` that builds with
//! one command and passes `placerd check` as it is. Every project carries its own copy of
//! the contract (`wit/placer.wit`); a Rust one also carries the `placerd-placer` SDK
//! (`placerd-placer/`), so it builds outside this repository. Projects of all three
//! languages are built against the current contract (`wit/placer.wit`, 0.4).

use std::path::{Path, PathBuf};

/// The contract every project is built against.
const WIT: &str = include_str!("../../wit/placer.wit");
/// The SDK, vendored into Rust projects.
const SDK: &str = include_str!("../../guest-placers/sdk/src/lib.rs");
const SDK_MANIFEST: &str = r#"[package]
name = "placerd-placer"
description = "The placerd placer SDK, vendored by `placerd new`."
version = "0.1.0"
edition = "2024"
publish = false

[target.'cfg(target_arch = "wasm32")'.dependencies]
wit-bindgen = { version = "0.61.1", default-features = false, features = ["macros", "realloc"] }
"#;

/// A language `placerd new` scaffolds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Rust on the `placerd-placer` SDK.
    Rust,
    /// Python with componentize-py.
    Python,
    /// JavaScript with componentize-js.
    Js,
}

impl std::str::FromStr for Lang {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rust" => Ok(Lang::Rust),
            "python" => Ok(Lang::Python),
            "js" | "javascript" => Ok(Lang::Js),
            other => Err(format!("expected rust, python or js, got {other:?}")),
        }
    }
}

/// The files of a project in `lang` named `name`: (relative path, content).
fn files(lang: Lang) -> Vec<(&'static str, &'static str)> {
    match lang {
        Lang::Rust => vec![
            ("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
            (".cargo/config.toml", include_str!("../templates/rust/.cargo/config.toml")),
            ("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
            ("README.md", include_str!("../templates/rust/README.md")),
            (".gitignore", "target/\n"),
            ("placerd-placer/Cargo.toml", SDK_MANIFEST),
            ("placerd-placer/src/lib.rs", SDK),
        ],
        Lang::Python => vec![
            ("app.py", include_str!("../templates/python/app.py")),
            ("README.md", include_str!("../templates/python/README.md")),
            (".gitignore", "__pycache__/\n*.wasm\n"),
        ],
        Lang::Js => vec![
            ("placer.js", include_str!("../templates/js/placer.js")),
            ("package.json", include_str!("../templates/js/package.json")),
            ("README.md", include_str!("../templates/js/README.md")),
            (".gitignore", "node_modules/\n*.wasm\n"),
        ],
    }
}

/// `my-placer` → `MyPlacer`.
fn type_name(name: &str) -> String {
    name.split(['-', '_', '.'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect()
}

/// Writes a `lang` project named `name` into `dir/name`; returns its path.
///
/// # Errors
/// A name that is not a placer name (`[A-Za-z][A-Za-z0-9_-]*`, at most 64 characters), a
/// folder that exists and is not empty, or a write that fails.
pub fn create(dir: &Path, name: &str, lang: Lang) -> Result<PathBuf, String> {
    let valid = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(format!("{name:?}: a placer name starts with a letter and has letters, digits, - and _"));
    }
    let root = dir.join(name);
    if std::fs::read_dir(&root).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(format!("{} exists and is not empty", root.display()));
    }
    let crate_name = name.replace('-', "_");
    let type_name = type_name(name);
    let mut all = files(lang);
    all.push(("wit/placer.wit", WIT));
    for (path, template) in all {
        let text = if path == "placerd-placer/src/lib.rs" {
            // The SDK finds the contract beside it, not in this repository's layout.
            template.replace(r#"path: "../../wit""#, r#"path: "../wit""#)
        } else {
            template.replace("{{name}}", name).replace("{{crate}}", &crate_name).replace("{{type}}", &type_name)
        };
        let file = root.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok(root)
}

/// The component a project in `lang` named `name` builds, relative to its folder.
pub fn artifact(lang: Lang, name: &str) -> String {
    match lang {
        Lang::Rust => format!("target/wasm32-wasip2/release/{}.wasm", name.replace('-', "_")),
        Lang::Python | Lang::Js => format!("{name}.wasm"),
    }
}

/// The command that checks what a project in `lang` builds (every language fits the
/// default limits: a JavaScript runtime's growing heap is recycled below the cap).
pub fn check_command(lang: Lang, name: &str) -> String {
    format!("placerd check {}", artifact(lang, name))
}

/// The command that builds a project in `lang`, for the message after `placerd new`.
pub fn build_command(lang: Lang, name: &str) -> String {
    match lang {
        Lang::Rust => {
            format!("cargo build --release   # -> target/wasm32-wasip2/release/{}.wasm", name.replace('-', "_"))
        }
        Lang::Python => format!("componentize-py -d wit -w placer componentize app -o {}", artifact(lang, name)),
        Lang::Js => "npm install && npm run build".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_has_its_files_with_the_name_filled_in_and_is_not_written_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = create(dir.path(), "my-placer", Lang::Rust).expect("created");
        let lib = std::fs::read_to_string(root.join("src/lib.rs")).expect("lib.rs");
        assert!(lib.contains("pub struct MyPlacer") && !lib.contains("{{"), "{lib}");
        let sdk = std::fs::read_to_string(root.join("placerd-placer/src/lib.rs")).expect("sdk");
        assert!(sdk.contains(r#"path: "../wit""#));
        assert!(root.join("wit/placer.wit").exists());
        let again = create(dir.path(), "my-placer", Lang::Python).expect_err("not empty");
        assert!(again.contains("not empty"), "{again}");
        for bad in ["", "9lives", "a/b", "has space", ".hidden"] {
            assert!(create(dir.path(), bad, Lang::Js).is_err(), "{bad:?}");
        }
        assert_eq!(type_name("a_b-c"), "ABC");
    }
}
