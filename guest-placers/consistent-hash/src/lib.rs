//! The `consistent-hash` built-in placer: SipHash-2-4 + jump consistent hash with optional
//! bounded loads. The algorithm is [`order`]; on `wasm32` this crate also exports it as a
//! `placerd:placer` component (see `wit/placer.wit`).

pub mod order;

use placerd_placer::{Call, LoadColumn, Loads, Order, Placer, Reuse, Runner};

use crate::order::{Columns, Config, Hash};

/// The component's state: its config and the hashes of the runners' addresses.
#[derive(Debug)]
pub struct ConsistentHash {
    config: Config,
    /// `key_hash` of each runner's address (rendezvous hashing), by index.
    addresses: Vec<u64>,
}

impl Placer for ConsistentHash {
    fn configure(config: &[(String, String)]) -> Result<Self, String> {
        let config = Config::parse(config.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
        Ok(ConsistentHash { config, addresses: Vec::new() })
    }

    fn set_runners(&mut self, _generation: u64, runners: &[Runner]) {
        self.addresses = runners.iter().map(|r| order::key_hash(r.address.as_bytes())).collect();
    }

    fn reuse(&self) -> Reuse {
        // Plain jump hashing answers with the ring from the key's bucket: the key and the
        // set's size decide it, and the host expands the ring against each call's health.
        // Rendezvous hashing and bounded loads read the loads.
        if let (Hash::Jump, None) = (self.config.hash, self.config.max_load_factor) {
            Reuse::BySlotHash
        } else {
            Reuse::Never
        }
    }

    fn place(&mut self, call: &Call, loads: &Loads<'_>) -> Order {
        let n = loads.len();
        if let (Hash::Jump, None, true) = (self.config.hash, self.config.max_load_factor, n > 0) {
            // Plain jump hashing is the ring from the key's bucket, which the host expands:
            // no load is read and one number goes back, whatever the size of the set.
            return Order::ring(order::jump(call.slot_hash, n as u32, self.config.variant));
        }
        loads.read(&[LoadColumn::InFlight, LoadColumn::Healthy]);
        let columns =
            Columns { in_flight: loads.column(LoadColumn::InFlight), healthy: loads.column(LoadColumn::Healthy) };
        let mut out = Vec::with_capacity(n);
        order::order(&self.config, call.slot_hash, &columns, &self.addresses, &mut out);
        out.into()
    }
}

placerd_placer::export_placer!(ConsistentHash);
