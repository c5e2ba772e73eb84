//! The placer contracts a component may implement, and how the host calls each.
//!
//! - `placerd:placer@0.4.0` (`wit/placer.wit`), the current contract: `set-runners`
//!   answers whether the host may reuse an order. A placer that answers `by-slot-hash` is asked once per
//!   key and runner set; later calls of the key get the order it gave, without entering
//!   the sandbox ([`Reused`]). The built-ins implement it.
//!   `place` gets the call's numbers only and reads the loads it wants through imports
//!   (`loads`, `load`), while it runs; its order may be a prefix with a continuation (the
//!   ring from an index), which the host expands. A hash placer crosses the boundary with
//!   a few numbers each way, whatever the size of the set.
//! - `placerd:placer@0.1.0` (`wit/v0.1/placer.wit`), the first published contract: one
//!   `runner-load` record per runner, lowered field by field. Components built for it
//!   exist outside this repository; they keep loading and placing unchanged, the host
//!   adapting the call.
//!
//! Two contracts, the first published and the current one, and no more: 0.2 and 0.3
//! lived for days and only this repository's scaffolds used them. A component built for
//! either is refused at load with what to do ([`Contract::of`]). The host has its own view of a
//! call ([`Call`], everything any contract may ask for) and of a runner's load
//! ([`RunnerLoad`]); a [`Guest`] converts them to what its component expects and keeps the
//! buffers it converts into, so a warm instance allocates nothing per call for them.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use wasmtime::Store;
use wasmtime::component::{Component, InstancePre};

use super::sandbox::HostState;

/// Bindings of `placerd:placer@0.4.0`.
pub(crate) mod v04 {
    #![allow(missing_docs, missing_debug_implementations, unreachable_pub)]
    wasmtime::component::bindgen!({ world: "placer", path: "../wit" });
}

/// Bindings of `placerd:placer@0.1.0`.
pub(crate) mod v01 {
    #![allow(missing_docs, missing_debug_implementations, unreachable_pub)]
    wasmtime::component::bindgen!({ world: "placer", path: "../wit/v0.1" });
}

pub use v04::placerd::placer::types::{CallKind, LoadColumn, Runner};
use v04::placerd::placer::types::{Continuation, Order, Reuse};

/// One call to place, as the host knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Unique call id (ULID).
    pub id: String,
    /// App id ("" for `/invoke/` calls).
    pub app_id: String,
    /// Fn id.
    pub fn_id: String,
    /// Sync or detached.
    pub kind: CallKind,
    /// Affinity key: the `Fn-Slot-Hash` header if given, else the fn id.
    pub slot_key: String,
    /// Host sequence number of the call (monotonic per host).
    pub seq: u64,
    /// Per-call random value.
    pub random: u64,
    /// Extra key/values from `Fn-Ext-*` request headers.
    pub extensions: Vec<(String, String)>,
}

/// SipHash-2-4 keys of Fn's consistent-hash placer: `k0 = 0`, `k1` = "LaryBoat".
const SLOT_HASH_KEYS: (u64, u64) = (0, 0x4c61_7279_426f_6174);

/// The `slot-hash` of contract 0.4: SipHash-2-4 of the affinity key with Fn's keys.
pub fn slot_hash(slot_key: &str) -> u64 {
    use std::hash::Hasher;
    let mut hasher = siphasher::sip::SipHasher24::new_with_keys(SLOT_HASH_KEYS.0, SLOT_HASH_KEYS.1);
    hasher.write(slot_key.as_bytes());
    hasher.finish()
}

/// Live view of one runner, as the host keeps it; each contract gets the fields it knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunnerLoad {
    /// Calls this host has placed on it and not finished.
    pub in_flight: u32,
    /// `active_request_count` from its last status; 0 if unknown.
    pub reported_active: u32,
    /// Busy refusals from it in the last second.
    pub recent_refusals: u32,
    /// False while status polling fails, it is ejected or it has left the pool.
    pub healthy: bool,
    /// Moving average of its response-head latency in µs (not in 0.1); 0 if unknown.
    pub latency_us: u32,
    /// Connect failures and failures after commit in the last ten seconds (not in 0.1).
    pub recent_errors: u32,
}

/// Which contract a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// `placerd:placer@0.1.0`.
    V0_1,
    /// `placerd:placer@0.4.0`.
    V0_4,
}

impl Contract {
    /// The contract's package version, e.g. `0.4.0`.
    pub fn version(self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1.0",
            Contract::V0_4 => "0.4.0",
        }
    }

    /// The contract `component` says it implements: the version of the `types` interface
    /// it imports, 0.1; else the current one, 0.4 (a component of neither then fails 0.4's
    /// type check, which names what differs).
    ///
    /// # Errors
    /// The component was built for a retired contract (0.2 or 0.3): what to rebuild it
    /// against.
    pub(crate) fn of(component: &Component) -> Result<Self, String> {
        let engine = component.engine();
        let mut contract = Contract::V0_4;
        for (name, _) in component.component_type().imports(engine) {
            if name.starts_with("placerd:placer/types@0.1.") {
                contract = Contract::V0_1;
            } else if let Some(version) = ["0.2", "0.3"]
                .into_iter()
                .find(|v| name.strip_prefix("placerd:placer/types@").is_some_and(|rest| rest.starts_with(v)))
            {
                return Err(format!(
                    "it is built for placerd:placer@{version}.0, a contract placerd no longer loads: rebuild it \
                     against wit/placer.wit (placerd:placer@0.4.0; `placerd new` scaffolds a project for it)"
                ));
            }
        }
        Ok(contract)
    }
}

/// A component pre-linked for its contract (cheap to clone: shared handles).
#[derive(Clone)]
pub(crate) enum Pre {
    /// `text`: the component imports `current-call`, so each `place` keeps the call's text
    /// for it; other components pay nothing for the text.
    V04 {
        pre: v04::PlacerPre<HostState>,
        text: bool,
    },
    V01(v01::PlacerPre<HostState>),
}

impl Pre {
    /// Type-checks `instance_pre` against `contract`'s world.
    ///
    /// # Errors
    /// The exports do not have the contract's types.
    pub(crate) fn new(instance_pre: InstancePre<HostState>, contract: Contract) -> wasmtime::Result<Self> {
        let component = instance_pre.component();
        let text = component.component_type().imports(component.engine()).any(|(name, _)| name == "current-call");
        Ok(match contract {
            Contract::V0_4 => Pre::V04 { pre: v04::PlacerPre::new(instance_pre)?, text },
            Contract::V0_1 => Pre::V01(v01::PlacerPre::new(instance_pre)?),
        })
    }

    /// A new instance in `store`.
    pub(crate) fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Guest> {
        Ok(match self {
            Pre::V04 { pre, text } => Guest::V04 { placer: pre.instantiate(store)?, text: *text, reused: None },
            Pre::V01(pre) => Guest::V01 { placer: pre.instantiate(store)?, loads: Vec::new() },
        })
    }
}

/// What a guest's `place` answered, as indices.
#[derive(Debug)]
pub(crate) struct Placed {
    /// The order, a continuation expanded.
    pub(crate) order: Vec<u32>,
    /// The order is known valid (in range, no repeats), so the host need not clean it.
    pub(crate) clean: bool,
    /// The order is one the guest gave an earlier call ([`Guest::reused`]): no guest call.
    pub(crate) reused: bool,
}

/// One instance's exports, with the buffers its calls are converted into.
pub(crate) enum Guest {
    /// `reused`: the orders kept for reuse, while the runner set's `set-runners` answered
    /// `by-slot-hash`.
    V04 {
        placer: v04::Placer,
        text: bool,
        reused: Option<Reused>,
    },
    V01 {
        placer: v01::Placer,
        loads: Vec<v01::placerd::placer::types::RunnerLoad>,
    },
}

impl Guest {
    /// `configure`.
    pub(crate) fn configure(
        &self,
        store: &mut Store<HostState>,
        config: &[(String, String)],
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Guest::V04 { placer, .. } => placer.call_configure(store, config),
            Guest::V01 { placer, .. } => placer.call_configure(store, config),
        }
    }

    /// `set-runners`. Orders kept for reuse are of the previous set: they go.
    pub(crate) fn set_runners(
        &mut self,
        store: &mut Store<HostState>,
        generation: u64,
        runners: &[Runner],
    ) -> wasmtime::Result<()> {
        match self {
            Guest::V04 { placer, reused, .. } => {
                *reused = None;
                let reuse = placer.call_set_runners(store, generation, runners)?;
                *reused = (reuse == Reuse::BySlotHash).then(Reused::default);
                Ok(())
            }
            Guest::V01 { placer, .. } => {
                let runners: Vec<v01::placerd::placer::types::Runner> = runners
                    .iter()
                    .map(|r| v01::placerd::placer::types::Runner {
                        address: r.address.clone(),
                        labels: r.labels.clone(),
                    })
                    .collect();
                placer.call_set_runners(store, generation, &runners)
            }
        }
    }

    /// Whether this instance's orders are reused for the set it was told last.
    pub(crate) fn reuses_orders(&self) -> bool {
        matches!(self, Guest::V04 { reused: Some(_), .. })
    }

    /// The order this guest gave an earlier call of `slot_hash` (the call's
    /// [`slot_hash`]), for the set it was told last, expanded for `loads`: a 0.4 guest that
    /// allowed reuse, and a key it has answered.
    pub(crate) fn reused(&self, slot_hash: u64, loads: &[RunnerLoad]) -> Option<Placed> {
        let Guest::V04 { reused: Some(reused), .. } = self else {
            return None;
        };
        let order = reused.get(slot_hash)?;
        Some(Placed { reused: true, ..expanded(order.clone(), loads) })
    }

    /// `place`, with `loads` given in this contract's form, and its order as a list of
    /// indices (a continuation expanded). `slot_hash` is the call's [`slot_hash`], taken
    /// once per call by the caller. A 0.4 guest that allows reuse has the order kept for
    /// later calls of the key ([`Guest::reused`]).
    pub(crate) fn place(
        &mut self,
        store: &mut Store<HostState>,
        call: &Call,
        slot_hash: u64,
        loads: &[RunnerLoad],
    ) -> wasmtime::Result<Placed> {
        match self {
            Guest::V04 { placer, text, reused } => {
                let order = place_numbers(store, call, slot_hash, loads, *text, |store, numbers| {
                    placer.call_place(store, numbers)
                })?;
                if let Some(reused) = reused {
                    reused.keep(slot_hash, &order);
                }
                Ok(expanded(order, loads))
            }
            Guest::V01 { placer, loads: rows } => {
                rows.clear();
                rows.extend(loads.iter().map(|l| v01::placerd::placer::types::RunnerLoad {
                    in_flight: l.in_flight,
                    reported_active: l.reported_active,
                    recent_refusals: l.recent_refusals,
                    healthy: l.healthy,
                }));
                Ok(Placed { order: placer.call_place(store, &call_v01(call), rows)?, clean: false, reused: false })
            }
        }
    }
}

/// Runs `place` of a 0.4 guest: the call's numbers in, its text and loads readable
/// through the imports while it runs.
fn place_numbers(
    store: &mut Store<HostState>,
    call: &Call,
    slot_hash: u64,
    loads: &[RunnerLoad],
    text: bool,
    place: impl FnOnce(&mut Store<HostState>, v04::placerd::placer::types::Call) -> wasmtime::Result<Order>,
) -> wasmtime::Result<Order> {
    if text {
        store.data_mut().details.copy_from(call);
    }
    let numbers = v04::placerd::placer::types::Call { seq: call.seq, random: call.random, kind: call.kind, slot_hash };
    let order = {
        let viewing = Viewing::new(store, loads);
        place(&mut *viewing.store, numbers)
    };
    if text {
        store.data_mut().details.clear();
    }
    order
}

/// A 0.4 order as indices for `loads`' set.
fn expanded(order: Order, loads: &[RunnerLoad]) -> Placed {
    // A bare continuation expands to a valid order: no cleaning to do.
    let clean = order.runners.is_empty();
    Placed { order: expand(order, loads), clean, reused: false }
}

/// How many orders a guest's [`Reused`] keeps before it starts again from none.
pub(crate) const REUSED_ORDERS: usize = 4096;

/// The orders a 0.4 guest gave for the current runner set, by slot-hash, after it
/// answered `by-slot-hash` to `set-runners`. Bounded: when it holds [`REUSED_ORDERS`], it
/// is emptied before the next one is kept (keys that recur are asked again once).
#[derive(Default)]
pub(crate) struct Reused {
    orders: HashMap<u64, Order, BuildHasherDefault<SlotHashHasher>>,
}

impl Reused {
    fn get(&self, slot_hash: u64) -> Option<&Order> {
        self.orders.get(&slot_hash)
    }

    fn keep(&mut self, slot_hash: u64, order: &Order) {
        if self.orders.len() >= REUSED_ORDERS {
            self.orders.clear();
        }
        self.orders.insert(slot_hash, order.clone());
    }
}

/// The hasher of [`Reused`]'s map: a slot-hash is already SipHash's output, so it is its
/// own hash.
#[derive(Default)]
pub(crate) struct SlotHashHasher(u64);

impl Hasher for SlotHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed; this is for completeness.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// The loads of the call a 0.4 guest is placing, which its `loads` and `load`
/// imports read; empty outside `place`. It points at the caller's loads instead of holding
/// a copy: copying them would cost the host what 0.4's imports save the guest (12 KiB at 512
/// runners).
#[derive(Debug)]
pub(crate) struct LoadView {
    loads: *const RunnerLoad,
    len: usize,
}

// SAFETY: a `LoadView` is a shared borrow of `[RunnerLoad]` (plain integers, `Sync`) whose
// lifetime `Viewing` enforces; sending one to another thread is sending a `&[RunnerLoad]`.
#[allow(unsafe_code)]
unsafe impl Send for LoadView {}

impl Default for LoadView {
    fn default() -> Self {
        LoadView { loads: std::ptr::null(), len: 0 }
    }
}

impl LoadView {
    /// The loads of the call in progress (none outside `place`).
    fn loads(&self) -> &[RunnerLoad] {
        if self.loads.is_null() {
            return &[];
        }
        // SAFETY: `loads` and `len` were taken from a live `&[RunnerLoad]` by
        // `Viewing::new`, which borrows that slice for as long as it is set and resets
        // this view (to null) when it is dropped, before the borrow ends; this store is
        // borrowed mutably by the same `Viewing` meanwhile, so nothing else reads or keeps
        // the pointer. The returned slice does not outlive `&self`, which the imports hold
        // only during a guest call made through that `Viewing`.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts(self.loads, self.len)
        }
    }

    /// `loads`: each of `columns` for every runner, one column after another.
    pub(crate) fn columns(&self, columns: &[LoadColumn]) -> Vec<u32> {
        let loads = self.loads();
        let mut out = Vec::with_capacity(loads.len() * columns.len());
        for &column in columns {
            // One plain gather per column (a function pointer per runner would not inline).
            match column {
                LoadColumn::InFlight => out.extend(loads.iter().map(|l| l.in_flight)),
                LoadColumn::ReportedActive => out.extend(loads.iter().map(|l| l.reported_active)),
                LoadColumn::RecentRefusals => out.extend(loads.iter().map(|l| l.recent_refusals)),
                LoadColumn::Healthy => out.extend(loads.iter().map(|l| u32::from(l.healthy))),
                LoadColumn::LatencyUs => out.extend(loads.iter().map(|l| l.latency_us)),
                LoadColumn::RecentErrors => out.extend(loads.iter().map(|l| l.recent_errors)),
            }
        }
        out
    }

    /// `load`: `column` of runner `runner`; 0 outside the set.
    pub(crate) fn value(&self, runner: u32, column: LoadColumn) -> u32 {
        self.loads().get(runner as usize).map_or(0, |l| match column {
            LoadColumn::InFlight => l.in_flight,
            LoadColumn::ReportedActive => l.reported_active,
            LoadColumn::RecentRefusals => l.recent_refusals,
            LoadColumn::Healthy => u32::from(l.healthy),
            LoadColumn::LatencyUs => l.latency_us,
            LoadColumn::RecentErrors => l.recent_errors,
        })
    }
}

/// A store whose guest may read `loads` (0.4's imports) until this is dropped.
struct Viewing<'a> {
    store: &'a mut Store<HostState>,
}

impl<'a> Viewing<'a> {
    /// `loads` is borrowed for `'a`, as long as the view is set.
    fn new(store: &'a mut Store<HostState>, loads: &'a [RunnerLoad]) -> Self {
        store.data_mut().view = LoadView { loads: loads.as_ptr(), len: loads.len() };
        Viewing { store }
    }
}

impl Drop for Viewing<'_> {
    fn drop(&mut self) {
        self.store.data_mut().view = LoadView::default();
    }
}

/// A 0.4 order as indices: the listed runners, then the continuation's. Out-of-range and
/// repeated listed indices are left for the host's cleaning, as in other contracts; the
/// continuation skips the listed runners, so it adds no repeats of its own.
fn expand(order: Order, loads: &[RunnerLoad]) -> Vec<u32> {
    let Order { runners: mut out, then } = order;
    let n = loads.len();
    let Continuation::Ring(start) = then else {
        return out;
    };
    if n == 0 {
        return out;
    }
    let start = start as usize % n;
    let any_healthy = loads.iter().any(|l| l.healthy);
    let offered = |i: usize| !any_healthy || loads[i].healthy;
    if out.is_empty() {
        // The usual answer of a hash placer: the whole ring, in two plain ranges when every
        // runner is offered.
        out.reserve(n);
        if loads.iter().all(|l| l.healthy) || !any_healthy {
            out.extend(start as u32..n as u32);
            out.extend(0..start as u32);
        } else {
            out.extend((start..n).chain(0..start).filter(|&i| offered(i)).map(|i| i as u32));
        }
        return out;
    }
    let mut listed = vec![false; n];
    for &i in &out {
        if let Some(flag) = listed.get_mut(i as usize) {
            *flag = true;
        }
    }
    out.extend((start..n).chain(0..start).filter(|&i| !listed[i] && offered(i)).map(|i| i as u32));
    out
}

/// The text of the call a 0.4 guest is placing, kept in buffers that live as long as the
/// instance so that filling them allocates only when a call's text outgrows them.
#[derive(Debug, Default)]
pub(crate) struct CallText {
    id: String,
    app_id: String,
    fn_id: String,
    slot_key: String,
    extensions: Vec<(String, String)>,
}

impl CallText {
    fn copy_from(&mut self, call: &Call) {
        for (to, from) in [
            (&mut self.id, &call.id),
            (&mut self.app_id, &call.app_id),
            (&mut self.fn_id, &call.fn_id),
            (&mut self.slot_key, &call.slot_key),
        ] {
            to.clear();
            to.push_str(from);
        }
        self.extensions.clone_from(&call.extensions);
    }

    fn clear(&mut self) {
        self.id.clear();
        self.app_id.clear();
        self.fn_id.clear();
        self.slot_key.clear();
        self.extensions.clear();
    }

    /// What `current-call` answers.
    pub(crate) fn details(&self) -> v04::placerd::placer::types::CallDetails {
        v04::placerd::placer::types::CallDetails {
            id: self.id.clone(),
            app_id: self.app_id.clone(),
            fn_id: self.fn_id.clone(),
            slot_key: self.slot_key.clone(),
            extensions: self.extensions.clone(),
        }
    }
}

/// The same call in 0.1's types (the record is unchanged; only its Rust type differs).
fn call_v01(call: &Call) -> v01::placerd::placer::types::Call {
    use v01::placerd::placer::types::{Call as Call01, CallKind as Kind01};
    Call01 {
        id: call.id.clone(),
        app_id: call.app_id.clone(),
        fn_id: call.fn_id.clone(),
        kind: match call.kind {
            CallKind::Sync => Kind01::Sync,
            CallKind::Detached => Kind01::Detached,
        },
        slot_key: call.slot_key.clone(),
        seq: call.seq,
        random: call.random,
        extensions: call.extensions.clone(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn loads_of(healthy: &[bool]) -> Vec<RunnerLoad> {
        healthy.iter().map(|&healthy| RunnerLoad { healthy, ..RunnerLoad::default() }).collect()
    }

    proptest! {
        /// The ring a consistent-hash answers with expands to the full order the
        /// algorithm computes natively, for any health of the set.
        #[test]
        fn a_ring_expands_to_consistent_hashings_order(healthy in prop::collection::vec(any::<bool>(), 1..40), hash: u64) {
            use consistent_hash::order::{Config, Load, jump, order};
            let loads = loads_of(&healthy);
            let native: Vec<Load> = healthy.iter().map(|&healthy| Load { in_flight: 0, healthy }).collect();
            let mut expected = Vec::new();
            order(&Config::default(), hash, native.as_slice(), &[], &mut expected);
            let bucket = jump(hash, healthy.len() as u32, Config::default().variant);
            let ring = Order { runners: Vec::new(), then: Continuation::Ring(bucket) };
            prop_assert_eq!(expand(ring, &loads), expected);
        }

        /// And naive's: the ring from its start.
        #[test]
        fn a_ring_expands_to_naives_order(healthy in prop::collection::vec(any::<bool>(), 1..40), seq: u64) {
            let loads = loads_of(&healthy);
            let mut expected = Vec::new();
            naive::order::order(seq, &healthy, &mut expected);
            let (start, _) = naive::order::start(seq, &healthy).expect("a runner");
            let ring = Order { runners: Vec::new(), then: Continuation::Ring(start as u32) };
            prop_assert_eq!(expand(ring, &loads), expected);
        }
    }

    #[test]
    fn listed_runners_come_first_and_the_ring_skips_them() {
        let up = loads_of(&[true; 5]);
        let order = |runners: Vec<u32>, then| expand(Order { runners, then }, &up);
        assert_eq!(order(vec![3, 1], Continuation::Ring(1)), vec![3, 1, 2, 4, 0]);
        assert_eq!(order(vec![2], Continuation::Stop), vec![2]);
        // The start is taken modulo the set's size.
        assert_eq!(order(vec![], Continuation::Ring(7)), vec![2, 3, 4, 0, 1]);
        // Bad listed indices are kept for the host's cleaning (which counts them).
        assert_eq!(order(vec![9, 0], Continuation::Ring(4)), vec![9, 0, 4, 1, 2, 3]);
        // No runners: nothing to expand.
        assert_eq!(expand(Order { runners: vec![], then: Continuation::Ring(0) }, &[]), Vec::<u32>::new());
        // Down runners are skipped while one is up.
        let some = loads_of(&[false, true, false, true]);
        assert_eq!(expand(Order { runners: vec![2], then: Continuation::Ring(0) }, &some), vec![2, 1, 3]);
    }
}
