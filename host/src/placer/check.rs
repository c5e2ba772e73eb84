//! Validation with sample calls: what `placerd check` prints and what a reload runs before
//! it publishes a version.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::engine::thread_cpu_time;
use super::error::LoadError;
use super::fault::FaultKind;
use super::version::{PlacedBy, PlacerVersion};
use super::{Call, CallKind, Runner, RunnerLoad, RunnerSet};

/// Sample calls after the printed ones, to catch placers that leak or fail only later.
const SOAK_CALLS: u64 = 200;

/// What a successful check saw.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// The sample runner set used.
    pub runners: RunnerSet,
    /// Each sample call and the order the placer gave it.
    pub orders: Vec<(Call, Vec<u32>)>,
    /// Calls made in all (samples, soak, membership change, reuse probes).
    pub calls: u64,
}

/// A synthetic runner set of `n` runners in two zones, as the check and reload use.
pub fn sample_runners(generation: u64, n: usize) -> RunnerSet {
    let runners = (0..n)
        .map(|i| Runner {
            address: format!("10.0.0.{}:8080", i + 1),
            labels: vec![("zone".into(), if i % 2 == 0 { "a".into() } else { "b".into() })],
        })
        .collect();
    RunnerSet { generation, runners }
}

/// Synthetic calls: distinct apps and functions, sync and detached, with extensions.
pub fn sample_calls(count: u64) -> Vec<Call> {
    (0..count)
        .map(|seq| {
            let app = format!("app-{}", seq % 3);
            let fn_id = format!("{app}/fn-{seq}");
            Call {
                id: format!("01CHECK{seq:019}"),
                app_id: app,
                slot_key: fn_id.clone(),
                fn_id,
                kind: if seq % 4 == 3 { CallKind::Detached } else { CallKind::Sync },
                seq,
                random: seq.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                extensions: vec![("check".into(), "1".into())],
            }
        })
        .collect()
}

fn sample_loads(n: usize, seq: u64) -> Vec<RunnerLoad> {
    (0..n)
        .map(|i| RunnerLoad {
            in_flight: ((seq as usize + i * 7) % 5) as u32,
            reported_active: (i % 3) as u32,
            recent_refusals: u32::from((i + seq as usize).is_multiple_of(11)),
            // Every runner but one is healthy in one load view of five.
            healthy: !(n > 2 && i == (seq as usize / 5) % n && seq % 5 == 4),
            // 0 for a runner that has served nothing yet, else 200-1180 µs.
            latency_us: if (i + seq as usize).is_multiple_of(13) {
                0
            } else {
                200 + ((i * 37 + seq as usize * 11) % 50) as u32 * 20
            },
            recent_errors: u32::from((i * 3 + seq as usize).is_multiple_of(7)),
        })
        .collect()
}

impl PlacerVersion {
    /// Runs sample placements and checks every order is valid: indices in range, no
    /// repeats, no longer than the set. Five printed samples on 5 runners, a soak of
    /// [`SOAK_CALLS`] calls, then a membership change to 3 runners; for a placer that lets
    /// the host reuse its orders, [`REUSE_PROBES`] keys placed twice by otherwise different
    /// calls, which must get the same order.
    ///
    /// # Errors
    /// [`LoadError::Validation`] naming the sample and what was wrong (fault, order, or a
    /// reuse promise broken).
    pub fn check(&self) -> Result<CheckReport, LoadError> {
        self.on_samples(|| self.run_samples())
    }

    /// Runs `samples` (a check's or a bench's calls, on synthetic runner sets), then
    /// leaves the version as a real call expects it: every instance forgets the synthetic
    /// sets, whose small generation numbers the real pool's may repeat, and this thread's
    /// instance goes to the shared pool, since a checking thread seldom places.
    fn on_samples<T>(&self, samples: impl FnOnce() -> T) -> T {
        let out = samples();
        self.forget_runners();
        self.release_local();
        out
    }

    fn run_samples(&self) -> Result<CheckReport, LoadError> {
        let fail = |reason: String, fault: Option<FaultKind>| LoadError::Validation {
            placer: self.name().to_string(),
            reason,
            fault,
        };
        let mut calls = 0;
        let mut run = |set: &RunnerSet, call: &Call| -> Result<Vec<u32>, LoadError> {
            calls += 1;
            let loads = sample_loads(set.len(), call.seq);
            let order = self.place_sample(call, set, &loads).map_err(|kind| {
                fail(format!("place faulted on sample call {} ({})", call.seq, call.fn_id), Some(kind))
            })?;
            validate_order(&order, set.len()).map_err(|why| {
                fail(format!("sample call {} ({}) got order {}: {why}", call.seq, call.fn_id, preview(&order)), None)
            })?;
            Ok(order)
        };

        let set = sample_runners(1, 5);
        let mut orders = Vec::new();
        for call in sample_calls(5) {
            let order = run(&set, &call)?;
            orders.push((call, order));
        }
        for call in sample_calls(5 + SOAK_CALLS).into_iter().skip(5) {
            run(&set, &call)?;
        }
        let smaller = sample_runners(2, 3);
        for call in sample_calls(5) {
            run(&smaller, &call)?;
        }
        let probes = self.check_reuse(&sample_runners(3, 5), &fail)?;
        Ok(CheckReport { runners: set, orders, calls: calls + probes })
    }

    /// For a placer that lets the host reuse its orders (`by-slot-hash`), whether they hold
    /// to that: each probe key is placed twice, by calls that differ in everything but the
    /// key and the runners' health, with the kept orders forgotten in between so the guest
    /// answers both. Different orders refuse the placer: the host would have answered the
    /// second call with the first's. Returns the calls it made.
    fn check_reuse(
        &self,
        set: &RunnerSet,
        fail: &impl Fn(String, Option<FaultKind>) -> LoadError,
    ) -> Result<u64, LoadError> {
        let mut calls = 0;
        for call in sample_calls(REUSE_PROBES) {
            let loads = sample_loads(set.len(), call.seq);
            let first = self.place_sample(&call, set, &loads);
            calls += 1;
            if !self.reuses_orders() {
                return Ok(calls);
            }
            self.forget_runners();
            let other = Call {
                seq: call.seq + 7_919,
                random: !call.random,
                kind: match call.kind {
                    CallKind::Sync => CallKind::Detached,
                    CallKind::Detached => CallKind::Sync,
                },
                ..call.clone()
            };
            let other_loads: Vec<RunnerLoad> = sample_loads(set.len(), other.seq)
                .into_iter()
                .zip(&loads)
                .map(|(other, first)| RunnerLoad { healthy: first.healthy, ..other })
                .collect();
            let second = self.place_sample(&other, set, &other_loads);
            calls += 1;
            let (first, second) = match (first, second) {
                (Ok(first), Ok(second)) => (first, second),
                (Err(kind), _) | (_, Err(kind)) => {
                    return Err(fail(
                        format!("place faulted on reuse probe {} ({})", call.seq, call.fn_id),
                        Some(kind),
                    ));
                }
            };
            if first != second {
                return Err(fail(
                    format!(
                        "set-runners answered by-slot-hash, but key {} got order {} and then {} from calls that \
                         differ only in seq, random, kind and loads: the host would have reused the first",
                        call.slot_key,
                        preview(&first),
                        preview(&second)
                    ),
                    None,
                ));
            }
        }
        Ok(calls)
    }

    /// One sample placement. The budget is wall-clock time, so on a busy machine a good
    /// placer can be preempted past it: a timed-out sample gets one more try on a fresh
    /// instance, and further tries (up to [`SAMPLE_TRIES`]) while the thread used less CPU
    /// than the budget. A placer that really loops uses the budget and fails by its
    /// second try.
    fn place_sample(&self, call: &Call, set: &RunnerSet, loads: &[RunnerLoad]) -> Result<Vec<u32>, FaultKind> {
        let mut tries = 0;
        loop {
            tries += 1;
            let cpu = thread_cpu_time();
            self.sampled.fetch_add(1, Ordering::Relaxed);
            let result = self.place_raw(call, set, loads, Instant::now()).map(|placed| placed.order);
            let preempted = || thread_cpu_time().saturating_sub(cpu) < self.shared.limits.budget;
            match result {
                Err(FaultKind::Timeout) if tries == 1 || (tries < SAMPLE_TRIES && preempted()) => continue,
                other => return other,
            }
        }
    }
}

/// Keys a check places twice to see a reusing placer keeps its word.
const REUSE_PROBES: u64 = 5;

/// Keys the bench places a second time (fewer than a guest's reused orders hold).
const REPEATED_KEYS: usize = 1024;

/// Tries of a sample call that keeps timing out without using its budget of CPU.
const SAMPLE_TRIES: u32 = 8;

/// What `placerd check --bench` measured: `place` through the sandbox, one call at a time.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Runners in the synthetic set.
    pub runners: usize,
    /// Calls timed (after a warm-up).
    pub calls: usize,
    /// Median time of one `place` (instance checkout, lowering, guest, lifting, cleaning).
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Linear memory of the warm instance afterwards.
    pub memory_bytes: usize,
    /// Whether the placer let the host reuse its orders for the bench's set (contract 0.4,
    /// `by-slot-hash`).
    pub reuses_orders: bool,
    /// Median time of a placement whose key was placed before: the same as `p50` for a
    /// placer that does not allow reuse, the host's lookup for one that does.
    pub repeated_p50: Duration,
    /// Calls that ran past the budget and were left out of the timing (the budget is
    /// wall-clock time: a busy machine can preempt a guest past it).
    pub timeouts: usize,
    /// Calls the bench placed in all, warm-up and repeated keys included.
    pub placed: usize,
    /// Instances retired for fresh ones during the bench (`placer_recycle_*`).
    pub recycles: u64,
    /// Of `recycles`, those whose replacement was not ready in time (the call waited for
    /// a fresh instance).
    pub late_recycles: u64,
    /// Average time to build a replacement (off the call path), if one was built.
    pub replacement: Duration,
}

impl PlacerVersion {
    /// Times `calls` placements over a synthetic set of `runners` runners with varying
    /// loads, after as many warm-up calls, through [`PlacerVersion::place`] (the path a
    /// call takes: instance pool, sandbox limits, output cleaning).
    ///
    /// # Errors
    /// [`LoadError::Validation`] when a call faults other than by running past the budget
    /// (a bench of fallback orders would measure the host, not the placer), or when more
    /// than 1% of the calls run past it.
    pub fn bench(&self, runners: usize, calls: usize) -> Result<BenchReport, LoadError> {
        self.on_samples(|| self.run_bench(runners, calls))
    }

    fn run_bench(&self, runners: usize, calls: usize) -> Result<BenchReport, LoadError> {
        let set = sample_runners(1, runners);
        // Each round's calls have keys of their own, so the timed round asks `place` even
        // of a placer whose orders the host may reuse; the last round repeats keys.
        let samples = sample_calls(2 * calls as u64);
        let repeated: Vec<Call> = samples[calls..].iter().take(REPEATED_KEYS).cloned().collect();
        let loads: Vec<Vec<RunnerLoad>> = (0..16).map(|seq| sample_loads(runners, seq)).collect();
        let mut times = Vec::with_capacity(calls);
        let mut repeated_times = Vec::with_capacity(repeated.len());
        let mut timeouts = 0;
        let (recycles, late_recycles) = (self.recycles(), self.late_recycles());
        let mut placed = 0;
        for round in 0..4 {
            let (these, mut timed) = match round {
                0 => (&samples[..calls], None),
                1 => (&samples[calls..], Some(&mut times)),
                2 => {
                    // The orders kept in round 1 go: the repeated keys are asked once here.
                    self.forget_runners();
                    (&repeated[..], None)
                }
                _ => (&repeated[..], Some(&mut repeated_times)),
            };
            placed += these.len();
            for (i, call) in these.iter().enumerate() {
                let started = Instant::now();
                let placed = self.place(call, &set, &loads[i % loads.len()]).map_err(|e| LoadError::Validation {
                    placer: self.name().into(),
                    reason: e.to_string(),
                    fault: None,
                })?;
                let took = started.elapsed();
                match placed.by {
                    PlacedBy::Fallback(FaultKind::Timeout) if timeouts * 100 < calls => timeouts += 1,
                    PlacedBy::Fallback(kind) => {
                        let reason = if kind == FaultKind::Timeout {
                            format!(
                                "more than 1% of the bench's calls ran past the {} ms budget ({} by call {}): \
                                 the placer is too slow for it, or the machine is busy (--budget-ms sets another \
                                 budget)",
                                self.shared.limits.budget.as_millis(),
                                timeouts + 1,
                                call.seq
                            )
                        } else {
                            format!("place faulted during the bench on call {}", call.seq)
                        };
                        return Err(LoadError::Validation { placer: self.name().into(), reason, fault: Some(kind) });
                    }
                    PlacedBy::Guest { .. } => {
                        if let Some(timed) = timed.as_deref_mut() {
                            timed.push(took);
                        }
                    }
                }
            }
        }
        times.sort_unstable();
        repeated_times.sort_unstable();
        let at = |times: &[Duration], q: f64| {
            times.get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1))).copied()
        };
        Ok(BenchReport {
            runners,
            calls: times.len(),
            p50: at(&times, 0.5).unwrap_or_default(),
            p99: at(&times, 0.99).unwrap_or_default(),
            memory_bytes: self.instance_memory_bytes(),
            reuses_orders: self.reuses_orders(),
            repeated_p50: at(&repeated_times, 0.5).unwrap_or_default(),
            timeouts,
            placed,
            recycles: self.recycles() - recycles,
            late_recycles: self.late_recycles() - late_recycles,
            replacement: Duration::from_nanos(self.replacement_nanos_avg()),
        })
    }
}

/// Why `order` is not a valid order of `n` runners, if it is not.
fn validate_order(order: &[u32], n: usize) -> Result<(), String> {
    if order.len() > n {
        return Err(format!("{} entries for {n} runners", order.len()));
    }
    let mut seen = vec![false; n];
    for &i in order {
        match seen.get_mut(i as usize) {
            None => return Err(format!("index {i} is out of range for {n} runners")),
            Some(true) => return Err(format!("index {i} appears twice")),
            Some(slot) => *slot = true,
        }
    }
    Ok(())
}

/// The first entries of a possibly huge order, for error messages.
fn preview(order: &[u32]) -> String {
    if order.len() <= 8 { format!("{order:?}") } else { format!("{:?}... ({} entries)", &order[..8], order.len()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_order_names_the_problem() {
        assert!(validate_order(&[2, 0, 1], 3).is_ok());
        assert!(validate_order(&[], 3).is_ok());
        assert_eq!(validate_order(&[0, 3], 3), Err("index 3 is out of range for 3 runners".into()));
        assert_eq!(validate_order(&[1, 1], 3), Err("index 1 appears twice".into()));
        assert_eq!(validate_order(&[0, 1, 2, 0], 3), Err("4 entries for 3 runners".into()));
    }

    /// The check's synthetic sets (generations 1 and 2) must not stand in for a real set
    /// that happens to have the same generation: a pool that starts empty and fills in is
    /// at generation 2 when the first call comes.
    #[test]
    fn the_first_real_set_after_a_check_is_told_even_with_the_same_generation() {
        let runtime = crate::placer::PlacerRuntime::new(crate::placer::SandboxLimits {
            budget: std::time::Duration::from_secs(1),
            ..crate::placer::SandboxLimits::default()
        })
        .expect("runtime");
        let bytes = crate::placer::builtin("naive").expect("embedded");
        let version = runtime.load("naive", crate::placer::PlacerSource::Builtin, bytes, Vec::new()).expect("loads");
        version.check().expect("passes");
        let real = sample_runners(2, 1);
        let call = &sample_calls(1)[0];
        for _ in 0..5 {
            let placed = version.place(call, &real, &[RunnerLoad::default()]).expect("placed");
            assert_eq!(placed.order, [0], "the one real runner, by the guest: {:?}", placed.by);
            assert!(matches!(placed.by, PlacedBy::Guest { cleaned: 0 }), "{:?}", placed.by);
        }
    }
}
