//! `placerd simulate` with a fixed seed: the real Wasm placers through the real runtime.
//! The figures are deterministic; the assertions pin the properties docs/placers.md
//! reports (who balances, who keeps affinity, who moves how many keys).

mod common;

use std::time::Duration;

use placerd::placer::{PlacerRuntime, SandboxLimits};
use placerd::simulate::{Change, Contender, Event, KeyDist, Report, Workload, html, simulate, trace_keys};

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
    let rendezvous = by(&reports, "consistent-hash:rendezvous");
    assert!(rendezvous.same_runner_ratio > 0.99);
    assert!((0.06..=1.0 / 11.0 + 0.02).contains(&rendezvous.moved[0].1), "{:?}", rendezvous.moved);
}

#[test]
fn removing_a_middle_runner_moves_most_keys_under_jump_and_only_its_own_under_rendezvous() {
    let w = Workload {
        calls: 20_000,
        dist: KeyDist::Uniform,
        events: vec![Event { at: 10_000, change: Change::Remove(3) }],
        ..Workload::default()
    };
    let reports = run(&w);
    let (jump, rendezvous) = (by(&reports, "consistent-hash"), by(&reports, "consistent-hash:rendezvous"));
    assert!(jump.moved[0].1 > 0.5, "jump renumbers the runners after the removed one: {:?}", jump.moved);
    assert!(rendezvous.moved[0].1 < 1.0 / 10.0 + 0.03, "only the removed runner's keys: {:?}", rendezvous.moved);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_trace_replays_in_the_simulator() {
    let runners = [common::runner(8, "a").await, common::runner(8, "b").await, common::runner(8, "c").await];
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("calls.jsonl");
    let p = common::start(runners.iter().map(|r| r.addr.to_string()).collect(), "consistent-hash", |c| {
        c.record_trace = Some(path.clone());
    })
    .await;
    for i in 0..30 {
        let r = common::send(p.addr, "POST", &format!("/invoke/fn-{}", i % 5), &[], b"secret body").await;
        assert_eq!(r.status, hyper::StatusCode::OK);
    }
    let r = common::send(p.addr, "POST", "/invoke/bg", &[("fn-call-type", "detached")], b"x").await;
    assert_eq!(r.status, hyper::StatusCode::ACCEPTED);
    drop(p);

    let text = std::fs::read_to_string(&path).expect("trace");
    assert!(!text.contains("secret body"), "bodies are never recorded");
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    // The start-up probe is a 404 before placement: not a call, not traced.
    assert_eq!(lines.len(), 31);
    for line in &lines {
        for field in ["call_id", "app_id", "fn_id", "slot_key", "kind", "generation", "runner", "outcome", "status"] {
            assert!(!line[field].is_null(), "{field} missing in {line}");
        }
    }
    assert_eq!(lines[30]["kind"], "detached");
    assert_eq!(lines[30]["status"], 202);
    // Consistent hashing sent each function to one runner: the trace says so, and the
    // simulator replaying the trace's keys agrees.
    let keys = trace_keys(&text).expect("keys");
    assert_eq!(keys[0], "fn-0");
    let w = Workload { calls: keys.len(), trace_keys: Some(keys), events: vec![], ..Workload::default() };
    let reports = run(&w);
    assert_eq!(by(&reports, "consistent-hash").same_runner_ratio, 1.0);
    assert!(trace_keys("not json").is_err() && trace_keys("").is_err());
}
