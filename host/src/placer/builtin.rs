//! The built-in placers, compiled from `guest-placers/*` to `wasm32-wasip2` by the host's
//! build script and embedded, so placerd runs with no files on disk.

/// `naive`: round robin by call sequence number over healthy runners.
const NAIVE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/naive.wasm"));
/// `consistent-hash`: SipHash-2-4 + jump consistent hash, optional bounded loads.
const CONSISTENT_HASH: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/consistent-hash.wasm"));

/// `least-loaded`: power of two choices over in-flight + reported load.
const LEAST_LOADED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/least-loaded.wasm"));

/// Every built-in placer: `(name, component bytes)`.
pub const BUILTINS: &[(&str, &[u8])] =
    &[("naive", NAIVE), ("consistent-hash", CONSISTENT_HASH), ("least-loaded", LEAST_LOADED)];

/// The component bytes of built-in `name`.
pub fn builtin(name: &str) -> Option<&'static [u8]> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
}
