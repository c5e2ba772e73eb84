//! Reference reverse proxies (nginx, HAProxy) for differential tests: each is started in the
//! foreground from a config in a fresh temporary directory, on a free 127.0.0.1 port, in front
//! of a given backend, and is stopped (and its directory removed) when the [`Peer`] is dropped.
//!
//! Std only. When a binary is not installed the constructors return `None`, so a test can skip.
//!
//! Observed with Debian 12 (nginx 1.22.1, HAProxy 2.6.12), defaults below:
//! - both answer 400 and close for bad chunk sizes (`+5`, ` 5`, `5\x0b`, `0x5`, overflow), a bare
//!   CR in a chunk line or trailer, a lone CR in a header value, a space before the colon,
//!   `Content-Length: +5` / `5, 6`, two Host headers;
//! - both accept `5 \r\n`, `5 ;ext`, bare-LF line ends, `Transfer-Encoding: Chunked`, leading
//!   zeros in a chunk size, `HTTP/1.2`, unknown methods (`FOO`);
//! - both reject other transfer codings (`gzip, chunked`, `chunked, chunked`, `identity`, `,chunked`):
//!   nginx 501 (400 for two TE lines), HAProxy 422 or 400;
//! - nginx alone rejects: TE+CL (400), duplicate or `5, 5` Content-Length, missing/empty/odd
//!   Host, obs-fold, NUL in a value, lowercase method, `HTTP/2.0` (505), TE on HTTP/1.0,
//!   CONNECT (400), TRACE (405); HAProxy forwards all of these (obs-fold unfolded, NUL kept,
//!   duplicate CL merged, TE+CL -> chunked then close) but rejects absolute-form whose authority
//!   differs from Host, or with a non-http scheme (400), which nginx accepts.
//! - nginx de-chunks request bodies (sends Content-Length); HAProxy re-chunks them and drops
//!   chunk extensions.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A running reference proxy. Dropping it kills the process and removes its directory.
#[derive(Debug)]
pub(crate) struct Peer {
    /// `"nginx"` or `"haproxy"`.
    pub(crate) name: &'static str,
    /// Where the proxy listens (127.0.0.1).
    pub(crate) addr: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl Peer {
    /// The proxy's temporary directory (config, error log).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the proxy wrote to its logs so far (nginx `error.log`, HAProxy stderr), for
    /// failure messages.
    pub(crate) fn log(&self) -> String {
        let mut out = String::new();
        for file in ["error.log", "stderr.log"] {
            if let Ok(text) = std::fs::read_to_string(self.dir.join(file)) {
                out.push_str(&text);
            }
        }
        out
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One request/response exchange on a fresh connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exchange {
    /// Status code of the first response (`HTTP/1.x NNN`), `None` if nothing or garbage came back.
    pub(crate) status: Option<u16>,
    /// Every byte received until EOF, reset or the 3 s deadline.
    pub(crate) raw: Vec<u8>,
}

/// Starts nginx in front of `backend`, or `None` if nginx is not installed.
///
/// Panics if nginx is installed but does not come up (the message carries its error log).
pub(crate) fn nginx(backend: SocketAddr) -> Option<Peer> {
    let bin = find_binary("nginx")?;
    Some(start("nginx", |dir, port| {
        for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.join(sub)).expect("nginx temp dir");
        }
        let d = dir.display();
        let conf = format!(
            "worker_processes 1;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream backend {{
        server {backend};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $http_host;
            proxy_connect_timeout 5s;
            proxy_send_timeout 5s;
            proxy_read_timeout 5s;
        }}
    }}
}}
"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).expect("write nginx.conf");
        let mut cmd = Command::new(&bin);
        // -e: otherwise nginx first tries its compiled-in error log (/var/log/nginx).
        cmd.arg("-p").arg(dir).arg("-e").arg(dir.join("error.log")).arg("-c").arg(&path);
        cmd.arg("-g").arg("daemon off;");
        cmd
    }))
}

/// Starts HAProxy (`mode http`) in front of `backend`, or `None` if HAProxy is not installed.
///
/// Panics if HAProxy is installed but does not come up (the message carries its output).
pub(crate) fn haproxy(backend: SocketAddr) -> Option<Peer> {
    let bin = find_binary("haproxy")?;
    Some(start("haproxy", |dir, port| {
        let conf = format!(
            "global
    maxconn 512
defaults
    mode http
    timeout connect 5s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server s1 {backend}
"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, conf).expect("write haproxy.cfg");
        let mut cmd = Command::new(&bin);
        cmd.arg("-f").arg(&path).arg("-db");
        cmd
    }))
}

/// Connects to `addr`, writes `request` (shutting nothing down) and reads until EOF, a reset or
/// 3 s in total; with `head_only`, also until the first response's head is in.
pub(crate) fn exchange(addr: SocketAddr, request: &[u8], head_only: bool) -> Exchange {
    const LIMIT: Duration = Duration::from_secs(3);
    let mut raw = Vec::new();
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, LIMIT) else {
        return Exchange { status: None, raw };
    };
    let deadline = Instant::now() + LIMIT;
    let _ = stream.set_write_timeout(Some(LIMIT));
    // A write error (the proxy answered early and closed) still leaves its answer to read.
    let _ = stream.write_all(request);
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if head_only && (raw.windows(4).any(|w| w == b"\r\n\r\n") || raw.windows(2).any(|w| w == b"\n\n")) {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break, // timeout, reset
        }
    }
    Exchange { status: parse_status(&raw), raw }
}

/// `HTTP/1.x NNN` followed by a space, CR, LF or the end.
fn parse_status(raw: &[u8]) -> Option<u16> {
    let rest = raw.strip_prefix(b"HTTP/1.")?;
    let (&minor, rest) = rest.split_first()?;
    if !minor.is_ascii_digit() {
        return None;
    }
    let rest = rest.strip_prefix(b" ")?;
    let digits = rest.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if !matches!(rest.get(3), None | Some(b' ' | b'\r' | b'\n')) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// `name` on PATH, else in the usual sbin directories (often not on a user's PATH).
fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn fresh_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("peer-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("peer temp dir");
    dir
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Writes the config (via `command`), starts the process and waits until its port accepts.
/// Retries with another port a few times (the free port can be taken in between).
fn start(name: &'static str, command: impl Fn(&Path, u16) -> Command) -> Peer {
    let mut last_log = String::new();
    for _ in 0..3 {
        let dir = fresh_dir(name);
        let port = free_port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut cmd = command(&dir, port);
        let out = std::fs::File::create(dir.join("stdout.log")).expect("stdout.log");
        let err = std::fs::File::create(dir.join("stderr.log")).expect("stderr.log");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                panic!("{name}: cannot start {cmd:?}: {e}");
            }
        };
        let mut peer = Peer { name, addr, child, dir };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = peer.child.try_wait() {
                break; // exited: bad config or port taken
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return peer;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        last_log = peer.log();
        // Dropping `peer` kills the process and removes the directory.
    }
    panic!("{name} did not come up:\n{last_log}");
}
