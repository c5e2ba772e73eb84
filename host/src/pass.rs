//! The end of a scheduler pass: writes that wait until the runtime has run every task the
//! last events woke, so they leave together.
//!
//! A single-threaded event loop that flushes its output once per pass, after it has run
//! every ready task and before it waits for events again, wakes each peer once for several
//! messages; a loop that writes as soon as each task has its bytes wakes its peers once per
//! message, and they answer one by one, so the loop itself finds fewer events each time it
//! waits and sleeps more often. Tokio runs tasks until its run queue is empty and then
//! parks; [`install`] hooks that moment. A task that awaits [`end`] is put aside and woken
//! from the hook, then writes; the runtime runs those tasks before it sleeps.
//!
//! [`write`] goes one step further: the hook itself sends the pass's writes, all of them in
//! one `io_uring_enter`, and wakes each task with what its send took. A peer woken by a
//! send may be placed on this core and preempt the loop when a system call returns; with
//! one system call per write that happens between two sends of a pass, and the peer gets
//! one message instead of all of its pass's. Where the kernel refuses io_uring (a seccomp
//! profile, `kernel.io_uring_disabled`), [`write`] waits like [`end`] and then sends.
//!
//! Only a current-thread runtime is hooked: there the hook runs on the thread whose tasks
//! it wakes, before the runtime decides whether to sleep. Anywhere else (a multi-thread
//! runtime, a test's runtime) [`end`] and [`write`] step to the back of the run queue
//! instead.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::net::TcpStream;

/// Tasks put aside at most, and writes queued at most: the task that fills either list
/// ends the pass itself (wakes the tasks, sends the writes) without waiting for the hook,
/// so a pass that never ends (a queue kept busy) still writes.
const MOST_WAITING: usize = 256;

/// How long a pass may keep its tasks waiting when the runtime does not park (a queue kept
/// busy, by load or by tasks that yield): then a watchdog task ends it.
const LONGEST_PASS: std::time::Duration = std::time::Duration::from_millis(1);

thread_local! {
    static PASS: RefCell<Pass> = const {
        RefCell::new(Pass {
            waiting: Vec::new(),
            slots: Vec::new(),
            free: Vec::new(),
            queued: Vec::new(),
            ring: Ring::Untried,
            sends: Vec::new(),
            results: Vec::new(),
            ended: 0,
            watchdog: None,
            id: 0,
        })
    };
}

/// The last id given to a thread's [`Pass`].
static LAST_PASS_ID: AtomicU64 = AtomicU64::new(0);

struct Pass {
    waiting: Vec<Waker>,
    /// The writes of [`write`], by slot: queued for the end of the pass, then done.
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// The slots queued in this pass, in the order their tasks queued them.
    queued: Vec<usize>,
    ring: Ring,
    /// Kept from pass to pass: what [`Pass::send_queued`] hands the ring, and its answers.
    sends: Vec<uring::Send>,
    results: Vec<i32>,
    /// Passes ended so far.
    ended: u64,
    /// The idle watchdog's waker, taken by the first task that waits in a pass.
    watchdog: Option<Waker>,
    /// This thread's pass, told apart from every other thread's (0 until a write asks):
    /// a slot index means something only on the thread that gave it out.
    id: u64,
}

/// One write of [`write`].
enum Slot {
    Free,
    /// Waiting for the end of the pass. The slot owns the bytes and a handle on the socket,
    /// so neither can go before the kernel is done with them, whatever becomes of the
    /// future (dropped frees the slot unsent; forgotten leaves it to be sent and kept).
    Queued {
        stream: Arc<TcpStream>,
        bytes: Bytes,
        waker: Waker,
    },
    /// Handed to the kernel in this flush.
    Sending(Waker),
    /// What the send took, or its error (a negative errno), or [`uring::UNKNOWN`]; and the
    /// bytes, back for the writer.
    Done(i32, Bytes),
}

enum Ring {
    /// Not tried yet: tried at the first park, on the runtime's thread. Until then the
    /// thread's runtime is not known to be hooked.
    Untried,
    Ready(Box<uring::Ring>),
    /// The kernel refused it: writes go out one system call each.
    Off,
}

/// Task polls between two looks for new events while the run queue is not empty (tokio's
/// default is 61). Events that arrive during a pass join it: a runner's answer read in the
/// same pass as the request that preceded it leaves in that pass's system call instead of
/// waiting for the next pass. Measured with `bench/proxy.sh` against 61, paired by round:
/// +0.8% and +2.7% requests/s (8 and 5 rounds); 1,024 gave −2.7%, 2 no more than 8 for
/// 4% more CPU.
const EVENTS_EVERY: u32 = 8;

/// Hooks a current-thread runtime's park, so [`end`] waits for the end of its passes, and
/// has it look for new events every [`EVENTS_EVERY`] task polls.
///
/// The thread learns of the hook when it first parks, and keeps it: a thread that has
/// driven a hooked runtime must not later drive one without the hook (`placerd` builds
/// one runtime per process).
pub(crate) fn install(builder: &mut tokio::runtime::Builder) {
    builder.on_thread_park(flush).event_interval(EVENTS_EVERY);
}

/// The park hook: the runtime has run every ready task.
fn flush() {
    PASS.with(|pass| pass.borrow_mut().hooked());
    end_pass();
}

/// Ends the pass: sends its queued writes and wakes the tasks put aside in it. The
/// runtime finds them queued and runs them before it sleeps.
fn end_pass() {
    let waiting = PASS.with(|pass| {
        let mut pass = pass.borrow_mut();
        pass.ended += 1;
        let mut waiting = std::mem::take(&mut pass.waiting);
        pass.send_queued(&mut waiting);
        waiting
    });
    wake_all(waiting);
}

impl Pass {
    /// Whether this thread's runtime runs [`flush`] before it parks (known from its first
    /// park).
    fn is_hooked(&self) -> bool {
        !matches!(self.ring, Ring::Untried)
    }

    /// Notes that this thread's runtime is hooked, and starts its ring the first time.
    fn hooked(&mut self) {
        if self.is_hooked() {
            return;
        }
        // The hook runs inside the runtime: the watchdog is its task.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(watchdog());
        }
        self.ring = match uring::Ring::new(MOST_WAITING) {
            Ok(ring) => Ring::Ready(Box::new(ring)),
            Err(e) => {
                tracing::info!(error = %e, "io_uring unavailable: each write of a pass is its own system call");
                Ring::Off
            }
        };
    }

    /// Sends the queued writes in one system call, and adds their tasks to `wake`.
    fn send_queued(&mut self, wake: &mut Vec<Waker>) {
        if self.queued.is_empty() {
            return;
        }
        let mut sends = std::mem::take(&mut self.sends);
        for &slot in &self.queued {
            // A slot freed and queued again in the same pass is listed twice: sent once.
            match std::mem::replace(&mut self.slots[slot], Slot::Free) {
                Slot::Queued { stream, bytes, waker } => {
                    self.slots[slot] = Slot::Sending(waker);
                    sends.push(uring::Send { slot, stream, bytes });
                }
                other => self.slots[slot] = other,
            }
        }
        self.queued.clear();
        let Ring::Ready(ring) = &mut self.ring else {
            unreachable!("writes are queued only with a ring");
        };
        let mut results = std::mem::take(&mut self.results);
        results.clear();
        results.resize(sends.len(), uring::NOT_SENT);
        if let Err(e) = ring.send_all(&sends, &mut results) {
            tracing::warn!(error = %e, "io_uring failed: each write of a pass is its own system call from now on");
            self.ring = Ring::Off;
        }
        for (send, &result) in sends.drain(..).zip(&results) {
            let slot = send.slot;
            let bytes = if result == uring::UNKNOWN {
                // The kernel may still read these bytes and send on this socket (the ring
                // failed with the send taken): both are kept for good. The connection is
                // shut down, so its peer is not left waiting on a descriptor never closed.
                uring::shut_down(&send.stream);
                std::mem::forget(send);
                Bytes::new()
            } else {
                send.bytes
            };
            if let Slot::Sending(waker) = std::mem::replace(&mut self.slots[slot], Slot::Done(result, bytes)) {
                wake.push(waker);
            }
        }
        (self.sends, self.results) = (sends, results);
    }

    /// Queues a write for the end of the pass; gives `stream` and `bytes` back without a
    /// hook or a ring.
    fn queue(&mut self, stream: Arc<TcpStream>, bytes: Bytes, waker: &Waker) -> Result<usize, (Arc<TcpStream>, Bytes)> {
        if !matches!(self.ring, Ring::Ready(_)) {
            return Err((stream, bytes));
        }
        let queued = Slot::Queued { stream, bytes, waker: waker.clone() };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = queued;
                slot
            }
            None => {
                self.slots.push(queued);
                self.slots.len() - 1
            }
        };
        self.queued.push(slot);
        self.arm_watchdog();
        Ok(slot)
    }

    /// This thread's id, given on first use.
    fn id(&mut self) -> u64 {
        if self.id == 0 {
            self.id = LAST_PASS_ID.fetch_add(1, Ordering::Relaxed) + 1;
        }
        self.id
    }

    fn has_waiting(&self) -> bool {
        !self.waiting.is_empty() || !self.queued.is_empty()
    }

    /// Wakes the watchdog if it is idle: a task now waits for the end of this pass.
    fn arm_watchdog(&mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.wake();
        }
    }

    /// The result of a slot's send, freeing the slot; `None` while it waits (its waker
    /// brought up to date).
    fn take(&mut self, slot: usize, waker: &Waker) -> Option<(i32, Bytes)> {
        match &mut self.slots[slot] {
            Slot::Done(result, bytes) => {
                let done = (*result, std::mem::take(bytes));
                self.release(slot);
                Some(done)
            }
            Slot::Queued { waker: queued, .. } | Slot::Sending(queued) => {
                if !queued.will_wake(waker) {
                    queued.clone_from(waker);
                }
                None
            }
            Slot::Free => unreachable!("a write's slot is freed only by its future"),
        }
    }

    fn release(&mut self, slot: usize) {
        self.slots[slot] = Slot::Free;
        self.free.push(slot);
    }
}

/// Ends a pass that has kept tasks waiting for [`LONGEST_PASS`]. Tokio calls the park hook
/// only when its run queue is empty and no task yielded (`yield_now`, or a task out of its
/// cooperative budget, makes it look for events without parking); a queue kept busy that
/// way would otherwise hold a lone waiting task until [`MOST_WAITING`] were waiting.
/// Idle (no timer) while nothing waits; at most one timer per [`LONGEST_PASS`] under load.
async fn watchdog() {
    loop {
        let pass = std::future::poll_fn(|cx| {
            PASS.with(|pass| {
                let mut pass = pass.borrow_mut();
                if pass.has_waiting() {
                    Poll::Ready(pass.ended)
                } else {
                    pass.watchdog = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
        })
        .await;
        tokio::time::sleep(LONGEST_PASS).await;
        if PASS.with(|p| p.borrow().ended == pass) {
            end_pass();
        }
    }
}

fn wake_all(mut waiting: Vec<Waker>) {
    for waker in waiting.drain(..) {
        waker.wake();
    }
    // Give the capacity back for the next pass.
    PASS.with(|pass| {
        let mut pass = pass.borrow_mut();
        if pass.waiting.is_empty() {
            pass.waiting = waiting;
        }
    });
}

/// Pending once: ready when the runtime has run the rest of its queue (or, without the
/// hook, after the tasks already queued).
pub(crate) fn end() -> End {
    End { waited: false }
}

/// The future of [`end`].
#[derive(Debug)]
pub(crate) struct End {
    waited: bool,
}

impl Future for End {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.waited {
            return Poll::Ready(());
        }
        self.waited = true;
        let full = PASS.with(|pass| {
            let mut pass = pass.borrow_mut();
            if !pass.is_hooked() {
                cx.waker().wake_by_ref();
                return false;
            }
            pass.waiting.push(cx.waker().clone());
            pass.arm_watchdog();
            pass.waiting.len() >= MOST_WAITING
        });
        if full {
            end_pass();
        }
        Poll::Pending
    }
}

/// One send of `bytes` on `stream` at the end of the pass: what `TcpStream::try_write`
/// returns (the bytes taken, or `WouldBlock` when the socket is full), and the bytes back
/// for the rest, sent with the pass's
/// other writes in one system call when the kernel allows io_uring, or by this task right
/// after the pass ([`end`]) when it does not.
///
/// The write owns what the kernel reads: the bytes, and a handle that keeps the socket open
/// until the send is done. A stream has at most one write waiting at a time: its writer
/// awaits each before the next (the pass's sends have no order between them).
pub(crate) fn write(stream: &Arc<TcpStream>, bytes: Bytes) -> Write {
    Write { state: WriteState::Start(stream.clone(), bytes) }
}

/// A write that failed: the error, and whether the bytes may have left all the same.
#[derive(Debug)]
pub(crate) struct WriteError {
    pub(crate) error: io::Error,
    /// The ring failed with the send taken and its completion unknown: the peer may have
    /// the bytes. Such a send is never made again.
    pub(crate) maybe_sent: bool,
}

impl From<WriteError> for io::Error {
    fn from(e: WriteError) -> Self {
        e.error
    }
}

/// [`write`], for a writer that sends the rest itself: the bytes the socket took at the
/// end of the pass (0 when it was full), and the bytes back.
///
/// # Errors
/// The send failed (nothing taken, unless `maybe_sent`), or took nothing of a non-empty
/// buffer (`WriteZero`).
pub(crate) async fn write_some(stream: &Arc<TcpStream>, bytes: Bytes) -> (Result<usize, WriteError>, Bytes) {
    let empty = bytes.is_empty();
    let (result, bytes) = write(stream, bytes).await;
    let result = match result {
        Ok(0) if !empty => Err(WriteError { error: io::ErrorKind::WriteZero.into(), maybe_sent: false }),
        Ok(n) => Ok(n),
        Err(e) if e.error.kind() == io::ErrorKind::WouldBlock && !e.maybe_sent => Ok(0),
        Err(e) => Err(e),
    };
    (result, bytes)
}

/// The future of [`write`].
#[derive(Debug)]
pub(crate) struct Write {
    state: WriteState,
}

#[derive(Debug)]
enum WriteState {
    Start(Arc<TcpStream>, Bytes),
    /// No ring: the end of the pass, then a plain send.
    Stepping(End, Arc<TcpStream>, Bytes),
    /// In the slot list of the pass whose id is `pass`.
    Queued {
        slot: usize,
        pass: u64,
    },
    Finished,
}

impl Future for Write {
    type Output = (Result<usize, WriteError>, Bytes);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match std::mem::replace(&mut this.state, WriteState::Finished) {
                WriteState::Start(stream, bytes) => {
                    let queued = PASS.with(|pass| {
                        let mut pass = pass.borrow_mut();
                        let slot = pass.queue(stream, bytes, cx.waker())?;
                        Ok((slot, pass.id(), pass.queued.len() >= MOST_WAITING))
                    });
                    match queued {
                        Ok((slot, pass, full)) => {
                            this.state = WriteState::Queued { slot, pass };
                            if full {
                                end_pass();
                            }
                            return Poll::Pending;
                        }
                        Err((stream, bytes)) => this.state = WriteState::Stepping(end(), stream, bytes),
                    }
                }
                WriteState::Stepping(mut step, stream, bytes) => {
                    if Pin::new(&mut step).poll(cx).is_pending() {
                        this.state = WriteState::Stepping(step, stream, bytes);
                        return Poll::Pending;
                    }
                    let result = stream.try_write(&bytes).map_err(|error| WriteError { error, maybe_sent: false });
                    return Poll::Ready((result, bytes));
                }
                WriteState::Queued { slot, pass } => {
                    let done = PASS.with(|p| {
                        let mut p = p.borrow_mut();
                        if p.id() != pass {
                            return Some((MOVED, Bytes::new()));
                        }
                        p.take(slot, cx.waker())
                    });
                    let Some((result, bytes)) = done else {
                        this.state = WriteState::Queued { slot, pass };
                        return Poll::Pending;
                    };
                    let result = match usize::try_from(result) {
                        Ok(n) => Ok(n),
                        Err(_) if result == MOVED => Err(WriteError {
                            error: io::Error::other("a pass::write was polled on another thread than its own"),
                            maybe_sent: true,
                        }),
                        Err(_) if result == uring::UNKNOWN => Err(WriteError {
                            error: io::Error::other("io_uring failed with this send taken; it may have been sent"),
                            maybe_sent: true,
                        }),
                        Err(_) => Err(WriteError { error: io::Error::from_raw_os_error(-result), maybe_sent: false }),
                    };
                    return Poll::Ready((result, bytes));
                }
                WriteState::Finished => panic!("`pass::write` polled after it finished"),
            }
        }
    }
}

/// The result of a write polled on a thread other than the one whose pass holds its slot
/// (it may be sent there or not; its slot stays taken).
const MOVED: i32 = i32::MIN + 1;

impl Drop for Write {
    fn drop(&mut self) {
        if let WriteState::Queued { slot, pass } = self.state {
            // Not sent if the pass has not ended: the slot's bytes go with it. On another
            // thread the slot is not this thread's to free: it stays taken.
            let _ = PASS.try_with(|p| {
                let mut p = p.borrow_mut();
                if p.id() == pass {
                    p.release(slot);
                }
            });
        }
    }
}

#[cfg(target_os = "linux")]
mod uring {
    use std::io;
    use std::os::fd::AsRawFd;
    use std::sync::Arc;

    use bytes::Bytes;
    use io_uring::{IoUring, opcode, types};
    use tokio::net::TcpStream;

    /// The result of a send the ring did not take ("try again"): its task sends it.
    pub(crate) const NOT_SENT: i32 = -libc::EAGAIN;
    /// The result of a send the ring took and whose completion it never saw (the system
    /// call failed): it may have been sent, so it is never made again.
    pub(crate) const UNKNOWN: i32 = i32::MIN;
    /// A send pushed to the ring whose completion has not been reaped yet.
    const PENDING: i32 = i32::MIN + 2;
    /// System calls that found the kernel busy (`EAGAIN`, `EBUSY`) or were interrupted, in
    /// a row, before the ring is given up: the runtime's one thread must not spin on it.
    const MOST_RETRIES: u32 = 64;

    /// Shuts `stream` down both ways: for a socket kept open for good, so its peer sees
    /// the end of the connection.
    pub(crate) fn shut_down(stream: &TcpStream) {
        // SAFETY: `shutdown(2)` on a descriptor the stream owns and keeps open; it touches
        // no memory.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_RDWR) };
    }

    /// A write handed to [`Ring::send_all`], with what it owns: the socket is kept open and
    /// the bytes alive until the send is done.
    pub(crate) struct Send {
        pub(crate) slot: usize,
        pub(crate) stream: Arc<TcpStream>,
        pub(crate) bytes: Bytes,
    }

    /// This thread's io_uring, used for sends only.
    pub(crate) struct Ring {
        ring: IoUring,
        /// Tests: the next submission goes to the kernel, then reports a failure.
        #[cfg(test)]
        pub(crate) fail_next_submit: bool,
    }

    impl Ring {
        /// A ring for up to `entries` sends at once, if the kernel allows io_uring and
        /// knows its send operation.
        pub(crate) fn new(entries: usize) -> io::Result<Ring> {
            let entries = u32::try_from(entries).unwrap_or(u32::MAX);
            // One thread submits; its completions need no interrupt of its own.
            let ring = IoUring::builder()
                .setup_single_issuer()
                .setup_coop_taskrun()
                .build(entries)
                .or_else(|_| IoUring::new(entries))?;
            let mut probe = io_uring::Probe::new();
            ring.submitter().register_probe(&mut probe)?;
            if !probe.is_supported(opcode::Send::CODE) {
                return Err(io::Error::new(io::ErrorKind::Unsupported, "the kernel's io_uring has no send"));
            }
            Ok(Ring {
                ring,
                #[cfg(test)]
                fail_next_submit: false,
            })
        }

        /// Sends each of `sends` once, all in one system call; what each took, or its
        /// negative errno, into `results`, in the same order (they start at
        /// [`NOT_SENT`]). No send waits: one that finds its socket full ends with
        /// `-EAGAIN`, one that finds room for part of its bytes takes them.
        ///
        /// # Errors
        /// The system call failed for another reason than an interruption or a full
        /// completion queue: the ring must be dropped. Sends it did not take keep
        /// [`NOT_SENT`]; sends it took whose completion was not seen are [`UNKNOWN`].
        pub(crate) fn send_all(&mut self, sends: &[Send], results: &mut [i32]) -> io::Result<()> {
            let room = self.ring.params().sq_entries() as usize;
            for (chunk, results) in sends.chunks(room).zip(results.chunks_mut(room)) {
                self.send_chunk(chunk, results)?;
            }
            Ok(())
        }

        fn send_chunk(&mut self, sends: &[Send], results: &mut [i32]) -> io::Result<()> {
            let mut pushed = 0;
            {
                let mut sq = self.ring.submission();
                for (i, send) in sends.iter().enumerate() {
                    let len = u32::try_from(send.bytes.len()).unwrap_or(u32::MAX);
                    let entry = opcode::Send::new(types::Fd(send.stream.as_raw_fd()), send.bytes.as_ptr(), len)
                        .flags(libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
                        .build()
                        .user_data(i as u64);
                    // SAFETY: the entry's buffer and socket are owned by `send`, which the
                    // caller keeps until this returns; a send whose completion this does
                    // not see (an error below) the caller keeps for good (`UNKNOWN`).
                    #[allow(unsafe_code)]
                    if unsafe { sq.push(&entry) }.is_err() {
                        break; // no room: the rest keep `NOT_SENT` and are sent by their tasks
                    }
                    results[i] = PENDING;
                    pushed += 1;
                }
            }
            // `MSG_DONTWAIT` makes each send finish during submission (a full socket ends
            // it with `EAGAIN` instead of arming a poll), so the wait returns at once.
            let mut done = 0;
            let mut retries = 0;
            loop {
                done += self.reap(results);
                if done >= pushed {
                    return Ok(());
                }
                // Interrupted, or the kernel short of resources: tried again, a few times.
                let retry = |e: &io::Error| matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY));
                if let Err(e) = self.submit_and_wait(pushed - done)
                    && (!retry(&e) || retries >= MOST_RETRIES)
                {
                    // What the kernel took and completed is reaped here; the rest may
                    // have been taken: unknown, never sent again.
                    self.reap(results);
                    for result in results.iter_mut().filter(|r| **r == PENDING) {
                        *result = UNKNOWN;
                    }
                    return Err(e);
                }
                retries += 1;
            }
        }

        fn submit_and_wait(&mut self, want: usize) -> io::Result<usize> {
            #[cfg(test)]
            if std::mem::take(&mut self.fail_next_submit) {
                // The sends go to the kernel, and their completions are lost, as when
                // the call fails after the kernel took them.
                self.ring.submit()?;
                for _ in self.ring.completion() {}
                return Err(io::Error::from_raw_os_error(libc::EBADR));
            }
            self.ring.submit_and_wait(want)
        }

        /// Moves the completions into `results`; how many there were.
        fn reap(&mut self, results: &mut [i32]) -> usize {
            let mut reaped = 0;
            for cqe in self.ring.completion() {
                if let Some(result) = results.get_mut(cqe.user_data() as usize) {
                    *result = cqe.result();
                    reaped += 1;
                }
            }
            reaped
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod uring {
    use std::io;
    use std::sync::Arc;

    use bytes::Bytes;
    use tokio::net::TcpStream;

    /// A write handed to [`Ring::send_all`].
    pub(crate) struct Send {
        pub(crate) slot: usize,
        pub(crate) stream: Arc<TcpStream>,
        pub(crate) bytes: Bytes,
    }

    /// Never a result here: there is no ring.
    pub(crate) const NOT_SENT: i32 = -11;
    /// Never a result here: there is no ring.
    pub(crate) const UNKNOWN: i32 = i32::MIN;

    /// Never called here: there is no ring.
    pub(crate) fn shut_down(_stream: &TcpStream) {}

    /// No io_uring here: [`Ring::new`] always refuses.
    pub(crate) enum Ring {}

    impl Ring {
        pub(crate) fn new(_entries: usize) -> io::Result<Ring> {
            Err(io::ErrorKind::Unsupported.into())
        }

        pub(crate) fn send_all(&mut self, _sends: &[Send], _results: &mut [i32]) -> io::Result<()> {
            match *self {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Default)]
    struct WakeCount(AtomicUsize);

    impl std::task::Wake for WakeCount {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn without_the_hook_it_steps_to_the_back_of_the_queue() {
        let woken = Arc::new(WakeCount::default());
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let mut step = std::pin::pin!(end());
        assert!(step.as_mut().poll(&mut cx).is_pending());
        assert_eq!(woken.0.load(Ordering::Relaxed), 1, "it asks to be polled again at once");
        assert!(step.as_mut().poll(&mut cx).is_ready());
        assert_eq!(woken.0.load(Ordering::Relaxed), 1);
    }

    fn hooked_runtime() -> tokio::runtime::Runtime {
        let mut builder = tokio::runtime::Builder::new_current_thread();
        install(&mut builder);
        builder.enable_all().build().expect("runtime")
    }

    /// Steps back `steps` times, noting each step in `log`.
    async fn busy(name: &'static str, steps: usize, log: Arc<Mutex<Vec<String>>>) {
        for step in 0..steps {
            log.lock().unwrap().push(format!("{name}{step}"));
            let mut once = false;
            std::future::poll_fn(|cx| {
                if std::mem::replace(&mut once, true) {
                    return Poll::Ready(());
                }
                cx.waker().wake_by_ref();
                Poll::Pending
            })
            .await;
        }
    }

    #[test]
    fn with_the_hook_a_task_waits_until_the_queue_has_run_dry() {
        let log = Arc::new(Mutex::new(Vec::new()));
        hooked_runtime().block_on(async {
            // The hook is known once the runtime has parked.
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            let waiter = {
                let log = log.clone();
                tokio::spawn(async move {
                    log.lock().unwrap().push("wait".to_owned());
                    end().await;
                    log.lock().unwrap().push("write".to_owned());
                })
            };
            let a = tokio::spawn(busy("a", 3, log.clone()));
            let b = tokio::spawn(busy("b", 3, log.clone()));
            for task in [waiter, a, b] {
                task.await.expect("task");
            }
        });
        let log = log.lock().unwrap().join(" ");
        assert_eq!(log, "wait a0 b0 a1 b1 a2 b2 write", "it writes after every other ready task");
    }

    #[test]
    fn a_pass_that_never_ends_still_lets_its_waiting_tasks_go() {
        let woken = Arc::new(AtomicUsize::new(0));
        hooked_runtime().block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            let waiters: Vec<_> = (0..MOST_WAITING)
                .map(|_| {
                    let woken = woken.clone();
                    tokio::spawn(async move {
                        end().await;
                        woken.fetch_add(1, Ordering::Relaxed);
                    })
                })
                .collect();
            // Keeps the run queue busy until every waiter has gone on, or for 100,000
            // steps: the queue does not run dry, nor the hook run, before.
            let spinner = {
                let woken = woken.clone();
                tokio::spawn(async move {
                    let mut steps = 0;
                    while woken.load(Ordering::Relaxed) < MOST_WAITING && steps < 100_000 {
                        busy("", 1, Arc::default()).await;
                        steps += 1;
                    }
                    steps
                })
            };
            for task in waiters {
                task.await.expect("waiter");
            }
            let steps = spinner.await.expect("spinner");
            assert!(steps < 100_000, "the waiters went on only when the queue ran dry");
        });
        assert_eq!(woken.load(Ordering::Relaxed), MOST_WAITING);
    }

    /// A connected pair of sockets on loopback: (the one written, the peer that reads).
    async fn pair() -> (Arc<TcpStream>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (client, accepted) = tokio::join!(TcpStream::connect(address), listener.accept());
        (Arc::new(client.expect("connect")), accepted.expect("accept").0)
    }

    fn bytes(text: &'static [u8]) -> Bytes {
        Bytes::from_static(text)
    }

    /// Whether this kernel lets this process use io_uring (a seccomp profile may not).
    fn kernel_allows_io_uring() -> bool {
        uring::Ring::new(8).is_ok()
    }

    fn ring_in_use() -> bool {
        PASS.with(|pass| matches!(pass.borrow().ring, Ring::Ready(_)))
    }

    /// Three tasks write at the end of a pass in which a fourth steps back three times:
    /// every write leaves after the other task's steps, and every peer gets its bytes.
    fn writes_leave_after_the_pass(refuse_ring: bool) {
        let log = Arc::new(Mutex::new(Vec::new()));
        hooked_runtime().block_on(async {
            if refuse_ring {
                PASS.with(|pass| pass.borrow_mut().ring = Ring::Off);
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            assert_eq!(ring_in_use(), !refuse_ring, "io_uring is refused here: {:?}", kernel_allows_io_uring());
            let mut peers = Vec::new();
            let mut writers = Vec::new();
            for i in 0..3 {
                let (stream, peer) = pair().await;
                peers.push(peer);
                let log = log.clone();
                writers.push(async move {
                    log.lock().unwrap().push(format!("q{i}"));
                    let message = format!("call {i}");
                    let sent = write(&stream, Bytes::from(message.clone())).await.0.expect("sent");
                    log.lock().unwrap().push(format!("s{i}"));
                    assert_eq!(sent, message.len());
                    stream
                });
            }
            let writers: Vec<_> = writers.into_iter().map(tokio::spawn).collect();
            let busy = tokio::spawn(busy("a", 3, log.clone()));
            let mut streams = Vec::new();
            for task in writers {
                streams.push(task.await.expect("writer"));
            }
            busy.await.expect("busy");
            for (i, peer) in peers.iter_mut().enumerate() {
                let mut got = vec![0u8; 16];
                let n = tokio::io::AsyncReadExt::read(peer, &mut got).await.expect("read");
                assert_eq!(&got[..n], format!("call {i}").as_bytes());
            }
        });
        let log = log.lock().unwrap().join(" ");
        assert_eq!(log, "q0 q1 q2 a0 a1 a2 s0 s1 s2", "the writes leave after every other ready task");
    }

    #[test]
    fn the_writes_of_a_pass_leave_together_at_its_end() {
        writes_leave_after_the_pass(false);
    }

    #[test]
    fn without_io_uring_the_writes_of_a_pass_still_wait_for_its_end() {
        writes_leave_after_the_pass(true);
    }

    #[test]
    fn a_full_socket_takes_part_of_a_write_then_none() {
        hooked_runtime().block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            let (stream, _peer) = pair().await;
            let big = Bytes::from(vec![7u8; 64 << 20]);
            let first = write(&stream, big.clone()).await.0.expect("part of it fits");
            assert!(first > 0 && first < big.len(), "{first}");
            // The kernel may grow a socket's buffer while its peer reads nothing
            // (autotuning): writes take parts until it is full, then none.
            let mut next = write(&stream, big.clone()).await.0;
            let mut parts = 0;
            while let Ok(taken) = next {
                assert!(taken < big.len(), "{taken}");
                parts += 1;
                assert!(parts < 64, "the socket never filled");
                next = write(&stream, big.clone()).await.0;
            }
            assert_eq!(next.map_err(|e| (e.error.kind(), e.maybe_sent)), Err((io::ErrorKind::WouldBlock, false)));
        });
    }

    #[test]
    fn a_write_dropped_before_its_pass_ends_is_not_sent() {
        hooked_runtime().block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            let (stream, peer) = pair().await;
            {
                let mut dropped = std::pin::pin!(write(&stream, bytes(b"never")));
                std::future::poll_fn(|cx| {
                    assert!(dropped.as_mut().poll(cx).is_pending());
                    Poll::Ready(())
                })
                .await;
            }
            // The pass ends (the sleep parks the runtime), then one more write goes.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            assert_eq!(write(&stream, bytes(b"sent")).await.0.expect("sent"), 4);
            let mut got = vec![0u8; 16];
            let mut peer = peer;
            let n = tokio::io::AsyncReadExt::read(&mut peer, &mut got).await.expect("read");
            assert_eq!(&got[..n], b"sent");
        });
    }

    #[test]
    fn a_pass_with_more_writes_than_the_ring_holds_sends_them_all() {
        hooked_runtime().block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            let (stream, mut peer) = pair().await;
            let writers: Vec<_> = (0..MOST_WAITING * 2 + 3)
                .map(|_| {
                    let stream = stream.clone();
                    tokio::spawn(async move { write(&stream, bytes(b"x")).await.0.expect("sent") })
                })
                .collect();
            for task in writers {
                assert_eq!(task.await.expect("writer"), 1);
            }
            let mut got = vec![0u8; MOST_WAITING * 2 + 3];
            tokio::io::AsyncReadExt::read_exact(&mut peer, &mut got).await.expect("all of them");
        });
    }

    /// A run queue kept busy by one task that keeps stepping back (the runtime never
    /// parks) must not hold a lone waiting task, or a lone write, for longer than the
    /// bound; `work` runs beside the spinner and must finish.
    fn a_busy_queue_lets_one_waiter_go(work: impl Future<Output = ()> + Send + 'static) {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        hooked_runtime().block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            let spinner = {
                let done = done.clone();
                tokio::spawn(async move {
                    let started = std::time::Instant::now();
                    while !done.load(Ordering::Relaxed) && started.elapsed() < std::time::Duration::from_secs(10) {
                        tokio::task::yield_now().await;
                    }
                    started.elapsed()
                })
            };
            let worker = {
                let done = done.clone();
                tokio::spawn(async move {
                    work.await;
                    done.store(true, Ordering::Relaxed);
                })
            };
            worker.await.expect("worker");
            let spun = spinner.await.expect("spinner");
            assert!(spun < std::time::Duration::from_secs(10), "the waiter went on only when the spinner gave up");
        });
    }

    #[test]
    fn a_lone_waiter_in_a_pass_that_never_ends_goes_on_after_the_bound() {
        a_busy_queue_lets_one_waiter_go(end());
    }

    #[test]
    fn a_lone_write_in_a_pass_that_never_ends_leaves_after_the_bound() {
        a_busy_queue_lets_one_waiter_go(async {
            let (stream, mut peer) = pair().await;
            assert_eq!(write(&stream, bytes(b"sent")).await.0.expect("sent"), 4);
            let mut got = [0u8; 4];
            tokio::io::AsyncReadExt::read_exact(&mut peer, &mut got).await.expect("read");
        });
    }

    #[test]
    fn a_write_to_a_peer_that_reset_the_connection_returns_its_error() {
        hooked_runtime().block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            assert!(ring_in_use(), "io_uring is refused here");
            let (stream, peer) = pair().await;
            assert_eq!(write(&stream, bytes(b"unread")).await.0.expect("sent"), 6);
            // Closed with bytes unread: the peer resets the connection.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            drop(peer);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let error = write(&stream, bytes(b"more")).await.0.expect_err("the peer is gone");
            assert!(!error.maybe_sent);
            let error = error.error;
            assert!(matches!(error.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe), "{error:?}");
        });
    }

    /// Reads what `peer` gets within 50 ms of its last byte.
    async fn received(peer: &mut TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut chunk = [0u8; 64];
        while let Ok(Ok(n)) =
            tokio::time::timeout(std::time::Duration::from_millis(50), tokio::io::AsyncReadExt::read(peer, &mut chunk))
                .await
        {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        got
    }

    #[test]
    fn a_forgotten_write_keeps_its_bytes_and_its_socket_until_sent() {
        hooked_runtime().block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            assert!(ring_in_use(), "io_uring is refused here");
            let (stream, mut peer) = pair().await;
            let mut forgotten = Box::pin(write(&stream, Bytes::from(b"kept".to_vec())));
            std::future::poll_fn(|cx| {
                assert!(forgotten.as_mut().poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            // Forgotten, and the caller's socket dropped: the slot owns both.
            std::mem::forget(forgotten);
            drop(stream);
            // A socket opened now cannot take the forgotten socket's descriptor.
            let (other, mut other_peer) = pair().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            assert_eq!(received(&mut peer).await, b"kept", "sent on its own socket");
            assert_eq!(write(&other, bytes(b"mine")).await.0.expect("sent"), 4);
            assert_eq!(received(&mut other_peer).await, b"mine", "nothing else on the new socket");
        });
    }

    #[test]
    fn a_write_polled_or_dropped_on_another_thread_touches_no_slot_of_that_thread() {
        hooked_runtime().block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            assert!(ring_in_use(), "io_uring is refused here");
            let (stream, mut peer) = pair().await;
            let mut moved = Box::pin(write(&stream, bytes(b"moved")));
            std::future::poll_fn(|cx| {
                assert!(moved.as_mut().poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            let elsewhere = std::thread::spawn(move || {
                hooked_runtime().block_on(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    // This thread's own write takes slot 0 here too.
                    let (own, mut own_peer) = pair().await;
                    let mut mine = Box::pin(write(&own, bytes(b"own")));
                    let polled = std::future::poll_fn(|cx| {
                        assert!(mine.as_mut().poll(cx).is_pending());
                        Poll::Ready(moved.as_mut().poll(cx))
                    })
                    .await;
                    drop(moved);
                    assert_eq!(mine.await.0.expect("its own write"), 3, "its slot untouched");
                    assert_eq!(received(&mut own_peer).await, b"own");
                    match polled {
                        Poll::Ready((Err(e), _)) => e.maybe_sent,
                        other => panic!("{other:?}"),
                    }
                })
            });
            assert!(elsewhere.join().expect("thread"), "an error that says the bytes may have left");
            // Its own pass still sends it: it owns what it sends.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            assert_eq!(received(&mut peer).await, b"moved");
        });
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_failed_submit_never_sends_a_write_twice() {
        use tokio::io::AsyncReadExt;
        hooked_runtime().block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            assert!(ring_in_use(), "io_uring is refused here");
            PASS.with(|pass| match &mut pass.borrow_mut().ring {
                Ring::Ready(ring) => ring.fail_next_submit = true,
                _ => unreachable!(),
            });
            let mut peers = Vec::new();
            let mut streams = Vec::new();
            for _ in 0..3 {
                let (stream, peer) = pair().await;
                streams.push(stream);
                peers.push(peer);
            }
            // Queued in one pass, sent by its one failing submit.
            let mut writers = Vec::new();
            for (i, stream) in streams.drain(..).enumerate() {
                writers.push(tokio::spawn(async move {
                    let (result, _) = write_some(&stream, Bytes::from(format!("call {i}"))).await;
                    (stream, result)
                }));
            }
            for task in writers {
                let (stream, result) = task.await.expect("writer");
                let error = result.expect_err("the submit failed");
                assert!(error.maybe_sent, "{error:?}");
                streams.push(stream);
            }
            for (i, peer) in peers.iter_mut().enumerate() {
                assert_eq!(received(peer).await, format!("call {i}").as_bytes(), "sent once, never again");
                let end = tokio::time::timeout(std::time::Duration::from_secs(5), peer.read(&mut [0u8; 1])).await;
                assert_eq!(end.expect("the end of the connection").expect("read"), 0, "shut down");
            }
            drop(streams);
            // The ring is gone: the next writes go one system call each.
            assert!(!ring_in_use());
            let (stream, mut peer) = pair().await;
            assert_eq!(write(&stream, bytes(b"!")).await.0.expect("sent"), 1);
            assert_eq!(received(&mut peer).await, b"!");
        });
    }
}
