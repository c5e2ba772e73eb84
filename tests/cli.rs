//! The command line as an operator meets it: `serve --check-config` as a dry run, `-V`,
//! completions and the man page, environment overrides, plain logs, and the demo.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn placerd() -> Command {
    let mut command = common::placerd_command();
    command.env_remove("NO_COLOR");
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("PLACERD_")) {
        command.env_remove(name);
    }
    command
}

use common::run_within as run;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn check_config(dir: &Path, toml: &str, env: &[(&str, &str)]) -> (bool, String, String) {
    let path = dir.join("placerd.toml");
    std::fs::write(&path, toml).expect("config");
    let mut command = placerd();
    command.args(["serve", "--check-config", "--config"]).arg(&path).envs(env.iter().copied());
    let out = run(&mut command, Duration::from_secs(120));
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn check_config_loads_everything_and_reports_every_problem_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let placers = dir.path().join("placers");
    std::fs::create_dir_all(&placers).expect("placers");
    std::fs::write(placers.join("broken.wasm"), b"not a component").expect("placer");
    let toml = format!(
        r#"placers_dir = "{placers}"
cache_dir = "off"
default_placer = "nope"
admin_token_file = "{dir}/no-token"
[runners]
file = "{dir}/no-runners"
[placers.consistent_hash.config]
max_load_factor = "1.5"
[placers.consistent-hash.config]
max_load_factor = "abc"
[[routes]]
app = "billing"
placer = "mine"
"#,
        placers = placers.display(),
        dir = dir.path().display()
    );
    let (ok, stdout, stderr) = check_config(dir.path(), &toml, &[]);
    assert!(!ok, "{stdout}");
    let errors: Vec<&str> = stdout.lines().filter(|l| l.starts_with("error: ")).collect();
    for expected in [
        "error: admin_token_file: cannot read",
        "error: runners.file:",
        "error: placers.consistent-hash.config: placer `consistent-hash` rejected its config",
        "error: placers_dir: ",
        "error: placers.consistent_hash.config: no placer named `consistent_hash`",
        "error: default_placer: no placer named `nope`",
        "error: routes[0].placer: no placer named `mine`",
    ] {
        assert!(errors.iter().any(|e| e.starts_with(expected)), "missing {expected:?} in\n{stdout}");
    }
    assert_eq!(errors.len(), 7, "{stdout}");
    assert!(stdout.contains("did you mean `consistent-hash`"), "{stdout}");
    assert!(stdout.contains("not WebAssembly at all"), "the broken placer's reason in plain words: {stdout}");
    assert!(stderr.contains("7 problem(s)"), "{stderr}");
    assert!(!stdout.contains("config ok"), "{stdout}");
}

#[test]
fn check_config_reports_every_bad_key_and_rejects_runner_lists_and_schemes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = "retry_all_delay_ms = 0\non_placer_fault = \"explode\"\n[runners]\nstatic = [\"http://127.0.0.1:9001\", \"a:1,b:2\"]\n";
    let (ok, stdout, _) = check_config(dir.path(), toml, &[]);
    assert!(!ok, "{stdout}");
    assert!(stdout.contains("error: retry_all_delay_ms: must be at least 1"), "{stdout}");
    assert!(stdout.contains("error: on_placer_fault:"), "{stdout}");
    assert!(stdout.contains("error: runners.static[0]:") && stdout.contains("drop the http://"), "{stdout}");
    assert!(stdout.contains("error: runners.static[1]:") && stdout.contains(r#"["a:1", "b:2"]"#), "{stdout}");
}

#[test]
fn a_good_config_passes_with_a_warning_for_zero_runners_and_env_overrides_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = format!("placers_dir = \"{}/placers\"\ncache_dir = \"off\"\n", dir.path().display());
    let (ok, stdout, _) = check_config(dir.path(), &toml, &[]);
    assert!(ok, "{stdout}");
    assert!(stdout.contains("warning: no runners"), "{stdout}");
    assert!(stdout.contains("config ok: ") && stdout.contains("default `consistent-hash`"), "{stdout}");
    assert!(!dir.path().join("placers").exists(), "a dry run creates nothing");

    // The environment wins over the file; a PLACERD_ variable that names no key is a
    // warning (on stderr, in plain text: no colour codes off a terminal).
    let env = [("PLACERD_DEFAULT_PLACER", "naive"), ("PLACERD_RUNNERS__STATIC", r#"["127.0.0.1:9001"]"#)];
    let (ok, stdout, _) = check_config(dir.path(), &toml, &env);
    assert!(ok && stdout.contains("default `naive`") && stdout.contains("1 static runners"), "{stdout}");
    let (ok, stdout, stderr) = check_config(dir.path(), &toml, &[("PLACERD_DEFAULT_PLACER", "nope")]);
    assert!(!ok && stdout.contains("error: default_placer: no placer named `nope`"), "{stdout}");
    let (ok, stdout, _) = check_config(dir.path(), &toml, &[("PLACERD_NO_SUCH_KEY", "1")]);
    assert!(ok && stdout.contains("warning: PLACERD_NO_SUCH_KEY names no config key"), "{stdout}");
    assert!(!stderr.contains('\x1b'), "ANSI codes in a non-terminal's log: {stderr:?}");
}

#[test]
fn version_completions_and_man_page_come_from_the_command_line_definitions() {
    for flag in ["-V", "--version"] {
        let version = text(&run(placerd().arg(flag), Duration::from_secs(20)).stdout);
        assert!(version.starts_with("placerd "), "{version}");
        for part in ["commit ", "placer contract placerd:placer@0.4.0", "wasmtime 48."] {
            assert!(version.contains(part), "{flag}: {part:?} missing from {version}");
        }
    }
    let bash = run(placerd().args(["completions", "bash"]), Duration::from_secs(20));
    assert!(bash.status.success());
    let bash = text(&bash.stdout);
    assert!(bash.contains("_placerd()") && bash.contains("--check-config"), "{bash}");
    let man = text(&run(placerd().arg("man"), Duration::from_secs(20)).stdout);
    assert!(man.contains(".TH placerd") && man.contains("serve"), "{man}");
}

#[test]
fn the_demo_binds_before_its_banner_and_keeps_its_files_out_of_the_working_directory() {
    let cwd = tempfile::tempdir().expect("tempdir");
    // A port in use: an error, and no banner.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").to_string();
    let out = run(
        placerd().current_dir(cwd.path()).args(["demo", "--listen", &port, "--admin-listen", "127.0.0.1:0"]),
        Duration::from_secs(60),
    );
    assert!(!out.status.success());
    assert!(!text(&out.stdout).contains("placerd demo:"), "banner before the error: {}", text(&out.stdout));
    assert!(text(&out.stderr).contains(&port), "{}", text(&out.stderr));

    // Free ports: the banner names the bound ones, a call through it works, and nothing
    // is written to the working directory.
    let mut child = placerd()
        .current_dir(cwd.path())
        .args(["demo", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let banner = stdout.by_ref().map_while(Result::ok).find(|l| l.starts_with("placerd demo:"));
    let banner = banner.expect("a banner");
    let placers_line = stdout.next().and_then(Result::ok).unwrap_or_default();
    let folder = placers_line.split(" into ").nth(1).and_then(|rest| rest.split("/placers/").next()).map(PathBuf::from);
    let folder = folder.unwrap_or_else(|| panic!("no placers folder in {placers_line:?}"));
    assert!(folder.exists(), "{}", folder.display());
    // Keep reading: the demo prints more, and a closed pipe would stop it.
    std::thread::spawn(move || stdout.for_each(drop));
    let addr = banner.split("http://").nth(1).and_then(|a| a.split(',').next()).expect("address in the banner");
    assert!(!addr.ends_with(":0"), "{banner}");
    let addr: std::net::SocketAddr = addr.parse().expect("address");
    let status = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(common::send(addr, "POST", "/invoke/hello", &[], b"hi"))
        .status;
    // Stopped as a person stops it (SIGTERM, like Ctrl-C), it removes its folder.
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(term.success());
    let stopped = common::run_within_wait(&mut child, Duration::from_secs(60));
    assert_eq!(status, hyper::StatusCode::OK);
    assert!(stopped, "the demo did not stop on SIGTERM");
    assert!(!folder.exists(), "the demo left {} behind", folder.display());
    let left: Vec<_> = std::fs::read_dir(cwd.path()).expect("ls").collect();
    assert!(left.is_empty(), "the demo wrote into the working directory: {left:?}");
}

#[test]
fn simulate_gives_a_placer_its_table_from_a_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let placer = dir.path().join("refuser.wasm");
    std::fs::copy(Path::new(env!("PLACERD_FIXTURES_DIR")).join("configure-error.wasm"), &placer).expect("fixture");
    let toml = dir.path().join("placerd.toml");
    std::fs::write(&toml, "placer_memory_limit_bytes = 33554432\n[placers.refuser.config]\ncolour = \"blue\"\n")
        .expect("config");
    // The fixture refuses every config and names its keys: the file's table reached it.
    let out = common::run_within(
        placerd()
            .args(["simulate", "--calls", "1000", "--keys", "50", "--placer"])
            .arg(&placer)
            .arg("--config-file")
            .arg(&toml),
        Duration::from_secs(120),
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("refuses every config") && stderr.contains("colour"), "{stderr}");
}

#[test]
fn a_stop_during_the_first_load_of_the_placers_folder_is_honoured_at_once() {
    // A placer whose validation takes 8 s (it spins through an 8 s budget): start-up waits
    // for it, but a SIGTERM meanwhile stops placerd at once.
    let dir = tempfile::tempdir().expect("tempdir");
    let placers = dir.path().join("placers");
    std::fs::create_dir(&placers).expect("placers");
    std::fs::copy(Path::new(env!("PLACERD_FIXTURES_DIR")).join("loops-forever.wasm"), placers.join("slow.wasm"))
        .expect("fixture");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let mut child = placerd()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--admin-listen", "127.0.0.1:0"])
        .args(["--runner", "127.0.0.1:1", "--placers-dir"])
        .arg(&placers)
        .env("PLACERD_PLACER_BUDGET_MS", "8000")
        .env("PLACERD_CACHE_DIR", "off")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Bound means start-up has begun (its signal handler is in place by then).
    let bound = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(bound, "placerd never listened on {port}");
    std::thread::sleep(Duration::from_millis(300));
    let asked = std::time::Instant::now();
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill").success());
    assert!(common::run_within_wait(&mut child, Duration::from_secs(60)), "placerd did not stop");
    let took = asked.elapsed();
    let mut log = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut log);
    assert!(log.contains("stopped while loading the placers folder"), "{log}");
    assert!(!log.contains("placerd serving"), "{log}");
    // The placer's load alone takes 8 s; stopping took a fraction of it.
    assert!(took < Duration::from_secs(6), "stopping took {took:?}: it waited for the load");
}
