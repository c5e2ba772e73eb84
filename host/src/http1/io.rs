//! Reading a message off a socket: a read that fills the connection's buffer, and the
//! timer for the longest silence a peer may keep.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// What one read asks the kernel for, at least.
const READ_CHUNK: usize = 8 * 1024;

/// Reads what the socket has into `buf`; pending until it has something. `Ok(0)`: the
/// peer closed its side.
///
/// A read that leaves room in the buffer took all the socket had: its readiness is cleared
/// then (as tokio's own `AsyncRead` does), so the next wait parks without a system call
/// that would only say "nothing yet", and an idle connection's check for a close costs
/// none either.
pub(crate) fn poll_read(stream: &TcpStream, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_read_ready(cx))?;
        if buf.capacity() - buf.len() < READ_CHUNK {
            buf.reserve(READ_CHUNK);
        }
        let room = buf.capacity() - buf.len();
        let mut drained = 0;
        let read = stream.try_io(Interest::READABLE, || match stream.try_read_buf(buf)? {
            n if n > 0 && n < room => {
                drained = n;
                Err(io::ErrorKind::WouldBlock.into()) // clears the readiness; the bytes are kept
            }
            n => Ok(n),
        });
        match read {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && drained > 0 => return Poll::Ready(Ok(drained)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            read => return Poll::Ready(read),
        }
    }
}

/// The longest silence allowed between two reads that brought bytes: [`Silence::heard`]
/// on each, [`Silence::poll_expired`] while waiting.
///
/// The silence is counted from the start of the wait that follows the last bytes (the same
/// pass, a few microseconds later), so a read that brings bytes costs no clock read; a
/// wait costs one. One timer per connection, made at its first wait and kept: it is reset
/// only when the deadline moves earlier; a deadline pushed later is found when the timer
/// fires early.
#[derive(Debug)]
pub(crate) struct Silence {
    timeout: Duration,
    /// When the current wait gives up; stale until `counting`.
    deadline: Instant,
    /// `deadline` counts from the current wait.
    counting: bool,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Silence {
    pub(crate) fn new(timeout: Duration) -> Self {
        Silence { timeout, deadline: Instant::now(), counting: false, timer: None }
    }

    /// The silence allowed from now on is `timeout`, counted from the next wait.
    pub(crate) fn restart(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.counting = false;
    }

    /// Bytes arrived: the silence starts again at the next wait.
    pub(crate) fn heard(&mut self) {
        self.counting = false;
    }

    /// The silence allowed.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// True once the silence has lasted its timeout; else the task is woken by then.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.counting {
            self.deadline = Instant::now() + self.timeout;
            self.counting = true;
        }
        let deadline = self.deadline;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        while timer.as_mut().poll(cx).is_ready() {
            if Instant::now() >= self.deadline {
                return true;
            }
            timer.as_mut().reset(self.deadline);
        }
        false
    }
}
