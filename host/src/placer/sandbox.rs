//! The sandbox one placer instance runs in.
//!
//! WASI is linked because a `wasm32-wasip2` guest's std imports a few `wasi:cli`/`wasi:io`
//! interfaces, but the context grants nothing: no preopened directories, no network, no
//! environment, no args, empty stdin, clocks stopped at zero ([`Stopped`]: the Unix epoch,
//! and a monotonic clock that never advances) and `wasi:random` bytes drawn from a stream
//! seeded with the call's `random` value before each `place` ([`CallRandom`]; with the
//! runner generation before `set-runners`, 0 before `configure`). A placer's order is a
//! function of its inputs only: the same call and loads give the same order in `simulate`
//! and in production, whatever the guest's runtime (Python, JavaScript) draws from WASI. Guest stdout/stderr and the `log`
//! import go to `tracing`, line by line, control characters escaped, truncated and rate
//! limited per placer version so a chatty or hostile guest cannot flood or forge the
//! host's logs. Memory is capped per instance (all memories
//! together) by [`MemoryLimiter`].

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime::{ResourceLimiter, StoreContextMut};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_io::bindings::wasi::io::streams::StreamError as WitStreamError;
use wasmtime_wasi_io::poll::DynPollable;
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream};

use super::contract::{CallText, LoadColumn, LoadView, v01, v04};
use super::error::printable;
use crate::throttle::Throttle;

/// Longest guest log line kept; the rest is cut.
const MAX_LINE: usize = 1024;
/// Guest log lines let through per placer version per second (log import, stdout and
/// stderr together).
const LINES_PER_SECOND: u32 = 20;
/// Tables, instances and memories a component instance may create. A Rust guest uses one
/// memory and a handful of tables and core instances; componentize-py's and
/// componentize-js' runtimes a few more.
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// What one table element costs against the memory cap: a funcref is a pointer.
const TABLE_ELEMENT_BYTES: usize = 8;
const MAX_INSTANCES: usize = 64;
const MAX_TABLES: usize = 64;
const MAX_MEMORIES: usize = 8;

/// The WASI version whose interfaces wasmtime-wasi 48 defines (guests' `@0.2.x` imports
/// match it by semver).
const WASI_IO: &str = "0.2.12";

/// Replaces the WASI functions that *block* with non-blocking ones.
///
/// wasmtime-wasi's synchronous bindings run a blocking call by entering a Tokio runtime
/// (`block_on`), which panics when the guest is called from a Tokio worker thread, as the
/// proxy does. A placer has nothing to wait for: writes to stdout/stderr complete at once
/// (they go to [`LineWriter`]), stdin is empty, and waiting on a pollable (a sleep) traps.
pub(crate) fn replace_blocking_wasi(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut streams = linker.instance(&format!("wasi:io/streams@{WASI_IO}"))?;
    streams.func_wrap(
        "[method]output-stream.blocking-write-and-flush",
        |mut store: StoreContextMut<'_, HostState>, (stream, bytes): (Resource<DynOutputStream>, Vec<u8>)| {
            Ok((write_now(store.data_mut(), &stream, Bytes::from(bytes)),))
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-write-zeroes-and-flush",
        |mut store: StoreContextMut<'_, HostState>, (stream, len): (Resource<DynOutputStream>, u64)| {
            let zeroes = Bytes::from(vec![0u8; usize::try_from(len.min(64 * 1024)).unwrap_or(0)]);
            Ok((write_now(store.data_mut(), &stream, zeroes),))
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-flush",
        |_: StoreContextMut<'_, HostState>, (_stream,): (Resource<DynOutputStream>,)| {
            Ok((Ok::<(), WitStreamError>(()),))
        },
    )?;
    streams.func_wrap(
        "[method]input-stream.blocking-read",
        |_: StoreContextMut<'_, HostState>, (_stream, _len): (Resource<DynInputStream>, u64)| {
            Ok((Err::<Vec<u8>, WitStreamError>(WitStreamError::Closed),))
        },
    )?;
    streams.func_wrap(
        "[method]input-stream.blocking-skip",
        |_: StoreContextMut<'_, HostState>, (_stream, _len): (Resource<DynInputStream>, u64)| {
            Ok((Err::<u64, WitStreamError>(WitStreamError::Closed),))
        },
    )?;
    let mut poll = linker.instance(&format!("wasi:io/poll@{WASI_IO}"))?;
    poll.func_wrap(
        "[method]pollable.block",
        |_: StoreContextMut<'_, HostState>, (_p,): (Resource<DynPollable>,)| -> wasmtime::Result<()> {
            Err(wasmtime::Error::msg("a placer may not block (wasi:io/poll)"))
        },
    )?;
    poll.func_wrap(
        "poll",
        |_: StoreContextMut<'_, HostState>, (_p,): (Vec<Resource<DynPollable>>,)| -> wasmtime::Result<(Vec<u32>,)> {
            Err(wasmtime::Error::msg("a placer may not block (wasi:io/poll)"))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

fn write_now(state: &mut HostState, stream: &Resource<DynOutputStream>, bytes: Bytes) -> Result<(), WitStreamError> {
    let stream = state.table.get_mut(stream).map_err(|_| WitStreamError::Closed)?;
    stream.write(bytes).and_then(|()| stream.flush()).map_err(|_| WitStreamError::Closed)
}

/// The clocks a placer sees: stopped at zero (the wall clock at the Unix epoch).
struct Stopped;

impl HostWallClock for Stopped {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for Stopped {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// A placer's `wasi:random`: SplitMix64 over a state the host sets per guest call
/// ([`HostState::seed`]), so a guest's random draws are a function of the call.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallRandom(Arc<AtomicU64>);

impl CallRandom {
    fn next(&self) -> u64 {
        // One instance runs one call at a time: the state is never contended.
        let mut z = self.0.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl rand_core::TryRng for CallRandom {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.next() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.next())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}

/// State of one placer instance's `Store`.
pub(crate) struct HostState {
    wasi: WasiCtx,
    /// The seed of the guest's `wasi:random`, set before each guest call.
    random: CallRandom,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    log: Arc<GuestLog>,
    /// The call being placed, for `current-call` (contract 0.4); empty between
    /// calls.
    pub(crate) details: CallText,
    /// The loads of the call being placed, for `loads` and `load` (contract 0.4);
    /// empty between calls.
    pub(crate) view: LoadView,
    /// When the guest call in progress must end (its phase's budget from its start),
    /// unless its thread was not on the CPU for it ([`HostState::overran`]).
    pub(crate) deadline: std::time::Instant,
    /// The latest the guest call in progress may end, however little CPU it had.
    pub(crate) ceiling: std::time::Instant,
    /// When the guest call in progress started, and the CPU time it may use.
    start: std::time::Instant,
    phase: std::time::Duration,
    /// The thread's CPU time when the call started, if it was read then (it costs a
    /// system call, so only for calls that are costly anyway: [`HostState::arm`]).
    cpu_start: Option<std::time::Duration>,
    /// Once the call is past `deadline`: the thread's CPU time and the time when it was
    /// last looked at.
    pub(crate) overrun: Option<(std::time::Duration, std::time::Instant)>,
}

impl HostState {
    pub(crate) fn new(memory_limit: usize, log: Arc<GuestLog>) -> Self {
        let random = CallRandom::default();
        let wasi = WasiCtxBuilder::new()
            .stdout(GuestOutput { log: log.clone(), stream: "stdout" })
            .stderr(GuestOutput { log: log.clone(), stream: "stderr" })
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(Stopped)
            .monotonic_clock(Stopped)
            .secure_random(random.clone())
            .insecure_random(random.clone())
            .insecure_random_seed(0)
            .build();
        HostState {
            wasi,
            random,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_limit),
            log,
            details: CallText::default(),
            view: LoadView::default(),
            deadline: std::time::Instant::now(),
            ceiling: std::time::Instant::now(),
            start: std::time::Instant::now(),
            phase: std::time::Duration::ZERO,
            cpu_start: None,
            overrun: None,
        }
    }
}

impl HostState {
    /// Gives the next guest call until `deadline`, and at most until `ceiling`. With
    /// `exact`, the thread's CPU clock is read now, so an overrun is judged by the CPU time
    /// the call used rather than an estimate of it ([`HostState::overran`]).
    pub(crate) fn arm(
        &mut self,
        start: std::time::Instant,
        deadline: std::time::Instant,
        ceiling: std::time::Instant,
        exact: bool,
    ) {
        self.start = start;
        self.phase = deadline.saturating_duration_since(start);
        self.deadline = deadline;
        self.ceiling = ceiling;
        self.cpu_start = exact.then(super::engine::thread_cpu_time);
        self.overrun = None;
    }

    /// Whether the guest call in progress, at `now` past its deadline, is stopped.
    ///
    /// The budget is CPU time, but reading a thread's CPU clock costs a system call, so
    /// the deadline is wall time and the CPU clock is read once it has passed (and at the
    /// start of calls [`HostState::arm`] was told are costly). From then on the call gets
    /// [`super::engine::grace`] at a time while the CPU time it has used is under its phase
    /// (the budget) plus one grace. What it used before the deadline is measured when the
    /// clock was read at its start; otherwise it is taken to be its share of the CPU since
    /// (a thread that had all of it then is taken to have had all of it before; one
    /// preempted half the time, half). So a loop on an idle machine is stopped a grace past
    /// its budget, a call on a machine where it gets half a core runs to twice the wall
    /// time, and one that is preempted throughout goes on, up to `ceiling`.
    pub(crate) fn overran(&mut self, now: std::time::Instant, budget: std::time::Duration) -> bool {
        if now >= self.ceiling {
            return true;
        }
        let grace = super::engine::grace(budget);
        let cpu = super::engine::thread_cpu_time();
        let Some((first_cpu, first_look)) = self.overrun else {
            self.overrun = Some((cpu, now));
            self.deadline = now + grace;
            return false;
        };
        let ran = cpu.saturating_sub(first_cpu).as_secs_f64();
        let before = match self.cpu_start {
            Some(start_cpu) => first_cpu.saturating_sub(start_cpu).as_secs_f64(),
            None => {
                let since = now.saturating_duration_since(first_look).as_secs_f64().max(1e-9);
                first_look.saturating_duration_since(self.start).as_secs_f64() * (ran / since).min(1.0)
            }
        };
        let allowed = (self.phase + grace).as_secs_f64();
        if before + ran >= allowed {
            return true;
        }
        self.deadline = now + grace;
        false
    }

    /// Seeds the guest's `wasi:random` for the next guest call.
    pub(crate) fn seed(&self, seed: u64) {
        self.random.0.store(seed, Ordering::Relaxed);
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

// The `types` interfaces have no functions; the bindings still want them implemented.
impl v04::placerd::placer::types::Host for HostState {}
impl v01::placerd::placer::types::Host for HostState {}

impl v04::PlacerImports for HostState {
    fn log(&mut self, level: u8, message: String) {
        self.log.line("log", level, message.as_bytes());
    }

    fn current_call(&mut self) -> v04::placerd::placer::types::CallDetails {
        self.details.details()
    }

    fn loads(&mut self, columns: Vec<LoadColumn>) -> Vec<u32> {
        self.view.columns(&columns)
    }

    fn load(&mut self, runner: u32, column: LoadColumn) -> u32 {
        self.view.value(runner, column)
    }
}

/// The same sink for 0.1 components (the import is identical).
impl v01::PlacerImports for HostState {
    fn log(&mut self, level: u8, message: String) {
        v04::PlacerImports::log(self, level, message);
    }
}

/// Caps what one instance holds, linear memories and table elements
/// ([`TABLE_ELEMENT_BYTES`] each) together, and remembers whether it refused a grow, so a
/// trap that follows is reported as a memory fault. Instances, tables and memories are
/// capped in number ([`MAX_INSTANCES`], [`MAX_TABLES`], [`MAX_MEMORIES`]).
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    limit: usize,
    used: usize,
    pub(crate) refused: bool,
}

impl MemoryLimiter {
    fn new(limit: usize) -> Self {
        MemoryLimiter { limit, used: 0, refused: false }
    }

    /// Bytes the instance holds now: all memories and tables together.
    pub(crate) fn used(&self) -> usize {
        self.used
    }

    /// Grows one memory or table from `current` to `desired` bytes within the cap.
    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.limit {
            self.refused = true;
            return false;
        }
        self.used = total;
        true
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            self.refused = true;
            return Ok(false);
        }
        Ok(self.grow(current, desired))
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS || maximum.is_some_and(|max| desired > max) {
            self.refused = true;
            return Ok(false);
        }
        Ok(self.grow(current * TABLE_ELEMENT_BYTES, desired * TABLE_ELEMENT_BYTES))
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// The log sink of one placer version: truncates lines and lets through at most
/// [`LINES_PER_SECOND`], then reports how many it dropped.
#[derive(Debug)]
pub(crate) struct GuestLog {
    placer: Arc<str>,
    throttle: Throttle,
}

impl GuestLog {
    pub(crate) fn new(placer: Arc<str>) -> Self {
        GuestLog { placer, throttle: Throttle::new(LINES_PER_SECOND, Duration::from_secs(1)) }
    }

    /// Emits one guest line at `level` (0 error, 1 warn, 2 info, 3 debug, else trace). A
    /// line the log filter hides takes no share of the rate limit.
    pub(crate) fn line(&self, stream: &str, level: u8, bytes: &[u8]) {
        // A tracing level must be a constant at each call site: one site per level.
        macro_rules! at {
            ($level:expr) => {
                if tracing::enabled!(target: "placerd::guest", $level)
                    && let Some(message) = self.admit(bytes)
                {
                    tracing::event!(target: "placerd::guest", $level, placer = &*self.placer, stream, "{message}");
                }
            };
        }
        match level {
            0 => at!(tracing::Level::ERROR),
            1 => at!(tracing::Level::WARN),
            2 => at!(tracing::Level::INFO),
            3 => at!(tracing::Level::DEBUG),
            _ => at!(tracing::Level::TRACE),
        }
    }

    /// The line as it is logged (cut, escaped), if the rate limit lets it through; says
    /// first how many were dropped since the last one.
    fn admit(&self, bytes: &[u8]) -> Option<String> {
        let dropped = self.throttle.admit()?;
        if dropped > 0 {
            tracing::warn!(placer = &*self.placer, dropped, "guest log lines dropped by the rate limit");
        }
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_LINE)]);
        Some(printable(text.trim_end(), MAX_LINE).into_owned())
    }
}

/// Guest stdout or stderr: whole lines go to [`GuestLog`] at info (stdout) or warn (stderr).
struct GuestOutput {
    log: Arc<GuestLog>,
    stream: &'static str,
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.writer())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.writer())
    }
}

impl GuestOutput {
    fn writer(&self) -> LineWriter {
        let level = if self.stream == "stderr" { 1 } else { 2 };
        LineWriter { log: self.log.clone(), stream: self.stream, level, line: Vec::new() }
    }
}

/// Splits a byte stream into lines for [`GuestLog`]; a line longer than [`MAX_LINE`] is
/// emitted cut and the rest of it discarded, so the buffer stays small.
struct LineWriter {
    log: Arc<GuestLog>,
    stream: &'static str,
    level: u8,
    line: Vec<u8>,
}

impl LineWriter {
    fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (part, rest, newline) = match bytes.iter().position(|b| *b == b'\n') {
                Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                None => (bytes, &[][..], false),
            };
            let room = (MAX_LINE + 1).saturating_sub(self.line.len());
            self.line.extend_from_slice(&part[..part.len().min(room)]);
            if newline {
                self.log.line(self.stream, self.level, &self.line);
                self.line.clear();
            }
            bytes = rest;
        }
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.log.line(self.stream, self.level, &self.line);
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.get_mut().push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past its deadline, a call whose thread was off the CPU (asleep here, as a preempted
    /// thread is) is given more time; one that kept the CPU through its grace is stopped;
    /// none outlives its ceiling.
    #[test]
    fn past_the_deadline_a_call_is_judged_by_its_threads_cpu_time() {
        use std::time::{Duration, Instant};
        let budget = Duration::from_millis(20);
        let grace = crate::placer::engine::grace(budget);
        let mut state = HostState::new(1 << 20, Arc::new(GuestLog::new("t".into())));
        let spin = |d: Duration| {
            let started = Instant::now();
            while started.elapsed() < d {
                std::hint::spin_loop();
            }
        };
        // A call that ran its budget of wall time on the CPU, then loops: stopped about a
        // grace later.
        let started = Instant::now();
        spin(budget);
        state.arm(started, started + budget, started + budget * 10, false);
        assert!(!state.overran(Instant::now(), budget), "the first look gives a grace");
        assert!(state.deadline > Instant::now());
        let looked = Instant::now();
        while !state.overran(Instant::now(), budget) {
            spin(Duration::from_micros(100));
            assert!(looked.elapsed() < budget, "a loop on the CPU was not stopped");
        }
        assert!(looked.elapsed() >= grace / 2, "stopped before its grace: {:?}", looked.elapsed());

        // A call whose thread is off the CPU (asleep here, as a preempted thread is) after
        // its deadline gets more time, and more.
        let started = Instant::now();
        std::thread::sleep(budget);
        state.arm(started, started + budget, started + budget * 10, false);
        assert!(!state.overran(Instant::now(), budget));
        for _ in 0..3 {
            std::thread::sleep(budget);
            assert!(!state.overran(Instant::now(), budget), "off the CPU: more time");
        }

        // A call off the CPU until its deadline that then runs: with its CPU clock read at
        // its start, it gets its whole budget of CPU time (judged by the estimate, it
        // would be taken to have had the CPU all along and stopped a grace later).
        let started = Instant::now();
        state.arm(started, started + budget, started + budget * 10, true);
        std::thread::sleep(budget);
        assert!(!state.overran(Instant::now(), budget));
        let looked = Instant::now();
        while !state.overran(Instant::now(), budget) {
            spin(Duration::from_micros(100));
        }
        assert!(looked.elapsed() >= budget, "stopped before its budget of CPU: {:?}", looked.elapsed());

        // Past the ceiling, whatever the CPU.
        let now = Instant::now();
        state.arm(now, now, now + budget, false);
        assert!(state.overrun.is_none(), "a new call starts with no overrun");
        std::thread::sleep(budget);
        assert!(state.overran(Instant::now(), budget), "past the ceiling");
    }

    #[test]
    fn memory_limiter_counts_all_memories_together() {
        let mut l = MemoryLimiter::new(10);
        assert!(l.memory_growing(0, 6, None).unwrap_or(false));
        assert!(!l.memory_growing(0, 6, None).unwrap_or(true));
        assert!(l.refused);
        assert!(l.memory_growing(6, 10, None).unwrap_or(false));
        assert!(!l.memory_growing(10, 11, None).unwrap_or(true));
    }

    #[test]
    fn table_elements_count_against_the_same_cap() {
        let mut l = MemoryLimiter::new(1000);
        assert!(l.memory_growing(0, 600, None).unwrap_or(false));
        assert!(l.table_growing(0, 50, None).unwrap_or(false), "400 bytes of table fits");
        assert_eq!(l.used(), 1000);
        assert!(!l.table_growing(50, 51, None).unwrap_or(true), "one more element does not");
        assert!(l.refused);
        assert!(!l.memory_growing(600, 601, None).unwrap_or(true), "nor one more byte of memory");
        let mut roomy = MemoryLimiter::new(usize::MAX);
        assert!(!roomy.table_growing(0, MAX_TABLE_ELEMENTS + 1, None).unwrap_or(true), "elements are capped too");
    }

    #[test]
    fn guest_lines_cannot_carry_control_characters_into_the_log() {
        assert_eq!(printable("plain line", MAX_LINE), "plain line");
        assert_eq!(printable("one\nINFO forged line\r", MAX_LINE), "one\\nINFO forged line\\r");
        assert_eq!(printable("\u{1b}[31mred", MAX_LINE), "\\u{1b}[31mred");
        assert_eq!(printable("ééé", 3), "é…", "cut on a character boundary");
    }

    #[test]
    fn line_writer_splits_lines_and_caps_length() {
        let log = Arc::new(GuestLog::new("p".into()));
        let mut w = LineWriter { log, stream: "stdout", level: 2, line: Vec::new() };
        w.push(b"one\ntw");
        assert_eq!(w.line, b"tw");
        w.push(&vec![b'x'; 5000]);
        assert_eq!(w.line.len(), MAX_LINE + 1);
        w.push(b"\n");
        assert!(w.line.is_empty());
    }
}
