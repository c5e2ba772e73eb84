//! Deadlines on every phase of a call, and on the client's connection: a runner that stops
//! answering or reading fails the call with 504 (counted) instead of holding it until the
//! client gives up; idle and slow clients are let go on the configured timeouts; a reload
//! never leaves an admin listener off loopback without a token.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{runner, send, start};
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a silent runner does once it has read a request.
#[derive(Clone, Copy)]
enum Silent {
    /// Never answers.
    Head,
    /// Sends a head and part of a large body, then nothing.
    MidBody,
    /// Never reads: the request stays in the socket buffers.
    Reading,
}

/// A runner that takes calls and then keeps silent as `how` says; its status polls get a
/// 404. The connections stay open until the test ends.
async fn silent_runner(how: Silent) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if matches!(how, Silent::Reading) {
                    // Reads the head only, a byte at a time, then stops reading.
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.is_ok_and(|n| n == 1) {
                        head.push(byte[0]);
                    }
                    if head.starts_with(b"GET /v1/status") {
                        let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").await;
                    }
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                let mut pending = Vec::new();
                while let Some(request) = common::read_request(&mut stream, &mut pending).await {
                    if request.starts_with(b"GET /v1/status") {
                        let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n").await;
                        continue;
                    }
                    if matches!(how, Silent::MidBody) {
                        let mut part = b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n".to_vec();
                        part.resize(part.len() + 100_000, b'x');
                        let _ = stream.write_all(&part).await;
                    }
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
            });
        }
    });
    addr
}

/// `placerd_runner_timeouts_total` as the admin API shows it.
async fn runner_timeouts(admin: SocketAddr) -> f64 {
    let metrics = send(admin, "GET", "/metrics", &[], b"").await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    text.lines().find_map(|l| l.strip_prefix("placerd_runner_timeouts_total ")?.trim().parse().ok()).unwrap_or(-1.0)
}

#[tokio::test]
async fn a_runner_that_stops_answering_fails_the_call_with_504_after_the_read_timeout() {
    let silent = silent_runner(Silent::Head).await;
    let p = start(vec![silent.to_string()], "naive", |c| c.runner_read_timeout = Duration::from_millis(300)).await;
    let started = Instant::now();
    let r = send(p.addr, "POST", "/t/app/a", &[], b"hi").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{:?}", r.body);
    assert!(r.json()["message"].as_str().unwrap_or_default().contains("did not answer in time"), "{:?}", r.body);
    assert!(started.elapsed() < Duration::from_secs(20), "held for {:?}", started.elapsed());
    assert_eq!(runner_timeouts(p.admin).await, 1.0);
}

#[tokio::test]
async fn a_route_sets_its_own_read_timeout() {
    let silent = silent_runner(Silent::Head).await;
    let p = start(vec![silent.to_string()], "naive", |c| {
        c.runner_read_timeout = Duration::from_secs(3600);
        c.routes = vec![placerd::config::Route {
            app: Some("quick".into()),
            placer: "naive".into(),
            runner_read_timeout_ms: Some(300),
            ..Default::default()
        }];
    })
    .await;
    let r = send(p.addr, "POST", "/t/quick/a", &[], b"hi").await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    // Another app keeps the hour: still waiting when the client gives up.
    let slow = tokio::time::timeout(Duration::from_millis(1500), send(p.addr, "POST", "/t/other/a", &[], b"hi")).await;
    assert!(slow.is_err(), "the top-level timeout applies to other routes: {:?}", slow.map(|r| r.status));
}

#[tokio::test]
async fn a_runner_that_goes_silent_mid_body_cuts_the_client_response_and_is_counted() {
    let silent = silent_runner(Silent::MidBody).await;
    let p = start(vec![silent.to_string()], "naive", |c| c.runner_read_timeout = Duration::from_millis(300)).await;
    let mut client = TcpStream::connect(p.addr).await.expect("connect");
    client.write_all(b"POST /t/app/a HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi").await.expect("request");
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), client.read_to_end(&mut got))
        .await
        .expect("the connection is closed, not held")
        .expect("read");
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"), "{:?}", String::from_utf8_lossy(&got[..got.len().min(200)]));
    assert!(got.len() < 1_000_000, "cut short: {} bytes", got.len());
    assert!(common::eventually(Duration::from_secs(5), async || runner_timeouts(p.admin).await == 1.0).await);
}

#[tokio::test]
async fn a_runner_that_stops_reading_the_request_fails_the_call_with_504_after_the_write_timeout() {
    let silent = silent_runner(Silent::Reading).await;
    let p = start(vec![silent.to_string()], "naive", |c| {
        c.runner_write_timeout = Duration::from_millis(300);
        c.max_body_bytes = 64 << 20;
        c.max_buffered_bytes = 64 << 20;
    })
    .await;
    // More than loopback's socket buffers hold.
    let body = vec![b'x'; 48 << 20];
    let r = send(p.addr, "POST", "/t/app/a", &[], &body).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{:?}", r.body);
    assert_eq!(runner_timeouts(p.admin).await, 1.0);
}

#[tokio::test]
async fn idle_and_slow_clients_are_let_go_on_the_configured_timeouts() {
    let r1 = runner(8, "r1").await;
    let p = start(vec![r1.addr.to_string()], "naive", |c| {
        c.client_idle_timeout = Duration::from_millis(200);
        c.client_header_timeout = Duration::from_millis(200);
    })
    .await;
    // A connection that never sends a byte: closed (the default would hold it 60 s).
    let mut idle = TcpStream::connect(p.addr).await.expect("connect");
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut got)).await.expect("closed").expect("read");
    assert!(got.is_empty(), "{got:?}");
    // Part of a head: 408, then closed (the default would wait 10 s).
    let mut slow = TcpStream::connect(p.addr).await.expect("connect");
    slow.write_all(b"GET /t/app/a HTTP/1.1\r\nhost:").await.expect("part");
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut got)).await.expect("closed").expect("read");
    assert!(got.starts_with(b"HTTP/1.1 408 "), "{}", String::from_utf8_lossy(&got));
    // Between requests on a kept-alive connection too.
    let mut kept = TcpStream::connect(p.addr).await.expect("connect");
    kept.write_all(b"GET /t/app/a HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("request");
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), kept.read_to_end(&mut got)).await.expect("closed").expect("read");
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"), "{}", String::from_utf8_lossy(&got));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_cannot_leave_an_admin_listener_off_loopback_without_a_token() {
    let r1 = runner(8, "r1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").expect("token");
    let path = dir.path().join("placerd.toml");
    let config = |admin: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\n{admin}\nplacers_dir = \"{}\"\ncache_dir = \"off\"\n[runners]\nstatic = [\"{}\"]\n",
            dir.path().join("placers").display(),
            r1.addr
        )
    };
    let open = format!("admin_listen = \"0.0.0.0:0\"\nadmin_token_file = \"{}\"", token.display());
    std::fs::write(&path, config(&open)).expect("config");
    let (_placerd, _, admin) = common::serve_config(&path);
    let admin = SocketAddr::from(([127, 0, 0, 1], admin.port()));
    let bearer = [("authorization", "Bearer s3cret")];
    // The file now says loopback, without a token: the running listener is not loopback.
    std::fs::write(&path, config("admin_listen = \"127.0.0.1:0\"")).expect("config");
    let r = send(admin, "POST", "/admin/reload", &bearer, b"").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    assert!(r.json()["problems"].to_string().contains("not loopback"), "{:?}", r.body);
    for (method, path) in [("GET", "/admin/runners"), ("PUT", "/admin/routes")] {
        let r = send(admin, method, path, &[("host", "localhost")], b"[]").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {path} without the token");
    }
    assert_eq!(send(admin, "GET", "/admin/runners", &bearer, b"").await.status, StatusCode::OK);
}
