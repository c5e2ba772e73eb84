//! A placer written the way a user would: the algorithm in [`order`], this file the
//! wit-bindgen adapter. Build it with
//! `cargo build --release --target wasm32-wasip2 -p custom-placer` and drop
//! `custom_placer.wasm` into placerd's `placers/` folder as `NAME.wasm`.

pub mod order;

// wit-bindgen's generated export glue is `unsafe` FFI (the canonical ABI); the code
// written here is safe Rust.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod component {
    wit_bindgen::generate!({ world: "placer", path: "../../wit" });
    use placerd::placer::types::LoadColumn;

    /// Runners in the set last given to `set-runners`: the length of each load column.
    thread_local!(static RUNNERS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) });

    /// Column `c` of the load view (`n` values per column, column after column).
    fn column(loads: &[u32], c: LoadColumn) -> &[u32] {
        let n = RUNNERS.get();
        loads.get(c as usize * n..(c as usize + 1) * n).unwrap_or(&[])
    }

    struct LeastLoaded;

    impl Guest for LeastLoaded {
        fn configure(_config: Vec<(String, String)>) -> Result<(), String> {
            Ok(())
        }

        fn set_runners(_generation: u64, runners: Vec<Runner>) {
            RUNNERS.set(runners.len());
        }

        fn place(call: Call, loads: Vec<u32>) -> Vec<u32> {
            let in_flight = column(&loads, LoadColumn::InFlight);
            let active = column(&loads, LoadColumn::ReportedActive);
            let healthy = column(&loads, LoadColumn::Healthy);
            let loads: Vec<(u32, bool)> = (in_flight.iter().zip(active).zip(healthy))
                .map(|((&in_flight, &active), &healthy)| (in_flight.saturating_add(active), healthy != 0))
                .collect();
            crate::order::order(call.slot_hash, &loads)
        }
    }

    export!(LeastLoaded);
}
