//! Changing a running placerd: `SIGHUP` and `POST /admin/reload` re-read the config and
//! apply it while calls flow (or change nothing when it does not validate), and admin-API
//! changes survive a restart in `state_dir`.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{eventually, fixture, placer_info, runner, send, start_with};
use hyper::StatusCode;

const WAIT: Duration = Duration::from_secs(30);

fn config_file(placers_dir: &Path, runners: &[String], extra: &str) -> String {
    let runners: Vec<String> = runners.iter().map(|r| format!("{r:?}")).collect();
    format!(
        r#"listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
placers_dir = "{}"
cache_dir = "off"
placer_budget_ms = 200
status_interval_ms = 5000
{extra}
[runners]
static = [{}]
"#,
        placers_dir.display(),
        runners.join(", ")
    )
}

/// The value of the sample `name{labels}` in a Prometheus exposition.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_runners_routes_default_placer_and_placer_configs_with_no_failed_call() {
    let runners = [runner(64, "r1").await, runner(64, "r2").await, runner(64, "r3").await];
    let addresses: Vec<String> = runners.iter().map(|r| r.addr.to_string()).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let placers_dir = dir.path().join("placers");
    let path = dir.path().join("placerd.toml");
    std::fs::write(&path, config_file(&placers_dir, &addresses[..2], "")).expect("config");
    let (logged, addr, admin) = common::serve_config(&path);
    let mut child = logged.child;

    // Load: four clients, each call checked, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let reloaded = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (stop, reloaded) = (stop.clone(), reloaded.clone());
        clients.push(tokio::spawn(async move {
            let mut seen: Vec<(bool, u16, String, String)> = Vec::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let after = reloaded.load(Ordering::Relaxed);
                let path =
                    if i.is_multiple_of(2) { format!("/invoke/fn-{c}-{}", i % 40) } else { "/t/billing/charge".into() };
                let r = send(addr, "POST", &path, &[], b"x").await;
                let placer = r.header("fn-placer").split('/').next().unwrap_or_default().to_string();
                seen.push((after, r.status.as_u16(), r.header("fn-runner").to_string(), format!("{path} {placer}")));
                i += 1;
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The new file: a third runner, a route, another default placer and a placer config.
    let extra = "default_placer = \"least-loaded\"\n[[routes]]\napp = \"billing\"\nplacer = \"naive\"\n[placers.consistent-hash.config]\nmax_load_factor = \"1.5\"";
    std::fs::write(&path, config_file(&placers_dir, &addresses, extra)).expect("config");
    let hup = Command::new("kill").args(["-HUP", &child.id().to_string()]).status().expect("kill");
    assert!(hup.success());
    let applied = eventually(WAIT, async || {
        send(admin, "GET", "/admin/config", &[], b"").await.json()["default_placer"] == "least-loaded"
    })
    .await;
    assert!(applied, "the reload was not applied");
    reloaded.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut calls = Vec::new();
    for client in clients {
        calls.extend(client.await.expect("client"));
    }
    assert!(child.try_wait().expect("wait").is_none(), "SIGHUP must not stop placerd");

    let failed: Vec<_> = calls.iter().filter(|c| c.1 != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} calls failed across the reload: {:?}",
        failed.len(),
        calls.len(),
        &failed[..failed.len().min(5)]
    );
    let after: Vec<_> = calls.iter().filter(|c| c.0).collect();
    assert!(after.len() > 20, "too few calls after the reload: {}", after.len());
    assert!(after.iter().filter(|c| c.3.starts_with("/t/billing")).all(|c| c.3.ends_with(" naive")), "the new route");
    assert!(
        after.iter().filter(|c| c.3.starts_with("/invoke")).all(|c| c.3.ends_with(" least-loaded")),
        "the new default"
    );
    assert!(after.iter().any(|c| c.2 == "r3"), "the new runner takes calls");
    let config = send(admin, "GET", "/admin/config", &[], b"").await.json();
    assert_eq!(config["placers"]["consistent-hash"]["max_load_factor"], "1.5", "{config}");
    let metrics = send(admin, "GET", "/metrics", &[], b"").await;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    assert_eq!(sample(&metrics, "placerd_config_reloads_total{result=\"ok\"}"), Some(1.0), "{metrics}");

    // A file that does not validate changes nothing; the answer lists every problem.
    let bad = "default_placer = \"nope\"\n[placers.consistent-hash.config]\nmax_load_factor = \"abc\"";
    std::fs::write(&path, config_file(&placers_dir, &addresses, bad)).expect("config");
    let r = send(admin, "POST", "/admin/reload", &[], b"").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{:?}", r.body);
    let problems = r.json()["problems"].to_string();
    assert!(problems.contains("default_placer") && problems.contains("placers.consistent-hash.config"), "{problems}");
    let config = send(admin, "GET", "/admin/config", &[], b"").await.json();
    assert_eq!(
        (config["default_placer"].as_str(), config["routes"].as_array().map(Vec::len)),
        (Some("least-loaded"), Some(1))
    );
    assert_eq!(config["placers"]["consistent-hash"]["max_load_factor"], "1.5", "the running config stays: {config}");
    assert_eq!(send(addr, "POST", "/invoke/f", &[], b"x").await.status, StatusCode::OK);

    // A key that needs a restart is reported, and the rest applies.
    let moved = "listen = \"127.0.0.1:1\"\nmax_body_bytes = 100";
    let text = config_with_listen(&placers_dir, &addresses, moved);
    std::fs::write(&path, text).expect("config");
    let r = send(admin, "POST", "/admin/reload", &[], b"").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let report = r.json();
    assert!(report["restart_needed"].to_string().contains("listen (running"), "{report}");
    assert!(report["changed"].to_string().contains("max_body_bytes"), "{report}");
    assert_eq!(send(addr, "POST", "/invoke/f", &[], &[b'x'; 200]).await.status, StatusCode::PAYLOAD_TOO_LARGE);
    let metrics = send(admin, "GET", "/metrics", &[], b"").await;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    assert_eq!(sample(&metrics, "placerd_config_reloads_total{result=\"error\"}"), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, "placerd_config_reloads_total{result=\"ok\"}"), Some(2.0), "{metrics}");
    let _ = child.kill();
    let _ = child.wait();
    let log = logged.lines.join().expect("log").join("\n");
    assert!(log.contains("SIGHUP: reloading the config") && log.contains("config reload refused"), "{log}");
}

/// `config` with its `listen` line replaced by the lines of `head`.
fn config_with_listen(placers_dir: &Path, runners: &[String], head: &str) -> String {
    let text = config_file(placers_dir, runners, "");
    let rest: Vec<&str> = text.lines().filter(|l| !l.starts_with("listen =")).collect();
    format!("{head}\n{}\n", rest.join("\n"))
}

#[tokio::test]
async fn a_placerd_started_without_a_config_source_says_so() {
    let r1 = runner(8, "r1").await;
    let p = start_with(vec![r1.addr.to_string()], "naive", |_| {}, |_| {}).await;
    let r = send(p.admin, "POST", "/admin/reload", &[], b"").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.json()["problems"].to_string().contains("without a config file"), "{:?}", r.body);
}

#[tokio::test]
async fn admin_changes_survive_a_restart_in_state_dir() {
    let r1 = runner(8, "r1").await;
    let state = tempfile::tempdir().expect("tempdir");
    let state_dir = state.path().join("state");
    let with_state = |c: &mut placerd::config::Config| c.state_dir = Some(state_dir.clone());
    let custom = fixture("custom-placer");
    {
        let p = start_with(vec![r1.addr.to_string()], "naive", |_| {}, with_state).await;
        let r = send(p.admin, "PUT", "/admin/placers/mine", &[], &custom).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.json()["saved"], true);
        // A failed install leaves nothing behind, on disk either.
        let r = send(p.admin, "PUT", "/admin/placers/broken", &[], b"nope").await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        let routes = br#"[{"app": "a", "placer": "mine"}]"#;
        assert_eq!(send(p.admin, "PUT", "/admin/routes", &[], routes).await.status, StatusCode::OK);
    }
    let saved: Vec<String> = std::fs::read_dir(state_dir.join("placers"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(saved, ["mine.wasm"]);

    // A new process on the same state: the placer and the routes are back.
    let file_route = |c: &mut placerd::config::Config| {
        with_state(c);
        c.routes = vec![placerd::config::Route { app: Some("f".into()), placer: "naive".into(), ..Default::default() }];
    };
    let p = start_with(vec![r1.addr.to_string()], "naive", |_| {}, file_route).await;
    let info = placer_info(&p, "mine").await.expect("the saved placer is loaded");
    assert_eq!(info["source"], "admin");
    let routes = send(p.admin, "GET", "/admin/routes", &[], b"").await.json();
    assert_eq!(routes, serde_json::json!([{ "app": "a", "placer": "mine" }]), "the admin API's routes win");
    let config = send(p.admin, "GET", "/admin/config", &[], b"").await.json();
    assert_eq!(config["routes_source"], "admin");
    let r = send(p.addr, "POST", "/t/a/x", &[], b"x").await;
    assert!(r.header("fn-placer").starts_with("mine/"), "{:?}", r.headers);

    // DELETE /admin/routes: back to the file's routes, and forgotten on disk.
    let r = send(p.admin, "DELETE", "/admin/routes", &[], b"").await;
    assert_eq!(r.json(), serde_json::json!([{ "app": "f", "placer": "naive" }]));
    assert!(!state_dir.join("routes.json").exists());
    assert_eq!(send(p.admin, "DELETE", "/admin/placers/mine", &[], b"").await.status, StatusCode::OK);
    assert!(!state_dir.join("placers/mine.wasm").exists());
}
