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

    struct LeastLoaded;

    impl Guest for LeastLoaded {
        fn configure(_config: Vec<(String, String)>) -> Result<(), String> {
            Ok(())
        }

        fn set_runners(_generation: u64, _runners: Vec<Runner>) {}

        fn place(call: Call, loads: Loads) -> Vec<u32> {
            let loads: Vec<(u32, bool)> = (loads.in_flight.iter().zip(&loads.reported_active).zip(&loads.healthy))
                .map(|((&in_flight, &active), &healthy)| (in_flight.saturating_add(active), healthy != 0))
                .collect();
            crate::order::order(call.slot_key.as_bytes(), &loads)
        }
    }

    export!(LeastLoaded);
}
