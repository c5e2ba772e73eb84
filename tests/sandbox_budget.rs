//! The epoch budget stops an endless loop within budget + 2 ms (issue 2): at the deadline,
//! then after a grace of 1 ms in which its thread kept the CPU. Its own test binary: the
//! deadline is wall-clock time, so this measures enforcement without other tests
//! compiling components on the same two cores.

use std::path::Path;
use std::time::{Duration, Instant};

use placerd::placer::{
    Call, CallKind, FaultKind, FaultPolicy, PlacedBy, PlacerRuntime, PlacerSource, RunnerLoad, RunnerSet,
    SandboxLimits, fallback_order,
};

#[test]
fn endless_loop_is_stopped_within_budget_and_gets_the_fallback_order() {
    let limits = SandboxLimits {
        fault_policy: FaultPolicy { quarantine_after: u32::MAX, rate_min_faults: u32::MAX, ..FaultPolicy::default() },
        ..SandboxLimits::default()
    };
    let rt = PlacerRuntime::new(limits).expect("engine");
    let bytes = std::fs::read(Path::new(env!("PLACERD_FIXTURES_DIR")).join("loops-forever.wasm")).expect("fixture");
    let version = rt.load("loops-forever", PlacerSource::Builtin, &bytes, Vec::new()).expect("load");
    let runners = RunnerSet::from_addresses(1, (0..4).map(|i| format!("127.0.0.1:{}", 9000 + i)));
    let idle =
        vec![
            RunnerLoad { in_flight: 0, reported_active: 0, recent_refusals: 0, healthy: true, ..RunnerLoad::default() };
            4
        ];
    let mut elapsed = Vec::new();
    for seq in 0..9 {
        let call = Call {
            id: format!("call-{seq}"),
            app_id: "app".into(),
            fn_id: "k".into(),
            kind: CallKind::Sync,
            slot_key: "k".into(),
            seq,
            random: seq,
            extensions: Vec::new(),
        };
        let started = Instant::now();
        let placed = version.place(&call, &runners, &idle).expect("fallback policy");
        elapsed.push(started.elapsed());
        assert_eq!(placed.by, PlacedBy::Fallback(FaultKind::Timeout));
        assert_eq!(placed.order, fallback_order(seq, &idle));
    }
    elapsed.sort();
    let median = elapsed[elapsed.len() / 2];
    eprintln!("endless loop stopped after (sorted) {elapsed:?}");
    // Enforcement bound, not a speed target: the median of 9 tolerates preempted runs.
    assert!(median <= limits.budget + Duration::from_millis(2), "median {median:?} of {elapsed:?}");
    assert!(median >= limits.budget - Duration::from_millis(1), "stopped before its budget: {elapsed:?}");
}
