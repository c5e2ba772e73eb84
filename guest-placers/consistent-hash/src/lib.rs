//! The `consistent-hash` built-in placer: SipHash-2-4 + jump consistent hash with optional
//! bounded loads. The algorithm is [`order`]; on `wasm32` this crate also exports it as a
//! `placerd:placer` component (see `wit/placer.wit`).

pub mod order;

// wit-bindgen's generated export glue is `unsafe` FFI (the canonical ABI); the code
// written here is safe Rust.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod component {
    use crate::order::{Columns, Config, Loads};
    use std::cell::RefCell;

    wit_bindgen::generate!({ world: "placer", path: "../../wit" });
    use placerd::placer::types::LoadColumn;

    thread_local!(static CONFIG: RefCell<Config> = RefCell::new(Config::default()));

    /// Runners in the set last given to `set-runners`: the length of each load column.
    thread_local!(static RUNNERS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) });

    /// Column `c` of the load view (`n` values per column, column after column).
    fn column(loads: &[u32], c: LoadColumn) -> &[u32] {
        let n = RUNNERS.get();
        loads.get(c as usize * n..(c as usize + 1) * n).unwrap_or(&[])
    }
    /// SipHash of each runner's address, for `hash = "rendezvous"`; set on `set-runners`.
    thread_local!(static ADDRESSES: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) });

    struct ConsistentHash;

    impl Guest for ConsistentHash {
        fn configure(config: Vec<(String, String)>) -> Result<(), String> {
            let parsed = Config::parse(config.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
            CONFIG.set(parsed);
            Ok(())
        }

        fn set_runners(_generation: u64, runners: Vec<Runner>) {
            RUNNERS.set(runners.len());
            ADDRESSES.set(runners.iter().map(|r| crate::order::key_hash(r.address.as_bytes())).collect());
        }

        fn place(call: Call, columns: Vec<u32>) -> Vec<u32> {
            let config = CONFIG.with_borrow(|c| *c);
            let loads = Columns {
                in_flight: column(&columns, LoadColumn::InFlight),
                healthy: column(&columns, LoadColumn::Healthy),
            };
            let mut out = Vec::with_capacity(loads.len());
            ADDRESSES.with_borrow(|addresses| {
                crate::order::order(&config, call.slot_hash, &loads, addresses, &mut out);
            });
            out
        }
    }

    export!(ConsistentHash);
}
