//! The proxy port's workers: `workers` threads, each running its own current-thread
//! runtime (the hooked one of `pass`: its writes leave at the end of each scheduler pass),
//! serving the client connections it accepts from start to end. A call never leaves the
//! thread whose worker accepted its connection: its runner connections, its placer
//! instance and its timers are that worker's, and nothing on its path waits for another
//! thread.
//!
//! The workers share the one listening socket (each registers its own descriptor of it)
//! and one count of open connections against `max_connections`. Which worker wakes first
//! for a new connection is up to the kernel, and under a burst of connects one worker may
//! accept most of them; so a worker that accepts a connection while another serves fewer
//! hands it over to the one with the fewest (as HAProxy spreads accepted connections over
//! its threads). The pick is taken under a lock shared by the workers, so two accepting at
//! once see each other's pick. A hand-over costs one cross-thread wake per connection, never
//! per request, and keeps the connections placed within one of even (a connection stays on
//! its worker until it closes: closes can leave the spread uneven until new ones arrive).
//!
//! Everything else the workers need is shared and read without waiting: the config,
//! routes and placers (swapped whole), the runner membership and each runner's load, the
//! metrics. `docs/architecture.md` lists which state is per worker and which is shared.

use std::io;
use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::proxy::{self, Proxy};
use crate::tls::{ServerTls, Socket};

/// The running workers.
#[derive(Debug)]
pub struct Workers {
    /// One per worker: whether every connection it served closed within the grace period.
    done: Vec<oneshot::Receiver<bool>>,
}

/// What the workers share: the connection limit, each worker's open connections and each
/// worker's inbox of connections handed to it.
struct Shared {
    slots: Arc<Semaphore>,
    open: Vec<Gauge>,
    /// Held while a worker compares the counts and takes its pick, so two workers
    /// accepting at once both see each other's last pick (once per connection).
    placing: std::sync::Mutex<()>,
    inboxes: Vec<UnboundedSender<Handed>>,
}

/// A connection handed from the worker that accepted it to another.
struct Handed {
    stream: std::net::TcpStream,
    slot: Slot,
}

/// An open connection's place: one of `max_connections`, and one of its worker's count.
/// Both are given back when it drops, however the connection ends.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, open: &Gauge) -> Self {
        open.inc();
        Slot { _permit: permit, open: open.clone() }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl Workers {
    /// Starts `count` workers serving client connections from `listener` with `proxy`,
    /// at most `max_connections` open at once, until `stop` is cancelled, over TLS when
    /// `tls` is given. Their open connections are gauged in `metrics`.
    ///
    /// # Errors
    /// A worker's runtime or thread could not be made, or the listener not shared.
    pub fn start(
        listener: std::net::TcpListener,
        count: usize,
        max_connections: usize,
        proxy: &Arc<Proxy>,
        tls: Option<&Arc<ServerTls>>,
        metrics: &Arc<Metrics>,
        stop: &CancellationToken,
    ) -> io::Result<Workers> {
        let count = count.max(1);
        let slots = max_connections.clamp(1, Semaphore::MAX_PERMITS);
        let (inboxes, receivers): (Vec<_>, Vec<_>) = (0..count).map(|_| unbounded_channel()).unzip();
        let shared = Arc::new(Shared {
            slots: Arc::new(Semaphore::new(slots)),
            open: (0..count).map(|i| metrics.worker_connections(i)).collect(),
            placing: std::sync::Mutex::new(()),
            inboxes,
        });
        listener.set_nonblocking(true)?;
        // Every runtime and descriptor first: a worker that cannot start stops none that
        // started. If a thread cannot be spawned, those spawned before it are stopped.
        let stop = stop.child_token();
        let mut prepared = Vec::with_capacity(count);
        for inbox in receivers {
            prepared.push((crate::worker_runtime()?, listener.try_clone()?, inbox));
        }
        let mut done = Vec::with_capacity(count);
        for (me, (runtime, listener, inbox)) in prepared.into_iter().enumerate() {
            let worker = Worker {
                me,
                shared: shared.clone(),
                proxy: proxy.clone(),
                tls: tls.cloned(),
                metrics: metrics.clone(),
                stop: stop.clone(),
                tracker: TaskTracker::new(),
                stopping: CancellationToken::new(),
            };
            let (finished, finish) = oneshot::channel();
            let spawned = std::thread::Builder::new().name(format!("worker-{me}")).spawn(move || {
                crate::shard::enter(me);
                let clean = runtime.block_on(worker.run(listener, inbox));
                // Connections still open past the grace period end with the runtime.
                drop(runtime);
                let _ = finished.send(clean);
            });
            if let Err(e) = spawned {
                stop.cancel();
                return Err(e);
            }
            done.push(finish);
        }
        Ok(Workers { done })
    }

    /// Waits for every worker to end (after `stop`): true when each one's connections all
    /// closed within the shutdown grace period.
    pub async fn finished(self) -> bool {
        let mut clean = true;
        for worker in self.done {
            clean &= worker.await.unwrap_or(false);
        }
        clean
    }
}

/// One worker, on its own thread.
struct Worker {
    me: usize,
    shared: Arc<Shared>,
    proxy: Arc<Proxy>,
    /// The proxy port's TLS, if it has any.
    tls: Option<Arc<ServerTls>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    /// Its connections, waited for at shutdown.
    tracker: TaskTracker,
    /// Cancelled at stop: each connection closes once no request is in flight.
    stopping: CancellationToken,
}

impl Worker {
    /// Accepts and serves connections until stop, then waits up to the shutdown grace
    /// period for its connections to close; true when they all did.
    async fn run(self, listener: std::net::TcpListener, mut inbox: UnboundedReceiver<Handed>) -> bool {
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(worker = self.me, error = %e, "worker cannot listen; it serves no connection");
                return true;
            }
        };
        let stop = &self.stop;
        let mut permit = None;
        loop {
            // A free connection slot first: while none is, connections queue in the
            // backlog (connections handed over bring their own).
            let held = match permit.take() {
                Some(held) => held,
                None => tokio::select! {
                    biased;
                    () = stop.cancelled() => break,
                    Some(handed) = inbox.recv() => {
                        self.take(handed);
                        continue;
                    }
                    slot = self.shared.slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break, // never closed
                    },
                },
            };
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                Some(handed) = inbox.recv() => {
                    permit = Some(held);
                    self.take(handed);
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => self.place(stream, held),
                    Err(e) => {
                        permit = Some(held);
                        // Out of file descriptors, usually: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                },
            }
        }
        drop(listener);
        // Connections handed over but not yet taken are closed, as those still in the
        // backlog are.
        inbox.close();
        while inbox.try_recv().is_ok() {}
        self.stopping.cancel();
        self.tracker.close();
        let grace = self.proxy.config().shutdown_grace;
        tokio::time::timeout(grace, self.tracker.wait()).await.is_ok()
    }

    /// Serves a connection this worker accepted, or hands it to the worker with the
    /// fewest open connections when that is fewer than this one's.
    fn place(&self, stream: TcpStream, permit: OwnedSemaphorePermit) {
        let _ = stream.set_nodelay(true);
        let open = &self.shared.open;
        let (target, slot) = {
            let _placing = self.shared.placing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mine = open[self.me].get();
            let (least, fewest) =
                open.iter().map(Gauge::get).enumerate().min_by_key(|&(_, n)| n).unwrap_or((self.me, mine));
            let target = if fewest < mine { least } else { self.me };
            (target, Slot::new(permit, &open[target]))
        };
        if target != self.me {
            match stream.into_std() {
                // A worker that has stopped drops it (and its slot) unserved.
                Ok(stream) => drop(self.shared.inboxes[target].send(Handed { stream, slot })),
                Err(e) => tracing::debug!(error = %e, "cannot hand over a connection"),
            }
            return;
        }
        self.serve(stream, slot);
    }

    /// Serves a connection another worker handed over.
    fn take(&self, handed: Handed) {
        match TcpStream::from_std(handed.stream) {
            Ok(stream) => self.serve(stream, handed.slot),
            Err(e) => tracing::debug!(error = %e, "cannot take a connection handed over"),
        }
    }

    fn serve(&self, stream: TcpStream, slot: Slot) {
        let Some(tls) = &self.tls else {
            let connection = proxy::serve_connection(self.proxy.clone(), Socket::plain(stream), self.stopping.clone());
            self.tracker.spawn(async move {
                connection.await;
                drop(slot);
            });
            return;
        };
        let (tls, proxy, metrics, stopping) =
            (tls.clone(), self.proxy.clone(), self.metrics.clone(), self.stopping.clone());
        self.tracker.spawn(async move {
            let (_, header_timeout) = proxy.client_timeouts();
            let peer = stream.peer_addr().ok();
            match tls.accept(stream, header_timeout).await {
                Ok(Some(socket)) => {
                    metrics.record_tls_handshake("ok");
                    proxy::serve_connection(proxy, socket, stopping).await;
                }
                Ok(None) => {}
                Err((result, reason)) => {
                    metrics.record_tls_handshake(result);
                    tls.log_failure(peer, &reason);
                }
            }
            drop(slot);
        });
    }
}
