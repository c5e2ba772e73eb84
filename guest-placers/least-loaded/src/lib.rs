//! The `least-loaded` built-in placer: power of two choices over live load (`in-flight` +
//! `reported-active`) using the call's `random`, then the rest by load. The algorithm is
//! [`order`]; on `wasm32` this crate also exports it as a `placerd:placer` component.

pub mod order;

// wit-bindgen's generated export glue is `unsafe` FFI (the canonical ABI); the code
// written here is safe Rust.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod component {
    use crate::order::Load;
    use std::cell::RefCell;

    wit_bindgen::generate!({ world: "placer", path: "../../wit" });

    thread_local!(static LOADS: RefCell<Vec<Load>> = const { RefCell::new(Vec::new()) });

    struct LeastLoaded;

    impl Guest for LeastLoaded {
        fn configure(config: Vec<(String, String)>) -> Result<(), String> {
            match config.first() {
                None => Ok(()),
                Some((key, _)) => Err(format!("least-loaded takes no config, got key `{key}`")),
            }
        }

        fn set_runners(_generation: u64, _runners: Vec<Runner>) {}

        fn place(call: Call, columns: Loads) -> Vec<u32> {
            LOADS.with_borrow_mut(|loads| {
                loads.clear();
                loads.extend(columns.in_flight.iter().zip(&columns.reported_active).zip(&columns.healthy).map(
                    |((&in_flight, &reported_active), &healthy)| Load {
                        in_flight,
                        reported_active,
                        healthy: healthy != 0,
                    },
                ));
                let mut out = Vec::with_capacity(loads.len());
                crate::order::order(call.random, loads, &mut out);
                out
            })
        }
    }

    export!(LeastLoaded);
}
