//! Write a [placerd](https://github.com/) placer in Rust.
//!
//! A placer orders a pool's runners for each call. With this crate it is a type that
//! implements [`Placer`] and one [`export_placer!`] line; the WebAssembly component
//! bindings of the contract (`wit/placer.wit`, `placerd:placer@0.4.0`) stay inside.
//!
//! ```
//! use placerd_placer::{Call, Loads, Order, Placer, Runner};
//!
//! /// Least calls in flight first; unhealthy runners last.
//! struct LeastBusy;
//!
//! impl Placer for LeastBusy {
//!     fn configure(_config: &[(String, String)]) -> Result<Self, String> {
//!         Ok(LeastBusy)
//!     }
//!
//!     fn place(&mut self, _call: &Call, loads: &Loads<'_>) -> Order {
//!         let mut order: Vec<u32> = (0..loads.len() as u32).collect();
//!         order.sort_by_key(|&i| (!loads.healthy(i as usize), loads.in_flight(i as usize)));
//!         order.into()
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

/// The live load of every runner of the current set: runner `i` is index `i` of the last
/// [`Placer::set_runners`]. In a component it reads the host's load view only when asked:
/// a column at a time (one copy, kept for the rest of the call) or one value at a time
/// ([`Loads::one`]), so a placer pays only for what it reads.
#[derive(Debug)]
pub struct Loads<'a> {
    n: usize,
    source: Source<'a>,
    /// What the host answered to each `loads` call made during this call (at most one per
    /// column), kept whole: no copy per column.
    blocks: [std::cell::OnceCell<Vec<u32>>; COLUMNS],
    /// Blocks filled so far.
    filled: std::cell::Cell<usize>,
    /// Where each column read so far sits: its block, and its offset in it.
    fetched: [std::cell::Cell<Option<(u8, u32)>>; COLUMNS],
}

/// Columns of the load view this SDK knows.
const COLUMNS: usize = 6;

#[derive(Debug)]
enum Source<'a> {
    /// Columns given whole (native tests): the contract's layout, column after column.
    Columns(&'a [u32]),
    /// The host's load view of the call being placed.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    Host,
}

impl<'a> Loads<'a> {
    /// A view of `columns` (column after column, in [`LoadColumn`] order) for `n` runners,
    /// for a placer's native tests.
    pub fn new(columns: &'a [u32], n: usize) -> Self {
        Loads { n, source: Source::Columns(columns), ..Loads::host(n) }
    }

    /// The host's load view of the call being placed, for `n` runners.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    fn host(n: usize) -> Self {
        Loads {
            n,
            source: Source::Host,
            blocks: Default::default(),
            filled: std::cell::Cell::new(0),
            fetched: Default::default(),
        }
    }

    /// Runners in the set.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// One column for every runner (empty if the host does not have it). In a component the
    /// first read of a column during a call copies it from the host; later reads are free.
    pub fn column(&self, c: LoadColumn) -> &[u32] {
        let at = c as usize;
        match self.source {
            Source::Columns(columns) => columns.get(at * self.n..(at + 1) * self.n).unwrap_or(&[]),
            Source::Host => {
                if self.fetched[at].get().is_none() {
                    self.read(&[c]);
                }
                self.fetched_column(c)
            }
        }
    }

    /// Column `c` as read from the host during this call (empty if not read).
    fn fetched_column(&self, c: LoadColumn) -> &[u32] {
        let Some((block, offset)) = self.fetched[c as usize].get() else {
            return &[];
        };
        let block = self.blocks[block as usize].get().map_or(&[][..], Vec::as_slice);
        block.get(offset as usize..offset as usize + self.n).unwrap_or(&[])
    }

    /// Reads `columns` from the host in one call (those not read yet during this call), so
    /// a placer that uses several columns pays for one crossing instead of one per column.
    /// Without it each column is read on its first use. Does nothing in native tests.
    pub fn read(&self, columns: &[LoadColumn]) {
        if !matches!(self.source, Source::Host) {
            return;
        }
        // On the stack: no allocation but the host's answer.
        let mut wanted = [LoadColumn::InFlight; COLUMNS];
        let mut count = 0;
        for &c in columns {
            if self.fetched[c as usize].get().is_none() && !wanted[..count].contains(&c) && count < COLUMNS {
                wanted[count] = c;
                count += 1;
            }
        }
        let missing = &wanted[..count];
        let slot = self.filled.get();
        if missing.is_empty() || slot >= COLUMNS {
            return;
        }
        let _ = self.blocks[slot].set(host_columns(missing));
        self.filled.set(slot + 1);
        for (k, &c) in missing.iter().enumerate() {
            self.fetched[c as usize].set(Some((slot as u8, (k * self.n) as u32)));
        }
    }

    /// Column `c` of runner `i` alone (0 outside the set). In a component this asks the
    /// host for one value unless the column was already read: the cheap way to look at a
    /// few runners of a large set.
    pub fn one(&self, i: usize, c: LoadColumn) -> u32 {
        match (&self.source, self.fetched[c as usize].get()) {
            (Source::Host, None) => u32::try_from(i).map_or(0, |i| host_value(i, c)),
            _ => self.get(c, i),
        }
    }

    fn get(&self, c: LoadColumn, i: usize) -> u32 {
        self.column(c).get(i).copied().unwrap_or(0)
    }

    /// Calls in flight on runner `i` from this host (reads the whole column).
    pub fn in_flight(&self, i: usize) -> u32 {
        self.get(LoadColumn::InFlight, i)
    }

    /// Active requests runner `i` reports (reads the whole column).
    pub fn reported_active(&self, i: usize) -> u32 {
        self.get(LoadColumn::ReportedActive, i)
    }

    /// Busy refusals from runner `i` in the last second (reads the whole column).
    pub fn recent_refusals(&self, i: usize) -> u32 {
        self.get(LoadColumn::RecentRefusals, i)
    }

    /// Whether runner `i` is healthy (reads the whole column).
    pub fn healthy(&self, i: usize) -> bool {
        self.get(LoadColumn::Healthy, i) != 0
    }

    /// Runner `i`'s latency average in µs, 0 while not known (reads the whole column).
    pub fn latency_us(&self, i: usize) -> u32 {
        self.get(LoadColumn::LatencyUs, i)
    }

    /// Runner `i`'s errors in the last ten seconds (reads the whole column).
    pub fn recent_errors(&self, i: usize) -> u32 {
        self.get(LoadColumn::RecentErrors, i)
    }
}

/// `loads` of the host: `columns`, one after another (nothing off `wasm32`).
fn host_columns(columns: &[LoadColumn]) -> Vec<u32> {
    #[cfg(target_arch = "wasm32")]
    {
        let mut wit = [glue::wit_column(LoadColumn::InFlight); COLUMNS];
        for (to, &c) in wit.iter_mut().zip(columns) {
            *to = glue::wit_column(c);
        }
        bindings::loads(&wit[..columns.len().min(COLUMNS)])
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = columns;
        Vec::new()
    }
}

/// `load` of the host (0 off `wasm32`).
fn host_value(i: u32, c: LoadColumn) -> u32 {
    #[cfg(target_arch = "wasm32")]
    return bindings::load(i, glue::wit_column(c));
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (i, c);
        0
    }
}

/// The order to try runners in for one call: the runners listed, most preferred first,
/// then what [`Then`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Indices into the current set; out-of-range and repeated ones are dropped by the host.
    pub runners: Vec<u32>,
    /// What the host tries after them.
    pub then: Then,
}

/// What the host tries after the runners an [`Order`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Nothing more.
    Stop,
    /// The ring from this index (modulo the set's size): it, the runners after it, then
    /// those before it, skipping the listed runners and, while any runner is healthy, the
    /// unhealthy ones. Consistent hashing's order, expanded by the host.
    Ring(u32),
}

impl Order {
    /// Just these runners, in this order.
    pub fn list(runners: Vec<u32>) -> Self {
        Order { runners, then: Then::Stop }
    }

    /// The ring from `start` ([`Then::Ring`]), with no runner listed before it.
    pub fn ring(start: u32) -> Self {
        Order { runners: Vec::new(), then: Then::Ring(start) }
    }

    /// The indices the host tries for these `healthy` flags (one per runner): what it makes
    /// of this order, for a placer's native tests.
    pub fn expand(&self, healthy: &[bool]) -> Vec<u32> {
        let mut out = self.runners.clone();
        let n = healthy.len();
        if let (Then::Ring(start), true) = (self.then, n > 0) {
            let start = start as usize % n;
            let any_healthy = healthy.contains(&true);
            out.extend(
                (start..n)
                    .chain(0..start)
                    .filter(|&i| !self.runners.contains(&(i as u32)) && (!any_healthy || healthy[i]))
                    .map(|i| i as u32),
            );
        }
        out
    }
}

impl From<Vec<u32>> for Order {
    fn from(runners: Vec<u32>) -> Self {
        Order::list(runners)
    }
}

/// Whether the host may reuse a placer's orders ([`Placer::reuse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reuse {
    /// Every call is placed by [`Placer::place`].
    #[default]
    Never,
    /// For the current runner set, `place`'s order depends on [`Call::slot_hash`] alone:
    /// not on the call's other fields, not on the loads. The host then asks once per key
    /// and set, and answers later calls of the key with that order (a [`Then::Ring`] still
    /// expanded against each call's health).
    BySlotHash,
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

    /// Whether the host may reuse this placer's orders for the runner set it was told
    /// last; asked after every [`Placer::set_runners`]. [`Reuse::Never`] unless a placer
    /// says otherwise. Say [`Reuse::BySlotHash`] only when it holds: the host will not
    /// ask `place` again for a key it has an answer for.
    fn reuse(&self) -> Reuse {
        Reuse::Never
    }

    /// The order to try runners in for `call`: indices into the current set, most
    /// preferred first (a `Vec<u32>` converts with `.into()`), and optionally the ring from
    /// an index after them ([`Order::ring`]). Leaving a runner out means "do not try it
    /// now"; out-of-range and repeated indices are dropped by the host.
    fn place(&mut self, call: &Call, loads: &Loads<'_>) -> Order;
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
    use super::{Call, CallKind, LoadColumn, Loads, Order, Placer, Reuse, Runner, Then};

    /// `configure`.
    pub fn configure<P: Placer>(
        slot: &std::cell::RefCell<Option<P>>,
        config: Vec<(String, String)>,
    ) -> Result<(), String> {
        *slot.borrow_mut() = Some(P::configure(&config)?);
        Ok(())
    }

    /// `set-runners`, answered with the placer's [`Placer::reuse`].
    pub fn set_runners<P: Placer>(
        slot: &std::cell::RefCell<Option<P>>,
        n: &std::cell::Cell<usize>,
        generation: u64,
        runners: Vec<wit::Runner>,
    ) -> wit::Reuse {
        n.set(runners.len());
        let runners: Vec<Runner> =
            runners.into_iter().map(|r| Runner { address: r.address, labels: r.labels }).collect();
        let mut slot = slot.borrow_mut();
        let Some(placer) = slot.as_mut() else {
            return wit::Reuse::Never;
        };
        placer.set_runners(generation, &runners);
        match placer.reuse() {
            Reuse::Never => wit::Reuse::Never,
            Reuse::BySlotHash => wit::Reuse::BySlotHash,
        }
    }

    /// `place`.
    pub fn place<P: Placer>(
        slot: &std::cell::RefCell<Option<P>>,
        n: &std::cell::Cell<usize>,
        call: wit::Call,
    ) -> wit::Order {
        let call = Call {
            seq: call.seq,
            random: call.random,
            kind: match call.kind {
                wit::CallKind::Sync => CallKind::Sync,
                wit::CallKind::Detached => CallKind::Detached,
            },
            slot_hash: call.slot_hash,
        };
        let loads = Loads::host(n.get());
        let order = slot.borrow_mut().as_mut().map_or_else(|| Order::list(Vec::new()), |p| p.place(&call, &loads));
        wit::Order {
            runners: order.runners,
            then: match order.then {
                Then::Stop => wit::Continuation::Stop,
                Then::Ring(start) => wit::Continuation::Ring(start),
            },
        }
    }

    /// The contract's name of a column.
    pub(crate) fn wit_column(c: LoadColumn) -> wit::LoadColumn {
        match c {
            LoadColumn::InFlight => wit::LoadColumn::InFlight,
            LoadColumn::ReportedActive => wit::LoadColumn::ReportedActive,
            LoadColumn::RecentRefusals => wit::LoadColumn::RecentRefusals,
            LoadColumn::Healthy => wit::LoadColumn::Healthy,
            LoadColumn::LatencyUs => wit::LoadColumn::LatencyUs,
            LoadColumn::RecentErrors => wit::LoadColumn::RecentErrors,
        }
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
                fn set_runners(generation: u64, runners: ::std::vec::Vec<wit::Runner>) -> wit::Reuse {
                    PLACER.with(|slot| RUNNERS.with(|n| $crate::glue::set_runners(slot, n, generation, runners)))
                }
                fn place(call: wit::Call) -> wit::Order {
                    PLACER.with(|slot| RUNNERS.with(|n| $crate::glue::place(slot, n, call)))
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
    fn an_order_expands_to_its_runners_then_the_ring_of_offered_runners() {
        let all = [true; 5];
        assert_eq!(Order::ring(3).expand(&all), vec![3, 4, 0, 1, 2]);
        assert_eq!(Order::ring(8).expand(&all), vec![3, 4, 0, 1, 2]);
        assert_eq!(Order { runners: vec![1], then: Then::Ring(0) }.expand(&all), vec![1, 0, 2, 3, 4]);
        assert_eq!(Order::list(vec![2, 0]).expand(&all), vec![2, 0]);
        // Unhealthy runners are skipped while any is healthy, offered when none is.
        assert_eq!(Order::ring(1).expand(&[true, false, true, false, true]), vec![2, 4, 0]);
        assert_eq!(Order::ring(1).expand(&[false; 3]), vec![1, 2, 0]);
        assert_eq!(Order::ring(1).expand(&[]), Vec::<u32>::new());
    }

    #[test]
    fn one_value_reads_the_same_as_its_column() {
        let columns: Vec<u32> = (0..18).collect();
        let loads = Loads::new(&columns, 3);
        assert_eq!(loads.one(2, LoadColumn::Healthy), 11);
        assert_eq!(loads.one(7, LoadColumn::Healthy), 0);
    }

    #[test]
    fn runners_expose_their_labels() {
        let r = Runner { address: "a:1".into(), labels: vec![("zone".into(), "b".into())] };
        assert_eq!(r.label("zone"), Some("b"));
        assert_eq!(r.label("weight"), None);
    }
}
