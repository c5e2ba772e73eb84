//! Host memory stays bounded while a placer keeps filling its instances, each retired for
//! a fresh one (its own test binary, so no other test's allocations move the RSS figures).

use std::path::Path;

use placerd::placer::{
    Call, CallKind, FaultPolicy, PlacedBy, PlacerRuntime, PlacerSource, RunnerLoad, RunnerSet, SandboxLimits,
};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kb * 1024
}

#[test]
fn host_rss_stays_bounded_over_ten_thousand_calls_that_fill_their_instance() {
    let limits = SandboxLimits {
        fault_policy: FaultPolicy { quarantine_after: u32::MAX, rate_min_faults: u32::MAX, ..FaultPolicy::default() },
        ..SandboxLimits::default()
    };
    let rt = PlacerRuntime::new(limits).expect("engine");
    let bytes = std::fs::read(Path::new(env!("PLACERD_FIXTURES_DIR")).join("eats-memory.wasm")).expect("fixture");
    let version = rt.load("eats-memory", PlacerSource::Builtin, &bytes, Vec::new()).expect("load");
    let runners = RunnerSet::from_addresses(1, ["127.0.0.1:1", "127.0.0.1:2"]);
    let loads =
        vec![
            RunnerLoad { in_flight: 0, reported_active: 0, recent_refusals: 0, healthy: true, ..RunnerLoad::default() };
            2
        ];
    let mut faults = 0;
    let mut baseline = 0;
    for seq in 0..10_000u64 {
        let call = Call {
            id: format!("c{seq}"),
            app_id: "a".into(),
            fn_id: "f".into(),
            kind: CallKind::Sync,
            slot_key: "f".into(),
            seq,
            random: seq,
            extensions: Vec::new(),
        };
        let placed = version.place(&call, &runners, &loads).expect("fallback policy");
        if !matches!(placed.by, PlacedBy::Guest { .. }) {
            faults += 1;
        }
        if seq == 500 {
            baseline = rss_bytes();
        }
    }
    let end = rss_bytes();
    // 256 KiB a call, retired past 12 MiB: a new instance every ~45 calls, the old one
    // dropped on the recycle thread.
    assert!(version.recycles() >= 150, "only {} recycles", version.recycles());
    assert_eq!(faults, 0, "calls not placed by the guest");
    let growth = end.saturating_sub(baseline);
    eprintln!(
        "RSS after 500 calls {} MiB, after 10,000 {} MiB, {} instances retired",
        baseline >> 20,
        end >> 20,
        version.recycles()
    );
    assert!(growth < 48 << 20, "RSS grew {} MiB (from {} MiB)", growth >> 20, baseline >> 20);
}
