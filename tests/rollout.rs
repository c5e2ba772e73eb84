//! Trying a placer on a route before it serves: a shadow orders the same calls off the
//! client's path and reports what it would have done; a canary serves a share of the calls
//! and is rolled back by itself when it faults; either can be promoted with one call.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{Placerd, eventually, fixture, runner, send, start};
use hyper::StatusCode;
use placerd::config::Route;
use placerd::placer::{Call, CallKind, NativePlacer, Order, Runner, RunnerLoad, RunnerSet};
use placerd::runner::reference::RunnerHandle;

const WAIT: Duration = Duration::from_secs(30);

async fn three_runners() -> Vec<RunnerHandle> {
    vec![runner(64, "r0").await, runner(64, "r1").await, runner(64, "r2").await]
}

fn route(app: &str, placer: &str) -> Route {
    Route { app: Some(app.into()), placer: placer.into(), ..Route::default() }
}

/// `calls` sequential calls on app `a`, each with its own affinity key: (status, runner).
async fn calls(p: &Placerd, calls: usize) -> Vec<(u16, String, String)> {
    let mut seen = Vec::new();
    for i in 0..calls {
        let key = format!("key-{}", i % 37);
        let r = send(p.addr, "POST", "/t/a/work", &[("fn-slot-hash", key.as_str())], b"x").await;
        seen.push((r.status.as_u16(), r.header("fn-runner").to_string(), key));
    }
    seen
}

fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_changes_no_call_and_reports_the_agreement_the_test_computes() {
    let runners = three_runners().await;
    let addresses: Vec<String> = runners.iter().map(|r| r.addr.to_string()).collect();
    let slow_polls = |c: &mut placerd::config::Config| c.status_interval = Duration::from_secs(60);
    let shadowed = start(addresses.clone(), "naive", |c| {
        slow_polls(c);
        c.routes = vec![Route { shadow: Some("consistent-hash".into()), ..route("a", "naive") }];
    })
    .await;
    let with_shadow = calls(&shadowed, 300).await;
    let plain = start(addresses.clone(), "naive", |c| {
        slow_polls(c);
        c.routes = vec![route("a", "naive")];
    })
    .await;
    let without = calls(&plain, 300).await;
    assert!(with_shadow.iter().all(|c| c.0 == 200), "every call answered");
    assert_eq!(with_shadow, without, "the shadow changed which runner served a call");

    // What consistent-hash would have put first, computed here with its native twin: the
    // loads are all zero (one call at a time, status polls before the first call only).
    let names: HashMap<String, String> =
        runners.iter().enumerate().map(|(i, r)| (format!("r{i}"), r.addr.to_string())).collect();
    let set = RunnerSet {
        generation: 1,
        runners: addresses.iter().map(|a| Runner { address: a.clone(), labels: Vec::new() }).collect(),
    };
    let twin = NativePlacer::builtin("consistent-hash", &[]).expect("config").expect("a native twin");
    let mut expected_agreed = 0;
    let mut shadow_per_runner: HashMap<String, u64> = HashMap::new();
    for (_, served, key) in &with_shadow {
        let call = Call {
            id: String::new(),
            app_id: "a".into(),
            fn_id: "work".into(),
            kind: CallKind::Sync,
            slot_key: key.clone(),
            seq: 0,
            random: 0,
            extensions: Vec::new(),
        };
        let order = twin.order(&call, &set, &[RunnerLoad::default(); 3]).expect("order");
        let first = &addresses[order[0] as usize];
        *shadow_per_runner.entry(first.clone()).or_default() += 1;
        expected_agreed += u64::from(names[served] == *first);
    }
    assert!(expected_agreed > 0 && expected_agreed < 300, "a test that cannot tell: {expected_agreed}");

    let reported = eventually(WAIT, async || {
        let r = send(shadowed.admin, "GET", "/admin/shadow", &[], b"").await.json();
        r["shadows"][0]["calls"] == 300
    })
    .await;
    assert!(reported, "{}", send(shadowed.admin, "GET", "/admin/shadow", &[], b"").await.json());
    let report = send(shadowed.admin, "GET", "/admin/shadow", &[], b"").await.json()["shadows"][0].clone();
    assert_eq!((report["route"].as_str(), report["live"].as_str()), (Some("app=a"), Some("naive")));
    assert_eq!(report["agreed"], expected_agreed, "{report}");
    assert_eq!(report["faults"], 0);
    for (address, count) in &shadow_per_runner {
        assert_eq!(report["runners"][address]["shadow"], *count, "{report}");
        let live = with_shadow.iter().filter(|c| names[&c.1] == *address).count();
        assert_eq!(report["runners"][address]["live"], live as u64, "{report}");
    }
    // Consistent hashing keeps a key on its runner; round robin does not.
    assert_eq!(report["affinity"]["shadow"], 1.0, "{report}");
    assert!(report["affinity"]["live"].as_f64().is_some_and(|a| a < 0.9), "{report}");
    let text = String::from_utf8_lossy(&send(shadowed.admin, "GET", "/metrics", &[], b"").await.body).into_owned();
    let pair = "{live=\"naive\",shadow=\"consistent-hash\"}";
    assert_eq!(metric(&text, &format!("placerd_shadow_calls_total{pair}")), Some(300.0), "{text}");
    assert_eq!(metric(&text, &format!("placerd_shadow_agreement_total{pair}")), Some(expected_agreed as f64));
    assert_eq!(metric(&text, "placerd_shadow_dropped_total"), Some(0.0));

    // Busy: eight clients at once; every call is still answered, and every decision is
    // either shadowed or counted as dropped.
    let shadowed = Arc::new(shadowed);
    let mut clients = Vec::new();
    for c in 0..8 {
        let p = shadowed.clone();
        clients.push(tokio::spawn(async move {
            for i in 0..125 {
                let key = format!("busy-{c}-{}", i % 10);
                let r = send(p.addr, "POST", "/t/a/work", &[("fn-slot-hash", key.as_str())], b"x").await;
                assert_eq!(r.status, StatusCode::OK);
            }
        }));
    }
    for client in clients {
        client.await.expect("client");
    }
    let settled = eventually(WAIT, async || {
        let text = String::from_utf8_lossy(&send(shadowed.admin, "GET", "/metrics", &[], b"").await.body).into_owned();
        let calls = metric(&text, &format!("placerd_shadow_calls_total{pair}")).unwrap_or(0.0);
        calls + metric(&text, "placerd_shadow_dropped_total").unwrap_or(0.0) == 1300.0
    })
    .await;
    assert!(settled, "shadowed + dropped != 1300");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_at_20_percent_serves_20_percent_of_the_calls() {
    let runners = three_runners().await;
    let p = start(runners.iter().map(|r| r.addr.to_string()).collect(), "naive", |c| {
        c.routes = vec![Route { canary: Some("least-loaded".into()), canary_percent: 20, ..route("a", "naive") }];
    })
    .await;
    let p = Arc::new(p);
    let mut workers = Vec::new();
    for w in 0..8 {
        let p = p.clone();
        workers.push(tokio::spawn(async move {
            let mut by_placer: HashMap<String, u32> = HashMap::new();
            for i in 0..250 {
                let r = send(p.addr, "POST", &format!("/t/a/f{}", (w * 250 + i) % 50), &[], b"x").await;
                assert_eq!(r.status, StatusCode::OK);
                let placer = r.header("fn-placer").split('/').next().unwrap_or_default().to_string();
                *by_placer.entry(placer).or_default() += 1;
            }
            by_placer
        }));
    }
    let mut total: HashMap<String, u32> = HashMap::new();
    for w in workers {
        for (placer, n) in w.await.expect("worker") {
            *total.entry(placer).or_default() += n;
        }
    }
    let canary = total.get("least-loaded").copied().unwrap_or(0);
    assert_eq!(canary + total.get("naive").copied().unwrap_or(0), 2000, "{total:?}");
    assert!((300..=500).contains(&canary), "20% ± 5% of 2000 calls, got {canary}: {total:?}");
    let report = send(p.admin, "GET", "/admin/shadow", &[], b"").await.json();
    assert_eq!(report["canaries"][0]["canary"], "least-loaded", "{report}");
    assert_eq!(report["canaries"][0]["canary_percent"], 20);
    let text = String::from_utf8_lossy(&send(p.admin, "GET", "/metrics", &[], b"").await.body).into_owned();
    assert_eq!(metric(&text, "placerd_canary_calls_total{canary=\"least-loaded\"}"), Some(f64::from(canary)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_traps_is_rolled_back_with_no_failed_call() {
    let runners = three_runners().await;
    let p = start(runners.iter().map(|r| r.addr.to_string()).collect(), "naive", |_| {}).await;
    assert_eq!(send(p.admin, "PUT", "/admin/placers/flaky", &[], &fixture("flaky")).await.status, StatusCode::OK);
    let routes = br#"[{"app": "a", "placer": "naive", "canary": "flaky", "canary_percent": 50}]"#;
    assert_eq!(send(p.admin, "PUT", "/admin/routes", &[], routes).await.status, StatusCode::OK);

    // Every call's key makes the flaky canary trap; the fallback order still serves it.
    let mut placers = Vec::new();
    for i in 0..200 {
        let key = format!("trap-{i}");
        let r = send(p.addr, "POST", "/t/a/f", &[("fn-slot-hash", key.as_str())], b"x").await;
        assert_eq!(r.status, StatusCode::OK, "call {i} failed: {:?}", r.body);
        placers.push(r.header("fn-placer").split('/').next().unwrap_or_default().to_string());
    }
    let canary_calls = placers.iter().filter(|p| *p == "flaky").count();
    assert!((5..40).contains(&canary_calls), "the canary served until its rollback: {canary_calls}");
    assert!(placers[placers.len() - 50..].iter().all(|p| p == "naive"), "after the rollback only the live placer");
    let report = send(p.admin, "GET", "/admin/shadow", &[], b"").await.json();
    assert_eq!(report["rollbacks"][0]["canary"], "flaky", "{report}");
    assert_eq!(report["rollbacks"][0]["routes"][0], "app=a", "{report}");
    assert!(report["canaries"].as_array().is_some_and(Vec::is_empty), "{report}");
    let routes = send(p.admin, "GET", "/admin/routes", &[], b"").await.json();
    assert_eq!(routes, serde_json::json!([{ "app": "a", "placer": "naive" }]));
    let text = String::from_utf8_lossy(&send(p.admin, "GET", "/metrics", &[], b"").await.body).into_owned();
    assert_eq!(metric(&text, "placerd_canary_rollbacks_total{canary=\"flaky\"}"), Some(1.0), "{text}");
}

#[tokio::test]
async fn promote_makes_the_shadow_or_the_canary_the_placer_and_saves_it() {
    let r = runner(8, "r0").await;
    let state = tempfile::tempdir().expect("tempdir");
    let state_dir = state.path().to_path_buf();
    let p = start(vec![r.addr.to_string()], "naive", |c| {
        c.state_dir = Some(state_dir.clone());
        c.routes = vec![
            Route { shadow: Some("consistent-hash".into()), ..route("a", "naive") },
            Route { canary: Some("least-loaded".into()), canary_percent: 10, ..route("b", "naive") },
        ];
    })
    .await;
    let promote = |body: &'static str| send(p.admin, "POST", "/admin/promote", &[], body.as_bytes());
    assert_eq!(promote(r#"{"route": 1, "from": "shadow"}"#).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(promote(r#"{"route": 9, "from": "shadow"}"#).await.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(promote("nonsense").await.status, StatusCode::BAD_REQUEST);
    assert_eq!(promote(r#"{"route": 0, "from": "shadow"}"#).await.status, StatusCode::OK);
    let r = promote(r#"{"route": 1, "from": "canary"}"#).await;
    let expected =
        serde_json::json!([{ "app": "a", "placer": "consistent-hash" }, { "app": "b", "placer": "least-loaded" }]);
    assert_eq!(r.json(), expected);
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.path().join("routes.json")).expect("saved")).expect("json");
    assert_eq!(saved, expected);
    let served = send(p.addr, "POST", "/t/b/f", &[], b"x").await;
    assert!(served.header("fn-placer").starts_with("least-loaded/"), "{:?}", served.headers);
}
