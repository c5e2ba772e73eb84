//! Placers in other languages, built with the public toolchains at pinned versions and
//! served from `placers_dir`: `examples/python-placer` (componentize-py) and
//! `examples/js-placer` (componentize-js) on routes, and two placers written outside the
//! team from the docs alone (`tests/fixtures/outside`), the Python one as the default
//! placer. The toolchains are installed on first use into a cache folder under the
//! build's target directory (a Python venv, an npm prefix): nothing global. `python3`
//! with its venv module and `npm` come from the distribution, installed with apt-get when
//! missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{runner, send, start_with};
use hyper::StatusCode;

const COMPONENTIZE_PY: &str = "0.25.1";
const COMPONENTIZE_JS: &str = "0.23.0";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The toolchain cache: kept with the build's target directory, so a warm CI keeps it.
fn toolchains() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("placer-toolchains")
}

/// One toolchain install at a time (the tests of this file share the cache).
static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Held for the whole of each test of this file: they build components and compile them
/// (seconds of CPU on every core, in bursts), and the calls they serve at the default
/// 5 ms budget should not share the machine with another test's bursts.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn run(command: &mut Command, what: &str) {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `program args`; when that fails, installs the Debian `packages` that provide it.
fn ensure(program: &str, args: &[&str], packages: &[&str]) {
    let works = || Command::new(program).args(args).output().is_ok_and(|o| o.status.success());
    if !works() {
        common::apt_install(packages)
            .unwrap_or_else(|e| panic!("{program} is missing and could not be installed: {e}"));
        assert!(works(), "{program} {} still fails after installing {packages:?}", args.join(" "));
    }
}

/// `componentize-py` of the pinned version, installed into its own venv once.
fn componentize_py() -> PathBuf {
    let venv = toolchains().join(format!("componentize-py-{COMPONENTIZE_PY}"));
    let bin = venv.join("bin/componentize-py");
    let _one = INSTALLING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !bin.exists() {
        ensure("python3", &["-c", "import ensurepip, venv"], &["python3", "python3-venv"]);
        let _ = std::fs::remove_dir_all(&venv);
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv), "creating a Python venv");
        run(
            Command::new(venv.join("bin/pip")).args(["install", "-q", &format!("componentize-py=={COMPONENTIZE_PY}")]),
            "pip install componentize-py",
        );
    }
    bin
}

/// `componentize-js` of the pinned version, installed into its own npm prefix once.
fn componentize_js() -> PathBuf {
    let prefix = toolchains().join(format!("componentize-js-{COMPONENTIZE_JS}"));
    let bin = prefix.join("node_modules/.bin/componentize-js");
    let _one = INSTALLING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !bin.exists() {
        ensure("npm", &["--version"], &["npm"]);
        let _ = std::fs::remove_dir_all(&prefix);
        std::fs::create_dir_all(&prefix).expect("npm prefix");
        run(
            Command::new("npm")
                .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                .arg(&prefix)
                .arg(format!("@bytecodealliance/componentize-js@{COMPONENTIZE_JS}")),
            "npm install componentize-js",
        );
    }
    bin
}

/// Builds the Python placer in `project` (module `app`) with componentize-py, as its
/// README says, against the repository's current contract, into `out/NAME.wasm`.
fn build_python(project: &Path, out: &Path, name: &str) -> Vec<u8> {
    let wasm = out.join(format!("{name}.wasm"));
    run(
        Command::new(componentize_py())
            .current_dir(repo().join(project))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .arg("-d")
            .arg(repo().join("wit"))
            .args(["-w", "placer", "componentize", "app", "-o"])
            .arg(&wasm),
        &format!("building {}", project.display()),
    );
    std::fs::read(&wasm).expect("python component")
}

/// Builds the JavaScript placer `project/source` with componentize-js, as its README
/// says, against the repository's current contract, into `out/NAME.wasm`.
fn build_js(project: &Path, source: &str, out: &Path, name: &str) -> Vec<u8> {
    let wasm = out.join(format!("{name}.wasm"));
    run(
        Command::new(componentize_js())
            .current_dir(repo().join(project))
            .arg("--wit")
            .arg(repo().join("wit"))
            .args(["--world-name", "placer", "-d", "http", "fetch-event", "-o"])
            .arg(&wasm)
            .arg(source),
        &format!("building {}", project.display()),
    );
    std::fs::read(&wasm).expect("js component")
}

/// Each of `placers` placed calls, and none of them faulted (a faulting placer's calls
/// fall back to the native round-robin order and would still be served).
async fn no_faults(p: &common::Placerd, placers: &[&str]) {
    for name in placers {
        let info = common::placer_info(p, name).await.unwrap_or_else(|| panic!("{name} not loaded"));
        assert!(info["calls"].as_u64().is_some_and(|n| n > 0), "{name} placed no call: {info}");
        assert_eq!(info["faults"].as_u64(), Some(0), "{name} faulted: {info}");
    }
}

/// The runner that served each of `calls` calls of `app`'s functions `fn-0 .. fn-{fns}`,
/// checking every call was placed by `placer`.
async fn placements(addr: std::net::SocketAddr, app: &str, fns: usize, calls: usize, placer: &str) -> Vec<String> {
    let mut served = Vec::new();
    for i in 0..calls {
        let r = send(addr, "POST", &format!("/t/{app}/fn-{}", i % fns), &[], b"x").await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert!(r.header("fn-placer").starts_with(&format!("{placer}/")), "placed by {}", r.header("fn-placer"));
        served.push(r.header("fn-runner").to_string());
    }
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The guard is held across awaits on purpose: the other tests wait on their own threads.
#[allow(clippy::await_holding_lock)]
async fn python_and_javascript_placers_serve_from_the_placers_folder_and_restart_from_the_cache() {
    let _alone = one_at_a_time();
    let built = tempfile::tempdir().expect("tempdir");
    let out = built.path();
    let python = build_python(Path::new("examples/python-placer"), out, "bounded");
    let js = build_js(Path::new("examples/js-placer"), "placer.js", out, "p2c");
    // Two placers written by someone outside the team from the docs alone (unchanged).
    let latency = build_python(Path::new("tests/fixtures/outside/py-latency"), out, "latency");
    let affinity = build_js(Path::new("tests/fixtures/outside/js-affinity"), "placer.js", out, "affinity");
    let runners = [runner(64, "r1").await, runner(64, "r2").await, runner(64, "r3").await];
    let addresses: Vec<String> = runners.iter().map(|r| r.addr.to_string()).collect();
    let cache = tempfile::tempdir().expect("cache dir");
    let folder = tempfile::tempdir().expect("placers");
    std::fs::write(folder.path().join("bounded.wasm"), &python).expect("python placer");
    std::fs::write(folder.path().join("p2c.wasm"), &js).expect("js placer");
    std::fs::write(folder.path().join("latency.wasm"), &latency).expect("outside python placer");
    std::fs::write(folder.path().join("affinity.wasm"), &affinity).expect("outside js placer");
    let configure = |c: &mut placerd::config::Config| {
        c.placers_dir = folder.path().to_path_buf();
        c.cache_dir = Some(cache.path().to_path_buf());
        // The default limits (16 MiB, 5 ms) for all four: JavaScript's growing heap is
        // recycled below the cap, and a call preempted by the other test of this file
        // compiling beside it is judged by its CPU time.
        let route = |app: &str, placer: &str| placerd::config::Route {
            app: Some(app.into()),
            placer: placer.into(),
            ..Default::default()
        };
        c.routes = vec![route("app", "bounded"), route("spread", "p2c"), route("sticky", "affinity")];
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        c.placer_config.insert("latency".into(), vec![pair("error_penalty", "50")]);
        c.placer_config.insert("affinity".into(), vec![pair("spill_factor", "3"), pair("spill_min", "8")]);
    };

    // First start: all four compiled (seconds each), and serving only once they are
    // loaded, so a folder placer can be the default placer: the outside Python one.
    let started = Instant::now();
    let p = start_with(addresses.clone(), "latency", |_| {}, configure).await;
    let first_start = started.elapsed();
    // Consistent hashing with bounded loads: one function, one runner (calls run one at a
    // time, so no runner is ever over the bound).
    let served = placements(p.addr, "app", 1, 12, "bounded").await;
    assert!(served.iter().all(|r| r == &served[0]), "a function moved between runners: {served:?}");
    let by_function = placements(p.addr, "app", 30, 30, "bounded").await;
    let distinct: std::collections::HashSet<_> = by_function.iter().collect();
    assert!(distinct.len() >= 2, "30 functions all on one runner: {by_function:?}");
    // Power of two choices from each call's random value: calls spread.
    let spread = placements(p.addr, "spread", 1, 30, "p2c").await;
    let distinct: std::collections::HashSet<_> = spread.iter().collect();
    assert!(distinct.len() >= 2, "p2c sent 30 calls to one runner: {spread:?}");
    // The outside placers: latency-aware serves every call no route takes; keyed affinity
    // keeps a function on one runner (calls run one at a time, so none is over the
    // spill-over bound).
    assert_eq!(placements(p.addr, "fast", 5, 10, "latency").await.len(), 10);
    let sticky = placements(p.addr, "sticky", 1, 12, "affinity").await;
    assert!(sticky.iter().all(|r| r == &sticky[0]), "a function moved between runners: {sticky:?}");
    // Their own algorithms placed every call: a fault would have fallen back to round robin.
    no_faults(&p, &["bounded", "p2c", "latency", "affinity"]).await;

    // The compiled code is on disk, one entry per component.
    let entries = || {
        let mut e: Vec<(PathBuf, std::time::SystemTime)> = std::fs::read_dir(cache.path())
            .expect("cache")
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .map(|p| {
                let modified = std::fs::metadata(&p).and_then(|m| m.modified()).expect("mtime");
                (p, modified)
            })
            .collect();
        e.sort();
        e
    };
    let cached = entries();
    let shas = [python, js, latency, affinity].map(|bytes| common::sha256_hex(&bytes));
    for sha in &shas {
        assert!(cached.iter().any(|(p, _)| p.to_string_lossy().contains(sha.as_str())), "{sha} not cached: {cached:?}");
    }
    drop(p);

    // Restart: the compiled code is read back, not rebuilt (the entries are untouched).
    let started = Instant::now();
    let p = start_with(addresses, "latency", |_| {}, configure).await;
    let restart = started.elapsed();
    assert_eq!(placements(p.addr, "fast", 1, 3, "latency").await.len(), 3);
    assert_eq!(placements(p.addr, "app", 1, 3, "bounded").await.len(), 3);
    assert_eq!(placements(p.addr, "spread", 1, 3, "p2c").await.len(), 3);
    assert_eq!(placements(p.addr, "sticky", 1, 3, "affinity").await.len(), 3);
    assert_eq!(entries(), cached, "the restart compiled again instead of using cache_dir");
    eprintln!("first start {first_start:?} (compiling both), restart {restart:?} (from cache_dir)");
}

/// Runs `placerd check` on `wasm` (with `args`) and returns its output.
fn check(wasm: &Path, args: &[&str]) -> String {
    let out = common::placerd_command().arg("check").arg(wasm).args(args).output().expect("placerd check");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "placerd check {} failed:\n{text}", wasm.display());
    text
}

#[test]
fn scaffolded_projects_of_all_three_languages_build_with_one_command_and_pass_check() {
    let _alone = one_at_a_time();
    let dir = tempfile::tempdir().expect("tempdir");
    let new = |name: &str, lang: &str| {
        let out = common::placerd_command()
            .args(["new", name, "--lang", lang, "--dir"])
            .arg(dir.path())
            .output()
            .expect("placerd new");
        assert!(out.status.success(), "placerd new: {}", String::from_utf8_lossy(&out.stderr));
        dir.path().join(name)
    };
    let mut orders = Vec::new();

    // Rust: `cargo build --release`, in a target directory kept with this build's.
    let rust = new("my-rust", "rust");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo.current_dir(&rust).args(["build", "--release", "--quiet"]);
    // The outer build's settings are for the host and must not leak in.
    for var in
        ["RUSTC_WORKSPACE_WRAPPER", "RUSTC_WRAPPER", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET"]
    {
        cargo.env_remove(var);
    }
    cargo.env("CARGO_TARGET_DIR", toolchains().join("scaffold-target"));
    run(&mut cargo, "cargo build --release of the Rust scaffold");
    let wasm = toolchains().join("scaffold-target/wasm32-wasip2/release/my_rust.wasm");
    orders.push(check(&wasm, &[]));

    // Python: the one componentize-py command of its README.
    let python = new("my-py", "python");
    run(
        Command::new(componentize_py()).current_dir(&python).args([
            "-d",
            "wit",
            "-w",
            "placer",
            "componentize",
            "app",
            "-o",
            "my-py.wasm",
        ]),
        "building the Python scaffold",
    );
    orders.push(check(&python.join("my-py.wasm"), &[]));

    // JavaScript: `npm run build` (its package.json's script), with the pinned
    // componentize-js from the cache on PATH instead of an `npm install` per project.
    let js = new("my-js", "js");
    let bin = componentize_js().parent().expect("bin dir").to_path_buf();
    let path = std::env::join_paths(
        std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .expect("PATH");
    run(Command::new("npm").current_dir(&js).args(["run", "--silent", "build"]).env("PATH", path), "npm run build");
    // As its README says: at the default limits, like the others.
    orders.push(check(&js.join("my-js.wasm"), &[]));

    // The three templates are one algorithm: they order the sample calls alike.
    let lines = |text: &str| text.lines().filter(|l| l.contains("seq=")).map(str::to_string).collect::<Vec<_>>();
    assert_eq!(lines(&orders[0]), lines(&orders[1]), "Rust and Python templates disagree");
    assert_eq!(lines(&orders[0]), lines(&orders[2]), "Rust and JavaScript templates disagree");
}

/// Places `calls` calls on `version` from two threads (as two workers do), with loads
/// that change from call to call, and returns why each call not placed by the guest was
/// not.
fn serve(version: &placerd::placer::PlacerVersion, calls: u64) -> Vec<String> {
    use placerd::placer::{Call, CallKind, PlacedBy, RunnerLoad, RunnerSet};
    let set = RunnerSet::from_addresses(1, (0..4).map(|i| format!("10.0.0.{i}:8080")));
    let not_by_guest = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for thread in 0..2u64 {
            let (set, not_by_guest) = (&set, &not_by_guest);
            s.spawn(move || {
                for seq in (thread..calls).step_by(2) {
                    let call = Call {
                        id: format!("call-{seq}"),
                        app_id: "app".into(),
                        fn_id: format!("fn-{}", seq % 1000),
                        kind: CallKind::Sync,
                        slot_key: format!("fn-{}", seq % 1000),
                        seq,
                        random: seq.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                        extensions: Vec::new(),
                    };
                    let loads: Vec<RunnerLoad> = (0..4u32)
                        .map(|i| RunnerLoad {
                            in_flight: (seq as u32).wrapping_add(i * 7) % 13,
                            healthy: (seq + u64::from(i)) % 97 != 0,
                            ..RunnerLoad::default()
                        })
                        .collect();
                    let placed = version.place(&call, set, &loads).expect("fallback policy");
                    if let PlacedBy::Fallback(kind) = placed.by {
                        not_by_guest.lock().expect("list").push(format!("call {seq}: {kind}"));
                    }
                }
            });
        }
    });
    not_by_guest.into_inner().expect("list")
}

/// The examples in both garbage-collected languages serve 200,000 calls each at the
/// default limits (16 MiB, 5 ms) without a fault: the JavaScript runtime's heap grows with
/// every call until it reaches the cap, and its instances are recycled before it does.
#[test]
fn python_and_javascript_placers_serve_200000_calls_at_the_default_limits_without_a_fault() {
    let _alone = one_at_a_time();
    use placerd::placer::{PlacerRuntime, PlacerSource, SandboxLimits};
    let built = tempfile::tempdir().expect("tempdir");
    let placers = [
        ("bounded", build_python(Path::new("examples/python-placer"), built.path(), "bounded")),
        ("p2c", build_js(Path::new("examples/js-placer"), "placer.js", built.path(), "p2c")),
    ];
    let runtime = PlacerRuntime::new(SandboxLimits::default()).expect("runtime");
    for (name, bytes) in placers {
        let version = runtime.load(name, PlacerSource::Admin, &bytes, Vec::new()).expect("loads");
        let started = Instant::now();
        let faults = serve(&version, 200_000);
        eprintln!(
            "{name}: 200,000 calls in {:?}, {} recycles ({} late), replacement {} µs, memory {} KiB",
            started.elapsed(),
            version.recycles(),
            version.late_recycles(),
            version.replacement_nanos_avg() / 1000,
            version.instance_memory_bytes() / 1024
        );
        assert!(faults.is_empty(), "{name}: calls placed by the fallback: {faults:?}");
        assert_eq!(version.served_faults(), 0, "{name}");
        assert!(version.instance_memory_bytes() <= 16 << 20, "{name}");
    }
}
