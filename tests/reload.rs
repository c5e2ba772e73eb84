//! Hot reload end to end: files dropped into a running placerd's folder (write-in-place,
//! atomic rename, delete, a Kubernetes ConfigMap `..data` swap), the admin API, routes and
//! the user-written example placer.

mod common;

use std::time::Duration;

use common::{Placerd, atomic_write, eventually, fixture, placer_info, runner, send, sha256_hex, start, start_with};
use hyper::StatusCode;
use placerd::placer::builtin;
use placerd::runner::reference::RunnerHandle;

const WAIT: Duration = Duration::from_secs(10);

async fn three_runners() -> Vec<RunnerHandle> {
    vec![runner(8, "r0").await, runner(8, "r1").await, runner(8, "r2").await]
}

fn addresses(runners: &[RunnerHandle]) -> Vec<String> {
    runners.iter().map(|r| r.addr.to_string()).collect()
}

async fn wait_for_sha(p: &Placerd, name: &str, sha: &str) -> bool {
    eventually(WAIT, async || placer_info(p, name).await.is_some_and(|i| i["sha256"] == sha)).await
}

#[tokio::test]
async fn a_dropped_custom_placer_is_loaded_routed_to_and_places_as_its_algorithm_says() {
    let runners = three_runners().await;
    let p = start(addresses(&runners), "consistent-hash", |_| {}).await;
    let custom = fixture("custom-placer");
    atomic_write(&p.placers_dir, "least.wasm", &custom);
    assert!(wait_for_sha(&p, "least", &sha256_hex(&custom)).await, "least.wasm never loaded");
    let info = placer_info(&p, "least").await.expect("listed");
    assert!(info["source"].as_str().is_some_and(|s| s.starts_with("file:")), "{info}");

    let routes = br#"[{"app": "shop", "placer": "least"}]"#;
    assert_eq!(send(p.admin, "PUT", "/admin/routes", &[], routes).await.status, StatusCode::OK);
    for k in 0..20 {
        let r = send(p.addr, "POST", &format!("/t/shop/item-{k}"), &[], b"x").await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.header("fn-placer").starts_with("least/"), "{}", r.header("fn-placer"));
        // Idle runners: the example's own order function says where the call goes.
        let key_hash = placerd::placer::slot_hash(&format!("shop/item-{k}"));
        let expected = custom_placer::order::order(key_hash, &[(0, true); 3])[0];
        assert_eq!(r.header("fn-runner"), format!("r{expected}"));
    }
    // Other apps still use the default.
    let r = send(p.addr, "POST", "/t/other/x", &[], b"x").await;
    assert!(r.header("fn-placer").starts_with("consistent-hash/"));
}

#[tokio::test]
async fn a_half_written_file_keeps_the_running_version_until_it_is_complete() {
    let runners = three_runners().await;
    let p = start(addresses(&runners), "naive", |_| {}).await;
    let custom = fixture("custom-placer");
    let builtin_sha = sha256_hex(builtin("naive").expect("embedded"));
    // Write in place, in two halves, with a pause longer than the debounce between them.
    let path = p.placers_dir.join("naive.wasm");
    std::fs::write(&path, &custom[..custom.len() / 2]).expect("write half");
    assert!(
        eventually(WAIT, async || placer_info(&p, "naive").await.is_some_and(|i| !i["last_error"].is_null())).await,
        "the half file was never rejected"
    );
    let info = placer_info(&p, "naive").await.expect("listed");
    assert_eq!(info["sha256"], builtin_sha, "the built-in keeps running: {info}");
    assert_eq!(send(p.addr, "POST", "/invoke/f", &[], b"x").await.status, StatusCode::OK);
    std::fs::write(&path, &custom).expect("write whole");
    assert!(wait_for_sha(&p, "naive", &sha256_hex(&custom)).await, "the finished file never loaded");
    assert!(placer_info(&p, "naive").await.is_some_and(|i| i["last_error"].is_null()));

    // Deleting the file brings the built-in back.
    std::fs::remove_file(&path).expect("rm");
    assert!(wait_for_sha(&p, "naive", &builtin_sha).await, "the built-in did not come back");
}

#[tokio::test]
async fn deleting_a_placer_that_routes_name_sends_its_calls_to_the_default() {
    let runners = three_runners().await;
    let p = start(addresses(&runners), "consistent-hash", |_| {}).await;
    atomic_write(&p.placers_dir, "least.wasm", &fixture("custom-placer"));
    assert!(eventually(WAIT, async || placer_info(&p, "least").await.is_some()).await);
    let routes = br#"[{"fn": "shop/cart", "placer": "least"}]"#;
    assert_eq!(send(p.admin, "PUT", "/admin/routes", &[], routes).await.status, StatusCode::OK);
    assert!(send(p.addr, "POST", "/t/shop/cart", &[], b"x").await.header("fn-placer").starts_with("least/"));
    std::fs::remove_file(p.placers_dir.join("least.wasm")).expect("rm");
    assert!(eventually(WAIT, async || placer_info(&p, "least").await.is_none()).await, "least still listed");
    let r = send(p.addr, "POST", "/t/shop/cart", &[], b"x").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("fn-placer").starts_with("consistent-hash/"), "{}", r.header("fn-placer"));
}

#[cfg(unix)]
#[tokio::test]
async fn a_kubernetes_configmap_update_swaps_the_placer() {
    use std::os::unix::fs::symlink;
    let custom = fixture("custom-placer");
    let naive = builtin("naive").expect("embedded").to_vec();
    let runners = three_runners().await;
    // The kubelet's layout: NAME.wasm -> ..data/NAME.wasm, ..data -> ..<timestamp>/.
    let p = start_with(
        addresses(&runners),
        "consistent-hash",
        |dir| {
            std::fs::create_dir(dir.join("..2026_11_28_01")).expect("mkdir");
            std::fs::write(dir.join("..2026_11_28_01/zone.wasm"), &custom).expect("write");
            symlink("..2026_11_28_01", dir.join("..data")).expect("symlink");
            symlink("..data/zone.wasm", dir.join("zone.wasm")).expect("symlink");
        },
        |_| {},
    )
    .await;
    assert!(wait_for_sha(&p, "zone", &sha256_hex(&custom)).await, "initial ConfigMap content not loaded");
    // An update: a new timestamped folder, `..data_tmp` pointing at it, renamed over `..data`.
    let dir = &p.placers_dir;
    std::fs::create_dir(dir.join("..2026_11_28_02")).expect("mkdir");
    std::fs::write(dir.join("..2026_11_28_02/zone.wasm"), &naive).expect("write");
    symlink("..2026_11_28_02", dir.join("..data_tmp")).expect("symlink");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap ..data");
    std::fs::remove_dir_all(dir.join("..2026_11_28_01")).expect("old folder");
    assert!(wait_for_sha(&p, "zone", &sha256_hex(&naive)).await, "the ConfigMap update was not picked up");
    // Hidden entries are never placers.
    assert!(placer_info(&p, "..data").await.is_none());
}

#[tokio::test]
async fn admin_api_pushes_validates_lists_and_deletes_placers() {
    let runners = three_runners().await;
    let p = start(addresses(&runners), "consistent-hash", |_| {}).await;
    // Each refusal says what failed in plain words (`message`, without the engine's
    // dump, which is in `detail`) and leaves nothing behind.
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    for (what, bytes, plain) in [
        ("garbage", b"not a component".to_vec(), "not WebAssembly at all"),
        ("core module", core_module, "core WebAssembly module, not a component"),
        ("empty", Vec::new(), "the body is empty"),
        ("wrong world", fixture("wrong-world"), "missing export function"),
        ("endless loop", fixture("loops-forever"), "failed validation"),
        ("bad indices", fixture("bad-indices"), "out of range"),
    ] {
        let r = send(p.admin, "PUT", "/admin/placers/mine", &[], &bytes).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{what}");
        let message = r.json()["message"].as_str().unwrap_or_default().to_string();
        assert!(message.contains("`mine`") && message.contains(plain), "{what}: {message}");
        assert!(!message.contains('\n') && message.len() < 400, "{what}: one plain line: {message}");
        assert!(r.json()["detail"].is_string(), "{what}: {:?}", r.body);
        assert!(placer_info(&p, "mine").await.is_none(), "{what}: a failed install leaves nothing behind");
    }

    let custom = fixture("custom-placer");
    let r = send(p.admin, "PUT", "/admin/placers/mine", &[], &custom).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.json()["sha256"], sha256_hex(&custom));
    let info = placer_info(&p, "mine").await.expect("listed");
    assert_eq!((info["source"].as_str(), info["last_error"].is_null()), (Some("admin"), true));
    assert!(info["loaded_at"].as_u64().is_some_and(|t| t > 1_700_000_000));

    assert_eq!(send(p.admin, "DELETE", "/admin/placers/mine", &[], b"").await.status, StatusCode::OK);
    assert!(placer_info(&p, "mine").await.is_none());
    assert_eq!(send(p.admin, "DELETE", "/admin/placers/mine", &[], b"").await.status, StatusCode::NOT_FOUND);
    assert_eq!(send(p.admin, "DELETE", "/admin/placers/naive", &[], b"").await.status, StatusCode::NOT_FOUND);
    assert_eq!(send(p.admin, "PUT", "/admin/placers/..data", &[], &custom).await.status, StatusCode::BAD_REQUEST);

    let routes = send(p.admin, "PUT", "/admin/routes", &[], br#"[{"app": "a", "placer": "nope"}]"#).await;
    assert_eq!(routes.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(send(p.admin, "PUT", "/admin/routes", &[], b"{not json").await.status, StatusCode::BAD_REQUEST);
    assert_eq!(send(p.admin, "GET", "/admin/routes", &[], b"").await.body, "[]");

    let runners_json = send(p.admin, "GET", "/admin/runners", &[], b"").await.json();
    assert_eq!(runners_json.as_array().map(Vec::len), Some(3));
    assert_eq!(runners_json[0]["address"], runners[0].addr.to_string());
}

#[tokio::test]
async fn admin_requests_need_the_token_when_one_is_configured() {
    let token_dir = tempfile::tempdir().expect("tempdir");
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").expect("token");
    let runners = three_runners().await;
    let p = start(addresses(&runners), "naive", |c| c.admin_token_file = Some(token_file.clone())).await;
    let custom = fixture("custom-placer");
    let r = send(p.admin, "PUT", "/admin/placers/mine", &[], &custom).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(p.admin, "PUT", "/admin/placers/mine", &[("authorization", "Bearer wrong!")], &custom).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = send(p.admin, "PUT", "/admin/placers/mine", &[("authorization", "Bearer s3cret")], &custom).await;
    assert_eq!(r.status, StatusCode::OK);
    // Reads need it too (they show runner addresses, file paths and errors).
    assert_eq!(send(p.admin, "GET", "/admin/placers", &[], b"").await.status, StatusCode::UNAUTHORIZED);
    let r = send(p.admin, "GET", "/admin/placers", &[("authorization", "Bearer s3cret")], b"").await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn a_placer_built_for_contract_0_1_dropped_into_the_folder_serves_calls() {
    let runners = three_runners().await;
    let legacy = fixture("naive-v01");
    let p = start(addresses(&runners), "naive", |_| {}).await;
    atomic_write(&p.placers_dir, "legacy.wasm", &legacy);
    assert!(wait_for_sha(&p, "legacy", &sha256_hex(&legacy)).await, "legacy.wasm never loaded");
    let routes = br#"[{"app": "old", "placer": "legacy"}]"#;
    assert_eq!(send(p.admin, "PUT", "/admin/routes", &[], routes).await.status, StatusCode::OK);
    let mut seen = std::collections::HashSet::new();
    for k in 0..9 {
        let r = send(p.addr, "POST", &format!("/t/old/f{k}"), &[], b"x").await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.header("fn-placer").starts_with("legacy/"), "{}", r.header("fn-placer"));
        seen.insert(r.header("fn-runner").to_string());
    }
    assert_eq!(seen.len(), 3, "round robin over the three runners: {seen:?}");
}
