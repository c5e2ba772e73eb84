//! Write a [placerd](https://github.com/) placer in Rust.
//!
//! A placer orders a pool's runners for each call. With this crate it is a type that
//! implements [`Placer`] and one [`export_placer!`] line; the WebAssembly component
//! bindings of the contract (`wit/placer.wit`, `placerd:placer@0.2.0`) stay inside.
//!
//! ```
//! use placerd_placer::{Call, Loads, Placer, Runner};
//!
//! /// Least calls in flight first; unhealthy runners last.
//! struct LeastBusy;
//!
//! impl Placer for LeastBusy {
//!     fn configure(_config: &[(String, String)]) -> Result<Self, String> {
//!         Ok(LeastBusy)
//!     }
//!
//!     fn place(&mut self, _call: &Call, loads: &Loads<'_>) -> Vec<u32> {
//!         let mut order: Vec<u32> = (0..loads.len() as u32).collect();
//!         order.sort_by_key(|&i| (!loads.healthy(i as usize), loads.in_flight(i as usize)));
//!         order
//!     }
//! }
//!
//! placerd_placer::export_placer!(LeastBusy);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (crate type `cdylib`) and
//! check it with `placerd check target/wasm32-wasip2/release/NAME.wasm`.
//!
//! What a placer may rely on: `configure` runs once per instance, before anything else;
//! `set_runners` runs whenever the runner set changes and before the first `place` that
//! sees a new set; `place` gets the loads of exactly the runners of the last set. An
//! instance places one call at a time. It has no clock and no randomness of its own
//! ([`Call::random`] is the call's), so the same call and loads give the same order.

/// Which kind of call is being placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// The client waits for the answer.
    Sync,
    /// Fire and forget: the runner acknowledges with 202.
    Detached,
}

/// One call, as a placer sees it: numbers only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// Host sequence number of the call (grows by one per call on this host).
    pub seq: u64,
    /// A random value of this call: use it where a placer wants randomness, and the same
    /// call places the same way in `placerd simulate`.
    pub random: u64,
    /// Sync or detached.
    pub kind: CallKind,
    /// SipHash-2-4 of the call's affinity key (its function, or `Fn-Slot-Hash`), with Fn's
    /// keys: calls of one function share it.
    pub slot_hash: u64,
}

/// One runner of the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runner {
    /// `host:port`.
    pub address: String,
    /// The operator's labels (zone, weight, version ...).
    pub labels: Vec<(String, String)>,
}

impl Runner {
    /// The value of label `key`, if it has one.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// The columns of the load view, in the contract's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadColumn {
    /// Calls this host placed on the runner and not finished.
    InFlight = 0,
    /// The runner's own count of active requests (0 if unknown).
    ReportedActive = 1,
    /// Busy refusals in the last second.
    RecentRefusals = 2,
    /// 1 while healthy (status polls pass, not ejected), else 0.
    Healthy = 3,
    /// Moving average of the runner's response-head latency, µs (0 until known).
    LatencyUs = 4,
    /// Connect failures and failures after commit in the last ten seconds.
    RecentErrors = 5,
}

/// The live load of every runner of the current set, read in place: runner `i` is index
/// `i` of the last [`Placer::set_runners`].
#[derive(Debug, Clone, Copy)]
pub struct Loads<'a> {
    columns: &'a [u32],
    n: usize,
}

impl<'a> Loads<'a> {
    /// The view of `columns` (the contract's layout: column after column) for `n` runners.
    pub fn new(columns: &'a [u32], n: usize) -> Self {
        Loads { columns, n }
    }

    /// Runners in the set.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// One column for every runner (empty if the host sent fewer columns).
    pub fn column(&self, c: LoadColumn) -> &'a [u32] {
        let c = c as usize;
        self.columns.get(c * self.n..(c + 1) * self.n).unwrap_or(&[])
    }

    fn get(&self, c: LoadColumn, i: usize) -> u32 {
        self.column(c).get(i).copied().unwrap_or(0)
    }

    /// Calls in flight on runner `i` from this host.
    pub fn in_flight(&self, i: usize) -> u32 {
        self.get(LoadColumn::InFlight, i)
    }

    /// Active requests runner `i` reports.
    pub fn reported_active(&self, i: usize) -> u32 {
        self.get(LoadColumn::ReportedActive, i)
    }

    /// Busy refusals from runner `i` in the last second.
    pub fn recent_refusals(&self, i: usize) -> u32 {
        self.get(LoadColumn::RecentRefusals, i)
    }

    /// Whether runner `i` is healthy.
    pub fn healthy(&self, i: usize) -> bool {
        self.get(LoadColumn::Healthy, i) != 0
    }

    /// Runner `i`'s latency average in µs (0: not known yet).
    pub fn latency_us(&self, i: usize) -> u32 {
        self.get(LoadColumn::LatencyUs, i)
    }

    /// Runner `i`'s errors in the last ten seconds.
    pub fn recent_errors(&self, i: usize) -> u32 {
        self.get(LoadColumn::RecentErrors, i)
    }
}

/// A placer: its state is built by `configure`, kept for the instance's life, told about
/// runner set changes, and asked for an order per call.
pub trait Placer: Sized + 'static {
    /// Builds the placer from its `[placers.NAME.config]` table (string values). An `Err`
    /// refuses the placer with that message (`placerd check` prints it).
    ///
    /// # Errors
    /// A key or value the placer cannot use.
    fn configure(config: &[(String, String)]) -> Result<Self, String>;

    /// The runner set changed (`generation` grows with every change). Precompute what
    /// `place` needs per runner here (hashes of addresses, weights from labels).
    fn set_runners(&mut self, generation: u64, runners: &[Runner]) {
        let _ = (generation, runners);
    }

    /// The order to try runners in for `call`: indices into the current set, most
    /// preferred first. Leaving a runner out means "do not try it now"; out-of-range and
    /// repeated indices are dropped by the host.
    fn place(&mut self, call: &Call, loads: &Loads<'_>) -> Vec<u32>;
}

/// Writes `message` to placerd's log at `level`: 0 error, 1 warn, 2 info, 3 debug, 4 and
/// above trace. The host escapes it and rate limits each placer's lines. Off `wasm32`
/// (native tests) it does nothing.
pub fn log(level: u8, message: &str) {
    #[cfg(target_arch = "wasm32")]
    bindings::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (level, message);
}

/// The generated bindings of `wit/placer.wit` ([`export_placer!`] uses them).
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
#[allow(unsafe_code, missing_docs, unreachable_pub, missing_debug_implementations)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "placer",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_bindings",
        default_bindings_module: "placerd_placer::bindings",
    });
}

/// Glue [`export_placer!`] expands to: the instance's placer and the runner count.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod glue {
    use super::bindings::placerd::placer::types as wit;
    use super::{Call, CallKind, Loads, Placer, Runner};

    /// `configure`.
    pub fn configure<P: Placer>(
        slot: &std::cell::RefCell<Option<P>>,
        config: Vec<(String, String)>,
    ) -> Result<(), String> {
        *slot.borrow_mut() = Some(P::configure(&config)?);
        Ok(())
    }

    /// `set-runners`.
    pub fn set_runners<P: Placer>(
        slot: &std::cell::RefCell<Option<P>>,
        n: &std::cell::Cell<usize>,
        generation: u64,
        runners: Vec<wit::Runner>,
    ) {
        n.set(runners.len());
        let runners: Vec<Runner> =
            runners.into_iter().map(|r| Runner { address: r.address, labels: r.labels }).collect();
        if let Some(placer) = slot.borrow_mut().as_mut() {
            placer.set_runners(generation, &runners);
        }
    }

    /// `place`.
    pub fn place<P: Placer>(
        slot: &std::cell::RefCell<Option<P>>,
        n: &std::cell::Cell<usize>,
        call: wit::Call,
        loads: Vec<u32>,
    ) -> Vec<u32> {
        let call = Call {
            seq: call.seq,
            random: call.random,
            kind: match call.kind {
                wit::CallKind::Sync => CallKind::Sync,
                wit::CallKind::Detached => CallKind::Detached,
            },
            slot_hash: call.slot_hash,
        };
        let loads = Loads::new(&loads, n.get());
        slot.borrow_mut().as_mut().map_or_else(Vec::new, |placer| placer.place(&call, &loads))
    }
}

/// Exports a [`Placer`] type as the component's `placerd:placer` world. Use it once, at
/// the crate root of a `cdylib`; it expands to nothing off `wasm32`, so the crate's
/// native tests build too.
#[macro_export]
macro_rules! export_placer {
    ($placer:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        const _: () = {
            struct Component;
            ::std::thread_local! {
                static PLACER: ::std::cell::RefCell<Option<$placer>> = const { ::std::cell::RefCell::new(None) };
                static RUNNERS: ::std::cell::Cell<usize> = const { ::std::cell::Cell::new(0) };
            }
            use $crate::bindings::placerd::placer::types as wit;
            impl $crate::bindings::Guest for Component {
                fn configure(config: ::std::vec::Vec<(String, String)>) -> ::std::result::Result<(), String> {
                    PLACER.with(|slot| $crate::glue::configure(slot, config))
                }
                fn set_runners(generation: u64, runners: ::std::vec::Vec<wit::Runner>) {
                    PLACER.with(|slot| RUNNERS.with(|n| $crate::glue::set_runners(slot, n, generation, runners)))
                }
                fn place(call: wit::Call, loads: ::std::vec::Vec<u32>) -> ::std::vec::Vec<u32> {
                    PLACER.with(|slot| RUNNERS.with(|n| $crate::glue::place(slot, n, call, loads)))
                }
            }
    $crate::bindings::__export_bindings!(Component with_types_in $crate::bindings);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_read_the_columns_in_place() {
        // 3 runners, 6 columns.
        let columns: Vec<u32> = (0..18).collect();
        let loads = Loads::new(&columns, 3);
        assert_eq!(loads.len(), 3);
        assert_eq!(loads.column(LoadColumn::Healthy), &[9, 10, 11]);
        assert_eq!((loads.in_flight(2), loads.reported_active(0), loads.recent_refusals(1)), (2, 3, 7));
        assert!(loads.healthy(0));
        assert_eq!((loads.latency_us(1), loads.recent_errors(2)), (13, 17));
        // Fewer columns than the view knows (an older host): zeros, not a panic.
        let short = Loads::new(&columns[..6], 3);
        assert_eq!(short.latency_us(0), 0);
        assert!(!short.healthy(1));
        assert_eq!(Loads::new(&[], 0).column(LoadColumn::InFlight), &[] as &[u32]);
    }

    #[test]
    fn runners_expose_their_labels() {
        let r = Runner { address: "a:1".into(), labels: vec![("zone".into(), "b".into())] };
        assert_eq!(r.label("zone"), Some("b"));
        assert_eq!(r.label("weight"), None);
    }
}
