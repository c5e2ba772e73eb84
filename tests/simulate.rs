//! `placerd simulate` with a fixed seed: the real Wasm placers through the real runtime.
//! The figures are deterministic; the assertions pin the properties docs/placers.md
//! reports (who balances, who keeps affinity, who moves how many keys).

use std::time::Duration;

use placerd::placer::{PlacerRuntime, SandboxLimits};
use placerd::simulate::{Change, Contender, Event, KeyDist, Report, Workload, html, simulate};

fn run(workload: &Workload) -> Vec<Report> {
    let runtime = PlacerRuntime::new(SandboxLimits { budget: Duration::from_millis(500), ..SandboxLimits::default() })
        .expect("engine");
    simulate(&runtime, workload, &Contender::defaults()).expect("simulate")
}

fn by<'a>(reports: &'a [Report], label: &str) -> &'a Report {
    reports.iter().find(|r| r.placer == label).expect(label)
}

#[test]
fn zipf_workload_ranks_the_placers_as_documented() {
    let w = Workload { calls: 40_000, events: vec![Event { at: 20_000, change: Change::Add }], ..Workload::default() };
    let reports = run(&w);
    assert_eq!(run(&w), reports, "same seed, same figures");
    for r in &reports {
        assert_eq!(r.faults, 0, "{}", r.placer);
        assert_eq!(r.per_runner.len(), 11, "{}", r.placer);
    }
    let (naive, ch, fn_ch, bounded, least) = (
        by(&reports, "naive"),
        by(&reports, "consistent-hash"),
        by(&reports, "consistent-hash:fn"),
        by(&reports, "consistent-hash:bounded-1.25"),
        by(&reports, "least-loaded"),
    );
    // Every built-in beats Fn's consistent hash on balance.
    for r in [naive, ch, bounded, least] {
        assert!(r.max_over_avg < fn_ch.max_over_avg, "{} {} vs fn {}", r.placer, r.max_over_avg, fn_ch.max_over_avg);
    }
    assert!(fn_ch.max_over_avg > 3.0, "Fn's variant should show its skew: {}", fn_ch.max_over_avg);
    assert!(naive.max_over_avg < 1.01 && least.max_over_avg < 1.05, "{} {}", naive.max_over_avg, least.max_over_avg);
    // Bounded loads hold in-flight near the factor; plain hashing lets the hot key pile up.
    assert!(bounded.peak_inflight_ratio < ch.peak_inflight_ratio);
    assert!(bounded.max_over_avg <= 1.3, "{}", bounded.max_over_avg);
    // Affinity: hashing keeps keys on their runner; round robin and P2C do not.
    assert!(ch.same_runner_ratio > 0.99 && fn_ch.same_runner_ratio > 0.99);
    assert!(naive.same_runner_ratio < 0.2 && least.same_runner_ratio < 0.2);
    assert!(bounded.warm_hit_ratio > least.warm_hit_ratio);
    // Adding an 11th runner moves about 1/11 of the keys under the paper's jump hash.
    let moved = ch.moved[0].1;
    assert!((0.06..=1.0 / 11.0 + 0.02).contains(&moved), "{moved}");
}

#[test]
fn uniform_keys_are_balanced_by_plain_hashing_too() {
    let w = Workload { calls: 30_000, dist: KeyDist::Uniform, events: vec![], ..Workload::default() };
    let reports = run(&w);
    let ch = by(&reports, "consistent-hash");
    assert!(ch.max_over_avg < 1.1, "{}", ch.max_over_avg);
    assert!(by(&reports, "consistent-hash:fn").max_over_avg > 2.0);
}

#[test]
fn the_html_report_is_self_contained() {
    let w = Workload { calls: 5_000, keys: 500, events: vec![], ..Workload::default() };
    let reports = run(&w);
    let page = html::page(&reports, "test workload");
    assert!(page.starts_with("<!doctype html>") && page.contains("<svg") && page.contains("least-loaded"));
    for forbidden in ["<script", "http://", "https://"] {
        let allowed =
            forbidden == "http://" && page.matches(forbidden).all(|_| page.contains("http://www.w3.org/2000/svg"));
        assert!(!page.contains(forbidden) || allowed, "{forbidden}");
    }
}
