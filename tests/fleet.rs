//! Two placerd processes (the real binary) in front of the same reference runners, as two
//! replicas behind a load balancer would be (issue 8). Each reads its own runner file: one
//! rewritten by atomic rename, one laid out as a Kubernetes ConfigMap mount (`..data`
//! symlink swap). They must place every function on the same runner, and when a runner is
//! removed from both files only that runner's functions may move.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{eventually, runner, send};
use hyper::StatusCode;

const FUNCTIONS: usize = 1_000;

/// Stopped when dropped (its child is killed then).
struct Replica {
    _child: common::KillOnDrop,
    addr: SocketAddr,
    admin: SocketAddr,
}

/// Starts `placerd serve` with `config` and reads its listen and admin addresses from its
/// JSON start-up log line (both listeners are bound to port 0).
fn replica(dir: &Path, config: &str) -> Replica {
    let path = dir.join("placerd.toml");
    std::fs::write(&path, config).expect("config");
    let (logged, addr, admin) = common::serve_config(&path);
    Replica { _child: logged.child, addr, admin }
}

fn config(runner_file: &Path, placers_dir: &Path) -> String {
    format!(
        r#"listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
placers_dir = "{}"
default_placer = "consistent-hash"
# The budget is wall-clock time: on a loaded 2-core machine a preempted guest can overrun
# 5 ms, and that call gets the fallback order. Roomy, as in the other tests.
placer_budget_ms = 200
# Fewer status polls on a loaded test machine (a timed-out poll marks a runner unhealthy).
status_interval_ms = 5000
[runners]
file = "{}"
[[routes]]
app = "rv"
placer = "ch-rendezvous"
[placers.ch-rendezvous.config]
hash = "rendezvous"
"#,
        placers_dir.display(),
        runner_file.display()
    )
}

fn runner_lines(addresses: &[String]) -> String {
    let mut text = String::from("# runners, in placement-index order\n");
    for (i, a) in addresses.iter().enumerate() {
        text.push_str(&format!("{a} zone={}\n", if i % 2 == 0 { "a" } else { "b" }));
    }
    text
}

/// Replica A's file: replaced by writing a temporary file and renaming it over.
fn write_renamed(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Replica B's file: the kubelet's ConfigMap layout, `runners -> ..data/runners`,
/// `..data -> ..<version>/`, updated by swapping `..data`.
fn write_configmap(dir: &Path, version: u32, text: &str) {
    let data = dir.join(format!("..v{version}"));
    std::fs::create_dir_all(&data).expect("mkdir");
    std::fs::write(data.join("runners"), text).expect("write");
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(format!("..v{version}"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    if !dir.join("runners").exists() {
        symlink("..data/runners", dir.join("runners")).expect("symlink");
    }
}

/// The runner (its `Fn-Runner` name) each function of `app` lands on.
async fn placements(r: &Replica, app: &str) -> Vec<String> {
    let mut tasks = tokio::task::JoinSet::new();
    let mut out = vec![String::new(); FUNCTIONS];
    for chunk in (0..FUNCTIONS).collect::<Vec<_>>().chunks(FUNCTIONS / 8) {
        let (addr, app, chunk) = (r.addr, app.to_string(), chunk.to_vec());
        tasks.spawn(async move {
            let mut got = Vec::new();
            for i in chunk {
                let reply = send(addr, "POST", &format!("/t/{app}/fn-{i}"), &[], b"").await;
                assert_eq!(reply.status, StatusCode::OK);
                got.push((i, reply.header("fn-runner").to_string()));
            }
            got
        });
    }
    while let Some(done) = tasks.join_next().await {
        for (i, runner) in done.expect("task") {
            out[i] = runner;
        }
    }
    out
}

/// The placements of `app` on both replicas, which must agree. A function whose two
/// answers differ is asked again a few times: a replica can place one call differently for
/// reasons that are its own and transient (a placer call over its wall-clock budget gets
/// the fallback order; a runner briefly unhealthy after a timed-out status poll).
async fn agreed_placements(a: &Replica, b: &Replica, app: &str) -> Vec<String> {
    let (mut on_a, on_b) = (placements(a, app).await, placements(b, app).await);
    for i in 0..FUNCTIONS {
        let mut tries = 0;
        while on_a[i] != on_b[i] {
            tries += 1;
            assert!(tries <= 5, "the replicas disagree on {app}/fn-{i}: {} vs {}", on_a[i], on_b[i]);
            tokio::time::sleep(Duration::from_millis(200)).await;
            let path = format!("/t/{app}/fn-{i}");
            let (x, y) = (send(a.addr, "POST", &path, &[], b"").await, send(b.addr, "POST", &path, &[], b"").await);
            eprintln!(
                "{app}/fn-{i}: replicas answered {} and {}; asked again: {} and {}",
                on_a[i],
                on_b[i],
                x.header("fn-runner"),
                y.header("fn-runner")
            );
            if x.header("fn-runner") == y.header("fn-runner") {
                on_a[i] = x.header("fn-runner").to_string();
                break;
            }
        }
    }
    on_a
}

async fn runner_count(r: &Replica) -> usize {
    send(r.admin, "GET", "/admin/runners", &[], b"").await.json().as_array().map_or(0, Vec::len)
}

/// Functions whose runner changed between `before` and `after`.
fn moved(before: &[String], after: &[String]) -> Vec<usize> {
    (0..before.len()).filter(|&i| before[i] != after[i]).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_place_alike_and_a_removed_runner_moves_only_its_functions() {
    let mut runners = Vec::new();
    for i in 0..5 {
        runners.push(runner(64, &format!("r{i}")).await);
    }
    let mut addresses: Vec<String> = runners.iter().map(|r| r.addr.to_string()).collect();
    let name_of: HashMap<String, String> =
        runners.iter().enumerate().map(|(i, r)| (r.addr.to_string(), format!("r{i}"))).collect();

    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let (mounts_a, mounts_b): (PathBuf, PathBuf) = (dir_a.join("runners.d"), dir_b.join("runners.d"));
    for d in [&dir_a, &dir_b, &mounts_a, &mounts_b] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    for d in [&dir_a, &dir_b] {
        std::fs::create_dir_all(d.join("placers")).expect("mkdir");
        let ch = placerd::placer::builtin("consistent-hash").expect("embedded");
        std::fs::write(d.join("placers/ch-rendezvous.wasm"), ch).expect("placer");
    }
    write_renamed(&mounts_a.join("runners"), &runner_lines(&addresses));
    write_configmap(&mounts_b, 1, &runner_lines(&addresses));
    let a = replica(&dir_a, &config(&mounts_a.join("runners"), &dir_a.join("placers")));
    let b = replica(&dir_b, &config(&mounts_b.join("runners"), &dir_b.join("placers")));
    let labels = send(a.admin, "GET", "/admin/runners", &[], b"").await.json();
    assert_eq!(labels[1]["labels"]["zone"], "b", "labels from the file reach the pool: {labels}");

    // Same runners, same placement, on both replicas and for both hash modes.
    let jump = agreed_placements(&a, &b, "jump").await;
    let rv = agreed_placements(&a, &b, "rv").await;
    for runs in [&jump, &rv] {
        for name in name_of.values() {
            assert!(runs.iter().filter(|r| *r == name).count() > FUNCTIONS / 10, "{name} is barely used");
        }
    }

    // Remove a runner from the middle of both files.
    let gone = addresses.remove(2);
    write_renamed(&mounts_a.join("runners"), &runner_lines(&addresses));
    write_configmap(&mounts_b, 2, &runner_lines(&addresses));
    for r in [&a, &b] {
        assert!(eventually(Duration::from_secs(10), async || runner_count(r).await == 4).await, "no update");
    }
    let rv_after = agreed_placements(&a, &b, "rv").await;
    let moved_rv = moved(&rv, &rv_after);
    assert!(moved_rv.iter().all(|&i| rv[i] == name_of[&gone]), "rendezvous moved functions off runners that stayed");
    assert_eq!(moved_rv.len(), rv.iter().filter(|r| **r == name_of[&gone]).count());
    // Jump hash numbers runners by index: removing one from the middle renumbers the rest
    // (the reason for `hash = "rendezvous"` with DNS; docs/deploy.md).
    let jump_after = agreed_placements(&a, &b, "jump").await;
    let moved_jump = moved(&jump, &jump_after).len();
    eprintln!(
        "removing runner 3 of 5: rendezvous moved {} functions (all of its own), jump moved {moved_jump}",
        moved_rv.len()
    );
    assert!(moved_jump > moved_rv.len());

    // Remove the last runner: with either hash only its functions move.
    let last = addresses.pop().expect("runner");
    write_renamed(&mounts_a.join("runners"), &runner_lines(&addresses));
    write_configmap(&mounts_b, 3, &runner_lines(&addresses));
    for r in [&a, &b] {
        assert!(eventually(Duration::from_secs(10), async || runner_count(r).await == 3).await, "no update");
    }
    for (app, before) in [("jump", &jump_after), ("rv", &rv_after)] {
        let after = agreed_placements(&a, &b, app).await;
        let moved = moved(before, &after);
        assert!(!moved.is_empty());
        assert!(moved.iter().all(|&i| before[i] == name_of[&last]), "{app}: moved functions off runners that stayed");
        assert_eq!(moved.len(), before.iter().filter(|r| **r == name_of[&last]).count(), "{app}");
    }
}
