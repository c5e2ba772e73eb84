//! The placer runtime against real components: the built-ins and the misbehaving fixtures
//! in `tests/fixtures/placers/`, built for wasm32-wasip2 by the host's build script.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use placerd::placer::{
    BUILTINS, Call, CallKind, Contract, FaultKind, FaultPolicy, LoadError, OnFault, PlaceError, PlacedBy,
    PlacerRuntime, PlacerSource, PlacerVersion, Recycle, RunnerLoad, RunnerSet, SandboxLimits, builtin, fallback_order,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("PLACERD_FIXTURES_DIR")).join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn runtime(limits: SandboxLimits) -> PlacerRuntime {
    PlacerRuntime::new(limits).expect("engine")
}

/// The epoch budget is wall-clock time, and the tests of this binary run in parallel on a
/// small machine: a guest preempted for more than 5 ms would time out. Tests that are not
/// about the budget get a roomy one so they cannot flake.
fn roomy() -> SandboxLimits {
    SandboxLimits { budget: Duration::from_millis(500), ..SandboxLimits::default() }
}

/// Quarantine out of the way, for tests that fault on purpose many times.
fn no_quarantine() -> SandboxLimits {
    SandboxLimits {
        fault_policy: FaultPolicy { quarantine_after: u32::MAX, rate_min_faults: u32::MAX, ..FaultPolicy::default() },
        ..roomy()
    }
}

fn load(rt: &PlacerRuntime, name: &str, bytes: &[u8]) -> Arc<PlacerVersion> {
    rt.load(name, PlacerSource::Builtin, bytes, Vec::new()).unwrap_or_else(|e| panic!("{e}"))
}

fn call(seq: u64, key: &str) -> Call {
    Call {
        id: format!("call-{seq}"),
        app_id: "app".into(),
        fn_id: key.into(),
        kind: CallKind::Sync,
        slot_key: key.into(),
        seq,
        random: seq.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        extensions: Vec::new(),
    }
}

fn surviving(seq: u64) -> Call {
    Call { extensions: vec![("survive".into(), "1".into())], ..call(seq, "k") }
}

fn idle(n: usize) -> Vec<RunnerLoad> {
    vec![RunnerLoad { in_flight: 0, reported_active: 0, recent_refusals: 0, healthy: true, ..RunnerLoad::default() }; n]
}

fn set(generation: u64, n: usize) -> RunnerSet {
    RunnerSet::from_addresses(generation, (0..n).map(|i| format!("127.0.0.1:{}", 9000 + i)))
}

#[test]
fn builtins_load_and_pass_check() {
    let rt = runtime(roomy());
    for (name, bytes) in BUILTINS {
        let version = load(&rt, name, bytes);
        let report = version.check().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.orders.len(), 5);
        // One sample load view in five has an unhealthy runner, which a placer may leave out.
        assert!(report.orders.iter().all(|(_, order)| (4..=5).contains(&order.len())), "{name}: {:?}", report.orders);
        assert!(report.orders.iter().any(|(_, order)| order.len() == 5), "{name}: {:?}", report.orders);
        assert_eq!(version.sha256().len(), 64);
    }
}

#[test]
fn wasm_consistent_hash_gives_the_native_order() {
    use consistent_hash::order::{Config, Hash, Load, Variant, key_hash, order};
    let rt = runtime(roomy());
    let bytes = builtin("consistent-hash").expect("embedded");
    for (config, native) in [
        (vec![], Config::default()),
        (vec![("variant".into(), "fn".into())], Config { variant: Variant::Fn, ..Config::default() }),
        (vec![("max_load_factor".into(), "1.25".into())], Config { max_load_factor: Some(1.25), ..Config::default() }),
        (vec![("hash".into(), "rendezvous".into())], Config { hash: Hash::Rendezvous, ..Config::default() }),
        (
            vec![("hash".into(), "rendezvous".into()), ("max_load_factor".into(), "1.25".into())],
            Config { hash: Hash::Rendezvous, max_load_factor: Some(1.25), ..Config::default() },
        ),
    ] {
        let version = rt.load("consistent-hash", PlacerSource::Builtin, bytes, config).expect("load");
        let runners = set(1, 10);
        let addresses: Vec<u64> = runners.runners.iter().map(|r| key_hash(r.address.as_bytes())).collect();
        // Each key twice, with other loads and health the second time: plain jump hashing
        // lets the host reuse its first order, which must still expand to the native one.
        for seq in 0..2_000u64 {
            let k = seq % 1_000;
            let key = format!("app/fn-{k}");
            let loads: Vec<RunnerLoad> = (0..10)
                .map(|i| RunnerLoad {
                    in_flight: ((seq + i * 3) % 7) as u32,
                    reported_active: 0,
                    recent_refusals: 0,
                    healthy: (seq + i) % 11 != 0,
                    ..RunnerLoad::default()
                })
                .collect();
            let placed = version.place(&call(seq, &key), &runners, &loads).expect("fallback policy");
            assert_eq!(placed.by, PlacedBy::Guest { cleaned: 0 });
            let native_loads: Vec<Load> =
                loads.iter().map(|l| Load { in_flight: l.in_flight, healthy: l.healthy }).collect();
            let mut expected = Vec::new();
            order(&native, key_hash(key.as_bytes()), native_loads.as_slice(), &addresses, &mut expected);
            assert_eq!(placed.order, expected, "key {key} with {native:?}");
        }
        let plain = native.hash == Hash::Jump && native.max_load_factor.is_none();
        assert_eq!(version.reuses_orders(), plain, "{native:?}");
    }
}

#[test]
fn wasm_naive_is_round_robin() {
    let rt = runtime(roomy());
    let version = load(&rt, "naive", builtin("naive").expect("embedded"));
    let runners = set(1, 7);
    let mut first = [0u32; 7];
    for seq in 0..700 {
        let placed = version.place(&call(seq, "k"), &runners, &idle(7)).expect("placed");
        assert_eq!(placed.order, fallback_order(seq, &idle(7)));
        first[placed.order[0] as usize] += 1;
    }
    assert_eq!(first, [100; 7]);
}

#[test]
fn set_runners_is_called_only_when_the_generation_changes() {
    let rt = runtime(roomy());
    let version = load(&rt, "consistent-hash", builtin("consistent-hash").expect("embedded"));
    for seq in 0..100 {
        version.place(&call(seq, "k"), &set(1, 8), &idle(8)).expect("placed");
    }
    assert_eq!(version.set_runners_calls(), 1);
    for seq in 0..100 {
        let placed = version.place(&call(seq, "k"), &set(2, 3), &idle(3)).expect("placed");
        assert_eq!(placed.order.len(), 3);
    }
    assert_eq!(version.set_runners_calls(), 2);
    assert_eq!(version.instances_created(), 1, "one warm instance serves sequential calls");
}

#[test]
fn trapped_instance_is_never_reused() {
    let rt = runtime(no_quarantine());
    let version = load(&rt, "traps", &fixture("traps"));
    let runners = set(1, 1_000);
    let loads = idle(1_000);
    let order = |c: Call| version.place(&c, &runners, &loads).expect("fallback policy");
    // Surviving calls return how many calls this instance has seen.
    assert_eq!(order(surviving(0)).order, vec![0]);
    assert_eq!(order(surviving(1)).order, vec![1]);
    let trapped = order(call(2, "k"));
    assert!(
        matches!(&trapped.by, PlacedBy::Fallback(FaultKind::Trap(msg)) if msg.contains("unreachable")),
        "{trapped:?}"
    );
    assert_eq!(version.instances_created(), 1);
    // A fresh instance: its own counter starts again at 0.
    assert_eq!(order(surviving(3)).order, vec![0]);
    assert_eq!(version.instances_created(), 2);
    assert_eq!(order(surviving(4)).order, vec![1]);
}

#[test]
fn reject_policy_fails_the_call_instead_of_falling_back() {
    let rt = runtime(SandboxLimits { on_fault: OnFault::Reject, ..no_quarantine() });
    let version = load(&rt, "traps", &fixture("traps"));
    let err = version.place(&call(0, "k"), &set(1, 3), &idle(3)).expect_err("rejected");
    assert!(matches!(&err, PlaceError::Rejected { placer, kind: FaultKind::Trap(_) } if placer == "traps"), "{err:?}");
}

#[test]
fn five_faults_quarantine_then_the_guest_is_tried_again() {
    let period = Duration::from_millis(300);
    let policy = FaultPolicy {
        quarantine_after: 5,
        quarantine_base: period,
        quarantine_max: period * 4,
        ..FaultPolicy::default()
    };
    let rt = runtime(SandboxLimits { fault_policy: policy, ..roomy() });
    let version = load(&rt, "traps", &fixture("traps"));
    let (runners, loads) = (set(1, 1_000), idle(1_000));
    for seq in 0..5 {
        let placed = version.place(&call(seq, "k"), &runners, &loads).expect("fallback");
        assert!(matches!(placed.by, PlacedBy::Fallback(FaultKind::Trap(_))));
    }
    assert!(version.quarantined());
    let created = version.instances_created();
    // Even a call that would succeed is not sent to the guest while quarantined.
    let placed = version.place(&surviving(5), &runners, &loads).expect("fallback");
    assert_eq!(placed.by, PlacedBy::Fallback(FaultKind::Quarantined));
    assert_eq!(placed.order, fallback_order(5, &loads));
    assert_eq!(version.instances_created(), created);
    std::thread::sleep(period + Duration::from_millis(50));
    let placed = version.place(&surviving(6), &runners, &loads).expect("placed");
    assert_eq!(placed.by, PlacedBy::Guest { cleaned: 0 });
    assert!(!version.quarantined());
}

#[test]
fn wrong_world_is_rejected_at_load_naming_what_is_missing() {
    let rt = runtime(roomy());
    let err = rt.load("wrong-world", PlacerSource::Builtin, &fixture("wrong-world"), Vec::new()).expect_err("rejected");
    let text = err.to_string();
    assert!(matches!(err, LoadError::WrongWorld { .. }), "{text}");
    assert!(text.contains("`set-runners`") && text.contains("`place`") && !text.contains("`configure`"), "{text}");
}

#[test]
fn garbage_and_half_written_components_are_rejected_at_load() {
    let rt = runtime(roomy());
    let whole = builtin("naive").expect("embedded");
    for (what, bytes) in [
        ("garbage", b"definitely not wasm".to_vec()),
        ("half", whole[..whole.len() / 2].to_vec()),
        ("empty", Vec::new()),
    ] {
        let err = rt.load("broken", PlacerSource::Builtin, &bytes, Vec::new()).expect_err(what);
        assert!(matches!(err, LoadError::Compile { .. }), "{what}: {err}");
        assert!(err.to_string().contains("`broken`"), "{err}");
    }
}

#[test]
fn configure_error_is_a_load_error_with_the_guests_message() {
    let rt = runtime(roomy());
    let config = vec![("colour".to_string(), "blue".to_string())];
    let err =
        rt.load("configure-error", PlacerSource::Builtin, &fixture("configure-error"), config).expect_err("rejected");
    let text = err.to_string();
    assert!(matches!(err, LoadError::Configure { .. }), "{text}");
    assert!(text.contains("fixture refuses every config") && text.contains("colour"), "{text}");
}

#[test]
fn builtin_config_errors_name_the_key() {
    let rt = runtime(roomy());
    let bytes = builtin("consistent-hash").expect("embedded");
    let config = vec![("max_load_factor".to_string(), "lots".to_string())];
    let err = rt.load("consistent-hash", PlacerSource::Builtin, bytes, config).expect_err("rejected");
    assert!(err.to_string().contains("max_load_factor"), "{err}");
}

#[test]
fn bad_indices_are_cleaned() {
    // A generous budget: the million-entry answer takes the guest a few ms to build.
    let rt = runtime(no_quarantine());
    let version = load(&rt, "bad-indices", &fixture("bad-indices"));
    let (runners, loads) = (set(1, 4), idle(4));
    let place = |seq| version.place(&call(seq, "k"), &runners, &loads).expect("placed");
    assert_eq!(place(0), placerd::placer::Placement { order: vec![0, 1], by: PlacedBy::Guest { cleaned: 3 } });
    assert_eq!(place(1).order, vec![1, 0]);
    let million = place(2);
    assert_eq!(million.order, vec![0, 1, 2, 3]);
    assert_eq!(million.by, PlacedBy::Guest { cleaned: 999_996 });
    assert!(version.check().is_err_and(|e| e.to_string().contains("out of range")));
}

#[test]
fn memory_growth_is_refused_at_the_cap() {
    let rt = runtime(SandboxLimits { memory_limit_bytes: 4 << 20, ..no_quarantine() });
    // 8 MiB in one call, past the 4 MiB cap: a fault on every instance, fresh or not.
    let bytes = vec![("bytes".to_string(), (8u32 << 20).to_string())];
    let version = rt.load("eats-memory", PlacerSource::Builtin, &fixture("eats-memory"), bytes).expect("load");
    let (runners, loads) = (set(1, 3), idle(3));
    for seq in 0..10 {
        let placed = version.place(&call(seq, "k"), &runners, &loads).expect("fallback");
        assert_eq!(placed.by, PlacedBy::Fallback(FaultKind::MemoryCap), "call {seq}");
    }
    assert_eq!(version.recycles(), 0, "a fault is not a recycle");
    assert!(version.check().is_err_and(|e| e.to_string().contains("memory")));
}

#[test]
fn one_call_past_the_cap_still_faults_and_quarantines() {
    let rt = runtime(roomy());
    let bytes = vec![("bytes".to_string(), (32u32 << 20).to_string())];
    let version = rt.load("eats-memory", PlacerSource::Builtin, &fixture("eats-memory"), bytes).expect("load");
    let (runners, loads) = (set(1, 3), idle(3));
    for seq in 0..5 {
        let placed = version.place(&call(seq, "k"), &runners, &loads).expect("fallback");
        assert_eq!(placed.by, PlacedBy::Fallback(FaultKind::MemoryCap), "call {seq}");
    }
    assert!(version.quarantined(), "five faults in a row quarantine");
    let placed = version.place(&call(5, "k"), &runners, &loads).expect("fallback");
    assert_eq!(placed.by, PlacedBy::Fallback(FaultKind::Quarantined));
}

/// A placer that keeps 256 KiB of every call (as a language runtime keeps its garbage
/// until it collects, or forever): past 75% of the cap its instance is retired for a fresh
/// one, and no call faults. With recycling off, the same placer faults.
#[test]
fn a_growing_instance_is_recycled_before_the_cap_and_no_call_faults() {
    let rt = runtime(roomy());
    let version = load(&rt, "eats-memory", &fixture("eats-memory"));
    let (runners, loads) = (set(1, 3), idle(3));
    for seq in 0..2_000 {
        let placed = version.place(&call(seq, "k"), &runners, &loads).expect("placed");
        assert_eq!(placed.by, PlacedBy::Guest { cleaned: 0 }, "call {seq}");
        assert_eq!(placed.order, [0, 1, 2]);
    }
    // 16 MiB cap, mark at 12 MiB, 256 KiB a call: an instance serves about 45 calls.
    assert!(version.recycles() >= 30, "{} recycles in 2,000 calls", version.recycles());
    assert!(version.instance_memory_bytes() <= 16 << 20);
    assert_eq!(version.served_faults(), 0);

    let off =
        runtime(SandboxLimits { recycle: Recycle { memory_percent: 100, ..Recycle::default() }, ..no_quarantine() });
    let version = load(&off, "eats-memory", &fixture("eats-memory"));
    let faults = (0..200)
        .filter(|&seq| {
            version.place(&call(seq, "k"), &runners, &loads).expect("fallback").by != PlacedBy::Guest { cleaned: 0 }
        })
        .count();
    assert!(faults >= 2, "without recycling the leak faults: {faults} faults in 200 calls");
    assert_eq!(version.recycles(), 0);
}

#[test]
fn recycling_under_concurrent_calls_loses_no_call() {
    let rt = runtime(roomy());
    let version = load(&rt, "eats-memory", &fixture("eats-memory"));
    let runners = set(1, 5);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (version, runners) = (&version, &runners);
            s.spawn(move || {
                for seq in 0..1_000 {
                    let placed =
                        version.place(&call(seq, &format!("fn-{t}-{seq}")), runners, &idle(5)).expect("placed");
                    assert_eq!(placed.by, PlacedBy::Guest { cleaned: 0 }, "thread {t} call {seq}");
                    assert_eq!(placed.order, [0, 1, 2, 3, 4]);
                }
            });
        }
    });
    assert!(version.recycles() >= 60, "{} recycles in 4,000 calls", version.recycles());
    assert_eq!(version.served_faults(), 0);
    assert_eq!(version.served_calls(), 4_000);
}

/// A version loads with one instance ready per worker: the first calls of three threads
/// at once build none on their call path.
#[test]
fn a_version_has_an_instance_ready_for_each_workers_first_call() {
    let rt = runtime(SandboxLimits { warm_instances: 3, ..roomy() });
    let version = load(&rt, "naive", builtin("naive").expect("embedded"));
    let started = std::time::Instant::now();
    while version.instances_created() < 3 {
        assert!(started.elapsed() < Duration::from_secs(10), "{} instances built", version.instances_created());
        std::thread::sleep(Duration::from_millis(5));
    }
    // Wait for the last one to reach the pool (counted as it starts building).
    std::thread::sleep(Duration::from_millis(200));
    let runners = set(1, 4);
    let barrier = std::sync::Barrier::new(3);
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let (version, runners, barrier) = (&version, &runners, &barrier);
            s.spawn(move || {
                barrier.wait();
                let placed = version.place(&call(t, "k"), runners, &idle(4)).expect("placed");
                assert_eq!(placed.by, PlacedBy::Guest { cleaned: 0 });
            });
        }
    });
    assert_eq!(version.instances_created(), 3, "a first call built its own instance");
}

#[test]
fn instances_are_recycled_after_a_number_of_calls_or_seconds() {
    let by_calls = runtime(SandboxLimits { recycle: Recycle { calls: 100, ..Recycle::default() }, ..roomy() });
    let version = load(&by_calls, "naive", builtin("naive").expect("embedded"));
    let (runners, loads) = (set(1, 4), idle(4));
    let seq = std::cell::Cell::new(0);
    let place = |n: u64| {
        for _ in 0..n {
            let placed = version.place(&call(seq.get(), "k"), &runners, &loads).expect("placed");
            assert_eq!(placed.by, PlacedBy::Guest { cleaned: 0 });
            seq.set(seq.get() + 1);
        }
    };
    // The first instance serves on past its 100 calls until its replacement is built (off
    // the call path); the replacement is swapped in at the first call after that, with
    // no call served yet.
    while version.recycles() == 0 {
        assert!(seq.get() < 100_000, "no recycle in {} calls", seq.get());
        place(1);
    }
    assert!(seq.get() >= 100, "recycled after {} calls", seq.get());
    // Then a spare is built ahead of need: each instance serves exactly its 100 calls.
    for round in 2..=4 {
        std::thread::sleep(Duration::from_millis(100));
        place(99);
        assert_eq!(version.recycles(), round - 1, "before the 100th call of instance {round}");
        place(1);
        assert_eq!(version.recycles(), round, "at the 100th call of instance {round}");
    }
    assert_eq!(version.late_recycles(), 0);

    let by_age = runtime(SandboxLimits {
        recycle: Recycle { age: Some(Duration::from_millis(50)), ..Recycle::default() },
        ..roomy()
    });
    let version = load(&by_age, "naive", builtin("naive").expect("embedded"));
    let started = std::time::Instant::now();
    let mut seq = 0;
    while started.elapsed() < Duration::from_millis(400) {
        let placed = version.place(&call(seq, "k"), &runners, &loads).expect("placed");
        assert_eq!(placed.by, PlacedBy::Guest { cleaned: 0 });
        seq += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(version.recycles() >= 3, "{} recycles in 400 ms at 50 ms each", version.recycles());
}

#[test]
fn concurrent_calls_share_the_pool() {
    let rt = runtime(roomy());
    let version = load(&rt, "consistent-hash", builtin("consistent-hash").expect("embedded"));
    let runners = set(1, 64);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (version, runners) = (&version, &runners);
            s.spawn(move || {
                for seq in 0..2_000 {
                    let placed =
                        version.place(&call(seq, &format!("fn-{t}-{seq}")), runners, &idle(64)).expect("placed");
                    assert_eq!(placed.by, PlacedBy::Guest { cleaned: 0 });
                    assert_eq!(placed.order.len(), 64);
                }
            });
        }
    });
    assert!(version.instances_created() <= 4, "{}", version.instances_created());
}

#[test]
fn wasm_least_loaded_gives_the_native_order() {
    use least_loaded::order::{Load, order};
    let rt = runtime(roomy());
    let version = load(&rt, "least-loaded", builtin("least-loaded").expect("embedded"));
    let runners = set(1, 12);
    for k in 0..2_000u64 {
        let loads: Vec<RunnerLoad> = (0..12)
            .map(|i| RunnerLoad {
                in_flight: ((k * 7 + i * 3) % 9) as u32,
                reported_active: ((k + i) % 4) as u32,
                recent_refusals: 0,
                healthy: (k + i) % 13 != 0,
                ..RunnerLoad::default()
            })
            .collect();
        let c = call(k, "k");
        let placed = version.place(&c, &runners, &loads).expect("placed");
        assert_eq!(placed.by, PlacedBy::Guest { cleaned: 0 });
        let native: Vec<Load> = loads
            .iter()
            .map(|l| Load { in_flight: l.in_flight, reported_active: l.reported_active, healthy: l.healthy })
            .collect();
        let mut expected = Vec::new();
        order(c.random, &native, &mut expected);
        assert_eq!(placed.order, expected, "call {k}");
    }
}

#[test]
fn components_built_for_contract_0_1_load_and_place_like_their_0_4_twin_and_retired_contracts_are_refused() {
    let rt = runtime(roomy());
    let v01 = load(&rt, "naive-v01", &fixture("naive-v01"));
    // 0.2 (and 0.3) are retired: refused at load, with what to do.
    let refused = rt.load("naive-v02", PlacerSource::Builtin, &fixture("naive-v02"), Vec::new()).expect_err("retired");
    let text = refused.to_string();
    assert!(
        text.contains("placerd:placer@0.2.0") && text.contains("no longer loads") && text.contains("wit/placer.wit"),
        "{text}"
    );
    let current = load(&rt, "naive", builtin("naive").expect("embedded"));
    assert_eq!(v01.contract(), Contract::V0_1);
    assert_eq!(current.contract(), Contract::V0_4);
    v01.check().unwrap_or_else(|e| panic!("{e}"));
    // Membership changes (set-runners) and changing health (the per-call loads) reach
    // both alike; the 0.4 built-in answers with a ring the host expands.
    for generation in 1..4u64 {
        let n = 3 + generation as usize;
        let runners = set(generation, n);
        for seq in 0..50u64 {
            let loads: Vec<RunnerLoad> = (0..n)
                .map(|i| RunnerLoad {
                    in_flight: (seq as u32 + i as u32) % 4,
                    healthy: !(seq + i as u64).is_multiple_of(3),
                    latency_us: 100 * i as u32,
                    ..RunnerLoad::default()
                })
                .collect();
            let c = call(seq, "k");
            let expected = current.place(&c, &runners, &loads).expect("placed");
            assert_eq!(expected.by, PlacedBy::Guest { cleaned: 0 });
            let placed = v01.place(&c, &runners, &loads).expect("placed");
            assert_eq!(placed.by, PlacedBy::Guest { cleaned: 0 });
            assert_eq!(placed.order, expected.order, "generation {generation}, seq {seq}");
        }
    }
}

#[test]
fn a_placer_reads_loads_through_its_imports_and_the_host_expands_its_ring() {
    let rt = runtime(roomy());
    let placer = load(&rt, "ring-after", &fixture("ring-after"));
    assert_eq!(placer.contract(), Contract::V0_4);
    placer.check().unwrap_or_else(|e| panic!("{e}"));
    for n in [1usize, 4, 9] {
        let runners = set(n as u64, n);
        for seq in 0..40u64 {
            let loads: Vec<RunnerLoad> = (0..n)
                .map(|i| RunnerLoad {
                    in_flight: ((seq as usize * 7 + i * 3) % 5) as u32,
                    // Some runners down; with one runner, every fourth call has none up.
                    healthy: !(seq + i as u64).is_multiple_of(4),
                    latency_us: 10 * i as u32 + seq as u32,
                    ..RunnerLoad::default()
                })
                .collect();
            let placed = placer.place(&call(seq, "k"), &runners, &loads).expect("placed");
            // The fixture lists the busiest runner; the ring from `seq` follows, without it
            // and, while any runner is up, without the runners that are down.
            let busiest = (0..n).rev().max_by_key(|&i| loads[i].in_flight).expect("a runner");
            let any_healthy = loads.iter().any(|l| l.healthy);
            let start = seq as usize % n;
            let mut expected = vec![busiest as u32];
            expected.extend(
                (start..n)
                    .chain(0..start)
                    .filter(|&i| i != busiest && (!any_healthy || loads[i].healthy))
                    .map(|i| i as u32),
            );
            assert_eq!(placed.by, PlacedBy::Guest { cleaned: 0 });
            assert_eq!(placed.order, expected, "{n} runners, seq {seq}");
        }
    }
}

/// The runner the `reuses` fixture listed: `seq % n` of the call `place` was asked for.
fn listed(placer: &PlacerVersion, seq: u64, key: &str, runners: &RunnerSet) -> u32 {
    let placed = placer.place(&call(seq, key), runners, &idle(runners.len())).expect("placed");
    assert_eq!(placed.by, PlacedBy::Guest { cleaned: 0 });
    placed.order[0]
}

#[test]
fn a_0_4_placer_that_allows_reuse_is_asked_once_per_key_and_runner_set() {
    let rt = runtime(roomy());
    let placer = load(&rt, "reuses", &fixture("reuses"));
    assert_eq!(placer.contract(), Contract::V0_4);
    let four = set(1, 4);
    assert_eq!(listed(&placer, 1, "a", &four), 1);
    assert!(placer.reuses_orders());
    // The fixture places by `seq`, against its word: a reused order shows the first seq.
    assert_eq!(listed(&placer, 2, "a", &four), 1, "key a reused");
    assert_eq!(listed(&placer, 2, "b", &four), 2, "key b asked");
    assert_eq!(listed(&placer, 7, "b", &four), 2, "key b reused");
    // A new runner set: every key is asked again.
    let five = set(2, 5);
    assert_eq!(listed(&placer, 3, "a", &five), 3, "key a asked for the new set");
    assert_eq!(listed(&placer, 4, "a", &five), 3, "and reused within it");
    // The orders kept are bounded: past that many keys, the first ones are asked again.
    for k in 0..4_096u64 {
        listed(&placer, 0, &format!("key-{k}"), &five);
    }
    assert_eq!(listed(&placer, 9, "a", &five), 4, "key a asked again after the bound");
    assert_eq!(placer.reused_calls(), 3, "a, b, then a for the second set");

    // The fixture breaks its word, and a check (what a reload or an install runs before it
    // serves) sees it.
    let err = placer.check().expect_err("an order that depends on seq").to_string();
    assert!(err.contains("set-runners answered by-slot-hash, but key") && err.contains("reused the first"), "{err}");

    // Answering `never` to `set-runners`: every call is placed.
    let never = rt
        .load("reuses", PlacerSource::Builtin, &fixture("reuses"), vec![("reuse".into(), "never".into())])
        .expect("load");
    never.check().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed(&never, 1, "a", &four), 1);
    assert_eq!(listed(&never, 2, "a", &four), 2, "asked again");
    assert!(!never.reuses_orders());
}

#[test]
fn a_placer_reads_the_calls_text_through_current_call_and_only_during_place() {
    let rt = runtime(roomy());
    let placer = load(&rt, "call-details", &fixture("call-details"));
    assert_eq!(placer.contract(), Contract::V0_4);
    let runners = set(1, 4);
    for (k, key) in ["app/a", "app/b", "another/key"].into_iter().enumerate() {
        let mut c = call(k as u64, key);
        // The fixture checks the text against the numbers and the id it was told to expect.
        c.extensions = vec![
            ("runner".into(), "2".into()),
            ("expect-id".into(), c.id.clone()),
            ("expect-slot-hash".into(), placerd::placer::slot_hash(key).to_string()),
        ];
        let placed = placer.place(&c, &runners, &idle(4)).expect("placed");
        assert_eq!(placed.by, PlacedBy::Guest { cleaned: 0 });
        assert_eq!(placed.order, vec![2, 0, 1, 3], "call {k}");
    }
    // Details that disagree with the call make the fixture answer "none acceptable".
    let mut wrong = call(9, "app/a");
    wrong.extensions = vec![("expect-id".into(), "some-other-call".into())];
    assert_eq!(placer.place(&wrong, &runners, &idle(4)).expect("placed").order, Vec::<u32>::new());
}

#[test]
fn the_slot_hash_is_fns_siphash_of_the_key() {
    // The value consistent-hash (and Fn's placer) computes from the key itself.
    for key in ["", "fn-0000", "my-app/hello", "ключ"] {
        assert_eq!(placerd::placer::slot_hash(key), consistent_hash::order::key_hash(key.as_bytes()));
    }
}

#[test]
fn a_placer_sees_no_running_clock_and_no_randomness() {
    let rt = runtime(roomy());
    let runners = set(1, 64);
    // Each load is a new version with fresh instances: with real randomness their
    // `RandomState` keys, and so their first choices, would differ (1 in 64 to agree).
    let firsts: Vec<u32> = (0..5)
        .map(|k| {
            let placer = load(&rt, &format!("peeks-{k}"), &fixture("peeks"));
            let placed = placer.place(&call(0, "k"), &runners, &idle(64)).expect("placed");
            assert_eq!(placed.by, PlacedBy::Guest { cleaned: 0 }, "the guest trapped: a clock runs");
            placed.order[0]
        })
        .collect();
    assert!(firsts.iter().all(|&f| f == firsts[0]), "instances saw different randomness: {firsts:?}");
}

#[test]
fn a_placers_random_draws_follow_the_calls_random_value() {
    const DRAW_FROM: u64 = 1 << 40; // the `peeks` fixture draws from `wasi:random` from here
    let rt = runtime(roomy());
    let runners = set(1, 64);
    let draw = |placer: &PlacerVersion, random: u64| {
        let c = Call { random, ..call(DRAW_FROM, "k") };
        let placed = placer.place(&c, &runners, &idle(64)).expect("placed");
        assert_eq!(placed.by, PlacedBy::Guest { cleaned: 0 });
        placed.order[0]
    };
    let a = load(&rt, "peeks-a", &fixture("peeks"));
    let b = load(&rt, "peeks-b", &fixture("peeks"));
    let seeds: Vec<u64> = (1..=16).map(|i| i * 0x1234_5678_9abc).collect();
    let from_a: Vec<u32> = seeds.iter().map(|&s| draw(&a, s)).collect();
    // The same call gives the same draw: again on the same instance, and on another one.
    assert_eq!(from_a, seeds.iter().map(|&s| draw(&a, s)).collect::<Vec<_>>());
    assert_eq!(from_a, seeds.iter().map(|&s| draw(&b, s)).collect::<Vec<_>>());
    // Different calls draw differently (16 draws over 64 runners all equal: 1 in 64^15).
    assert!(from_a.iter().any(|&f| f != from_a[0]), "every call drew the same: {from_a:?}");
}
