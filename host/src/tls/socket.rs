//! A connection's socket, plain or TLS, read and written through shared references (the
//! proxy port's connection, its request body and its watch for a closing client all hold
//! one), without a task or a copy beyond the cipher's own.
//!
//! Plain sockets go straight to the kernel as before. A TLS socket keeps its rustls state
//! behind a lock that is only ever held inside one poll, never across an await: reads feed
//! the ciphertext the socket has to rustls and hand out the plaintext; writes encrypt,
//! then send the records as a plain socket sends bytes (the end-of-pass write included).

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use tokio::io::ReadBuf;
use tokio::net::TcpStream;

/// What one read of plaintext takes at most.
const READ_CHUNK: usize = 16 * 1024;

/// A connection's socket.
#[derive(Debug)]
pub struct Socket {
    tcp: Arc<TcpStream>,
    /// Boxed: a plain socket stays small (rustls' state is over a kilobyte).
    tls: Option<Box<Mutex<Tls>>>,
}

#[derive(Debug)]
struct Tls {
    conn: rustls::Connection,
    /// Records encrypted but not yet taken by the socket.
    pending: BytesMut,
    /// Plaintext rustls holds, ready to read.
    readable: usize,
    /// The peer sent `close_notify`, or closed its side of the TCP connection.
    eof: bool,
}

impl Tls {
    /// Encrypts `bytes` onto `pending`, a record's worth at a time (rustls holds at most
    /// 64 KiB of records unsent, so each is taken out before the next).
    fn seal(&mut self, bytes: &[u8]) -> io::Result<()> {
        for piece in bytes.chunks(SEAL_PIECE) {
            self.conn.writer().write_all(piece)?;
            self.take_records()?;
        }
        Ok(())
    }

    /// Moves every record rustls has to send onto `pending`.
    fn take_records(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut bytes::BufMut::writer(&mut self.pending))?;
        }
        Ok(())
    }
}

/// `Read` over a non-blocking socket: `WouldBlock` clears its readiness.
struct TryRead<'a>(&'a TcpStream);

impl Read for TryRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Socket {
    /// A plain socket.
    pub fn plain(tcp: TcpStream) -> Socket {
        Socket { tcp: Arc::new(tcp), tls: None }
    }

    /// A socket whose TLS handshake is done (`conn` holds what it read past it).
    pub(crate) fn tls(tcp: TcpStream, conn: impl Into<rustls::Connection>) -> Socket {
        let mut conn = conn.into();
        // What came with the handshake's last flight (a request sent at once) is held
        // already: no socket event will announce it.
        let (readable, eof) = match conn.process_new_packets() {
            Ok(state) => (state.plaintext_bytes_to_read(), state.peer_has_closed()),
            Err(_) => (0, true),
        };
        Socket {
            tcp: Arc::new(tcp),
            tls: Some(Box::new(Mutex::new(Tls { conn, pending: BytesMut::new(), readable, eof }))),
        }
    }

    /// The TCP socket beneath (TLS records go through it as bytes).
    pub(crate) fn tcp(&self) -> &Arc<TcpStream> {
        &self.tcp
    }

    /// True unless the peer closed this idle connection (TLS: or sent `close_notify`) or
    /// sent bytes nobody asked for. Costs no system call while the socket has not become
    /// readable since the last read; a TLS peer's session tickets are taken in.
    pub(crate) fn still_open(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let Some(tls) = &self.tls else {
            return match self.tcp.poll_read_ready(&mut cx) {
                Poll::Pending => true,
                Poll::Ready(Err(_)) => false,
                Poll::Ready(Ok(())) => {
                    matches!(self.tcp.try_read(&mut [0u8; 1]), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
                }
            };
        };
        let mut tls = Self::lock(tls);
        loop {
            match self.tcp.poll_read_ready(&mut cx) {
                Poll::Pending => return !tls.eof,
                Poll::Ready(Err(_)) => return false,
                Poll::Ready(Ok(())) => {}
            }
            match tls.conn.read_tls(&mut TryRead(&self.tcp)) {
                Ok(0) => return false,
                Ok(_) => match tls.conn.process_new_packets() {
                    Ok(state) if state.plaintext_bytes_to_read() == 0 && !state.peer_has_closed() => {}
                    _ => return false,
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return !tls.eof,
                Err(_) => return false,
            }
        }
    }

    /// The TLS records carrying `parts`, in order (with any records still pending
    /// first); `None` for a plain socket.
    pub(crate) fn seal_parts(&self, parts: &[&[u8]]) -> Option<io::Result<Bytes>> {
        let tls = self.tls.as_ref()?;
        let mut tls = Self::lock(tls);
        let sealed = parts.iter().try_for_each(|part| tls.seal(part));
        Some(sealed.map(|()| tls.pending.split().freeze()))
    }

    fn lock(tls: &Mutex<Tls>) -> MutexGuard<'_, Tls> {
        tls.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads what the connection has into `buf`; pending until it has something. `Ok(0)`:
    /// the peer closed its side (for TLS, with or without `close_notify`: a message cut
    /// short is found by its framing).
    pub(crate) fn poll_read(&self, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(tls) = &self.tls else {
            return crate::http1::poll_read(&self.tcp, buf, cx);
        };
        let mut tls = Self::lock(tls);
        // Records left over from a write (the reader may be the one waiting for them).
        if !tls.pending.is_empty() {
            match self.poll_flush_locked(&mut tls, cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
        }
        loop {
            if tls.readable > 0 {
                let start = buf.len();
                buf.resize(start + tls.readable.min(READ_CHUNK), 0);
                let read = tls.conn.reader().read(&mut buf[start..]);
                let n = *read.as_ref().unwrap_or(&0);
                buf.truncate(start + n);
                tls.readable -= n.min(tls.readable);
                match read {
                    Ok(0) => tls.readable = 0, // nothing after all: ask rustls again
                    Ok(n) => return Poll::Ready(Ok(n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => tls.readable = 0,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if tls.eof {
                return Poll::Ready(Ok(0));
            }
            ready!(self.tcp.poll_read_ready(cx))?;
            match tls.conn.read_tls(&mut TryRead(&self.tcp)) {
                Ok(0) => tls.eof = true,
                Ok(_) => {
                    match tls.conn.process_new_packets() {
                        Ok(state) => {
                            tls.readable = state.plaintext_bytes_to_read();
                            // After `close_notify` nothing more comes: what is left is read first.
                            tls.eof = state.peer_has_closed();
                        }
                        Err(e) => {
                            // The alert rustls queued tells the peer why; best effort.
                            let _ = self.send_records(&mut tls);
                            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                        }
                    }
                    if tls.conn.wants_write() {
                        // A key update's or a ticket's records: sent with the next write.
                        let _ = self.send_records(&mut tls);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Moves what rustls has to send into `pending` and sends what the socket takes now.
    fn send_records(&self, tls: &mut Tls) -> io::Result<()> {
        tls.take_records()?;
        while !tls.pending.is_empty() {
            match self.tcp.try_write(&tls.pending) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => drop(tls.pending.split_to(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends `pending` until the socket has taken all of it.
    fn poll_flush_locked(&self, tls: &mut Tls, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            self.send_records(tls)?;
            if tls.pending.is_empty() {
                return Poll::Ready(Ok(()));
            }
            ready!(self.tcp.poll_write_ready(cx))?;
        }
    }

    /// Sends `bytes` (a short message: `100 Continue`) as far as the socket takes it:
    /// returns how many it took. A TLS socket takes all of them at once, encrypted, and
    /// sends the records as the socket allows (the rest with the next read or write).
    pub(crate) fn poll_send(&self, bytes: &[u8], cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(tls) = &self.tls else {
            loop {
                ready!(self.tcp.poll_write_ready(cx))?;
                match self.tcp.try_write(bytes) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    written => return Poll::Ready(written),
                }
            }
        };
        let mut tls = Self::lock(tls);
        ready!(self.poll_flush_locked(&mut tls, cx))?;
        tls.seal(bytes)?;
        self.send_records(&mut tls)?;
        Poll::Ready(Ok(bytes.len()))
    }

    /// Writes all of `bytes`, failing with `TimedOut` when the socket takes none of them
    /// for [`crate::server::SEND_TIMEOUT`].
    pub(crate) async fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        if self.tls.is_none() {
            return write_all(&self.tcp, bytes).await;
        }
        // In pieces, so a large body is not encrypted whole before the first send.
        for piece in bytes.chunks(SEAL_PIECE) {
            if let Some(sealed) = self.seal_parts(&[piece]) {
                write_all(&self.tcp, &sealed?).await?;
            }
        }
        Ok(())
    }

    /// Writes all of `bytes`, the first send at the end of the scheduler's pass
    /// ([`crate::pass::write_some`]) and the rest, if the socket took only part, as
    /// [`Socket::write_all`].
    pub(crate) async fn write_at_pass_end(&self, bytes: Bytes) -> io::Result<()> {
        let bytes = match self.seal_parts(&[&bytes]) {
            None => bytes,
            Some(sealed) => sealed?,
        };
        let (sent, bytes) = crate::pass::write_some(&self.tcp, bytes).await;
        write_all(&self.tcp, &bytes[sent?..]).await
    }

    /// Peeks at the socket: `Ok(0)` when the peer has closed its side, else how many
    /// bytes (plaintext or records) are waiting.
    pub(crate) fn poll_peek(&self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut byte = [0u8; 1];
        let mut peek = ReadBuf::new(&mut byte);
        self.tcp.poll_peek(cx, &mut peek)
    }

    /// Sends TLS's `close_notify` (nothing for a plain socket), best effort.
    pub(crate) fn close_notify(&self) {
        if let Some(tls) = &self.tls {
            let mut tls = Self::lock(tls);
            tls.conn.send_close_notify();
            let _ = self.send_records(&mut tls);
        }
    }
}

/// Plaintext encrypted per piece by [`Socket::write_all`]: one TLS record's worth.
const SEAL_PIECE: usize = 16 * 1024;

/// Writes all of `bytes` to `stream`, trying the socket before waiting on it. Fails with
/// `TimedOut` when the socket stays full for [`crate::server::SEND_TIMEOUT`]: the peer
/// stopped reading.
pub(crate) async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match stream.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::timeout(crate::server::SEND_TIMEOUT, stream.writable()).await.map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "the peer took none of what was sent in time")
                })??;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    /// A connected pair on loopback: (the client's end, the server's end).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    /// More than loopback's send and receive buffers hold together.
    const LARGE: usize = 64 << 20;

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_is_dropped_after_the_send_timeout() {
        let (_client, server) = pair().await;
        let started = Instant::now();
        let response = vec![b'x'; LARGE];
        let e = tokio::time::timeout(2 * crate::server::SEND_TIMEOUT, write_all(&server, &response))
            .await
            .expect("the write gives up on its own")
            .expect_err("the client never reads");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(started.elapsed() >= crate::server::SEND_TIMEOUT, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_peer_that_reads_gets_all_of_a_write() {
        use tokio::io::AsyncReadExt;
        let (mut client, server) = pair().await;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.map(|_| got.len())
        });
        write_all(&server, &vec![b'x'; LARGE]).await.expect("written");
        drop(server);
        assert_eq!(reader.await.expect("joined").expect("read"), LARGE);
    }
}
