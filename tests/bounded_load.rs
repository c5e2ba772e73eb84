//! Bounded-load consistent hashing against reference runners (issue 6): a Zipf(1.1)
//! hot-key workload at concurrency 64, once through plain consistent-hash and once with
//! `max_load_factor = 1.25`. In-flight counts are sampled from `/admin/runners` while the
//! calls run; affinity is read from each response's `Fn-Runner`. Fixed seed.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Placerd, runner, send};
use hyper::StatusCode;

const CONCURRENCY: usize = 64;
const CALLS: usize = 6_000;
const KEYS: usize = 1_000;

/// The same seeded Zipf(1.1) key sequence for both runs.
fn zipf_keys(seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut acc = 0.0;
    let mut cdf: Vec<f64> = (1..=KEYS)
        .map(|k| {
            acc += 1.0 / (k as f64).powf(1.1);
            acc
        })
        .collect();
    cdf.iter_mut().for_each(|c| *c /= acc);
    (0..CALLS).map(|_| cdf.partition_point(|c| *c < next())).collect()
}

struct Run {
    /// Largest in-flight count seen on one runner.
    max_in_flight: f64,
    /// Worst (max - 1.25·avg) over the samples, in calls.
    worst_excess: f64,
    worst_ratio: f64,
    samples: usize,
    same_runner: f64,
    /// Share of repeat calls that ran on a runner that had run their key before in this run
    /// (a warm container in Fn's model, where idle containers live 30 s and a run lasts ~2 s).
    warm: f64,
}

async fn run(p: &Placerd, app: &str, keys: &[usize]) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let last: Arc<Mutex<HashMap<usize, String>>> = Arc::default();
    let ran: Arc<Mutex<HashSet<(usize, String)>>> = Arc::default();
    let (hits, repeats) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let warm = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let keys = Arc::new(keys.to_vec());
    let sampler = {
        let (admin, done) = (p.admin, done.clone());
        tokio::spawn(async move {
            let (mut worst_excess, mut worst_ratio, mut samples, mut max_seen) = (f64::MIN, 0.0f64, 0usize, 0.0f64);
            while !done.load(Ordering::Relaxed) {
                let runners = send(admin, "GET", "/admin/runners", &[], b"").await.json();
                let in_flight: Vec<f64> = runners
                    .as_array()
                    .map(|a| a.iter().filter_map(|r| r["in_flight"].as_f64()).collect())
                    .unwrap_or_default();
                let total: f64 = in_flight.iter().sum();
                max_seen = in_flight.iter().copied().fold(max_seen, f64::max);
                let avg = total / in_flight.len().max(1) as f64;
                // Judge only samples taken at full load (after ramp-up, before drain).
                if total >= (CONCURRENCY as f64) * 0.75 {
                    let max = in_flight.iter().copied().fold(0.0, f64::max);
                    worst_excess = worst_excess.max(max - 1.25 * avg);
                    worst_ratio = worst_ratio.max(max / avg);
                    samples += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (worst_excess, worst_ratio, samples, max_seen)
        })
    };
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (next, last, ran, hits, repeats, warm, keys) =
                (next.clone(), last.clone(), ran.clone(), hits.clone(), repeats.clone(), warm.clone(), keys.clone());
            let (addr, app) = (p.addr, app.to_string());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&key) = keys.get(i) else { break };
                    let r = send(addr, "POST", &format!("/t/{app}/k{key}?ms=20"), &[], b"x").await;
                    assert_eq!(r.status, StatusCode::OK);
                    let runner = r.header("fn-runner").to_string();
                    let first_here = ran.lock().expect("lock").insert((key, runner.clone()));
                    if let Some(prev) = last.lock().expect("lock").insert(key, runner.clone()) {
                        repeats.fetch_add(1, Ordering::Relaxed);
                        if prev == runner {
                            hits.fetch_add(1, Ordering::Relaxed);
                        }
                        if !first_here {
                            warm.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    done.store(true, Ordering::Relaxed);
    let (worst_excess, worst_ratio, samples, max_in_flight) = sampler.await.expect("sampler");
    let repeats = repeats.load(Ordering::Relaxed).max(1) as f64;
    let same_runner = hits.load(Ordering::Relaxed) as f64 / repeats;
    let warm = warm.load(Ordering::Relaxed) as f64 / repeats;
    Run { max_in_flight, worst_excess, worst_ratio, samples, same_runner, warm }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_loads_cap_hot_keys_at_concurrency_64() {
    let mut runners = Vec::new();
    for i in 0..8 {
        runners.push(runner(1_000, &format!("r{i}")).await);
    }
    let p = common::start(runners.iter().map(|r| r.addr.to_string()).collect(), "consistent-hash", |c| {
        c.placer_config.insert("ch-bounded".into(), vec![("max_load_factor".into(), "1.25".into())]);
    })
    .await;
    let ch = placerd::placer::builtin("consistent-hash").expect("embedded");
    assert_eq!(send(p.admin, "PUT", "/admin/placers/ch-bounded", &[], ch).await.status, StatusCode::OK);
    let routes = br#"[{"app": "bounded", "placer": "ch-bounded"}]"#;
    assert_eq!(send(p.admin, "PUT", "/admin/routes", &[], routes).await.status, StatusCode::OK);

    let keys = zipf_keys(42);
    let plain = run(&p, "plain", &keys).await;
    let bounded = run(&p, "bounded", &keys).await;
    eprintln!(
        "plain: max in-flight {}, worst max/avg {:.2} (max - 1.25 avg = {:.1}) over {} samples, same-runner {:.1}%, warm {:.1}%; bounded 1.25: max in-flight {}, worst max/avg {:.2} (max - 1.25 avg = {:.1}) over {} samples, same-runner {:.1}%, warm {:.1}%",
        plain.max_in_flight,
        plain.worst_ratio,
        plain.worst_excess,
        plain.samples,
        plain.same_runner * 100.0,
        plain.warm * 100.0,
        bounded.max_in_flight,
        bounded.worst_ratio,
        bounded.worst_excess,
        bounded.samples,
        bounded.same_runner * 100.0,
        bounded.warm * 100.0
    );
    assert!(bounded.samples >= 10, "too few full-load samples: {}", bounded.samples);
    // The bound: no runner ever holds more than 1.25 x the average (64 calls / 8 runners)
    // plus the one call being placed, at any sample.
    let bound = 1.25 * (CONCURRENCY as f64 / runners.len() as f64) + 1.0;
    assert!(
        bounded.max_in_flight <= bound,
        "bounded: {} in flight on one runner (bound {bound})",
        bounded.max_in_flight
    );
    assert!(plain.max_in_flight > bound, "the workload should overload plain hashing: {}", plain.max_in_flight);
    // Affinity: at least 90% of plain hashing's hits, where a hit is a call that lands on a
    // runner that already ran its key (its container is warm). Spilled calls go to the
    // key's own second runner, so they hit too once it has run the key.
    assert!(plain.same_runner > 0.99);
    assert!(bounded.warm >= 0.9 * plain.warm, "bounded warm hits {:.3} < 0.9 x plain {:.3}", bounded.warm, plain.warm);
    // Going back to exactly the previous call's runner is rarer: at this skew the top key
    // alone needs ~18% of the capacity against a 15.6% cap, so its calls alternate between
    // two runners (~69% measured, see docs/placers.md).
    assert!(bounded.same_runner >= 0.5, "bounded same-runner {:.2}", bounded.same_runner);
}
