//! The built-in placers' algorithms called natively, without the sandbox: the same crates
//! the Wasm components are built from. Used only by `serve --native-placement`, to measure
//! what running placement in Wasm costs per request (issue 7); never the default.

use super::{Call, Order, PlaceError, RunnerLoad, RunnerSet};

/// A built-in placer's algorithm with its parsed config.
#[derive(Debug, Clone, Copy)]
pub enum NativePlacer {
    /// Round robin by `seq` over healthy runners.
    Naive,
    /// SipHash-2-4 + jump hash, optional bounded loads.
    ConsistentHash(consistent_hash::order::Config),
    /// Power of two choices by load.
    LeastLoaded,
}

impl NativePlacer {
    /// The native twin of built-in `name` with its `config` table; `None` for a name that is
    /// not a built-in.
    ///
    /// # Errors
    /// The config is rejected, with the same message the component's `configure` gives.
    pub fn builtin(name: &str, config: &[(String, String)]) -> Result<Option<Self>, String> {
        Ok(Some(match name {
            "naive" => NativePlacer::Naive,
            "consistent-hash" => NativePlacer::ConsistentHash(consistent_hash::order::Config::parse(
                config.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )?),
            "least-loaded" => NativePlacer::LeastLoaded,
            _ => return Ok(None),
        }))
    }
}

impl Order for NativePlacer {
    fn order(&self, call: &Call, set: &RunnerSet, loads: &[RunnerLoad]) -> Result<Vec<u32>, PlaceError> {
        let mut out = Vec::with_capacity(loads.len());
        match self {
            NativePlacer::Naive => {
                let healthy: Vec<bool> = loads.iter().map(|l| l.healthy).collect();
                naive::order::order(call.seq, &healthy, &mut out);
            }
            NativePlacer::ConsistentHash(config) => {
                let loads: Vec<consistent_hash::order::Load> = loads
                    .iter()
                    .map(|l| consistent_hash::order::Load { in_flight: l.in_flight, healthy: l.healthy })
                    .collect();
                // The component hashes addresses once per runner set; here, per call (only
                // `hash = "rendezvous"` needs them).
                let addresses: Vec<u64> = match config.hash {
                    consistent_hash::order::Hash::Jump => Vec::new(),
                    consistent_hash::order::Hash::Rendezvous => {
                        set.runners.iter().map(|r| consistent_hash::order::key_hash(r.address.as_bytes())).collect()
                    }
                };
                let hash = super::contract::slot_hash(&call.slot_key);
                consistent_hash::order::order(config, hash, loads.as_slice(), &addresses, &mut out);
            }
            NativePlacer::LeastLoaded => {
                let loads: Vec<least_loaded::order::Load> = loads
                    .iter()
                    .map(|l| least_loaded::order::Load {
                        in_flight: l.in_flight,
                        reported_active: l.reported_active,
                        healthy: l.healthy,
                    })
                    .collect();
                least_loaded::order::order(call.random, &loads, &mut out);
            }
        }
        Ok(out)
    }
}
