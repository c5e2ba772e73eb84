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
//! Only a current-thread runtime is hooked: there the hook runs on the thread whose tasks
//! it wakes, before the runtime decides whether to sleep. Anywhere else (a multi-thread
//! runtime, a test's runtime) [`end`] steps to the back of the run queue instead.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Tasks put aside at most: the task that fills the list wakes them all (itself included)
/// without waiting for the hook, so a pass that never ends (a queue kept busy) still writes.
const MOST_WAITING: usize = 256;

thread_local! {
    static PASS: RefCell<Pass> = const { RefCell::new(Pass { hooked: false, waiting: Vec::new() }) };
}

struct Pass {
    /// This thread's runtime runs [`flush`] before it parks (set by the first park).
    hooked: bool,
    waiting: Vec<Waker>,
}

/// Hooks a current-thread runtime's park, so [`end`] waits for the end of its passes.
///
/// The thread learns of the hook when it first parks, and keeps it: a thread that has
/// driven a hooked runtime must not later drive one without the hook (`placerd` builds
/// one runtime per process).
pub fn install(builder: &mut tokio::runtime::Builder) {
    builder.on_thread_park(flush);
}

/// Wakes the tasks put aside in this pass. The runtime finds them queued and runs them
/// before it sleeps.
fn flush() {
    let waiting = PASS.with(|pass| {
        let mut pass = pass.borrow_mut();
        pass.hooked = true;
        std::mem::take(&mut pass.waiting)
    });
    wake_all(waiting);
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
pub fn end() -> End {
    End { waited: false }
}

/// The future of [`end`].
#[derive(Debug)]
pub struct End {
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
            if !pass.hooked {
                cx.waker().wake_by_ref();
                return None;
            }
            pass.waiting.push(cx.waker().clone());
            (pass.waiting.len() >= MOST_WAITING).then(|| std::mem::take(&mut pass.waiting))
        });
        if let Some(waiting) = full {
            wake_all(waiting);
        }
        Poll::Pending
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
}
