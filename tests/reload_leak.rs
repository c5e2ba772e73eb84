//! 1,000 reloads do not leak (issue 4): every reload is a module never seen before (a
//! unique custom section), so each one is compiled, validated, published and the previous
//! version dropped. RSS after the 1,000th stays within +10% of RSS after the 10th. Its own
//! test binary, so no other test moves the figures.

use std::path::Path;
use std::sync::Arc;

use placerd::placer::{PlacerRuntime, PlacerSource, SandboxLimits, builtin};
use placerd::reload::Registry;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// `bytes` with a custom section that makes its hash unique for `i`.
fn unique(bytes: &[u8], i: u32) -> Vec<u8> {
    let name = b"placerd-leak-test";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(&i.to_le_bytes());
    let mut out = bytes.to_vec();
    out.push(0);
    out.push(payload.len() as u8);
    out.extend_from_slice(&payload);
    out
}

#[test]
fn a_thousand_reloads_keep_rss_within_ten_percent() {
    let runtime = Arc::new(PlacerRuntime::new(SandboxLimits::default()).expect("engine"));
    let registry = Registry::new(runtime, Default::default()).expect("built-ins");
    let custom = std::fs::read(Path::new(env!("PLACERD_FIXTURES_DIR")).join("custom-placer.wasm")).expect("fixture");
    let sources = [builtin("naive").expect("embedded").to_vec(), custom];
    let mut after_ten = 0;
    for i in 0..1_000u32 {
        let bytes = unique(&sources[i as usize % 2], i);
        let version = registry.install("reloaded", PlacerSource::Admin, &bytes).expect("valid module");
        drop(version);
        if i == 9 {
            after_ten = rss_bytes();
        }
    }
    let end = rss_bytes();
    eprintln!(
        "RSS after 10 reloads {:.1} MiB, after 1,000 {:.1} MiB",
        after_ten as f64 / 1048576.0,
        end as f64 / 1048576.0
    );
    assert!(end as f64 <= after_ten as f64 * 1.10, "RSS grew from {after_ten} to {end} bytes");
}
