//! {{name}}: a placerd placer. `place` gets one call and the live load of every runner
//! and returns the order to try them in. Change the algorithm below; the rest is the
//! `placerd-placer` SDK.
//!
//! Build: `cargo build --release` (the target is set in `.cargo/config.toml`), then
//! `placerd check target/wasm32-wasip2/release/{{crate}}.wasm`.

use placerd_placer::{Call, Loads, Order, Placer, Runner};

/// Healthy runners first, then fewest calls in flight; ties are broken per function (by
/// its slot hash), so a function keeps to the same runner while loads are even.
#[derive(Debug, Default)]
pub struct {{type}} {
    runners: usize,
}

impl Placer for {{type}} {
    fn configure(config: &[(String, String)]) -> Result<Self, String> {
        match config.first() {
            None => Ok(Self::default()),
            Some((key, _)) => Err(format!("{{name}} takes no config, got key `{key}`")),
        }
    }

    fn set_runners(&mut self, _generation: u64, runners: &[Runner]) {
        self.runners = runners.len();
    }

    fn place(&mut self, call: &Call, loads: &Loads<'_>) -> Order {
        let n = loads.len() as u64;
        let mut order: Vec<u32> = (0..loads.len() as u32).collect();
        order.sort_by_key(|&i| {
            let i = i as usize;
            let tie = (i as u64 + n - call.slot_hash % n.max(1)) % n.max(1);
            (!loads.healthy(i), loads.in_flight(i), tie)
        });
        order.into()
    }
}

placerd_placer::export_placer!({{type}});

#[cfg(test)]
mod tests {
    use placerd_placer::CallKind;

    use super::*;

    #[test]
    fn the_least_loaded_healthy_runner_comes_first() {
        // 3 runners, 4 columns: in-flight, reported-active, recent-refusals, healthy.
        let columns = [5, 0, 1, /**/ 0, 0, 0, /**/ 0, 0, 0, /**/ 1, 1, 0];
        let loads = Loads::new(&columns, 3);
        let call = Call { seq: 0, random: 0, kind: CallKind::Sync, slot_hash: 7 };
        let mut placer = {{type}}::configure(&[]).expect("no config");
        assert_eq!(placer.place(&call, &loads), Order::list(vec![1, 0, 2]));
    }
}
