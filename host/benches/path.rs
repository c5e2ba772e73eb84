//! `cargo bench -p placerd --bench path`: one call along the full path, stage by stage,
//! against an in-process reference runner on loopback (issue 7).
//!
//! - `place`: the consistent-hash Wasm component orders the runners (instance pool,
//!   lowering, guest, lifting, cleaning).
//! - `runner-client`: one TryExec to the runner over a pooled keep-alive connection, body
//!   read to the end; no placement.
//! - `lifecycle`: the placement loop: snapshot, loads, `place`, TryExec, body read.
//! - `proxy`: a keep-alive HTTP/1.1 client through placerd (routing, headers, call id,
//!   metrics, span, lifecycle) to the runner and back.
//! - `direct`: the same client straight to the runner.
//!
//! `proxy - direct` is what placerd adds to a call; `lifecycle - runner-client` is what
//! placement adds; `place` is the Wasm part of it. Every stage runs one call at a time (the
//! client on a current-thread runtime, placerd with one worker), so these are latencies of
//! an idle system, not throughput
//! (`bench/proxy.sh` measures that).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderMap;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use placerd::config::Config;
use placerd::lifecycle::{Timing, place};
use placerd::placer::{Call, CallKind, PlacerRuntime, PlacerSource, SandboxLimits, builtin};
use placerd::runner::reference::{RunnerHandle, RunnerOptions};
use placerd::runner::{Attempt, DynamicPool, Forward, RunnerClient, RunnerPool, TryExec};

const RUNNERS: usize = 4;

fn call(seq: u64) -> Call {
    Call {
        id: format!("01JBENCHPATH{seq:014}"),
        app_id: "bench".into(),
        fn_id: "hello".into(),
        kind: CallKind::Sync,
        slot_key: "hello".into(),
        seq,
        random: seq.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        extensions: Vec::new(),
    }
}

/// A keep-alive HTTP/1.1 client on one connection.
async fn client(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    sender
}

async fn get(sender: &mut SendRequest<Full<Bytes>>, path: &str) {
    sender.ready().await.expect("ready");
    let req = Request::post(path).header("host", "bench").body(Full::new(Bytes::from_static(b"hi"))).expect("req");
    let res = sender.send_request(req).await.expect("response");
    assert!(res.status().is_success(), "{}", res.status());
    res.into_body().collect().await.expect("body");
}

fn path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let runners: Vec<RunnerHandle> = rt.block_on(async {
        let mut runners = Vec::new();
        for i in 0..RUNNERS {
            runners.push(
                RunnerHandle::spawn(RunnerOptions { max_concurrency: 1_000, name: format!("r{i}") })
                    .await
                    .expect("runner"),
            );
        }
        runners
    });
    let addresses: Vec<String> = runners.iter().map(|r| r.addr.to_string()).collect();
    let pool = std::sync::Arc::new(DynamicPool::new(&addresses));
    let runner_client = RunnerClient::new(pool.clone(), Duration::from_secs(1));
    let runtime = PlacerRuntime::new(SandboxLimits::default()).expect("engine");
    let placer = runtime
        .load("consistent-hash", PlacerSource::Builtin, builtin("consistent-hash").expect("embedded"), Vec::new())
        .expect("load");
    let forward = Forward {
        method: Method::POST,
        uri: hyper::Uri::from_static("/t/bench/hello"),
        headers: HeaderMap::new(),
        body: Bytes::from_static(b"hi"),
        timeouts: placerd::runner::RunnerTimeouts::default(),
    };
    let timing =
        Timing { retry_all_delay: Duration::from_millis(10), placer_timeout: Duration::from_secs(5), detached: false };

    let mut group = c.benchmark_group("path");
    group.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(50);

    let membership = pool.snapshot().expect("membership");
    let mut seq = 0;
    group.bench_function("place", |b| {
        b.iter(|| {
            seq += 1;
            let loads = pool.loads(&membership);
            placer.place(&call(seq), &membership.set, &loads).expect("placed")
        })
    });

    group.bench_function("runner-client", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    match runner_client.try_exec(&membership.handles[0], &forward).await {
                        Attempt::Committed(Ok(res)) => {
                            res.into_body().collect().await.expect("body");
                        }
                        other => panic!("not placed: {other:?}"),
                    }
                }
                start.elapsed()
            })
        })
    });

    group.bench_function("lifecycle", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    seq += 1;
                    let outcome = place(&*pool, &runner_client, &*placer, &call(seq), &forward, timing).await;
                    outcome.result.expect("placed").into_body().collect().await.expect("body");
                }
                start.elapsed()
            })
        })
    });

    // placerd itself, in-process: its admin side on this runtime, its one worker (the
    // proxy port) on a thread of its own, as in production.
    let placers_dir = tempfile::tempdir().expect("tempdir");
    let (proxy_addr, _stop) = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = Config {
            runners: addresses.clone(),
            default_placer: "consistent-hash".into(),
            placers_dir: placers_dir.path().to_path_buf(),
            workers: 1,
            ..Config::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            placerd::serve_with_admin(listener, None, config, async move {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
        });
        (addr, stop)
    });
    for (name, addr) in [("proxy", proxy_addr), ("direct", runners[0].addr)] {
        let mut sender = rt.block_on(async {
            // The listener is bound already; the first call waits until placerd serves.
            let mut sender = client(addr).await;
            get(&mut sender, "/t/bench/hello").await;
            sender
        });
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        get(&mut sender, "/t/bench/hello").await;
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
    drop(runners);
}

criterion_group!(benches, path);
criterion_main!(benches);
