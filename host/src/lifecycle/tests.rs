//! Fn's placer-tracker scenarios against fake pools and runners, on tokio's paused clock.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use super::*;
use crate::placer::{CallKind, PlaceError, RunnerLoad, RunnerSet};
use crate::runner::Membership;

const DELAY: Duration = Duration::from_millis(10);
const TIMEOUT: Duration = Duration::from_secs(2);

fn timing() -> Timing {
    Timing { retry_all_delay: DELAY, placer_timeout: TIMEOUT, detached: false }
}

fn call() -> Call {
    Call {
        id: "c1".into(),
        app_id: "app".into(),
        fn_id: "app/fn".into(),
        kind: CallKind::Sync,
        slot_key: "app/fn".into(),
        seq: 0,
        random: 0,
        extensions: Vec::new(),
    }
}

/// Answers snapshots from a script; the last entry repeats.
struct FakePool {
    script: Vec<Result<usize, PoolError>>,
    asked: AtomicU32,
}

impl FakePool {
    fn new(script: Vec<Result<usize, PoolError>>) -> Self {
        FakePool { script, asked: AtomicU32::new(0) }
    }
    fn asked(&self) -> u32 {
        self.asked.load(Ordering::SeqCst)
    }
}

impl RunnerPool for FakePool {
    /// A fake runner's handle is its index.
    type Handle = usize;
    fn snapshot(&self) -> Result<Arc<Membership<usize>>, PoolError> {
        let i = self.asked.fetch_add(1, Ordering::SeqCst) as usize;
        let step = self.script[i.min(self.script.len() - 1)].clone();
        step.map(|n| {
            let set = Arc::new(RunnerSet::from_addresses(i as u64, (0..n).map(|r| format!("runner-{r}:1"))));
            Arc::new(Membership { set, handles: (0..n).collect() })
        })
    }
    fn loads(&self, membership: &Membership<usize>) -> Vec<RunnerLoad> {
        vec![
            RunnerLoad { in_flight: 0, reported_active: 0, recent_refusals: 0, healthy: true, ..RunnerLoad::default() };
            membership.handles.len()
        ]
    }
}

/// Each runner refuses `refusals[i]` times, then accepts (u32::MAX: refuses forever).
struct FakeRunners {
    refusals: Vec<u32>,
    tried: Mutex<Vec<u32>>,
    latency: Duration,
}

impl FakeRunners {
    fn new(refusals: Vec<u32>) -> Self {
        let n = refusals.len();
        FakeRunners { refusals, tried: Mutex::new(vec![0; n]), latency: Duration::ZERO }
    }
    fn tried(&self) -> Vec<u32> {
        self.tried.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

impl TryExec<(), usize> for FakeRunners {
    type Output = usize;
    async fn try_exec(&self, &index: &usize, _call: &()) -> Attempt<usize> {
        let n = {
            let mut tried = self.tried.lock().expect("lock");
            tried[index] += 1;
            tried[index]
        };
        if n <= self.refusals[index] {
            return Attempt::NotPlaced(NotPlaced::Busy);
        }
        tokio::time::sleep(self.latency).await;
        Attempt::Committed(Ok(index))
    }
}

struct InOrder;

impl Order for InOrder {
    fn order(&self, _call: &Call, set: &RunnerSet, _loads: &[RunnerLoad]) -> Result<Vec<u32>, PlaceError> {
        Ok((0..set.len() as u32).collect())
    }
}

async fn run(pool: &FakePool, runners: &FakeRunners, timing: Timing) -> Outcome<usize> {
    place(pool, runners, &InOrder, &call(), &(), timing).await
}

#[tokio::test(start_paused = true)]
async fn empty_set_with_user_error_fails_fast_asking_the_pool_once() {
    let pool = FakePool::new(vec![Err(PoolError::User("no runners for app".into()))]);
    let runners = FakeRunners::new(vec![]);
    let started = Instant::now();
    let out = run(&pool, &runners, timing()).await;
    assert_eq!(out.result, Err(CallError::Pool(PoolError::User("no runners for app".into()))));
    assert_eq!(out.result.as_ref().err().map(CallError::status), Some(hyper::StatusCode::BAD_GATEWAY));
    assert_eq!(pool.asked(), 1);
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn empty_set_without_error_keeps_asking_until_the_placer_timeout_then_503() {
    let pool = FakePool::new(vec![Ok(0)]);
    let started = Instant::now();
    let out = run(&pool, &FakeRunners::new(vec![]), timing()).await;
    assert_eq!(out.result, Err(CallError::TooBusy));
    assert_eq!(out.result.as_ref().err().map(CallError::status), Some(hyper::StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(started.elapsed(), TIMEOUT);
    // Every ~10 ms (±20% jitter) for 2 s.
    assert!((150..=260).contains(&pool.asked()), "asked {}", pool.asked());
}

#[tokio::test(start_paused = true)]
async fn empty_set_with_service_error_keeps_asking_then_returns_that_error() {
    let pool = FakePool::new(vec![Err(PoolError::Service("dns down".into()))]);
    let started = Instant::now();
    let out = run(&pool, &FakeRunners::new(vec![]), timing()).await;
    assert_eq!(out.result, Err(CallError::Pool(PoolError::Service("dns down".into()))));
    assert_eq!(started.elapsed(), TIMEOUT);
    assert!(pool.asked() > 100);
}

#[tokio::test(start_paused = true)]
async fn refusing_runners_are_each_tried_twice_then_user_error_fails_fast() {
    let pool = FakePool::new(vec![Ok(2), Ok(2), Err(PoolError::User("gone".into()))]);
    let runners = FakeRunners::new(vec![u32::MAX, u32::MAX]);
    let out = run(&pool, &runners, timing()).await;
    assert_eq!(out.result, Err(CallError::Pool(PoolError::User("gone".into()))));
    assert_eq!(runners.tried(), vec![2, 2]);
    assert_eq!(pool.asked(), 3);
    assert_eq!((out.attempts, out.busy), (4, 4));
}

#[tokio::test(start_paused = true)]
async fn runners_refusing_forever_get_503_at_the_deadline_with_attempts_split_evenly() {
    let pool = FakePool::new(vec![Ok(2)]);
    let runners = FakeRunners::new(vec![u32::MAX, u32::MAX]);
    let started = Instant::now();
    let out = run(&pool, &runners, timing()).await;
    assert_eq!(out.result, Err(CallError::TooBusy));
    assert_eq!(started.elapsed(), TIMEOUT);
    let tried = runners.tried();
    assert!(tried[0].abs_diff(tried[1]) <= 1, "{tried:?}");
    assert!(tried[0] > 100, "{tried:?}");
}

#[tokio::test(start_paused = true)]
async fn detached_placement_deadline_is_a_reservation_failure() {
    let pool = FakePool::new(vec![Ok(1)]);
    let runners = FakeRunners::new(vec![u32::MAX]);
    let out = run(&pool, &runners, Timing { detached: true, ..timing() }).await;
    assert_eq!(out.result, Err(CallError::ReservationFailure));
    assert_eq!(out.result.as_ref().err().map(CallError::status), Some(hyper::StatusCode::INTERNAL_SERVER_ERROR));
}

#[tokio::test(start_paused = true)]
async fn a_refusal_moves_the_call_to_the_next_runner() {
    let pool = FakePool::new(vec![Ok(3)]);
    let runners = FakeRunners::new(vec![1, 0, 0]);
    let out = run(&pool, &runners, timing()).await;
    assert_eq!(out.result, Ok(1));
    assert_eq!(runners.tried(), vec![1, 1, 0]);
    assert_eq!(out.runner.as_deref(), Some("runner-1:1"));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_stops_placement_and_no_runner_is_tried_after() {
    // A client that goes away makes hyper drop the call's future: that is the cancel.
    let runners = Arc::new(FakeRunners::new(vec![u32::MAX, u32::MAX]));
    let task = {
        let runners = runners.clone();
        tokio::spawn(async move {
            let pool = FakePool::new(vec![Ok(2)]);
            place(&pool, &*runners, &InOrder, &call(), &(), timing()).await
        })
    };
    tokio::time::sleep(Duration::from_millis(105)).await;
    let tried_before = runners.tried();
    assert!(tried_before.iter().sum::<u32>() > 0, "placement had started");
    task.abort();
    assert!(task.await.is_err_and(|e| e.is_cancelled()));
    tokio::time::sleep(DELAY * 10).await;
    assert_eq!(runners.tried(), tried_before, "a runner was tried after the call was dropped");
}

#[tokio::test(start_paused = true)]
async fn placer_deadline_never_cuts_a_placed_call() {
    let pool = FakePool::new(vec![Ok(1)]);
    let mut runners = FakeRunners::new(vec![0]);
    runners.latency = TIMEOUT * 3; // runs far past the placer deadline
    let started = Instant::now();
    let out = run(&pool, &runners, timing()).await;
    assert_eq!(out.result, Ok(0));
    assert_eq!(started.elapsed(), TIMEOUT * 3);
    assert_eq!(out.placement_time, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn placer_rejection_fails_the_call_with_500() {
    struct Rejecting;
    impl Order for Rejecting {
        fn order(&self, _: &Call, _: &RunnerSet, _: &[RunnerLoad]) -> Result<Vec<u32>, PlaceError> {
            Err(PlaceError::Rejected { placer: "p".into(), kind: crate::placer::FaultKind::Timeout })
        }
    }
    let pool = FakePool::new(vec![Ok(2)]);
    let runners = FakeRunners::new(vec![0, 0]);
    let out = place(&pool, &runners, &Rejecting, &call(), &(), timing()).await;
    assert_eq!(out.result.as_ref().err().map(CallError::status), Some(hyper::StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(runners.tried(), vec![0, 0]);
}
