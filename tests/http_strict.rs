//! placerd's HTTP/1.1 strictness, end to end and side by side with nginx and HAProxy: one
//! table of requests and one of runner responses, each row with the status placerd must
//! answer. Where nginx and HAProxy are installed (`bench/proxy.sh` installs both), each row
//! also goes through them, in front of the same backend, and placerd must never accept what
//! both refuse.

mod common;
#[path = "common/peers.rs"]
#[allow(dead_code, unreachable_pub)]
mod peers;

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A request row: what it tests, its bytes, and placerd's status.
type Row = (&'static str, &'static [u8], u16);

/// Every request goes to `/t/app/a` (a route to the runner) unless the row is about the
/// target. `H` is the request line and Host every accepted row starts with.
const REQUESTS: &[Row] = &[
    ("length body", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 200),
    ("chunked body", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 200),
    ("chunk size +5", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk size space first", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk size VT", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\x0b\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk size NBSP", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\xc2\xa0\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk line lone CR", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\r;ABCD\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk ext lone CR", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\rb\r\nhello\r\n0\r\n\r\n", 400),
    ("trailer line only CR", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\r\n\r\n", 400),
    ("chunk size 0x5", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk size overflow", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk size then space", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", 200),
    ("chunk extension", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 ;ext=1\r\nhello\r\n0\r\n\r\n", 200),
    ("chunk size zeros", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000005\r\nhello\r\n0\r\n\r\n", 200),
    ("chunk lines bare LF", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n", 400),
    ("TE gzip, chunked", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501),
    ("TE chunked, gzip", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
    ("TE chunked twice", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
    ("TE identity", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\nhello", 400),
    ("TE two lines", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501),
    ("TE empty element", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
    ("TE Chunked", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 200),
    ("TE and CL", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
    ("TE on HTTP/1.0", b"POST /t/app/a HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
    ("CL +5", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", 400),
    ("CL 5, 6", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello", 400),
    ("CL 5 and 6", b"POST /t/app/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
    ("two Hosts", b"GET /t/app/a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    ("HTTP/1.1 without Host", b"GET /t/app/a HTTP/1.1\r\n\r\n", 400),
    ("HTTP/1.0 without Host", b"GET /t/app/a HTTP/1.0\r\n\r\n", 200),
    ("empty Host", b"GET /t/app/a HTTP/1.1\r\nHost: \r\n\r\n", 400),
    ("Host a b", b"GET /t/app/a HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("Host x/y", b"GET /t/app/a HTTP/1.1\r\nHost: x/y\r\n\r\n", 400),
    ("absolute form", b"GET http://x/t/app/a HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    ("absolute form ftp", b"GET ftp://x/t/app/a HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("absolute form without Host", b"GET http://x/t/app/a HTTP/1.1\r\n\r\n", 400),
    ("Host :80", b"GET /t/app/a HTTP/1.1\r\nHost: :80\r\n\r\n", 400),
    ("CONNECT", b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", 405),
    ("TRACE", b"TRACE /t/app/a HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    ("extension method", b"FOO /t/app/a HTTP/1.1\r\nHost: x\r\n\r\n", 200),
    ("lone CR in a value", b"GET /t/app/a HTTP/1.1\r\nHost: x\r\nX-A: b\rc\r\n\r\n", 400),
    ("head lines bare LF", b"GET /t/app/a HTTP/1.1\nHost: x\n\n", 200),
    ("request line CR CR LF", b"GET /t/app/a HTTP/1.1\r\r\nHost: x\r\n\r\n", 400),
    ("space before colon", b"GET /t/app/a HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    ("obs-fold", b"GET /t/app/a HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n", 400),
    ("NUL in a value", b"GET /t/app/a HTTP/1.1\r\nHost: x\r\nX-A: b\0c\r\n\r\n", 400),
    ("two spaces", b"GET  /t/app/a HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ("HTTP/2.0", b"GET /t/app/a HTTP/2.0\r\nHost: x\r\n\r\n", 400),
    ("HTTP/0.9", b"GET /\r\n\r\n", 400),
];

/// Runner responses: what each tests, its bytes (the runner closes after them), and
/// whether placerd passes it on (200) or answers 502.
const RESPONSES: &[Row] = &[
    ("length", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200),
    ("chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 200),
    ("trailer", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", 200),
    ("CL +5", b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", 502),
    ("TE gzip, chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 502),
    (
        "TE and CL",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        502,
    ),
    ("chunk size +5", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n", 502),
    ("chunk line CR CR LF", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\r\nhello\r\n0\r\n\r\n", 502),
    ("two lengths", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 502),
    ("CL 5, 5", b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello", 200),
    ("bare LF head", b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello", 200),
    ("no length", b"HTTP/1.1 200 OK\r\n\r\nhello", 200),
    ("lone CR in a value", b"HTTP/1.1 200 OK\r\nX-A: b\rc\r\nContent-Length: 5\r\n\r\nhello", 502),
    ("TE identity", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nhello", 502),
    ("status 2000", b"HTTP/1.1 2000 OK\r\nContent-Length: 5\r\n\r\nhello", 502),
    ("obs-fold", b"HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\nContent-Length: 5\r\n\r\nhello", 502),
];

/// A runner that answers a request for `/t/app/rN` with `RESPONSES[N]` and closes, and any
/// other request with a short 200.
async fn raw_runner() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut pending = Vec::new();
                while let Some(request) = common::read_request(&mut stream, &mut pending).await {
                    let line = String::from_utf8_lossy(&request).lines().next().unwrap_or_default().to_string();
                    let row = line.split(' ').nth(1).and_then(|p| p.strip_prefix("/t/app/r")?.parse::<usize>().ok());
                    match row.and_then(|n| RESPONSES.get(n)) {
                        Some((_, bytes, _)) => {
                            let _ = stream.write_all(bytes).await;
                            return; // closes: a response without a length ends here
                        }
                        None => {
                            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if stream.write_all(ok).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// What each installed peer answered to `request` (`None`: it answered nothing).
fn peer_answers(peers: &[peers::Peer], request: &'static [u8], head_only: bool) -> Vec<(&'static str, Option<u16>)> {
    peers.iter().map(|p| (p.name, peers::exchange(p.addr, request, head_only).status)).collect()
}

/// Looser than both peers: placerd took a row (2xx) that every installed peer refused.
fn looser_than_peers(placerd: Option<u16>, peers: &[(&'static str, Option<u16>)]) -> bool {
    let accepted = |s: Option<u16>| s.is_some_and(|s| (200..300).contains(&s));
    peers.len() == 2 && accepted(placerd) && !peers.iter().any(|(_, s)| accepted(*s))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placerd_is_never_looser_than_both_nginx_and_haproxy() {
    let runner = common::runner(64, "r1").await;
    let raw = raw_runner().await;
    let p = common::start(vec![runner.addr.to_string()], "naive", |_| {}).await;
    let p_raw = common::start(vec![raw.to_string()], "naive", |_| {}).await;
    let (addr, raw_addr, runner_addr) = (p.addr, p_raw.addr, runner.addr);
    let report = tokio::task::spawn_blocking(move || {
        let peers: Vec<peers::Peer> =
            [peers::nginx(runner_addr), peers::haproxy(runner_addr)].into_iter().flatten().collect();
        let raw_peers: Vec<peers::Peer> = [peers::nginx(raw), peers::haproxy(raw)].into_iter().flatten().collect();
        let mut problems = Vec::new();
        for &(what, bytes, status) in REQUESTS {
            let got = peers::exchange(addr, bytes, true).status;
            if got != Some(status) {
                problems.push(format!("request `{what}`: placerd answered {got:?}, the table says {status}"));
            }
            let answers = peer_answers(&peers, bytes, true);
            if looser_than_peers(got, &answers) {
                problems.push(format!("request `{what}`: placerd took it, and both peers refused it: {answers:?}"));
            }
        }
        for (n, &(what, _, status)) in RESPONSES.iter().enumerate() {
            let request: &'static [u8] =
                format!("GET /t/app/r{n} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes().leak();
            let got = peers::exchange(raw_addr, request, false);
            let whole = got.raw.windows(5).any(|w| w == b"hello");
            if got.status != Some(status) || (status == 200 && !whole) {
                problems.push(format!(
                    "response `{what}`: placerd answered {:?}, the table says {status}",
                    String::from_utf8_lossy(&got.raw)
                ));
            }
            let answers = peer_answers(&raw_peers, request, false);
            if looser_than_peers(got.status, &answers) {
                problems
                    .push(format!("response `{what}`: placerd passed it on, and both peers refused it: {answers:?}"));
            }
        }
        (problems, peers.len() + raw_peers.len())
    })
    .await
    .expect("rows");
    let (problems, peers) = report;
    if peers < 4 {
        eprintln!(
            "nginx or HAProxy is not installed: placerd checked against its table only (bench/proxy.sh installs both)"
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A response head as text and the body after it, read to the close.
async fn exchange_to_close(addr: SocketAddr, request: &[u8]) -> (String, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("request");
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("placerd closes the connection after the body")
        .expect("read");
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    (String::from_utf8_lossy(&raw[..end]).to_lowercase(), raw[end..].to_vec())
}

#[tokio::test]
async fn an_http_1_0_client_gets_a_body_of_unknown_length_until_the_close_never_chunked() {
    let raw = raw_runner().await;
    let p = common::start(vec![raw.to_string()], "naive", |_| {}).await;
    let n = RESPONSES.iter().position(|(what, ..)| *what == "no length").expect("row");
    let (head, body) = exchange_to_close(p.addr, format!("GET /t/app/r{n} HTTP/1.0\r\n\r\n").as_bytes()).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("transfer-encoding") && !head.contains("content-length"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, b"hello");
    // An HTTP/1.1 client gets the same body chunked, on a connection that stays open.
    let request = format!("GET /t/app/r{n} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (head, body) = exchange_to_close(p.addr, request.as_bytes()).await;
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert_eq!(body, b"5\r\nhello\r\n0\r\n\r\n");
}

#[tokio::test]
async fn an_absolute_form_target_s_authority_is_the_host_the_runner_sees() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let runner = listener.local_addr().expect("addr");
    let (tx, mut calls) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                while let Some(request) = common::read_request(&mut stream, &mut pending).await {
                    let _ = tx.send(String::from_utf8_lossy(&request).to_lowercase());
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if stream.write_all(ok).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let p = common::start(vec![runner.to_string()], "naive", |_| {}).await;
    let request = b"GET http://fns.example:8080/t/app/a?q=1 HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n";
    let (head, _) = exchange_to_close(p.addr, request).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // The runner's status polls aside.
    let mut forwarded = calls.recv().await.expect("a call");
    while forwarded.contains(" /v1/status ") {
        forwarded = calls.recv().await.expect("a call");
    }
    assert!(forwarded.starts_with("get /t/app/a?q=1 http/1.1\r\n"), "origin form: {forwarded}");
    assert!(forwarded.contains("\r\nhost: fns.example:8080\r\n") && !forwarded.contains("other"), "{forwarded}");
}

#[tokio::test]
async fn a_405_says_which_methods_are_allowed() {
    let runner = common::runner(8, "r1").await;
    let p = common::start(vec![runner.addr.to_string()], "naive", |_| {}).await;
    let (head, _) = exchange_to_close(p.addr, b"TRACE /t/app/a HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(head.starts_with("http/1.1 405"), "{head}");
    let allow = head.lines().find_map(|l| l.strip_prefix("allow: ")).unwrap_or_default();
    assert!(allow.contains("post"), "{head}");
    assert!(!allow.contains("trace"), "{head}");
    let r = common::send(p.addr, "GET", "/invoke/hello", &[], b"").await;
    assert_eq!(r.status, hyper::StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), "POST");
}
