//! The admin dashboard (`GET /` on the admin listener), rendered by headless Chromium:
//! runners, placers, routes and the calls-per-runner chart after some traffic, and the
//! token prompt when the admin API needs a token. Installs Debian's `chromium` when it is
//! missing (the tests run as root); an install that fails fails the tests.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::{Placerd, eventually, runner, send, start};
use hyper::StatusCode;

const CHROMIUM: &str = "/usr/bin/chromium";

/// The Chromium binary, installed with apt-get on first use (once per test binary: the
/// tests run in parallel).
fn chromium() -> &'static Path {
    static INSTALLED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = INSTALLED.get_or_init(|| {
        if Path::new(CHROMIUM).exists() {
            return Ok(CHROMIUM.into());
        }
        common::apt_install(&["chromium"])?;
        if Path::new(CHROMIUM).exists() {
            Ok(CHROMIUM.into())
        } else {
            Err(format!("apt-get installed chromium but there is no {CHROMIUM}"))
        }
    });
    match found {
        Ok(path) => path,
        Err(e) => panic!("the dashboard tests need Chromium ({CHROMIUM}) and could not install it: {e}"),
    }
}

/// Runs headless Chromium on `url` with `args` (after the common flags) and a fresh
/// profile in `dir`, letting the page's scripts run for a few seconds of virtual time.
/// Returns stdout.
async fn headless(dir: &Path, url: &str, args: &[String]) -> String {
    let chromium = tokio::task::spawn_blocking(|| chromium().to_path_buf()).await.expect("install task");
    let profile = tempfile::tempdir_in(dir).expect("profile dir");
    let mut command = tokio::process::Command::new(chromium);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .expect("chromium finished within 90 s")
        .expect("chromium ran");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The page as rendered, without its `<script>` (whose source names every class and
/// message the page can show).
async fn rendered(dir: &Path, p: &Placerd) -> String {
    let dom = headless(dir, &format!("http://127.0.0.1:{}/", p.admin.port()), &["--dump-dom".into()]).await;
    let mut out = String::new();
    let mut rest = dom.as_str();
    while let Some(start) = rest.find("<script") {
        out.push_str(&rest[..start]);
        rest = rest[start..].find("</script>").map_or("", |end| &rest[start + end + "</script>".len()..]);
    }
    out.push_str(rest);
    assert!(out.contains("<main"), "not the dashboard: {out}");
    out
}

/// The values of `attr="…"` in `html`.
fn attribute_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let key = format!("{attr}=\"");
    html.match_indices(&key).filter_map(|(i, _)| html[i + key.len()..].split('"').next()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_runners_placers_routes_and_calls_per_runner() {
    let (a, b) = (runner(8, "a").await, runner(8, "b").await);
    let addresses = [a.addr.to_string(), b.addr.to_string()];
    let p = start(addresses.to_vec(), "consistent-hash", |c| c.history_interval = Duration::from_millis(200)).await;
    let routes = br#"[{"app": "storefront", "placer": "least-loaded", "shadow": "naive"}]"#;
    assert_eq!(send(p.admin, "PUT", "/admin/routes", &[], routes).await.status, StatusCode::OK);

    // The page itself: static HTML under a strict policy, behind the Host check.
    let page = send(p.admin, "GET", "/", &[], b"").await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(page.header("cache-control"), "no-store");
    assert!(page.header("content-security-policy").starts_with("default-src 'none'"));
    let text = String::from_utf8_lossy(&page.body);
    assert!(!text.contains("src=\"http") && !text.contains("href=\"http"), "no external assets");
    let rebound = send(p.admin, "GET", "/", &[("host", "evil.example")], b"").await;
    assert_eq!(rebound.status, StatusCode::FORBIDDEN);

    // Traffic on both runners (consistent-hash spreads the keys; least-loaded serves
    // storefront), then wait until the history holds it.
    for i in 0..40 {
        let path = if i % 2 == 0 { format!("/t/storefront/f{i}") } else { format!("/t/blog/f{i}") };
        assert_eq!(send(p.addr, "POST", &path, &[], b"x").await.status, StatusCode::OK);
    }
    let sampled = eventually(Duration::from_secs(5), async || {
        let h = send(p.admin, "GET", "/admin/history", &[], b"").await.json();
        let calls: u64 = h["samples"]
            .as_array()
            .map(|s| {
                s.iter()
                    .flat_map(|s| s["runners"].as_object().into_iter().flatten())
                    .filter_map(|(_, n)| n.as_u64())
                    .sum()
            })
            .unwrap_or(0);
        calls == 40
    })
    .await;
    assert!(sampled, "the history counts the 40 calls");
    let runners = send(p.admin, "GET", "/admin/runners", &[], b"").await.json();
    let total: u64 = runners.as_array().expect("runners").iter().filter_map(|r| r["calls"].as_u64()).sum();
    assert_eq!(total, 40, "{runners}");
    assert!(runners[0]["ejected"] == false && runners[0]["latency_us"].as_u64().is_some(), "{runners}");
    let placers = send(p.admin, "GET", "/admin/placers", &[], b"").await.json();
    let ll = placers.as_array().and_then(|l| l.iter().find(|i| i["name"] == "least-loaded")).expect("least-loaded");
    assert_eq!(ll["calls"], 20, "{ll}");
    assert_eq!(ll["faults"], 0);
    assert_eq!(ll["quarantined"], false);
    assert_eq!(ll["contract"], "0.4.0");
    // Least-loaded reads the loads: its orders are never reused.
    assert_eq!(ll["reused_calls"], 0, "{ll}");
    assert!(ll["place_ns_avg"].as_u64().is_some_and(|ns| ns > 0), "{ll}");

    let dir = tempfile::tempdir().expect("tempdir");
    let dom = rendered(dir.path(), &p).await;
    for address in &addresses {
        assert!(dom.contains(address.as_str()), "runner {address} not shown: {dom}");
    }
    for placer in ["consistent-hash", "naive", "least-loaded"] {
        assert!(dom.contains(placer), "placer {placer} not shown: {dom}");
    }
    assert!(dom.contains("storefront"), "the route's app is not shown: {dom}");
    assert!(dom.contains("20 calls, agreement "), "the shadow's report: {dom}");
    assert!(
        dom.contains("default placer, consistent-hash (set through the admin API)"),
        "the default placer and where the routes come from: {dom}"
    );
    assert!(!dom.contains("id=\"error\""), "error banner: {dom}");
    assert!(dom.contains("updated "), "{dom}");
    // The chart: one line per runner with traffic, each named in the legend.
    let chart = &dom[dom.find("<svg").expect("an SVG chart")..];
    let chart = &chart[..chart.find("</svg>").expect("</svg>")];
    let lines: Vec<&str> =
        chart.split("<path").skip(1).flat_map(|p| attribute_values(p, "data-runner").into_iter().take(1)).collect();
    assert!(!lines.is_empty(), "no data lines: {chart}");
    let legend = &dom[dom.find("id=\"legend\"").expect("legend")..];
    for runner in &lines {
        assert!(addresses.iter().any(|a| a == runner), "line for an unknown runner {runner}");
        assert!(attribute_values(legend, "data-runner").contains(runner), "{runner} not in the legend");
    }

    let shot = dir.path().join("dashboard.png");
    headless(
        dir.path(),
        &format!("http://127.0.0.1:{}/", p.admin.port()),
        &[format!("--screenshot={}", shot.display()), "--window-size=1280,900".into()],
    )
    .await;
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.len() > 1000 && png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG ({} bytes)", png.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_admin_token_the_dashboard_asks_for_it() {
    let a = runner(1, "a").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").expect("token file");
    let p = start(vec![a.addr.to_string()], "naive", |c| c.admin_token_file = Some(token.clone())).await;
    // The page is static and open; its data is not.
    assert_eq!(send(p.admin, "GET", "/", &[], b"").await.status, StatusCode::OK);
    assert_eq!(send(p.admin, "GET", "/admin/history", &[], b"").await.status, StatusCode::UNAUTHORIZED);
    let authorized = send(p.admin, "GET", "/admin/history", &[("authorization", "Bearer s3cret")], b"").await;
    assert_eq!(authorized.status, StatusCode::OK);

    let dom = rendered(dir.path(), &p).await;
    assert!(dom.contains("id=\"login\"") && dom.contains("type=\"password\""), "no token prompt: {dom}");
    assert!(!dom.contains(&a.addr.to_string()), "runners shown without the token: {dom}");
    assert!(!dom.contains("id=\"error\""), "a 401 asks for the token, it is not an error: {dom}");
}
