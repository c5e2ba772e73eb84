//! The `consistent-hash` built-in placer: SipHash-2-4 + jump consistent hash with optional
//! bounded loads. The algorithm is [`order`]; on `wasm32` this crate also exports it as a
//! `placerd:placer` component (see `wit/placer.wit`).

pub mod order;

use placerd_placer::{Call, LoadColumn, Loads, Placer, Runner};

use crate::order::{Columns, Config};

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

    fn place(&mut self, call: &Call, loads: &Loads<'_>) -> Vec<u32> {
        // The two columns it reads, in place: no per-runner copy.
        let columns =
            Columns { in_flight: loads.column(LoadColumn::InFlight), healthy: loads.column(LoadColumn::Healthy) };
        let mut out = Vec::with_capacity(loads.len());
        order::order(&self.config, call.slot_hash, &columns, &self.addresses, &mut out);
        out
    }
}

placerd_placer::export_placer!(ConsistentHash);
