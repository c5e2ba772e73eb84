//! Operations: `/metrics` after a scripted mix of calls, `/healthz`, `/readyz`, and
//! graceful shutdown of the real binary on SIGTERM.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{eventually, fixture, log_addr, runner, send, sha256_hex, spawn_logged, start};
use hyper::StatusCode;
use tokio::io::AsyncWriteExt;

/// The value of the sample `name{labels...}` (labels in any order), if present.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').map_or((series, ""), |(m, r)| (m, r.trim_end_matches('}')));
        let matches =
            metric == name && labels.iter().all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        matches.then(|| value.parse().ok()).flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_scripted_mix_of_calls() {
    let (busy, free) = (runner(0, "busy").await, runner(1, "free").await);
    let p = start(vec![busy.addr.to_string(), free.addr.to_string()], "naive", |c| {
        c.placer_timeout = Duration::from_millis(300);
    })
    .await;
    // A placer that passes validation but traps on some calls, routed for app `faulty`.
    assert_eq!(send(p.admin, "PUT", "/admin/placers/flaky", &[], &fixture("flaky")).await.status, StatusCode::OK);
    let routes = br#"[{"app": "faulty", "placer": "flaky"}]"#;
    assert_eq!(send(p.admin, "PUT", "/admin/routes", &[], routes).await.status, StatusCode::OK);

    // 1. Six calls placed. naive: seq even tries `busy` first (one refusal), odd goes
    //    straight to `free`. seq 0..5.
    for _ in 0..6 {
        assert_eq!(send(p.addr, "POST", "/invoke/ok", &[], b"x").await.status, StatusCode::OK);
    }
    // 2. A placer fault: falls back to the native order and is still placed (seq 6).
    let r = send(p.addr, "POST", "/t/faulty/x", &[("fn-slot-hash", "trap-now")], b"x").await;
    assert_eq!(r.status, StatusCode::OK);
    // 3. `free` occupied for 1.2 s (seq 7: busy first, +1 refusal), then a call that
    //    nobody takes before the 300 ms placer timeout (seq 8): 503.
    let occupant = tokio::spawn(send(p.addr, "POST", "/t/app/slow?ms=1200", &[], b"x"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let timed_out = send(p.addr, "POST", "/invoke/late", &[], b"x").await;
    assert_eq!(timed_out.status, StatusCode::SERVICE_UNAVAILABLE);
    // 4. A client that leaves during placement (seq 9), still while `free` is occupied.
    let mut stream = tokio::net::TcpStream::connect(p.addr).await.expect("connect");
    stream.write_all(b"POST /invoke/gone HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nx").await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(stream);
    assert_eq!(occupant.await.expect("task").status, StatusCode::OK);
    // 5. Unknown route: 404, no placement.
    assert_eq!(send(p.addr, "GET", "/nope", &[], b"").await.status, StatusCode::NOT_FOUND);

    let text = send(p.admin, "GET", "/metrics", &[], b"").await;
    assert_eq!(text.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&text.body).to_string();
    let get = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels).unwrap_or(-1.0);
    assert_eq!(get("lb_placer_placed_ok_count_total", &[]), 8.0, "{text}"); // 6 + fault fallback + slow
    assert_eq!(get("lb_placer_placed_error_count_total", &[]), 0.0);
    assert_eq!(get("lb_placer_timeout_count_total", &[]), 1.0);
    assert_eq!(get("lb_placer_client_cancelled_count_total", &[]), 1.0, "{text}");
    assert_eq!(get("lb_placer_rp_error_count_total", &[]), 0.0);
    assert_eq!(get("lb_placer_retry_error_count_total", &[]), 0.0);
    // Placed calls: 3 even seqs among 0..5, the fault (seq 6, even: fallback also starts at
    // busy), the occupant (seq 7, odd) = 4 refusals; the 503 and the cancelled call add
    // at least one each.
    assert!(get("lb_placer_retry_busy_count_total", &[]) >= 6.0, "{text}");
    // One attempt-count and one latency sample per finished placement (8 placed + 1 timeout).
    assert_eq!(get("lb_placer_attempt_count_count", &[]), 9.0);
    assert_eq!(get("lb_placer_latency_count", &[]), 9.0);
    assert_eq!(get("placerd_requests_total", &[("status", "200")]), 8.0);
    assert_eq!(get("placerd_requests_total", &[("status", "503")]), 1.0);
    assert_eq!(get("placerd_requests_total", &[("status", "499")]), 1.0);
    // Ours and the start-up probe of `common::start`.
    assert_eq!(get("placerd_requests_total", &[("status", "404")]), 2.0);
    assert_eq!(get("placerd_placer_faults_total", &[("placer", "flaky"), ("kind", "trap")]), 1.0);
    assert_eq!(get("placerd_placer_loads_total", &[("placer", "flaky"), ("result", "ok")]), 1.0);
    assert!(get("placerd_placer_guest_seconds_count", &[("placer", "naive")]) >= 8.0);
    assert_eq!(get("placerd_runner_healthy", &[("runner", &free.addr.to_string())]), 1.0);
    assert_eq!(get("placerd_runner_in_flight", &[("runner", &free.addr.to_string())]), 0.0);
    let naive_sha = sha256_hex(placerd::placer::builtin("naive").expect("embedded"));
    assert_eq!(get("placerd_placer_info", &[("placer", "naive"), ("sha256", &naive_sha)]), 1.0);
    assert!(text.trim_end().ends_with("# EOF"));
}

#[tokio::test]
async fn healthz_is_alive_and_readyz_needs_placers_and_runners() {
    let r1 = runner(8, "r1").await;
    let p = start(vec![r1.addr.to_string()], "naive", |_| {}).await;
    assert_eq!(send(p.admin, "GET", "/healthz", &[], b"").await.status, StatusCode::OK);
    assert_eq!(send(p.admin, "GET", "/readyz", &[], b"").await.status, StatusCode::OK);
    let empty = start(vec![], "naive", |_| {}).await;
    assert_eq!(send(empty.admin, "GET", "/healthz", &[], b"").await.status, StatusCode::OK);
    let not_ready = send(empty.admin, "GET", "/readyz", &[], b"").await;
    assert_eq!(not_ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(not_ready.json()["message"].as_str().is_some_and(|m| m.contains("no runners")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_call_finish_then_exits_zero() {
    let r1 = runner(8, "r1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let logged = spawn_logged(
        Command::new(env!("CARGO_BIN_EXE_placerd"))
            .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--runner", &r1.addr.to_string(), "--placers-dir"])
            .arg(dir.path().join("placers"))
            .env("RUST_LOG", "info"),
        "placerd serving",
    );
    let mut child = logged.child;
    // The log says where it listens.
    let line = logged.marked.recv_timeout(Duration::from_secs(30)).expect("serving log line");
    let addr = log_addr(&line, "listen");

    let slow = tokio::spawn(send(addr, "POST", "/t/app/slow?ms=1000", &[], b"x"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    let started = Instant::now();
    let r = slow.await.expect("task");
    assert_eq!(r.status, StatusCode::OK, "the call in flight completes");
    // New connections are refused once the listener is closed.
    assert!(
        eventually(Duration::from_secs(5), async || tokio::net::TcpStream::connect(addr).await.is_err()).await,
        "still accepting after SIGTERM"
    );
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "placerd did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
    let lines = logged.lines.join().expect("log reader");
    assert!(lines.iter().any(|l| l.contains("placerd stopped")), "{lines:#?}");
    // One access-log line for the call, as JSON with its fields.
    assert!(lines.iter().any(|l| l.contains("\"status\":200") && l.contains("placement_ms")), "{lines:#?}");
}

/// With one worker the runtime is a current-thread one whose writes wait for the end of
/// the scheduler's pass (`placerd::pass`): every call of many at once is still answered,
/// small answers (written at the pass's end), large ones (streamed) and bodiless ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_worker_answers_many_calls_at_once_at_every_size() {
    let (r1, r2) = (runner(64, "r1").await, runner(64, "r2").await);
    let dir = tempfile::tempdir().expect("tempdir");
    let logged = spawn_logged(
        Command::new(env!("CARGO_BIN_EXE_placerd"))
            .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--runner", &r1.addr.to_string(), "--runner", &r2.addr.to_string()])
            .args(["--default-placer", "consistent-hash", "--placers-dir"])
            .arg(dir.path().join("placers"))
            .env("TOKIO_WORKER_THREADS", "1")
            .env("RUST_LOG", "warn,placerd=info"),
        "placerd serving",
    );
    // Stopped however the test ends.
    let _placerd = logged.child;
    let line = logged.marked.recv_timeout(Duration::from_secs(30)).expect("serving log line");
    let addr = log_addr(&line, "listen");
    let clients: Vec<_> = (0..64)
        .map(|client| {
            tokio::spawn(async move {
                for call in 0..8 {
                    // 200 KiB streams; 60 KiB is answered in one write at the end of a pass.
                    let body = match call {
                        3 => vec![b'x'; 200 * 1024],
                        5 => vec![b'y'; 60 * 1024],
                        _ => format!("{client}/{call}").into_bytes(),
                    };
                    let r = send(addr, "POST", &format!("/invoke/fn-{client}"), &[], &body).await;
                    assert_eq!(r.status, StatusCode::OK);
                    assert!(r.body == body, "client {client} call {call}: {} bytes back", r.body.len());
                }
                assert_eq!(send(addr, "HEAD", "/t/app/head", &[], b"").await.status, StatusCode::OK);
            })
        })
        .collect();
    let all = async {
        for client in clients {
            client.await.expect("client");
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all).await.expect("every call answered within 60 s");
}

#[tokio::test]
async fn the_reference_runner_stops_on_sigterm() {
    // As a container's first process it gets SIGTERM from Kubernetes and Docker.
    let logged = spawn_logged(
        Command::new(env!("CARGO_BIN_EXE_placerd")).args(["runner", "--listen", "127.0.0.1:0"]).env("RUST_LOG", "info"),
        "reference runner serving",
    );
    let mut child = logged.child;
    logged.marked.recv_timeout(Duration::from_secs(30)).expect("serving log line");
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the runner ignored SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(0));
}
