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
    use placerd::placer::types::LoadColumn;

    thread_local!(static LOADS: RefCell<Vec<Load>> = const { RefCell::new(Vec::new()) });

    /// Runners in the set last given to `set-runners`: the length of each load column.
    thread_local!(static RUNNERS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) });

    /// Column `c` of the load view (`n` values per column, column after column).
    fn column(loads: &[u32], c: LoadColumn) -> &[u32] {
        let n = RUNNERS.get();
        loads.get(c as usize * n..(c as usize + 1) * n).unwrap_or(&[])
    }

    struct LeastLoaded;

    impl Guest for LeastLoaded {
        fn configure(config: Vec<(String, String)>) -> Result<(), String> {
            match config.first() {
                None => Ok(()),
                Some((key, _)) => Err(format!("least-loaded takes no config, got key `{key}`")),
            }
        }

        fn set_runners(_generation: u64, runners: Vec<Runner>) {
            RUNNERS.set(runners.len());
        }

        fn place(call: Call, columns: Vec<u32>) -> Vec<u32> {
            let in_flight = column(&columns, LoadColumn::InFlight);
            let active = column(&columns, LoadColumn::ReportedActive);
            let healthy = column(&columns, LoadColumn::Healthy);
            LOADS.with_borrow_mut(|loads| {
                loads.clear();
                loads.extend(in_flight.iter().zip(active).zip(healthy).map(
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
