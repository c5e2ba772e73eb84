//! A guest's stderr reaches placerd's log, even when the guest runs on a Tokio task (issue
//! 2). Its own test binary with a global subscriber: tracing caches per-callsite interest
//! process-wide, so a thread-scoped subscriber in a binary whose other tests hit the same
//! callsites in parallel can miss events.

use std::path::Path;
use std::sync::{Arc, Mutex};

use placerd::placer::{
    Call, CallKind, FaultKind, PlacedBy, PlacerRuntime, PlacerSource, RunnerLoad, RunnerSet, SandboxLimits,
};

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn call(seq: u64, key: &str) -> Call {
    Call {
        id: format!("call-{seq}"),
        app_id: "app".into(),
        fn_id: key.into(),
        kind: CallKind::Sync,
        slot_key: key.into(),
        seq,
        random: seq,
        extensions: Vec::new(),
    }
}

#[tokio::test]
async fn guest_stderr_reaches_the_log_even_from_a_tokio_task() {
    // wasmtime-wasi's sync WASI would enter a Tokio runtime to block on the write and
    // panic here; placerd replaces the blocking calls (see sandbox::replace_blocking_wasi).
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
    let limits = SandboxLimits { budget: std::time::Duration::from_millis(500), ..SandboxLimits::default() };
    let rt = PlacerRuntime::new(limits).expect("engine");
    let bytes = std::fs::read(Path::new(env!("PLACERD_FIXTURES_DIR")).join("flaky.wasm")).expect("fixture");
    let version = rt.load("flaky", PlacerSource::Builtin, &bytes, Vec::new()).expect("load");
    let set = RunnerSet::from_addresses(1, ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
    let idle =
        vec![
            RunnerLoad { in_flight: 0, reported_active: 0, recent_refusals: 0, healthy: true, ..RunnerLoad::default() };
            3
        ];
    let placed = version.place(&call(1, "trap-key"), &set, &idle).expect("fallback");
    assert!(matches!(placed.by, PlacedBy::Fallback(FaultKind::Trap(_))), "{placed:?}");
    let log = String::from_utf8_lossy(&captured.0.lock().map(|b| b.clone()).unwrap_or_default()).to_string();
    assert!(log.contains("flaky fixture: trapping on trap-key"), "guest panic message not logged: {log}");
    assert!(log.contains("stderr"), "{log}");
    // The same placer places other calls normally.
    let placed = version.place(&call(2, "fine"), &set, &idle).expect("placed");
    assert_eq!(placed.by, PlacedBy::Guest { cleaned: 0 });
}
