//! Hostile clients and careless operators, end to end on loopback: slow and stalled
//! bodies, connection and memory caps, admin reads, forwarding hygiene, routes to placers
//! that are gone, placers that fault often but not in a row, runners that refuse
//! connections, and the log lines all of those could flood. Every slow client here is
//! bounded in count and time.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{eventually, fixture, runner, send, start};
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads what the server sends until it closes (or `limit` passes): the status line's code
/// and whether the connection was closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

/// Opens a connection and sends the head of a call declaring `declared` body bytes, then
/// `sent` of them.
async fn stalled_upload(addr: SocketAddr, declared: usize, sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let head = format!("POST /invoke/upload HTTP/1.1\r\nhost: x\r\ncontent-length: {declared}\r\n\r\n");
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(&vec![b'x'; sent]).await.expect("part of the body");
    s
}

#[tokio::test]
async fn slow_bodies_get_408_within_body_timeout_and_their_connections_close() {
    let r1 = runner(8, "r1").await;
    let p = start(vec![r1.addr.to_string()], "naive", |c| c.body_timeout = Duration::from_millis(600)).await;
    let started = Instant::now();
    let clients: Vec<_> = (0..5)
        .map(|_| {
            tokio::spawn(async move {
                let mut s = stalled_upload(p.addr, 100, 0).await;
                // One byte every 150 ms: always sending, never done in time.
                let trickle = async {
                    for _ in 0..40 {
                        if s.write_all(b"x").await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(150)).await;
                    }
                };
                let _ = tokio::time::timeout(Duration::from_millis(900), trickle).await;
                read_until_closed(&mut s, Duration::from_secs(5)).await
            })
        })
        .collect();
    for client in clients {
        let (response, closed) = client.await.expect("client");
        assert!(response.starts_with("HTTP/1.1 408"), "{response:?}");
        assert!(response.contains("did not arrive within"), "{response:?}");
        assert!(closed, "the connection closes after the 408");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(r1.stats.received(), 0, "no runner sees a call whose body never came");
    assert_eq!(send(p.addr, "POST", "/invoke/f", &[], b"x").await.status, StatusCode::OK);
}

#[tokio::test]
async fn stalled_bodies_cannot_hold_more_than_max_buffered_bytes() {
    let r1 = runner(8, "r1").await;
    let p = start(vec![r1.addr.to_string()], "naive", |c| {
        c.max_body_bytes = 1_000;
        c.max_buffered_bytes = 2_000;
    })
    .await;
    // Two uploads declare 1,000 bytes each, send 10 and stall: the budget is spent.
    let first = stalled_upload(p.addr, 1_000, 10).await;
    let _second = stalled_upload(p.addr, 1_000, 10).await;
    let refused = eventually(Duration::from_secs(5), async || {
        send(p.addr, "POST", "/invoke/f", &[], &[b'y'; 100]).await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert!(refused, "a call past max_buffered_bytes is refused");
    let r = send(p.addr, "POST", "/invoke/f", &[], &[b'y'; 100]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.header("retry-after"), "1");
    assert_eq!(r.header("connection"), "close");
    assert!(String::from_utf8_lossy(&r.body).contains("retry shortly"), "{:?}", r.body);
    // Bodiless calls hold nothing and still go through.
    assert_eq!(send(p.addr, "POST", "/invoke/f", &[], b"").await.status, StatusCode::OK);
    assert_eq!(r1.stats.received(), 1);
    // One upload gives up: its bytes are given back and calls with bodies pass again.
    drop(first);
    let served = eventually(Duration::from_secs(5), async || {
        send(p.addr, "POST", "/invoke/f", &[], &[b'y'; 100]).await.status == StatusCode::OK
    })
    .await;
    assert!(served, "the budget is given back when a stalled upload goes away");
}

#[tokio::test]
async fn connections_past_max_connections_wait_until_one_closes() {
    let r1 = runner(8, "r1").await;
    let p = start(vec![r1.addr.to_string()], "naive", |c| c.max_connections = 2).await;
    // `start` probed with a connection of its own; wait until it is closed on our side.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(p.addr).await.expect("connect");
        s.write_all(b"POST /invoke/f HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nx").await.expect("write");
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        assert!(matches!(n, Ok(Ok(n)) if n > 0), "the first two connections are served");
        held.push(s); // keep-alive: each holds a connection slot
    }
    // The third is accepted by the kernel but not served while both are open.
    let mut third = TcpStream::connect(p.addr).await.expect("backlog");
    third.write_all(b"POST /invoke/f HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nx").await.expect("write");
    let mut buf = [0u8; 1024];
    let waiting = tokio::time::timeout(Duration::from_millis(400), third.read(&mut buf)).await;
    assert!(waiting.is_err(), "no answer while two connections are open");
    drop(held.pop());
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf)).await;
    let answer = match n {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        other => panic!("not served after a slot freed: {other:?}"),
    };
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}

#[tokio::test]
async fn with_a_token_every_admin_route_needs_it_and_without_one_only_loopback_hosts_are_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").expect("token");
    let r1 = runner(8, "r1").await;
    let p = start(vec![r1.addr.to_string()], "naive", |c| c.admin_token_file = Some(token_file)).await;
    let bearer = [("authorization", "Bearer s3cret")];
    for path in ["/admin/runners", "/admin/placers", "/admin/routes"] {
        assert_eq!(send(p.admin, "GET", path, &[], b"").await.status, StatusCode::UNAUTHORIZED, "{path}");
        let wrong = [("authorization", "Bearer s3creT")];
        assert_eq!(send(p.admin, "GET", path, &wrong, b"").await.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(send(p.admin, "GET", path, &bearer, b"").await.status, StatusCode::OK, "{path}");
    }
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(send(p.admin, "GET", path, &[("host", "prometheus.internal")], b"").await.status, StatusCode::OK);
    }

    let open = start(vec![r1.addr.to_string()], "naive", |_| {}).await;
    for host in ["evil.example", "evil.example:9090", "10.1.2.3"] {
        let r = send(open.admin, "GET", "/admin/runners", &[("host", host)], b"").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{host}");
        let r = send(open.admin, "PUT", "/admin/routes", &[("host", host)], b"[]").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{host}");
    }
    for host in ["localhost:1234", "127.0.0.1", "[::1]:9090"] {
        assert_eq!(send(open.admin, "GET", "/admin/runners", &[("host", host)], b"").await.status, StatusCode::OK);
    }
}

/// A runner that records each request head it gets, answers `200 ok` and, when the path
/// says `die`, closes the connection without answering.
async fn recording_runner() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                while let Some(request) = common::read_request(&mut s, &mut pending).await {
                    let text = String::from_utf8_lossy(&request).to_lowercase();
                    let head = text.split("\r\n\r\n").next().unwrap_or_default().to_string();
                    let dies = head.starts_with("post /t/app/die");
                    seen.lock().expect("heads").push(head);
                    if dies {
                        return;
                    }
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                }
            });
        }
    });
    (addr, heads)
}

#[tokio::test]
async fn forwarding_keeps_host_drops_expect_refuses_dot_segments_and_hides_runner_addresses() {
    let (addr, heads) = recording_runner().await;
    let p = start(vec![addr.to_string()], "naive", |_| {}).await;
    // Calls only: placerd also polls the runner's `GET /v1/status`.
    let calls = || heads.lock().expect("heads").iter().filter(|h| h.starts_with("post ")).cloned().collect::<Vec<_>>();
    let last = || calls().last().cloned().unwrap_or_default();

    // `Connection` removes only the hop-by-hop headers: not Host, not a header a proxy in
    // front of placerd added.
    let r = send(
        p.addr,
        "POST",
        "/t/app/fn",
        &[
            ("connection", "host, content-type, x-forwarded-for, keep-alive"),
            ("content-type", "text/plain"),
            ("x-forwarded-for", "192.0.2.1"),
            ("keep-alive", "timeout=5"),
        ],
        b"x",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let head = last();
    assert!(head.contains(&format!("host: {}", p.addr)), "{head}");
    assert!(head.contains("content-type: text/plain"), "{head}");
    assert!(head.contains("x-forwarded-for: 192.0.2.1"), "{head}");
    assert!(!head.contains("keep-alive"), "{head}");

    // `Expect: 100-continue` is answered by placerd (it reads the body) and not forwarded.
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(b"POST /t/app/fn HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n")
        .await
        .expect("head");
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("100").expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 100 Continue"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    s.write_all(b"hello").await.expect("body");
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("200").expect("read");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    let head = last();
    assert!(!head.contains("expect"), "{head}");

    // Dot segments, raw or encoded: 400 before any runner is asked.
    let before = calls().len();
    for path in
        ["/t/app/../../v1/status", "/t/app/%2e%2e/%2E%2E/v1/status", "/t/app/./fn", "/t/app/..%2f..%2fv1/status"]
    {
        let r = send(p.addr, "POST", path, &[], b"x").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
    }
    assert_eq!(calls().len(), before, "no runner saw them");

    // A runner that dies mid-call: 502 says what happened, not where.
    let r = send(p.addr, "POST", "/t/app/die", &[], b"x").await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    let body = String::from_utf8_lossy(&r.body).into_owned();
    assert!(body.contains("runner failed after accepting the call"), "{body}");
    assert!(!body.contains(&addr.to_string()) && !body.contains("127.0.0.1"), "{body}");
}

#[tokio::test]
async fn routes_to_missing_placers_are_refused_and_a_placer_in_use_cannot_be_deleted() {
    let r1 = runner(8, "r1").await;
    let p = start(vec![r1.addr.to_string()], "naive", |_| {}).await;
    let r = send(p.admin, "PUT", "/admin/routes", &[], br#"[{"app": "a", "placer": "nowhere"}]"#).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(send(p.admin, "PUT", "/admin/placers/mine", &[], &fixture("flaky")).await.status, StatusCode::OK);
    let routes = br#"[{"app": "a", "placer": "mine"}, {"fn": "b/x", "placer": "mine"}]"#;
    assert_eq!(send(p.admin, "PUT", "/admin/routes", &[], routes).await.status, StatusCode::OK);
    let r = send(p.admin, "DELETE", "/admin/placers/mine", &[], b"").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let message = r.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("[0] app=a") && message.contains("[1] fn=b/x"), "{message}");
    assert_eq!(send(p.admin, "PUT", "/admin/routes", &[], b"[]").await.status, StatusCode::OK);
    assert_eq!(send(p.admin, "DELETE", "/admin/placers/mine", &[], b"").await.status, StatusCode::OK);

    // The default placer serves every call no route takes: it cannot be deleted either,
    // unless a built-in of its name would take over.
    let prepare = |dir: &std::path::Path| std::fs::write(dir.join("mine.wasm"), fixture("flaky")).expect("placer");
    let q = common::start_with(vec![r1.addr.to_string()], "mine", prepare, |_| {}).await;
    let r = send(q.admin, "DELETE", "/admin/placers/mine", &[], b"").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.json()["message"].as_str().is_some_and(|m| m.contains("default_placer")), "{:?}", r.json());

    // At start-up, a route to a placer that is not loaded stops placerd with the reason.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let config = placerd::config::Config::from_toml(
        "default_placer = \"naive\"\nplacers_dir = \"/nonexistent\"\n[[routes]]\napp = \"a\"\nplacer = \"nowhere\"",
    )
    .expect("valid file");
    let e = placerd::serve_with_admin(listener, None, config, std::future::pending()).await.expect_err("refused");
    assert!(e.to_string().contains("routes[0].placer: no placer named `nowhere`"), "{e}");
}

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_placer_faulting_on_every_other_call_is_quarantined_by_its_fault_rate() {
    let r1 = runner(8, "r1").await;
    let p = start(vec![r1.addr.to_string()], "naive", |_| {}).await;
    assert_eq!(send(p.admin, "PUT", "/admin/placers/flaky", &[], &fixture("flaky")).await.status, StatusCode::OK);
    let routes = br#"[{"app": "faulty", "placer": "flaky"}]"#;
    assert_eq!(send(p.admin, "PUT", "/admin/routes", &[], routes).await.status, StatusCode::OK);
    for i in 0..12 {
        let key = if i % 2 == 0 { "trap-now" } else { "fine" };
        // Every call is answered: faults fall back to the native order.
        let r = send(p.addr, "POST", "/t/faulty/x", &[("fn-slot-hash", key)], b"x").await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let text = String::from_utf8_lossy(&send(p.admin, "GET", "/metrics", &[], b"").await.body).into_owned();
    assert_eq!(metric(&text, "placerd_placer_faults_total", &[("placer", "flaky"), ("kind", "trap")]), 5.0, "{text}");
    assert!(
        metric(&text, "placerd_placer_faults_total", &[("placer", "flaky"), ("kind", "quarantined")]) >= 1.0,
        "{text}"
    );
}

#[tokio::test]
async fn attempts_to_a_refusing_runner_are_counted_as_they_happen() {
    // A port with nothing listening: every connect is refused.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let p = start(vec![dead], "naive", |c| {
        c.placer_timeout = Duration::from_secs(3);
        c.retry_all_delay = Duration::from_millis(50);
        c.outlier_detection.consecutive_failures = 1_000;
    })
    .await;
    let call = tokio::spawn(send(p.addr, "POST", "/invoke/f", &[], b"x"));
    let counted = eventually(Duration::from_secs(2), async || {
        let text = String::from_utf8_lossy(&send(p.admin, "GET", "/metrics", &[], b"").await.body).into_owned();
        metric(&text, "lb_placer_retry_error_count_total", &[]) >= 3.0
    })
    .await;
    assert!(counted, "connect failures are counted while the call is still being placed");
    assert!(!call.is_finished());
    assert_eq!(call.await.expect("call").status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_symlink_out_of_the_placers_folder_is_refused_and_one_inside_it_loads() {
    let r1 = runner(8, "r1").await;
    let p = start(vec![r1.addr.to_string()], "naive", |_| {}).await;
    let outside = tempfile::tempdir().expect("tempdir");
    let component = fixture("custom-placer");
    std::fs::write(outside.path().join("evil.wasm"), &component).expect("outside");
    std::os::unix::fs::symlink(outside.path().join("evil.wasm"), p.placers_dir.join("evil.wasm")).expect("link");
    // The Kubernetes ConfigMap layout: NAME.wasm -> ..data/NAME.wasm, ..data -> a version.
    std::fs::create_dir(p.placers_dir.join("..v1")).expect("version dir");
    std::fs::write(p.placers_dir.join("..v1/mounted.wasm"), &component).expect("mounted");
    std::os::unix::fs::symlink("..v1", p.placers_dir.join("..data")).expect("..data");
    std::os::unix::fs::symlink("..data/mounted.wasm", p.placers_dir.join("mounted.wasm")).expect("link");
    let loaded = eventually(Duration::from_secs(20), async || common::placer_info(&p, "mounted").await.is_some()).await;
    assert!(loaded, "a link inside the folder is followed");
    let refused = eventually(Duration::from_secs(5), async || {
        common::placer_info(&p, "evil").await.is_some_and(|i| {
            i["sha256"] == "" && i["last_error"].as_str().is_some_and(|e| e.contains("outside placers_dir"))
        })
    })
    .await;
    assert!(refused, "{:?}", common::placer_info(&p, "evil").await);

    // Kubernetes updates a ConfigMap by pointing `..data` at a new version folder (a
    // rename over the old link), then deleting the old folder: the new version serves.
    let update = fixture("naive-v01");
    std::fs::create_dir(p.placers_dir.join("..v2")).expect("version dir");
    std::fs::write(p.placers_dir.join("..v2/mounted.wasm"), &update).expect("mounted");
    std::os::unix::fs::symlink("..v2", p.placers_dir.join("..data_tmp")).expect("..data_tmp");
    std::fs::rename(p.placers_dir.join("..data_tmp"), p.placers_dir.join("..data")).expect("swap");
    std::fs::remove_dir_all(p.placers_dir.join("..v1")).expect("old version");
    let want = common::sha256_hex(&update);
    let swapped = eventually(Duration::from_secs(20), async || {
        common::placer_info(&p, "mounted").await.is_some_and(|i| i["sha256"] == want.as_str())
    })
    .await;
    assert!(swapped, "the swapped version serves: {:?}", common::placer_info(&p, "mounted").await);
}

#[tokio::test]
async fn a_chatty_placer_and_a_refusing_runner_cannot_flood_the_log() {
    // The real binary, so the log is what an operator reads: JSON lines on stderr.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let dir = tempfile::tempdir().expect("tempdir");
    let placers = dir.path().join("placers");
    std::fs::create_dir(&placers).expect("placers dir");
    std::fs::write(placers.join("chatty.wasm"), fixture("chatty")).expect("placer");
    let config = dir.path().join("placerd.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
placers_dir = "{}"
cache_dir = "off"
default_placer = "chatty"
placer_timeout_ms = 3000
retry_all_delay_ms = 10
[runners]
static = ["{dead}"]
"#,
            placers.display()
        ),
    )
    .expect("config");
    let (logged, addr, admin) = common::serve_config(&config);
    let mut child = logged.child;

    // Three calls, each placed and refused again and again until its 3 s placement
    // deadline: hundreds of guest log lines and connect failures.
    let started = Instant::now();
    let calls: Vec<_> = (0..3)
        .map(|i| tokio::spawn(async move { send(addr, "POST", &format!("/invoke/f{i}"), &[], b"x").await }))
        .collect();
    for call in calls {
        assert_eq!(call.await.expect("call").status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let seconds = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&send(admin, "GET", "/metrics", &[], b"").await.body).into_owned();
    let attempts = metric(&text, "lb_placer_retry_error_count_total", &[]);
    let dropped = metric(&text, "placerd_log_lines_dropped_total", &[]);
    let _ = child.kill();
    let _ = child.wait();
    let lines = logged.lines.join().expect("log lines");

    assert!(attempts >= 100.0, "the flood happened: {attempts} refused attempts");
    let guest: Vec<&String> = lines.iter().filter(|l| l.contains("chatty call")).collect();
    let connect: Vec<&String> = lines.iter().filter(|l| l.contains("runner connect failed")).collect();
    // 20 guest lines a second, 2 connect lines per runner per 10 s (+1 window of slack each).
    assert!(!guest.is_empty() && guest.len() as f64 <= 20.0 * (seconds.ceil() + 1.0), "{} guest lines", guest.len());
    assert!(!connect.is_empty() && connect.len() <= 4, "{} connect lines", connect.len());
    assert!(dropped >= attempts - 4.0, "dropped lines are counted: {dropped} dropped of {attempts} attempts");
    // The real connect error, and one guest line per log line: the newline is escaped.
    assert!(connect.iter().all(|l| l.contains("Connection refused")), "{connect:?}");
    assert!(guest.iter().all(|l| l.contains("\\\\nINFO forged line")), "{guest:?}");
    for line in &lines {
        assert!(serde_json::from_str::<serde_json::Value>(line).is_ok(), "a line that is not placerd's: {line}");
    }
}
