//! placerd end to end: the real proxy on a loopback port, reference runners on loopback
//! ports, the real Wasm placers: the call lifecycle (docs/lifecycle.md), the runner
//! protocol and the placer contract (wit/placer.wit).

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{runner, send, start};
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn naive_spreads_calls_evenly_over_runners() {
    let runners = [runner(8, "a").await, runner(8, "b").await, runner(8, "c").await];
    let p = start(runners.iter().map(|r| r.addr.to_string()).collect(), "naive", |_| {}).await;
    for i in 0..30 {
        let r = send(p.addr, "POST", "/invoke/hello", &[], format!("call {i}").as_bytes()).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, format!("call {i}").as_bytes());
        assert_eq!(r.header("fn-call-id").len(), 26);
    }
    let counts: Vec<usize> = runners.iter().map(|r| r.stats.ledger().len()).collect();
    assert_eq!(counts, vec![10, 10, 10]);
}

#[tokio::test]
async fn consistent_hash_keeps_a_function_on_one_runner() {
    let runners = [runner(8, "a").await, runner(8, "b").await, runner(8, "c").await];
    let p = start(runners.iter().map(|r| r.addr.to_string()).collect(), "consistent-hash", |_| {}).await;
    let mut served_by = HashSet::new();
    for _ in 0..100 {
        let r = send(p.addr, "POST", "/t/shop/checkout", &[], b"{}").await;
        assert_eq!(r.status, StatusCode::OK);
        served_by.insert(r.header("fn-runner").to_string());
    }
    assert_eq!(served_by.len(), 1, "{served_by:?}");
    // Plain jump hashing lets the host reuse the key's order: the guest is asked again
    // only by a new instance or a new runner set, not per call.
    let info = common::placer_info(&p, "consistent-hash").await.expect("consistent-hash");
    let reused = info["reused_calls"].as_u64().expect("reused_calls");
    assert!(reused >= 90 && info["calls"] == 100, "{info}");
}

#[tokio::test]
async fn native_placement_places_like_the_wasm_components() {
    // `serve --native-placement` (benchmarks only) must measure the same placement, only
    // without the sandbox: same first runner for every function, bounded config included.
    let runners = [runner(64, "a").await, runner(64, "b").await, runner(64, "c").await, runner(64, "d").await];
    let addrs: Vec<String> = runners.iter().map(|r| r.addr.to_string()).collect();
    let bounded = |c: &mut placerd::config::Config| {
        c.placer_config.insert("consistent-hash".into(), vec![("max_load_factor".into(), "1.25".into())]);
    };
    let wasm = start(addrs.clone(), "consistent-hash", bounded).await;
    let native = start(addrs, "consistent-hash", |c| {
        bounded(c);
        c.native_placement = true;
    })
    .await;
    for i in 0..60 {
        let path = format!("/t/shop/fn-{i}");
        let (a, b) = (send(wasm.addr, "POST", &path, &[], b"").await, send(native.addr, "POST", &path, &[], b"").await);
        assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
        assert_eq!(a.header("fn-runner"), b.header("fn-runner"), "{path}");
    }
    // Only the Wasm proxy ran the guest.
    let guest_calls = |text: String| {
        text.lines()
            .find(|l| l.starts_with("placerd_placer_guest_seconds_count{placer=\"consistent-hash\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let metrics = |p: &common::Placerd| {
        let admin = p.admin;
        async move { String::from_utf8_lossy(&send(admin, "GET", "/metrics", &[], b"").await.body).into_owned() }
    };
    assert!(guest_calls(metrics(&wasm).await) >= 60);
    assert_eq!(guest_calls(metrics(&native).await), 0);
}

#[tokio::test]
async fn a_busy_runner_refuses_and_the_call_runs_on_the_next_without_executing_there() {
    let (busy, free) = (runner(0, "busy").await, runner(8, "free").await);
    let p = start(vec![busy.addr.to_string(), free.addr.to_string()], "naive", |_| {}).await;
    for _ in 0..20 {
        let r = send(p.addr, "POST", "/invoke/f", &[], b"x").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("fn-runner"), "free");
    }
    assert!(busy.stats.received() >= 10, "the busy runner was asked: {}", busy.stats.received());
    assert!(busy.stats.ledger().is_empty(), "refused calls must not execute: {:?}", busy.stats.ledger());
    assert_eq!(free.stats.ledger().len(), 20);
}

#[tokio::test]
async fn a_runner_refusing_connections_is_skipped() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    }; // closed again: connections are refused
    let live = runner(8, "live").await;
    let p = start(vec![dead.to_string(), live.addr.to_string()], "naive", |_| {}).await;
    for _ in 0..10 {
        let r = send(p.addr, "POST", "/invoke/f", &[], b"x").await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert_eq!(live.stats.ledger().len(), 10);
}

#[tokio::test]
async fn a_runner_dying_mid_call_gives_502_and_the_call_is_never_resent() {
    let (a, b) = (runner(64, "a").await, runner(64, "b").await);
    let p = start(vec![a.addr.to_string(), b.addr.to_string()], "naive", |_| {}).await;
    let mut ids = HashSet::new();
    for _ in 0..200 {
        let r = send(p.addr, "POST", "/t/app/crash?die=1", &[], b"payload").await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{:?}", r.body);
        ids.insert(r.header("fn-call-id").to_string());
    }
    assert_eq!(ids.len(), 200);
    let (la, lb) = (a.stats.ledger(), b.stats.ledger());
    for id in &ids {
        let runs = la.get(id).copied().unwrap_or(0) + lb.get(id).copied().unwrap_or(0);
        assert_eq!(runs, 1, "call {id} executed {runs} times");
    }
}

#[tokio::test]
async fn all_runners_refusing_gives_503_at_the_placer_timeout() {
    let (a, b) = (runner(0, "a").await, runner(0, "b").await);
    let p = start(vec![a.addr.to_string(), b.addr.to_string()], "naive", |c| {
        c.placer_timeout = Duration::from_millis(300);
    })
    .await;
    let started = Instant::now();
    let r = send(p.addr, "POST", "/invoke/f", &[], b"x").await;
    let elapsed = started.elapsed();
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&r.body).contains("server too busy"), "{:?}", r.body);
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed <= Duration::from_millis(300 + 12 + 50), "{elapsed:?}");
}

#[tokio::test]
async fn a_client_that_disconnects_during_placement_is_never_placed() {
    let only = runner(1, "only").await;
    let p = start(vec![only.addr.to_string()], "naive", |_| {}).await;
    // Occupy the runner's one slot for 1.5 s.
    let occupant = tokio::spawn(send(p.addr, "POST", "/t/app/slow?ms=1500", &[], b"first"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A second call is refused and keeps being re-placed; then its client goes away.
    let mut stream = TcpStream::connect(p.addr).await.expect("connect");
    stream
        .write_all(b"POST /t/app/second HTTP/1.1\r\nhost: x\r\ncontent-length: 6\r\n\r\nsecond")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(only.stats.received() >= 3, "the second call was being placed");
    drop(stream);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let received_after_cancel = only.stats.received();
    let first = occupant.await.expect("task");
    assert_eq!(first.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(only.stats.received(), received_after_cancel, "placement went on after the client left");
    assert_eq!(only.stats.ledger().len(), 1, "only the first call ran: {:?}", only.stats.ledger());
}

#[tokio::test]
async fn a_detached_call_is_acknowledged_with_202_and_runs_once() {
    let r1 = runner(8, "r1").await;
    let p = start(vec![r1.addr.to_string()], "naive", |_| {}).await;
    let r = send(p.addr, "POST", "/invoke/bg?ms=50", &[("fn-call-type", "detached")], b"job").await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let body: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    let id = body["call_id"].as_str().expect("call_id").to_string();
    assert_eq!(id, r.header("fn-call-id"));
    assert_eq!(r1.stats.executions(&id), 1);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(r1.stats.executions(&id), 1);
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_and_no_runner_is_contacted() {
    let r1 = runner(8, "r1").await;
    let p = start(vec![r1.addr.to_string()], "naive", |c| c.max_body_bytes = 1024).await;
    let r = send(p.addr, "POST", "/invoke/f", &[], &[b'x'; 2048]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(String::from_utf8_lossy(&r.body).contains("message"));
    // Chunked, so the size is only known while reading.
    let mut stream = TcpStream::connect(p.addr).await.expect("connect");
    let chunk = format!("800\r\n{}\r\n0\r\n\r\n", "y".repeat(0x800));
    let head = "POST /invoke/f HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    stream.write_all(format!("{head}{chunk}").as_bytes()).await.expect("write");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert_eq!(r1.stats.received(), 0);
    let ok = send(p.addr, "POST", "/invoke/f", &[], &[b'x'; 1024]).await;
    assert_eq!(ok.status, StatusCode::OK, "the limit itself is allowed");
}

/// The runner gets the body byte for byte whichever way it is written: a small one in the
/// head's buffer (one `send`), a large one after the head (`writev`, then the rest of it
/// in as many writes as the socket takes).
#[tokio::test]
async fn request_bodies_reach_the_runner_intact_small_and_large() {
    let r1 = runner(8, "r1").await;
    let p = start(vec![r1.addr.to_string()], "naive", |_| {}).await;
    for len in [1, 4096, 4097, 2 << 20] {
        let body: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        let r = send(p.addr, "POST", "/invoke/f", &[], &body).await;
        assert_eq!(r.status, StatusCode::OK, "{len} bytes");
        assert!(r.body == body, "the runner echoed {} bytes for {len}", r.body.len());
    }
}

#[tokio::test]
async fn malformed_requests_and_unknown_routes_get_clear_errors() {
    let r1 = runner(8, "r1").await;
    let p = start(vec![r1.addr.to_string()], "naive", |_| {}).await;
    let mut stream = TcpStream::connect(p.addr).await.expect("connect");
    stream.write_all(b"GARBAGE\x01 \r\n\r\n").await.expect("write");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response:?}");
    let r = send(p.addr, "GET", "/nope", &[], b"").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body, Bytes::from_static(b"{\"message\":\"no such route\"}"));
    let r = send(p.addr, "GET", "/invoke/f", &[], b"").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r1.stats.received(), 0);
    // Still serving.
    assert_eq!(send(p.addr, "POST", "/invoke/f", &[], b"x").await.status, StatusCode::OK);
}

#[tokio::test]
async fn fn_headers_reach_the_runner_and_hop_by_hop_headers_do_not() {
    let r1 = runner(8, "r1").await;
    let p = start(vec![r1.addr.to_string()], "naive", |_| {}).await;
    let r = send(p.addr, "POST", "/t/myapp/hello/world?q=1", &[("fn-app-id", "override")], b"x").await;
    assert_eq!(r.status, StatusCode::OK);
    let id = r.header("fn-call-id");
    assert_eq!(r1.stats.executions(id), 1);
    // The runner's own `date` and framing headers give way to placerd's: one of each.
    for name in ["date", "content-length", "fn-call-id", "fn-placer"] {
        assert_eq!(r.headers.get_all(name).iter().count(), 1, "{name}: {:?}", r.headers);
    }
    assert!(!r.headers.contains_key("connection") && !r.headers.contains_key("transfer-encoding"));
}

#[tokio::test]
async fn a_runner_dying_mid_body_gives_a_clean_502_and_the_call_is_never_resent() {
    // A runner that answers a head promising 100 bytes, sends 10 and closes: the body is
    // read whole before answering (it is small), so the client gets a 502, not a cut 200.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = calls.clone();
    let fake = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                if String::from_utf8_lossy(&buf[..n]).contains("/t/app/cut") {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789").await;
                let _ = stream.shutdown().await;
            });
        }
    });
    let p = start(vec![addr.to_string()], "naive", |_| {}).await;
    let before = calls.load(std::sync::atomic::Ordering::SeqCst);
    let r = send(p.addr, "POST", "/t/app/cut", &[], b"payload").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{:?}", r.body);
    assert!(!r.header("fn-call-id").is_empty());
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst) - before, 1, "the call was sent more than once");
    fake.abort();
}

/// Reads everything until the server closes the connection.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the connection was not closed: {:?}", String::from_utf8_lossy(&got));
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn the_client_port_answers_pipelined_and_http_1_0_requests_and_refuses_ambiguous_framing() {
    let r1 = runner(8, "r1").await;
    let p = start(vec![r1.addr.to_string()], "naive", |_| {}).await;
    // Three requests in one write, the first chunked: three answers, in order, on one
    // connection, which closes after the last as it asks.
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(
        b"POST /t/app/one HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          POST /t/app/two HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nde\
          POST /t/app/three HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
    )
    .await
    .expect("write");
    let text = read_to_close(&mut s).await;
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{text}");
    assert_eq!(text.matches("connection: close\r\n").count(), 1, "only the last answer closes: {text}");
    assert_eq!(r1.stats.received(), 3);

    // HTTP/1.0 without keep-alive: answered, then closed.
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(b"POST /t/app/old HTTP/1.0\r\ncontent-length: 1\r\n\r\nx").await.expect("write");
    let text = read_to_close(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("\r\ndate: "), "{text}");
    // HTTP/1.0 with keep-alive: told so, and the connection carries a second request.
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(
        b"POST /t/app/k1 HTTP/1.0\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\nx\
          POST /t/app/k2 HTTP/1.0\r\ncontent-length: 1\r\n\r\ny",
    )
    .await
    .expect("write");
    let text = read_to_close(&mut s).await;
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{text}");
    assert_eq!(text.matches("connection: keep-alive\r\n").count(), 1, "{text}");
    assert_eq!(text.matches("connection: close\r\n").count(), 1, "{text}");

    // Both framings at once is how requests are smuggled past a proxy: 400, closed, and
    // nothing reaches a runner.
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(
        b"POST /t/app/smuggle HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /t/app/x HTTP/1.1\r\n\r\n",
    )
    .await
    .expect("write");
    let text = read_to_close(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert_eq!(text.matches("HTTP/1.1").count(), 1, "the smuggled request was answered: {text}");
    assert_eq!(r1.stats.received(), 6);

    // A client that closes half-way through a body: nothing is placed, placerd serves on.
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(b"POST /t/app/cut HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nonly part").await.expect("write");
    s.shutdown().await.expect("shutdown");
    let text = read_to_close(&mut s).await;
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 400"), "{text}");
    assert_eq!(r1.stats.received(), 6);
    assert_eq!(send(p.addr, "POST", "/t/app/after", &[], b"x").await.status, StatusCode::OK);
}
