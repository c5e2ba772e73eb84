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
    use placerd::placer::types::LoadColumn;

    thread_local!(static HEALTHY: RefCell<Vec<bool>> = const { RefCell::new(Vec::new()) });

    /// Runners in the set last given to `set-runners`: the length of each load column.
    thread_local!(static RUNNERS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) });

    /// Column `c` of the load view (`n` values per column, column after column).
    fn column(loads: &[u32], c: LoadColumn) -> &[u32] {
        let n = RUNNERS.get();
        loads.get(c as usize * n..(c as usize + 1) * n).unwrap_or(&[])
    }

    struct Naive;

    impl Guest for Naive {
        fn configure(config: Vec<(String, String)>) -> Result<(), String> {
            match config.first() {
                None => Ok(()),
                Some((key, _)) => Err(format!("naive takes no config, got key `{key}`")),
            }
        }

        fn set_runners(_generation: u64, runners: Vec<Runner>) {
            RUNNERS.set(runners.len());
        }

        fn place(call: Call, loads: Vec<u32>) -> Vec<u32> {
            HEALTHY.with_borrow_mut(|healthy| {
                healthy.clear();
                healthy.extend(column(&loads, LoadColumn::Healthy).iter().map(|&h| h != 0));
                let mut out = Vec::with_capacity(healthy.len());
                crate::order::order(call.seq, healthy, &mut out);
                out
            })
        }
    }

    export!(Naive);
}
