//! `cargo bench -p placerd --bench place`: one `place` through the instance pool (lowering
//! the call and loads, the guest's algorithm, lifting and cleaning the order) for 8, 64 and
//! 512 runners, beside the same algorithm called natively. The runner set is sent once
//! (`set-runners` only when it changes, as `wit/placer.wit` says), so this is the
//! steady-state per-call cost.
//! `bench/place-report.sh` runs it and prints the medians as a table.
//!
//! `loads-N` is what a placement reads before `place`: the live load of every runner of a
//! pool of N, as the proxy reads it per call.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use placerd::placer::{
    Call, CallKind, PlacedBy, PlacerRuntime, PlacerSource, RunnerLoad, RunnerSet, SandboxLimits, builtin,
};
use placerd::runner::{DynamicPool, RunnerPool};

const SIZES: [usize; 3] = [8, 64, 512];
/// Distinct calls cycled through, so the hash placer sees many keys.
const CALLS: usize = 1024;

fn calls() -> Vec<Call> {
    (0..CALLS as u64)
        .map(|seq| Call {
            id: format!("01JBENCH{seq:018}"),
            app_id: "bench".into(),
            fn_id: format!("bench/fn-{seq}"),
            kind: CallKind::Sync,
            slot_key: format!("bench/fn-{seq}"),
            seq,
            random: seq.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            extensions: Vec::new(),
        })
        .collect()
}

fn loads(n: usize) -> Vec<RunnerLoad> {
    (0..n)
        .map(|i| RunnerLoad {
            in_flight: (i % 5) as u32,
            reported_active: (i % 3) as u32,
            recent_refusals: 0,
            healthy: true,
            ..RunnerLoad::default()
        })
        .collect()
}

fn place(c: &mut Criterion) {
    let runtime = PlacerRuntime::new(SandboxLimits::default()).expect("engine");
    let calls = calls();
    for n in SIZES {
        let mut group = c.benchmark_group(format!("place-{n}"));
        group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(60);
        let set = RunnerSet::from_addresses(1, (0..n).map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250)));
        let loads = loads(n);

        for name in ["naive", "consistent-hash"] {
            let bytes = builtin(name).expect("embedded");
            let version = runtime.load(name, PlacerSource::Builtin, bytes, Vec::new()).expect("load");
            let mut i = 0;
            group.bench_function(BenchmarkId::new("wasm", name), |b| {
                b.iter(|| {
                    i = (i + 1) % CALLS;
                    let placed = version.place(&calls[i], &set, &loads).expect("placed");
                    debug_assert!(matches!(placed.by, PlacedBy::Guest { .. }));
                    placed
                })
            });
        }

        // Native: the same order functions and the same per-call conversion the guest
        // adapters do.
        let mut i = 0;
        group.bench_function(BenchmarkId::new("native", "naive"), |b| {
            b.iter(|| {
                i = (i + 1) % CALLS;
                let healthy: Vec<bool> = loads.iter().map(|l| l.healthy).collect();
                let mut out = Vec::with_capacity(n);
                naive::order::order(calls[i].seq, &healthy, &mut out);
                out
            })
        });
        let config = consistent_hash::order::Config::default();
        group.bench_function(BenchmarkId::new("native", "consistent-hash"), |b| {
            b.iter(|| {
                i = (i + 1) % CALLS;
                let native: Vec<consistent_hash::order::Load> = loads
                    .iter()
                    .map(|l| consistent_hash::order::Load { in_flight: l.in_flight, healthy: l.healthy })
                    .collect();
                let mut out = Vec::with_capacity(n);
                let hash = consistent_hash::order::key_hash(calls[i].slot_key.as_bytes());
                consistent_hash::order::order(&config, hash, native.as_slice(), &[], &mut out);
                out
            })
        });
        group.finish();
    }
}

fn pool_loads(c: &mut Criterion) {
    let mut group = c.benchmark_group("loads");
    group.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(60);
    for n in SIZES {
        let addresses: Vec<String> = (0..n).map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250)).collect();
        let pool = DynamicPool::new(&addresses);
        let membership = pool.membership();
        group.bench_function(BenchmarkId::from_parameter(n), |b| b.iter(|| pool.loads(&membership)));
    }
    group.finish();
}

criterion_group!(benches, place, pool_loads);
criterion_main!(benches);
