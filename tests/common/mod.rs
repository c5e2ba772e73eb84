//! Helpers shared by the end-to-end tests: a placerd on loopback ports, reference runners,
//! and a minimal HTTP/1.1 client.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use placerd::config::Config;
use placerd::runner::reference::{RunnerHandle, RunnerOptions};
use tokio::net::TcpStream;

/// A running placerd; stops when dropped.
pub struct Placerd {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub placers_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Placerd {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn runner(max_concurrency: u32, name: &str) -> RunnerHandle {
    RunnerHandle::spawn(RunnerOptions { max_concurrency, name: name.into() }).await.expect("runner")
}

/// Starts placerd with `runners`, default placer `placer`, an empty placers folder in a
/// temporary directory (prepared by `prepare` before start) and the admin API on port 0.
pub async fn start_with(
    runners: Vec<String>,
    placer: &str,
    prepare: impl FnOnce(&Path),
    tweak: impl FnOnce(&mut Config),
) -> Placerd {
    let dir = tempfile::tempdir().expect("tempdir");
    let placers_dir = dir.path().join("placers");
    std::fs::create_dir_all(&placers_dir).expect("placers dir");
    prepare(&placers_dir);
    let cache_dir = Some(dir.path().join("cache"));
    let mut config = Config {
        runners,
        default_placer: placer.into(),
        placers_dir: placers_dir.clone(),
        cache_dir,
        ..Config::default()
    };
    config.sandbox.budget = Duration::from_millis(200); // wall clock; tests share 2 cores
    // One worker: a test's connections and calls all meet on one thread, as they did before
    // there were workers; `tests/workers.rs` runs several.
    config.workers = 1;
    tweak(&mut config);
    // A plain request to a TLS port is answered 400 in clear.
    let probe = if config.tls.is_some() { StatusCode::BAD_REQUEST } else { StatusCode::NOT_FOUND };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (addr, admin) = (listener.local_addr().expect("addr"), admin_listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        placerd::serve_with_admin(listener, Some(admin_listener), config, async move {
            let _ = stopped.await;
        })
        .await
        .expect("serve");
    });
    // Serving starts after the placers are compiled and checked: wait for it, so tests
    // time calls, not start-up.
    assert_eq!(send(addr, "GET", "/ready-probe", &[], b"").await.status, probe);
    Placerd { addr, admin, placers_dir, stop: Some(stop), _dir: dir }
}

pub async fn start(runners: Vec<String>, placer: &str, tweak: impl FnOnce(&mut Config)) -> Placerd {
    start_with(runners, placer, |_| {}, tweak).await
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

pub async fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req = req.header("host", addr.to_string());
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = sender
        .send_request(req.body(Full::new(Bytes::copy_from_slice(body))).expect("request"))
        .await
        .expect("response");
    let (head, body) = response.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Reply { status: head.status, headers: head.headers, body }
}

/// Polls `check` every 10 ms until it is true or `limit` passes; returns whether it was.
pub async fn eventually(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// The component bytes of a fixture or example (`custom-placer`).
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("PLACERD_FIXTURES_DIR")).join(format!("{name}.wasm"))).expect("fixture")
}

/// Writes `bytes` to `dir/name` atomically: a hidden temporary file, then rename.
pub fn atomic_write(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).expect("write tmp");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

/// The running placer `name` as `GET /admin/placers` shows it.
pub async fn placer_info(p: &Placerd, name: &str) -> Option<serde_json::Value> {
    let list = send(p.admin, "GET", "/admin/placers", &[], b"").await.json();
    list.as_array()?.iter().find(|i| i["name"] == name).cloned()
}

/// Runs `command` to its end with stdout and stderr captured, killing it if it outlives
/// `limit` (the commands tested must never hang).
pub fn run_within(command: &mut std::process::Command, limit: Duration) -> std::process::Output {
    use std::process::Stdio;
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    assert!(run_within_wait(&mut child, limit), "{command:?} still running after {limit:?}");
    child.wait_with_output().expect("output")
}

/// Waits up to `limit` for `child` to exit; true when it did, else it is killed.
pub fn run_within_wait(child: &mut std::process::Child, limit: Duration) -> bool {
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// A child process that is killed (and reaped) when dropped, however the test ends: a
/// test that fails part-way leaves no process behind.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child process whose stderr is read line by line on a thread.
pub struct Logged {
    pub child: KillOnDrop,
    /// Every stderr line containing the marker, as it comes; closed when the process exits.
    pub marked: std::sync::mpsc::Receiver<String>,
    /// All stderr lines, once the process has exited.
    pub lines: std::thread::JoinHandle<Vec<String>>,
}

/// Spawns `command` with stderr piped (stdout discarded) and watches it for `marker`, e.g.
/// the start-up line that tells where a process bound to port 0 listens.
pub fn spawn_logged(command: &mut std::process::Command, marker: &'static str) -> Logged {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, marked) = std::sync::mpsc::channel();
    let lines = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(marker) {
                let _ = tx.send(line.clone());
            }
            lines.push(line);
        }
        lines
    });
    Logged { child: KillOnDrop(child), marked, lines }
}

/// `placerd serve --config PATH` with JSON logs at info, once it says it serves: the
/// process (its stderr lines kept) and where its proxy and admin API listen.
pub fn serve_config(path: &Path) -> (Logged, SocketAddr, SocketAddr) {
    let logged = spawn_logged(
        std::process::Command::new(env!("CARGO_BIN_EXE_placerd"))
            .args(["--log-format", "json", "serve", "--config"])
            .arg(path)
            .env("RUST_LOG", "info"),
        "placerd serving",
    );
    let line =
        logged.marked.recv_timeout(Duration::from_secs(60)).expect("placerd serving (or it exited: see its log)");
    let (addr, admin) = (log_addr(&line, "listen"), log_addr(&line, "admin"));
    (logged, addr, admin)
}

/// An address field of a JSON log line (`--log-format json`).
pub fn log_addr(line: &str, field: &str) -> SocketAddr {
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
    v["fields"][field].as_str().and_then(|a| a.parse().ok()).unwrap_or_else(|| panic!("no address `{field}` in {line}"))
}

/// `placerd` as a command, with its compile cache in this build's target directory
/// (`XDG_CACHE_HOME`), not the user's, and no `RUST_LOG` from the caller.
pub fn placerd_command() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_placerd"));
    command.env("XDG_CACHE_HOME", std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("xdg-cache"));
    command.env_remove("RUST_LOG");
    command
}

/// Installs Debian `packages` with apt-get (the tests that need a distribution tool
/// install it on first use, so a fresh machine needs nothing beforehand).
///
/// # Errors
/// What apt-get said when it failed, or that it could not run.
pub fn apt_install(packages: &[&str]) -> Result<(), String> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let apt = |args: &[&str]| {
        let out = std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .map_err(|e| format!("cannot run apt-get: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("apt-get {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)))
        }
    };
    apt(&["update"])?;
    apt(&[&["install", "-y", "--no-install-recommends"][..], packages].concat())
}

/// Lower-case hex SHA-256 of `bytes`, as `GET /admin/placers` and `placerd_placer_info` show it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads one request (head, then a `content-length` body) from a keep-alive `stream`,
/// with `pending` holding what was read past the previous one; `None` at the end.
pub async fn read_request(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut wanted = None;
    loop {
        if wanted.is_none()
            && let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n")
        {
            let head = String::from_utf8_lossy(&pending[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            wanted = Some(end + 4 + length);
        }
        if let Some(n) = wanted.filter(|&n| pending.len() >= n) {
            return Some(pending.drain(..n).collect());
        }
        let mut more = [0u8; 4096];
        match stream.read(&mut more).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&more[..n]),
        }
    }
}
