//! Several workers, end to end: client connections spread over them, and what works with one
//! works with N. A placer swapped under load reaches every worker with no failed call; a
//! runner's calls in flight, the metrics and a shadow's count are the whole process's;
//! `max_connections` holds for all workers together; and the binary, started with three
//! workers, applies a reload on every worker and drains them all on `SIGTERM`.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::{eventually, runner, send, start, start_with};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use placerd::config::Route;
use placerd::placer::builtin;

const WORKERS: usize = 3;
const WAIT: Duration = Duration::from_secs(30);

/// One keep-alive client connection.
struct Client {
    sender: SendRequest<Full<Bytes>>,
}

/// A call's status, the runner that served it and the placer label.
struct Answer {
    status: StatusCode,
    placer: String,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
        tokio::spawn(conn);
        Client { sender }
    }

    async fn call(&mut self, path: &str, body: &'static [u8]) -> Answer {
        let request =
            Request::post(path).header("host", "placerd").body(Full::new(Bytes::from_static(body))).expect("request");
        self.sender.ready().await.expect("ready");
        let response = self.sender.send_request(request).await.expect("response");
        let (head, body) = response.into_parts();
        let _ = body.collect().await;
        let placer = head.headers.get("fn-placer").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        Answer { status: head.status, placer }
    }
}

/// `count` connections opened one after another, each answered once before the next
/// opens (so each is placed on a worker with the fewest).
async fn clients(addr: SocketAddr, count: usize) -> Vec<Client> {
    let mut clients = Vec::new();
    for i in 0..count {
        let mut client = Client::connect(addr).await;
        assert_eq!(client.call(&format!("/t/w/open-{i}"), b"x").await.status, StatusCode::OK);
        clients.push(client);
    }
    clients
}

/// The value of the sample `name{labels}` in a Prometheus exposition.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

async fn metrics(admin: SocketAddr) -> String {
    String::from_utf8_lossy(&send(admin, "GET", "/metrics", &[], b"").await.body).into_owned()
}

/// Open client connections per worker, from `placerd_worker_connections`.
fn spread(text: &str) -> Vec<u64> {
    (0..WORKERS)
        .map(|w| sample(text, &format!("placerd_worker_connections{{worker=\"{w}\"}}")).unwrap_or(-1.0) as u64)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_spread_evenly_over_the_workers_and_the_metrics_count_every_workers_calls() {
    let runners = [runner(64, "a").await, runner(64, "b").await];
    let p =
        start(runners.iter().map(|r| r.addr.to_string()).collect(), "consistent-hash", |c| c.workers = WORKERS).await;
    let mut clients = clients(p.addr, 2 * WORKERS).await;
    assert_eq!(spread(&metrics(p.admin).await), [2, 2, 2], "six connections over three workers");
    for (i, client) in clients.iter_mut().enumerate() {
        for n in 0..10 {
            assert_eq!(client.call(&format!("/t/w/fn-{i}-{n}"), b"x").await.status, StatusCode::OK);
        }
    }
    let text = metrics(p.admin).await;
    let calls = (2 * WORKERS) as f64 * 11.0;
    assert_eq!(sample(&text, "lb_placer_placed_ok_count_total"), Some(calls), "{text}");
    assert_eq!(sample(&text, "placerd_requests_total{status=\"200\"}"), Some(calls));
    assert_eq!(sample(&text, "lb_placer_attempt_count_count"), Some(calls));
    let placers = send(p.admin, "GET", "/admin/placers", &[], b"").await.json();
    let served: u64 = placers
        .as_array()
        .expect("placers")
        .iter()
        .filter(|p| p["name"] == "consistent-hash")
        .map(|p| p["calls"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(served as f64, calls, "{placers}");
    drop(clients);
    assert!(
        eventually(WAIT, async || spread(&metrics(p.admin).await) == [0, 0, 0]).await,
        "closed connections leave the count"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placer_swapped_under_load_reaches_every_worker_with_no_failed_call() {
    let runners = [runner(64, "a").await, runner(64, "b").await, runner(64, "c").await];
    let naive = builtin("naive").expect("embedded").to_vec();
    let p = start_with(
        runners.iter().map(|r| r.addr.to_string()).collect(),
        "active",
        |dir| std::fs::write(dir.join("active.wasm"), &naive).expect("seed"),
        |c| c.workers = WORKERS,
    )
    .await;
    let clients = clients(p.addr, 2 * WORKERS).await;
    let replacement = builtin("consistent-hash").expect("embedded").to_vec();
    let new_label = format!("active/{}", &common::sha256_hex(&replacement)[..12]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        let (stop, new_label) = (stop.clone(), new_label.clone());
        load.push(tokio::spawn(async move {
            let (mut calls, mut failed, mut new) = (0, 0, 0);
            // Until told to stop, and at least until this connection's worker serves the
            // new version.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || new == 0 {
                let answer = client.call(&format!("/t/w/fn-{i}-{}", calls % 5), b"payload").await;
                calls += 1;
                failed += usize::from(answer.status != StatusCode::OK);
                new += usize::from(answer.placer == new_label);
            }
            (calls, failed, new)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let put = send(p.admin, "PUT", "/admin/placers/active", &[], &replacement).await;
    assert_eq!(put.status, StatusCode::OK, "{}", String::from_utf8_lossy(&put.body));
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for (i, client) in load.into_iter().enumerate() {
        let (calls, failed, new) = tokio::time::timeout(WAIT, client).await.expect("in time").expect("joined");
        assert_eq!(failed, 0, "connection {i}: {failed} of {calls} calls failed");
        assert!(new > 0, "connection {i} never saw the new version");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_on_every_worker_are_seen_by_all_and_shadows_see_every_call() {
    let runners = [runner(64, "a").await, runner(64, "b").await];
    let p = start(runners.iter().map(|r| r.addr.to_string()).collect(), "naive", |c| {
        c.workers = WORKERS;
        c.routes = vec![Route {
            app: Some("w".into()),
            placer: "naive".into(),
            shadow: Some("consistent-hash".into()),
            ..Route::default()
        }];
    })
    .await;
    let clients = clients(p.addr, 2 * WORKERS).await;
    // One slow call per connection, so every worker has calls in flight at once.
    let slow: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            tokio::spawn(async move {
                let answer = client.call(&format!("/t/w/slow-{i}?ms=1500"), b"x").await;
                (answer.status, client)
            })
        })
        .collect();
    let in_flight = async || {
        let runners = send(p.admin, "GET", "/admin/runners", &[], b"").await.json();
        runners.as_array().map_or(0, |r| r.iter().map(|r| r["in_flight"].as_u64().unwrap_or(0)).sum::<u64>())
    };
    assert!(
        eventually(WAIT, async || in_flight().await == 2 * WORKERS as u64).await,
        "the runners' in-flight counts are every worker's calls: {}",
        in_flight().await
    );
    for call in slow {
        let (status, _client) = call.await.expect("joined");
        assert_eq!(status, StatusCode::OK);
    }
    // Six opening calls and six slow ones, on three workers: the shadow saw each.
    let shadowed = async || {
        sample(&metrics(p.admin).await, "placerd_shadow_calls_total{live=\"naive\",shadow=\"consistent-hash\"}")
    };
    assert!(
        eventually(WAIT, async || shadowed().await == Some(4.0 * WORKERS as f64)).await,
        "the shadow counted {:?} calls",
        shadowed().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_holds_for_all_workers_together() {
    let runners = [runner(64, "a").await];
    let p = start(runners.iter().map(|r| r.addr.to_string()).collect(), "naive", |c| {
        c.workers = WORKERS;
        c.max_connections = 2;
    })
    .await;
    let mut open = clients(p.addr, 2).await;
    // The third waits in the backlog: its call is not answered while two are open.
    let third = tokio::spawn(async move {
        let mut client = Client::connect(p.addr).await;
        let status = client.call("/t/w/third", b"x").await.status;
        (status, p)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!third.is_finished(), "a third connection was served past max_connections = 2");
    assert_eq!(open[0].call("/t/w/still", b"x").await.status, StatusCode::OK);
    open.pop();
    let (status, _p) = tokio::time::timeout(WAIT, third).await.expect("served once one closed").expect("joined");
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reloads_every_worker_and_drains_them_all_on_sigterm() {
    let runners = [runner(64, "a").await, runner(64, "b").await];
    let addresses: Vec<String> = runners.iter().map(|r| format!("{:?}", r.addr.to_string())).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let placers_dir = dir.path().join("placers");
    let path = dir.path().join("placerd.toml");
    let config = |extra: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nplacers_dir = \"{}\"\ncache_dir = \"off\"\nworkers = {WORKERS}\nshutdown_grace_ms = 10000\n{extra}\n[runners]\nstatic = [{}]\n",
            placers_dir.display(),
            addresses.join(", ")
        )
    };
    std::fs::write(&path, config("")).expect("config");
    let (logged, addr, admin) = common::serve_config(&path);
    let mut child = logged.child;
    let mut clients = clients(addr, WORKERS).await;
    assert_eq!(spread(&metrics(admin).await), [1, 1, 1], "one connection per worker");
    let in_force = send(admin, "GET", "/admin/config", &[], b"").await.json();
    assert_eq!(in_force["workers"], WORKERS, "{in_force}");
    for client in &mut clients {
        assert_eq!(client.call("/t/w/big", b"0123456789").await.status, StatusCode::OK);
    }
    // A reload reaches every worker's next call.
    std::fs::write(&path, config("max_body_bytes = 4\nmax_buffered_bytes = 4096")).expect("config");
    let reload = send(admin, "POST", "/admin/reload", &[], b"").await;
    assert_eq!(reload.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reload.body));
    for client in &mut clients {
        assert_eq!(client.call("/t/w/big", b"0123456789").await.status, StatusCode::PAYLOAD_TOO_LARGE);
    }
    // Reconnect (a 413 closes the connection) and start one slow call per worker.
    let clients = clients_after_close(addr).await;
    let slow: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            tokio::spawn(async move { client.call(&format!("/t/w/drain-{i}?ms=1500"), b"x").await.status })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let term = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().expect("kill");
    assert!(term.success());
    for call in slow {
        assert_eq!(call.await.expect("joined"), StatusCode::OK, "a call in flight at SIGTERM was cut");
    }
    assert!(common::run_within_wait(&mut child.0, WAIT), "placerd did not exit after draining");
    let lines = logged.lines.join().expect("log");
    assert!(!lines.iter().any(|l| l.contains("still in flight after the shutdown grace")), "{lines:#?}");
}

/// One connection per worker again, once the connections the 413s closed have left the
/// count.
async fn clients_after_close(addr: SocketAddr) -> Vec<Client> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    clients(addr, WORKERS).await
}
