//! The runner side of the proxy's HTTP/1.1 (`runner/client.rs`, `runner/http1.rs`) against
//! a scripted runner on a loopback port: every response framing reaches the client whole,
//! connections are reused, a runner that closes an idle connection costs no call, and a
//! broken answer is a 502 that is never sent anywhere else.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{send, start};
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the scripted runner answers to one request: the raw response bytes, and whether
/// it then closes the connection (without saying so in the response).
type Script = fn(&str) -> (Vec<u8>, bool);

struct FakeRunner {
    addr: std::net::SocketAddr,
    /// Each request as received (head and body, as text) and the connection it came on.
    requests: Arc<Mutex<Vec<(u32, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeRunner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeRunner {
    fn requests_to(&self, path: &str) -> usize {
        let line = format!(" {path} HTTP/1.1\r\n");
        self.requests.lock().expect("requests").iter().filter(|(_, r)| r.contains(&line)).count()
    }

    /// Connections that carried calls (the status poller has its own).
    fn call_connections(&self) -> usize {
        let requests = self.requests.lock().expect("requests");
        let calls = requests.iter().filter(|(_, r)| !r.contains(" /v1/status "));
        calls.map(|(c, _)| *c).collect::<std::collections::HashSet<_>>().len()
    }
}

/// A runner that reads each request (head, then a `content-length` body) and answers it
/// with `script`, keeping the connection open unless the script closes it.
async fn fake_runner(script: Script) -> FakeRunner {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let counted = Arc::new(AtomicU32::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = requests.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let connection = counted.fetch_add(1, Ordering::SeqCst);
            let log = log.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                while let Some(request) = common::read_request(&mut stream, &mut pending).await {
                    let request = String::from_utf8_lossy(&request).into_owned();
                    log.lock().expect("log").push((connection, request.clone()));
                    let (answer, close) = script(&request);
                    if stream.write_all(&answer).await.is_err() || close {
                        let _ = stream.shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    FakeRunner { addr, requests, task }
}

const LARGE: usize = 200_000;

fn framings(request: &str) -> (Vec<u8>, bool) {
    let path = request.split(' ').nth(1).unwrap_or("");
    let answer = match path {
        "/t/app/chunked" => {
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6;x=y\r\nhello \r\n5\r\nworld\r\n0\r\ntrailer: 1\r\n\r\n"
                .to_vec()
        }
        "/t/app/large" => {
            let mut r = format!("HTTP/1.1 200 OK\r\ncontent-length: {LARGE}\r\n\r\n").into_bytes();
            r.extend((0..LARGE).map(|i| b'a' + (i % 26) as u8));
            r
        }
        "/t/app/until-close" => return (b"HTTP/1.1 200 OK\r\nx-a: b\r\n\r\nall of it".to_vec(), true),
        "/t/app/informational" => {
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\ndone".to_vec()
        }
        "/t/app/head" => b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n".to_vec(),
        _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
    };
    (answer, false)
}

#[tokio::test]
async fn every_response_framing_reaches_the_client_whole_over_reused_connections() {
    let runner = fake_runner(framings).await;
    let p = start(vec![runner.addr.to_string()], "naive", |_| {}).await;

    // Chunked: decoded, trailers dropped; ten in a row on one connection.
    for _ in 0..10 {
        let r = send(p.addr, "POST", "/t/app/chunked", &[], b"payload").await;
        assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"hello world"[..]));
        assert!(r.headers.get("transfer-encoding").is_none_or(|v| v == "chunked"), "{:?}", r.headers);
    }
    assert_eq!(runner.call_connections(), 1, "chunked responses did not reuse the connection");
    // What the runner got: the method, the target, the body with its length.
    let first = runner
        .requests
        .lock()
        .expect("requests")
        .iter()
        .find(|(_, r)| r.contains("/t/app/chunked"))
        .expect("sent")
        .1
        .clone();
    assert!(first.starts_with("POST /t/app/chunked HTTP/1.1\r\n"), "{first}");
    assert!(first.contains("\r\ncontent-length: 7\r\n") && first.ends_with("\r\n\r\npayload"), "{first}");

    // A body over the buffered size streams through, byte for byte, and the connection
    // is reused after it.
    for _ in 0..3 {
        let r = send(p.addr, "GET", "/t/app/large", &[], b"").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body.len(), LARGE);
        assert!(r.body.iter().enumerate().all(|(i, &b)| b == b'a' + (i % 26) as u8), "the large body changed");
    }
    assert_eq!(runner.call_connections(), 1, "a streamed body did not give its connection back");

    // Informational heads are skipped; HEAD has no body whatever its length says.
    let r = send(p.addr, "POST", "/t/app/informational", &[], b"x").await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::CREATED, &b"done"[..]));
    let r = send(p.addr, "HEAD", "/t/app/head", &[], b"").await;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, 0));
    let r = send(p.addr, "GET", "/t/app/plain", &[], b"").await;
    assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"ok"[..]));
    assert_eq!(runner.call_connections(), 1);

    // No length: the body runs until the runner closes, and that connection is not reused.
    let r = send(p.addr, "GET", "/t/app/until-close", &[], b"").await;
    assert_eq!((r.status, &r.body[..], r.header("x-a")), (StatusCode::OK, &b"all of it"[..], "b"));
    let r = send(p.addr, "GET", "/t/app/plain", &[], b"").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(runner.call_connections(), 2);
}

#[tokio::test]
async fn a_runner_that_closes_idle_connections_costs_no_call() {
    // Every answer is followed by a close the response does not announce, as a runner's
    // idle timeout would: the next call must notice and open a fresh connection instead
    // of failing on the dead one.
    let runner = fake_runner(|_| (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(), true)).await;
    let p = start(vec![runner.addr.to_string()], "naive", |_| {}).await;
    for i in 0..20 {
        let r = send(p.addr, "POST", &format!("/t/app/idle-{i}"), &[], b"x").await;
        assert_eq!(r.status, StatusCode::OK, "call {i}: {:?}", r.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..20 {
        assert_eq!(runner.requests_to(&format!("/t/app/idle-{i}")), 1, "call {i} was sent more than once");
    }
    assert_eq!(runner.call_connections(), 20);
}

fn broken(request: &str) -> (Vec<u8>, bool) {
    let path = request.split(' ').nth(1).unwrap_or("");
    let answer = match path {
        "/t/app/garbage" => b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec(),
        "/t/app/bad-chunk" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        "/t/app/two-lengths" => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok".to_vec(),
        "/t/app/switch" => b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n".to_vec(),
        _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
    };
    (answer, false)
}

#[tokio::test]
async fn a_broken_runner_answer_is_a_502_and_the_call_is_never_resent() {
    let (a, b) = (fake_runner(broken).await, fake_runner(broken).await);
    let p = start(vec![a.addr.to_string(), b.addr.to_string()], "naive", |_| {}).await;
    for path in ["/t/app/garbage", "/t/app/two-lengths", "/t/app/switch"] {
        let r = send(p.addr, "POST", path, &[], b"x").await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{path}: {:?}", r.body);
        let body = String::from_utf8_lossy(&r.body);
        assert!(!body.contains("127.0.0.1"), "{path}: the 502 names a runner address: {body}");
        assert_eq!(a.requests_to(path) + b.requests_to(path), 1, "{path} was sent more than once");
    }
    // A chunked body that is broken in what came with the head: a 502 before any head
    // reaches the client, and the call ran once.
    let r = send(p.addr, "GET", "/t/app/bad-chunk", &[], b"").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{:?}", r.body);
    assert_eq!(a.requests_to("/t/app/bad-chunk") + b.requests_to("/t/app/bad-chunk"), 1);
    // One that breaks after the head went out: the client's response is cut (never
    // completed as if whole).
    let late = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let late_addr = late.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = late.accept().await {
            tokio::spawn(async move {
                let mut pending = Vec::new();
                while let Some(request) = common::read_request(&mut stream, &mut pending).await {
                    if request.starts_with(b"GET /v1/status") {
                        let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").await;
                        continue;
                    }
                    let _ =
                        stream.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n").await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = stream.write_all(b"zz\r\n").await;
                }
            });
        }
    });
    let late_p = start(vec![late_addr.to_string()], "naive", |_| {}).await;
    let mut client = tokio::net::TcpStream::connect(late_p.addr).await.expect("connect");
    client.write_all(b"GET /t/app/late HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("request");
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut seen)).await;
    assert!(read.is_ok(), "the connection was left open after the runner's body broke");
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("HTTP/1.1 200 OK\r\n") && seen.contains("hello"), "{seen}");
    assert!(!seen.contains("\r\n0\r\n\r\n"), "a broken body was completed as if whole: {seen}");
    // The proxy still serves.
    let r = send(p.addr, "GET", "/t/app/fine", &[], b"").await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn a_busy_refusal_whose_body_never_comes_does_not_hold_up_the_call() {
    // The refusal's head promises a body that never arrives: the call must move on to the
    // next runner at once instead of waiting for it.
    let busy = fake_runner(|_| {
        (b"HTTP/1.1 503 Service Unavailable\r\nfn-runner-busy: 1\r\ncontent-length: 100\r\n\r\n".to_vec(), false)
    })
    .await;
    let free = fake_runner(framings).await;
    let p = start(vec![busy.addr.to_string(), free.addr.to_string()], "naive", |_| {}).await;
    let calls = async {
        for i in 0..10 {
            let r = send(p.addr, "POST", &format!("/t/app/stalled-busy-{i}"), &[], b"x").await;
            assert_eq!((r.status, &r.body[..]), (StatusCode::OK, &b"ok"[..]), "call {i}");
        }
    };
    tokio::time::timeout(Duration::from_secs(20), calls).await.expect("calls waited on a refusal's body");
    assert!(busy.requests_to("/t/app/stalled-busy-0") + busy.requests_to("/t/app/stalled-busy-1") >= 1);
    for i in 0..10 {
        assert_eq!(free.requests_to(&format!("/t/app/stalled-busy-{i}")), 1, "call {i}");
    }
}
