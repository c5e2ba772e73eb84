//! `placerd check` as a user runs it: the real binary on the built-ins and the fixtures.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("PLACERD_FIXTURES_DIR")).join(format!("{name}.wasm"))
}

/// Runs `placerd check ARGS`, killing it if it outlives `limit` (check must never hang).
fn check(args: &[&str], limit: Duration) -> Output {
    common::run_within(common::placerd_command().arg("check").args(args), limit)
}

#[test]
fn builtins_pass_and_print_their_orders() {
    for name in ["naive", "consistent-hash", "least-loaded"] {
        // A roomy budget: the 5 ms default is wall-clock and these run beside other tests.
        let out = check(&["--builtin", name, "--budget-ms", "200"], Duration::from_secs(60));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {stdout} {}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.starts_with(&format!("ok: placer `{name}`")), "{stdout}");
        assert_eq!(stdout.lines().filter(|l| l.contains(" -> [")).count(), 5, "{stdout}");
    }
    let out = check(
        &["--builtin", "consistent-hash", "--config", "variant=fn", "--config", "max_load_factor=1.25"],
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn each_bad_fixture_is_rejected_with_a_one_line_reason() {
    for (name, reason) in [
        ("loops-forever", "timeout"),
        ("traps", "unreachable"),
        ("eats-memory", "memory"),
        ("wrong-world", "missing export function `set-runners`, `place`"),
        ("bad-indices", "out of range"),
        ("configure-error", "rejected its config"),
    ] {
        let path = fixture(name);
        // The loop runs under the default budget (check must not hang); the others get a
        // roomy one so a preempted trap is not misreported as a timeout.
        let budget = if name == "loops-forever" { "5" } else { "200" };
        let mut args = vec![path.to_str().expect("utf-8 path"), "--budget-ms", budget];
        if name == "eats-memory" {
            // Past the cap in one call: a leak of the default 256 KiB a call is recycled.
            args.extend(["--config", "bytes=33554432"]);
        }
        let out = check(&args, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(out.stdout.is_empty(), "{name} printed {}", String::from_utf8_lossy(&out.stdout));
        assert_eq!(stderr.trim_end().lines().count(), 1, "{name}: {stderr}");
        assert!(stderr.starts_with("placerd: check failed: placer `"), "{name}: {stderr}");
        assert!(stderr.contains(reason), "{name}: expected {reason:?} in {stderr}");
    }
}

#[test]
fn unreadable_and_non_wasm_files_are_rejected() {
    let out = check(&["/nonexistent/x.wasm"], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/x.wasm"));
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm junk").expect("write");
    let out = check(&[junk.to_str().expect("utf-8")], Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid WebAssembly component"));
}

#[test]
fn bench_reports_place_percentiles_and_memory_for_a_builtin_and_a_0_1_component() {
    let line = |out: &Output| {
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
        stdout.lines().find(|l| l.starts_with("place p50=")).map(str::to_string).unwrap_or_else(|| panic!("{stdout}"))
    };
    // A bare built-in name, and a file built for contract 0.1.
    let builtin = check(&["consistent-hash", "--bench", "--budget-ms", "200"], Duration::from_secs(120));
    let legacy_path = fixture("naive-v01");
    let legacy = check(
        &[legacy_path.to_str().expect("utf-8 path"), "--bench", "--runners", "8", "--budget-ms", "200"],
        Duration::from_secs(120),
    );
    for (out, runners) in [(&builtin, 64), (&legacy, 8)] {
        let line = line(out);
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 4, "{line}");
        assert_eq!(fields[3], format!("runners={runners}"), "{line}");
        for (field, key) in [(fields[1], "p50="), (fields[2], "p99=")] {
            let value = field.strip_prefix(key).unwrap_or_else(|| panic!("{line}"));
            let number = value.trim_end_matches(|c: char| c.is_alphabetic() || c == 'µ');
            let unit = &value[number.len()..];
            assert!(number.parse::<f64>().is_ok_and(|n| n > 0.0), "{line}");
            assert!(["ns", "µs", "ms"].contains(&unit), "{line}");
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.lines().any(|l| l.starts_with("memory ") && l.contains("KiB per instance")), "{stdout}");
    }
    assert!(String::from_utf8_lossy(&legacy.stdout).contains("contract 0.1.0"));
    assert!(String::from_utf8_lossy(&builtin.stdout).contains("contract 0.4.0"));
    // The built-in's orders are reused for repeated keys; a 0.1 placer's never are.
    let reused = |out: &Output| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.starts_with("orders reused by slot-hash: a key placed before takes p50="))
    };
    assert!(reused(&builtin), "{}", String::from_utf8_lossy(&builtin.stdout));
    assert!(!reused(&legacy));
}

#[test]
fn config_file_gives_the_placer_its_table_and_config_flags_replace_its_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = dir.path().join("placerd.toml");
    std::fs::write(&toml, "placer_budget_ms = 200\n[placers.consistent-hash.config]\nmax_load_factor = \"0.5\"\n")
        .expect("write");
    let path = toml.to_str().expect("utf-8 path");
    // The file's table reaches configure: 0.5 is refused by consistent-hash.
    let out = check(&["consistent-hash", "--config-file", path], Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted a bad max_load_factor from the file");
    assert!(stderr.contains("max_load_factor"), "{stderr}");
    // A --config pair replaces the file's value of its key.
    let out =
        check(&["consistent-hash", "--config-file", path, "--config", "max_load_factor=1.5"], Duration::from_secs(60));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The table is the one of the name the placer serves under: --name picks it, and a
    // file without a table for the name checked says which tables it has.
    std::fs::write(&toml, "[placers.ring.config]\nmax_load_factor = \"0.5\"\n").expect("write");
    let out = check(&["consistent-hash", "--config-file", path], Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("no [placers.consistent-hash.config]") && stderr.contains("ring"), "{stderr}");
    let out = check(&["consistent-hash", "--config-file", path, "--name", "ring"], Duration::from_secs(60));
    assert!(!out.status.success(), "--name ring did not give the placer ring's table");
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_load_factor"));
    // A config file that does not parse is an error naming the file.
    std::fs::write(&toml, "lisen = 1").expect("write");
    let out = check(&["naive", "--config-file", path], Duration::from_secs(60));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("placerd.toml"));
}

#[test]
fn output_into_a_closed_pipe_ends_the_command_quietly() {
    use std::process::Stdio;
    let mut child = common::placerd_command()
        .args(["check", "--builtin", "naive", "--budget-ms", "200"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // The reader goes away before the first line is written (`placerd check | head -0`).
    drop(child.stdout.take());
    assert!(common::run_within_wait(&mut child, Duration::from_secs(60)), "check hung on a closed pipe");
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(stderr.is_empty(), "{stderr}");
}
