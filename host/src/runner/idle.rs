//! The runner client's idle keep-alive connections: one list per runner on each thread
//! that sends calls (each worker), so taking and returning a connection is a lookup in the
//! thread's own table, with no lock and nothing another core writes. A connection is
//! registered with the event loop of the worker that opened it and is only ever used
//! there.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use thread_local::ThreadLocal;

use super::client::Conn;
use super::pool::RunnerState;

/// Idle connections kept per runner on each worker.
const MAX_IDLE_CONNECTIONS: usize = 64;
/// Returns between two sweeps of the lists of runners that have left the pool.
const SWEEP_EVERY: u32 = 4096;

/// Each thread's idle connections, by runner.
#[derive(Debug, Default)]
pub(crate) struct IdleConns {
    threads: ThreadLocal<RefCell<Lists>>,
}

/// One thread's lists, keyed by the address of the runner's state (held, so the address
/// is not reused while its entry lives).
#[derive(Debug, Default)]
struct Lists {
    runners: HashMap<usize, (Arc<RunnerState>, Vec<Conn>), BuildHasherDefault<AddressHasher>>,
    returns: u32,
}

fn key(runner: &Arc<RunnerState>) -> usize {
    Arc::as_ptr(runner) as usize
}

impl IdleConns {
    /// This thread's most recently used idle connection to `runner` that is still open,
    /// dropping closed ones.
    pub(crate) fn checkout(&self, runner: &Arc<RunnerState>) -> Option<Conn> {
        let mut lists = self.threads.get()?.try_borrow_mut().ok()?;
        let (_, idle) = lists.runners.get_mut(&key(runner))?;
        while let Some(mut conn) = idle.pop() {
            if conn.still_open() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps `conn` (its last response read whole) for this thread's next call to
    /// `runner`; closes it if the runner has left or enough are kept.
    pub(crate) fn checkin(&self, runner: &Arc<RunnerState>, conn: Conn) {
        if runner.left() {
            return;
        }
        let Ok(mut lists) = self.threads.get_or_default().try_borrow_mut() else { return };
        let (_, idle) = lists.runners.entry(key(runner)).or_insert_with(|| (runner.clone(), Vec::new()));
        if idle.len() < MAX_IDLE_CONNECTIONS {
            idle.push(conn);
        }
        lists.returns += 1;
        if lists.returns >= SWEEP_EVERY {
            lists.returns = 0;
            lists.runners.retain(|_, (runner, _)| !runner.left());
        }
    }

    /// Idle connections kept on this thread for `runner`.
    #[cfg(test)]
    pub(crate) fn count(&self, runner: &Arc<RunnerState>) -> usize {
        self.threads.get().map_or(0, |l| l.borrow().runners.get(&key(runner)).map_or(0, |(_, idle)| idle.len()))
    }
}

/// Hashes an address: its bits above the allocation's alignment, spread.
#[derive(Debug, Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_usize(&mut self, address: usize) {
        self.0 = ((address as u64) >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}
