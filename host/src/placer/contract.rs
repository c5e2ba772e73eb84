//! The placer contracts a component may implement, and how the host calls each.
//!
//! - `placerd:placer@0.2.0` (`wit/placer.wit`): `place` gets numbers only: the call as
//!   integers (its affinity key hashed by the host) and the loads as one `list<u32>`,
//!   column after column, lowered into the guest with one copy; latency and recent errors
//!   in the load view. The call's text is there on request (`current-call`). The
//!   built-ins implement it.
//! - `placerd:placer@0.1.0` (`wit/v0.1/placer.wit`): one `runner-load` record per runner,
//!   lowered field by field. Components built for it keep loading and placing: the host
//!   recognises the contract when it loads a component and adapts the call.
//!
//! The host has its own view of a call ([`Call`], everything any contract may ask for) and
//! of a runner's load ([`RunnerLoad`]); a [`Guest`] converts them to what its component
//! expects and keeps the buffers it converts into, so a warm instance allocates nothing
//! per call for them.

use wasmtime::Store;
use wasmtime::component::{Component, InstancePre};

use super::sandbox::HostState;

/// Bindings of `placerd:placer@0.2.0`.
pub(crate) mod v02 {
    #![allow(missing_docs, missing_debug_implementations, unreachable_pub)]
    wasmtime::component::bindgen!({ world: "placer", path: "../wit" });
}

/// Bindings of `placerd:placer@0.1.0`.
pub(crate) mod v01 {
    #![allow(missing_docs, missing_debug_implementations, unreachable_pub)]
    wasmtime::component::bindgen!({ world: "placer", path: "../wit/v0.1" });
}

pub use v02::placerd::placer::types::{CallKind, Runner};

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

/// The `slot-hash` of contract 0.2: SipHash-2-4 of the affinity key with Fn's keys.
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
    /// Moving average of its response-head latency in µs (0.2 only); 0 if unknown.
    pub latency_us: u32,
    /// Connect failures and failures after commit in the last ten seconds (0.2 only).
    pub recent_errors: u32,
}

/// Which contract a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// `placerd:placer@0.1.0`.
    V0_1,
    /// `placerd:placer@0.2.0`.
    V0_2,
}

impl Contract {
    /// The contract's package version, e.g. `0.2.0`.
    pub fn version(self) -> &'static str {
        match self {
            Contract::V0_1 => "0.1.0",
            Contract::V0_2 => "0.2.0",
        }
    }

    /// The contract `component` says it implements: 0.1 when it imports the 0.1 `types`
    /// interface, else 0.2.
    pub(crate) fn of(component: &Component) -> Self {
        let engine = component.engine();
        let v01 =
            component.component_type().imports(engine).any(|(name, _)| name.starts_with("placerd:placer/types@0.1."));
        if v01 { Contract::V0_1 } else { Contract::V0_2 }
    }
}

/// A component pre-linked for its contract (cheap to clone: shared handles).
#[derive(Clone)]
pub(crate) enum Pre {
    /// `text`: the component imports `current-call`, so each `place` keeps the call's text
    /// for it; other components pay nothing for the text.
    V02 {
        pre: v02::PlacerPre<HostState>,
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
        Ok(match contract {
            Contract::V0_2 => {
                let component = instance_pre.component();
                let text =
                    component.component_type().imports(component.engine()).any(|(name, _)| name == "current-call");
                Pre::V02 { pre: v02::PlacerPre::new(instance_pre)?, text }
            }
            Contract::V0_1 => Pre::V01(v01::PlacerPre::new(instance_pre)?),
        })
    }

    /// A new instance in `store`.
    pub(crate) fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<Guest> {
        Ok(match self {
            Pre::V02 { pre, text } => Guest::V02 { placer: pre.instantiate(store)?, loads: Vec::new(), text: *text },
            Pre::V01(pre) => Guest::V01 { placer: pre.instantiate(store)?, loads: Vec::new() },
        })
    }
}

/// One instance's exports, with the buffers its calls are converted into.
pub(crate) enum Guest {
    V02 { placer: v02::Placer, loads: Vec<u32>, text: bool },
    V01 { placer: v01::Placer, loads: Vec<v01::placerd::placer::types::RunnerLoad> },
}

impl Guest {
    /// `configure`.
    pub(crate) fn configure(
        &self,
        store: &mut Store<HostState>,
        config: &[(String, String)],
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Guest::V02 { placer, .. } => placer.call_configure(store, config),
            Guest::V01 { placer, .. } => placer.call_configure(store, config),
        }
    }

    /// `set-runners`.
    pub(crate) fn set_runners(
        &self,
        store: &mut Store<HostState>,
        generation: u64,
        runners: &[Runner],
    ) -> wasmtime::Result<()> {
        match self {
            Guest::V02 { placer, .. } => placer.call_set_runners(store, generation, runners),
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

    /// `place`, with `loads` converted into this contract's form.
    pub(crate) fn place(
        &mut self,
        store: &mut Store<HostState>,
        call: &Call,
        loads: &[RunnerLoad],
    ) -> wasmtime::Result<Vec<u32>> {
        match self {
            Guest::V02 { placer, loads: columns, text } => {
                fill_columns(columns, loads);
                if *text {
                    store.data_mut().details.copy_from(call);
                }
                let numbers = v02::placerd::placer::types::Call {
                    seq: call.seq,
                    random: call.random,
                    kind: call.kind,
                    slot_hash: slot_hash(&call.slot_key),
                };
                let order = placer.call_place(&mut *store, numbers, columns);
                if *text {
                    store.data_mut().details.clear();
                }
                order
            }
            Guest::V01 { placer, loads: rows } => {
                rows.clear();
                rows.extend(loads.iter().map(|l| v01::placerd::placer::types::RunnerLoad {
                    in_flight: l.in_flight,
                    reported_active: l.reported_active,
                    recent_refusals: l.recent_refusals,
                    healthy: l.healthy,
                }));
                placer.call_place(store, &call_v01(call), rows)
            }
        }
    }
}

/// The 0.2 load view: each column of `loads` (in `load-column` order), one after another.
fn fill_columns(columns: &mut Vec<u32>, loads: &[RunnerLoad]) {
    columns.clear();
    columns.reserve(loads.len() * 6);
    // A pass per column: each is a plain gather the compiler unrolls, with no stores to
    // clear the buffer first.
    columns.extend(loads.iter().map(|l| l.in_flight));
    columns.extend(loads.iter().map(|l| l.reported_active));
    columns.extend(loads.iter().map(|l| l.recent_refusals));
    columns.extend(loads.iter().map(|l| u32::from(l.healthy)));
    columns.extend(loads.iter().map(|l| l.latency_us));
    columns.extend(loads.iter().map(|l| l.recent_errors));
}

/// The text of the call a 0.2 guest is placing, kept in buffers that live as long as the
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
    pub(crate) fn details(&self) -> v02::placerd::placer::types::CallDetails {
        v02::placerd::placer::types::CallDetails {
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
