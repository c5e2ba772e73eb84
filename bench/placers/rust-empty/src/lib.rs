//! rust-empty: the floor of a Rust placer. `place` reads nothing and answers the ring
//! from runner 0, so what `placerd check --bench` measures is the crossing and the SDK.

use placerd_placer::{Call, Loads, Order, Placer};

/// No state.
#[derive(Debug)]
pub struct Empty;

impl Placer for Empty {
    fn configure(config: &[(String, String)]) -> Result<Self, String> {
        match config.first() {
            None => Ok(Empty),
            Some((key, _)) => Err(format!("empty takes no config, got key `{key}`")),
        }
    }

    // `reuse` stays `Never`: the order depends on nothing, but every call is to reach
    // `place`, whose cost is what this placer is for.

    fn place(&mut self, _call: &Call, _loads: &Loads<'_>) -> Order {
        Order::ring(0)
    }
}

placerd_placer::export_placer!(Empty);
