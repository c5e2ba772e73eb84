//! Swap under load (issue 4): while calls flow at concurrency 16, swap the default placer's
//! file 100 times between three modules and drop 20 invalid ones in between. Every call
//! must be answered 200 by a runner, no call may run twice, and the swap latency (rename →
//! first call placed by the new version) is reported and bounded.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{atomic_write, fixture, runner, start_with};
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use placerd::placer::builtin;

const WORKERS: usize = 16;
const SWAPS: usize = 100;
const MIN_CALLS: usize = 2_000;

struct Seen {
    at: Instant,
    status: StatusCode,
    placer: String,
    call_id: String,
}

fn sha12(bytes: &[u8]) -> String {
    common::sha256_hex(bytes)[..12].to_string()
}

/// One keep-alive connection sending calls until `stop`.
async fn worker(addr: std::net::SocketAddr, id: usize, stop: Arc<AtomicBool>, log: Arc<Mutex<Vec<Seen>>>) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let req = Request::post(format!("/invoke/fn-{id}-{}", n % 7))
            .header("host", "placerd")
            .body(Full::new(Bytes::from_static(b"payload")))
            .expect("request");
        sender.ready().await.expect("ready");
        let response = sender.send_request(req).await.expect("response");
        let (head, body) = response.into_parts();
        let _ = body.collect().await;
        let header = |name: &str| head.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let seen = Seen {
            at: Instant::now(),
            status: head.status,
            placer: header("fn-placer"),
            call_id: header("fn-call-id"),
        };
        log.lock().expect("log").push(seen);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_swaps_and_twenty_bad_modules_under_load_fail_no_call() {
    let runners = [runner(64, "a").await, runner(64, "b").await, runner(64, "c").await, runner(64, "d").await];
    let modules: Vec<Vec<u8>> = vec![
        builtin("naive").expect("embedded").to_vec(),
        builtin("consistent-hash").expect("embedded").to_vec(),
        fixture("custom-placer"),
    ];
    let first = modules[0].clone();
    let p = start_with(
        runners.iter().map(|r| r.addr.to_string()).collect(),
        "active",
        |dir| std::fs::write(dir.join("active.wasm"), &first).expect("seed"),
        |_| {},
    )
    .await;

    let log = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS).map(|i| tokio::spawn(worker(p.addr, i, stop.clone(), log.clone()))).collect();

    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\0asm\x0d\0\x01\0 garbage".to_vec()),
        ("wrong world", fixture("wrong-world")),
        ("half-written", modules[2][..modules[2].len() / 2].to_vec()),
        ("endless loop", fixture("loops-forever")),
    ];
    let mut latencies = Vec::new();
    let mut invalid = 0;
    for swap in 1..=SWAPS {
        let bytes = &modules[swap % modules.len()];
        let want = format!("active/{}", sha12(bytes));
        let from = log.lock().expect("log").len();
        let t0 = Instant::now();
        atomic_write(&p.placers_dir, "active.wasm", bytes);
        let latency = loop {
            let found = {
                let log = log.lock().expect("log");
                log[from..].iter().find(|s| s.at >= t0 && s.placer == want).map(|s| s.at - t0)
            };
            if let Some(latency) = found {
                break latency;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "swap {swap} to {want} never seen");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        latencies.push(latency);
        if swap % 5 == 0 {
            // An invalid module over the running one: it must be rejected and change nothing.
            let (what, junk) = &bad[invalid % bad.len()];
            if *what == "half-written" {
                std::fs::write(p.placers_dir.join("active.wasm"), junk).expect("write in place");
            } else {
                atomic_write(&p.placers_dir, "active.wasm", junk);
            }
            invalid += 1;
            // Wait for the rejection, so the next swap's latency is its own and not the
            // time left validating this one (the endless loop takes two budgets).
            let rejected = common::eventually(Duration::from_secs(10), async || {
                common::placer_info(&p, "active").await.is_some_and(|i| !i["last_error"].is_null())
            })
            .await;
            assert!(rejected, "{what} was not rejected");
        }
    }
    // Cold swaps: modules never seen before (a unique custom section appended), so each one
    // is compiled by Cranelift under the load; reported, bounded loosely.
    let mut cold = Vec::new();
    for i in 0..5u8 {
        let mut bytes = modules[(i as usize) % modules.len()].clone();
        let name = b"placerd-test";
        let payload = [name.len() as u8].iter().chain(name).chain(&[i]).copied().collect::<Vec<u8>>();
        bytes.push(0); // custom section
        bytes.push(payload.len() as u8);
        bytes.extend_from_slice(&payload);
        let want = format!("active/{}", sha12(&bytes));
        let from = log.lock().expect("log").len();
        let t0 = Instant::now();
        atomic_write(&p.placers_dir, "active.wasm", &bytes);
        loop {
            let found = log.lock().expect("log")[from..].iter().find(|s| s.placer == want).map(|s| s.at - t0);
            if let Some(latency) = found {
                cold.push(latency);
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "cold swap {i} never seen");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    cold.sort();
    while log.lock().expect("log").len() < MIN_CALLS {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("worker");
    }

    let log = log.lock().expect("log");
    let failed: Vec<_> = log.iter().filter(|s| s.status != StatusCode::OK).map(|s| s.status).collect();
    assert!(failed.is_empty(), "{} of {} calls failed: {:?}", failed.len(), log.len(), &failed[..failed.len().min(5)]);
    let mut executions = std::collections::HashMap::<String, u32>::new();
    for r in &runners {
        for (id, n) in r.stats.ledger() {
            *executions.entry(id).or_default() += n;
        }
    }
    let duplicates = executions.values().filter(|n| **n > 1).count();
    assert_eq!(duplicates, 0, "calls executed more than once");
    for s in log.iter() {
        assert_eq!(executions.get(&s.call_id), Some(&1), "call {} not executed exactly once", s.call_id);
    }

    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    let (p50, p99, max) = (pct(0.50), pct(0.99), latencies[latencies.len() - 1]);
    eprintln!(
        "swap under load: {} calls, {} swaps, {invalid} invalid modules, latency p50 {:.1} ms p99 {:.1} ms max {:.1} ms; \
         cold (first-seen module) swaps: median {:.1} ms max {:.1} ms",
        log.len(),
        SWAPS,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        cold[cold.len() / 2].as_secs_f64() * 1e3,
        cold[cold.len() - 1].as_secs_f64() * 1e3,
    );
    assert!(cold[cold.len() - 1] < Duration::from_secs(5), "cold swaps {cold:?}");
    assert_eq!(invalid, 20);
    assert!(p50 <= Duration::from_millis(100), "p50 {p50:?}");
    assert!(p99 <= Duration::from_millis(250), "p99 {p99:?}");
}
