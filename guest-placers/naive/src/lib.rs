//! The `naive` built-in placer: round robin over healthy runners by the host's call
//! sequence number. The algorithm is [`order`]; on `wasm32` this crate also exports it as a
//! `placerd:placer` component (see `wit/placer.wit`). The host links the same [`order`]
//! natively as its fallback when a placer faults.

pub mod order;

// wit-bindgen's generated export glue is `unsafe` FFI (the canonical ABI); the code
// written here is safe Rust.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod component {
    use std::cell::RefCell;

    wit_bindgen::generate!({ world: "placer", path: "../../wit" });

    thread_local!(static HEALTHY: RefCell<Vec<bool>> = const { RefCell::new(Vec::new()) });

    struct Naive;

    impl Guest for Naive {
        fn configure(config: Vec<(String, String)>) -> Result<(), String> {
            match config.first() {
                None => Ok(()),
                Some((key, _)) => Err(format!("naive takes no config, got key `{key}`")),
            }
        }

        fn set_runners(_generation: u64, _runners: Vec<Runner>) {}

        fn place(call: Call, loads: Loads) -> Vec<u32> {
            HEALTHY.with_borrow_mut(|healthy| {
                healthy.clear();
                healthy.extend(loads.healthy.iter().map(|&h| h != 0));
                let mut out = Vec::with_capacity(healthy.len());
                crate::order::order(call.seq, healthy, &mut out);
                out
            })
        }
    }

    export!(Naive);
}
