//! The `least-loaded` built-in placer: power of two choices over live load (`in-flight` +
//! `reported-active`) using the call's `random`, then the rest by load. The algorithm is
//! [`order`]; on `wasm32` this crate also exports it as a `placerd:placer` component.

pub mod order;

use placerd_placer::{Call, LoadColumn, Loads, Order, Placer};

use crate::order::Load;

/// The component's state: a buffer reused across calls.
#[derive(Debug, Default)]
pub struct LeastLoaded {
    loads: Vec<Load>,
}

impl Placer for LeastLoaded {
    fn configure(config: &[(String, String)]) -> Result<Self, String> {
        match config.first() {
            None => Ok(LeastLoaded::default()),
            Some((key, _)) => Err(format!("least-loaded takes no config, got key `{key}`")),
        }
    }

    fn place(&mut self, call: &Call, loads: &Loads<'_>) -> Order {
        loads.read(&[LoadColumn::InFlight, LoadColumn::ReportedActive, LoadColumn::Healthy]);
        let in_flight = loads.column(LoadColumn::InFlight);
        let active = loads.column(LoadColumn::ReportedActive);
        let healthy = loads.column(LoadColumn::Healthy);
        self.loads.clear();
        self.loads.extend(in_flight.iter().zip(active).zip(healthy).map(
            |((&in_flight, &reported_active), &healthy)| Load { in_flight, reported_active, healthy: healthy != 0 },
        ));
        let mut out = Vec::with_capacity(self.loads.len());
        order::order(call.random, &self.loads, &mut out);
        out.into()
    }
}

placerd_placer::export_placer!(LeastLoaded);
