//! A placer written the way a user would: the algorithm in [`order`], and these few lines
//! that make it a placer with the `placerd-placer` SDK. Build it with
//! `cargo build --release --target wasm32-wasip2 -p custom-placer` and drop
//! `custom_placer.wasm` into placerd's `placers/` folder as `NAME.wasm`.

pub mod order;

use placerd_placer::{Call, Loads, Order, Placer};

/// Least loaded first (in flight from this host plus what the runner reports), ties broken
/// per function; unhealthy runners last.
#[derive(Debug)]
pub struct LeastLoaded;

impl Placer for LeastLoaded {
    fn configure(_config: &[(String, String)]) -> Result<Self, String> {
        Ok(LeastLoaded)
    }

    fn place(&mut self, call: &Call, loads: &Loads<'_>) -> Order {
        let loads: Vec<(u32, bool)> = (0..loads.len())
            .map(|i| (loads.in_flight(i).saturating_add(loads.reported_active(i)), loads.healthy(i)))
            .collect();
        order::order(call.slot_hash, &loads).into()
    }
}

placerd_placer::export_placer!(LeastLoaded);
