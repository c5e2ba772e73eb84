//! The `naive` built-in placer: round robin over healthy runners by the host's call
//! sequence number. The algorithm is [`order`]; on `wasm32` this crate also exports it as a
//! `placerd:placer` component (see `wit/placer.wit`). The host links the same [`order`]
//! natively as its fallback when a placer faults.

pub mod order;

use placerd_placer::{Call, LoadColumn, Loads, Order, Placer};

/// The component's state: a buffer reused across calls.
#[derive(Debug, Default)]
pub struct Naive {
    healthy: Vec<bool>,
}

impl Placer for Naive {
    fn configure(config: &[(String, String)]) -> Result<Self, String> {
        match config.first() {
            None => Ok(Naive::default()),
            Some((key, _)) => Err(format!("naive takes no config, got key `{key}`")),
        }
    }

    fn place(&mut self, call: &Call, loads: &Loads<'_>) -> Order {
        self.healthy.clear();
        self.healthy.extend(loads.column(LoadColumn::Healthy).iter().map(|&h| h != 0));
        // The ring from the call's start is the order; the host expands it.
        match order::start(call.seq, &self.healthy) {
            Some((start, _)) => Order::ring(start as u32),
            None => Order::list(Vec::new()),
        }
    }
}

placerd_placer::export_placer!(Naive);
