//! Builds the guest placers (the built-ins and the test fixtures) for `wasm32-wasip2` with a
//! nested `cargo build`, so a plain `cargo build` / `cargo test` of the workspace needs no
//! other step. The built-ins are embedded with `include_bytes!` (see `src/placer/builtin.rs`);
//! the fixtures' folder (with the `examples/custom-placer` component) reaches tests as
//! `PLACERD_FIXTURES_DIR`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

/// (cargo package, file name the host uses). Built-ins land in `OUT_DIR`, fixtures in
/// `OUT_DIR/fixtures`.
const BUILTINS: &[(&str, &str)] =
    &[("naive", "naive"), ("consistent-hash", "consistent-hash"), ("least-loaded", "least-loaded")];
const FIXTURES: &[&str] = &[
    "loops-forever",
    "traps",
    "eats-memory",
    "wrong-world",
    "bad-indices",
    "configure-error",
    "flaky",
    "naive-v01",
    "naive-v02",
    "ring-after",
    "reuses",
    "call-details",
    "peeks",
    "chatty",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("host/ sits in the workspace root").to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for watched in
        ["wit", "guest-placers", "tests/fixtures/placers", "examples/custom-placer", "Cargo.lock", "Cargo.toml"]
    {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    build_info(&root);

    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    ensure_target(&rustc);

    let guest_target_dir = out_dir.join("guest-target");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root)
        .args(["build", "--profile", "guest", "--target", TARGET, "--target-dir"])
        .arg(&guest_target_dir);
    for (package, _) in BUILTINS {
        cmd.args(["-p", package]);
    }
    for fixture in FIXTURES {
        cmd.args(["-p", &format!("fixture-{fixture}")]);
    }
    cmd.args(["-p", "custom-placer"]);
    // The outer build's settings are for the host: clippy's wrapper, host RUSTFLAGS and a
    // user's CARGO_TARGET_DIR must not leak into the guest build.
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().unwrap_or_else(|e| panic!("could not run `{cargo}` to build the guest placers: {e}"));
    if !status.success() {
        panic!("building the guest placers for {TARGET} failed (see the cargo output above)");
    }

    let artifacts = guest_target_dir.join(TARGET).join("guest");
    for (package, name) in BUILTINS {
        copy(&artifacts, package, &out_dir.join(format!("{name}.wasm")));
    }
    let fixtures_dir = out_dir.join("fixtures");
    std::fs::create_dir_all(&fixtures_dir).expect("create OUT_DIR/fixtures");
    for fixture in FIXTURES {
        copy(&artifacts, &format!("fixture-{fixture}"), &fixtures_dir.join(format!("{fixture}.wasm")));
    }
    copy(&artifacts, "custom-placer", &fixtures_dir.join("custom-placer.wasm"));
    println!("cargo:rustc-env=PLACERD_FIXTURES_DIR={}", fixtures_dir.display());
}

/// Copies the component cargo wrote for `package` (its lib name has `_` for `-`).
fn copy(artifacts: &Path, package: &str, to: &Path) {
    let from = artifacts.join(format!("{}.wasm", package.replace('-', "_")));
    std::fs::copy(&from, to).unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
}

/// Makes sure the toolchain has the `wasm32-wasip2` standard library, installing it with
/// rustup when possible and otherwise stopping with the command to run.
fn ensure_target(rustc: &str) {
    let installed = || {
        Command::new(rustc)
            .args(["--print", "sysroot"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .is_some_and(|sysroot| sysroot.join("lib/rustlib").join(TARGET).join("lib").is_dir())
    };
    if installed() {
        return;
    }
    let toolchain = env::var("RUSTUP_TOOLCHAIN").ok();
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", TARGET]);
    if let Some(toolchain) = &toolchain {
        rustup.args(["--toolchain", toolchain]);
    }
    println!("cargo:warning=installing the {TARGET} target with `rustup target add {TARGET}`");
    let added = rustup.status().is_ok_and(|s| s.success());
    if !added || !installed() {
        let for_toolchain = toolchain.map(|t| format!(" --toolchain {t}")).unwrap_or_default();
        panic!(
            "the {TARGET} target is not installed and rustup could not add it.\n\
             Run: rustup target add {TARGET}{for_toolchain}\n\
             (placerd compiles its built-in placers to {TARGET} and embeds them.)"
        );
    }
}

/// `PLACERD_COMMIT` (the checkout's commit, or `unknown` outside git) and
/// `PLACERD_WASMTIME_VERSION` (from Cargo.lock), for `placerd -V` and
/// `placerd_build_info`.
fn build_info(root: &Path) {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PLACERD_COMMIT={commit}");
    let git = root.join(".git");
    if git.is_dir() {
        for watched in ["HEAD", "refs/heads", "packed-refs"] {
            if git.join(watched).exists() {
                println!("cargo:rerun-if-changed={}", git.join(watched).display());
            }
        }
    }
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let wasmtime = lock
        .split("[[package]]")
        .find(|p| p.contains("\nname = \"wasmtime\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")?.strip_suffix('"').map(str::to_string)))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PLACERD_WASMTIME_VERSION={wasmtime}");
}
