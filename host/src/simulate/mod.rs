//! `placerd simulate`: runs placers offline, the real Wasm components through the real
//! runtime, over one synthetic (or recorded) workload, and reports balance, movement and
//! affinity side by side.
//!
//! The model: one call arrives per tick; each runs for a service time drawn uniformly from
//! `1..2·concurrency` ticks, so about `concurrency` calls are in flight (Little's law) and
//! the placers see real in-flight counts in `runner-load`. Runners never refuse. Keys
//! (slot keys) are uniform or Zipf-distributed over `keys` functions, or taken from a trace
//! written by `placerd serve --record-trace`. Every placer sees the identical call
//! sequence (same keys, service times and `random` values, from one seed).
//!
//! Affinity is reported two ways: *same-runner* (the call went where its key's previous
//! call went) and *warm-hit* (the runner ran this key within the last [`WARM_WINDOW`]
//! calls, so a container for it would still be warm). Spilling a hot key between two
//! runners costs same-runner hits but keeps both warm.
//!
//! # Layout
//! - `mod.rs`: workload, the simulation loop and its [`Report`].
//! - `html`: the self-contained HTML/SVG rendering.

pub mod html;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use crate::placer::{Call, CallKind, LoadError, PlacerRuntime, PlacerSource, PlacerVersion, RunnerLoad, RunnerSet};

/// How keys are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform,
    /// Zipf with exponent `s` (1.1 is a typical hot-key skew).
    Zipf(f64),
}

/// A runner membership change during the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new runner joins at the end of the list.
    Add,
    /// The runner at this index leaves.
    Remove(usize),
}

/// A membership change at a call index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// Index of the first call that sees the new membership.
    pub at: usize,
    /// What changes.
    pub change: Change,
}

impl std::str::FromStr for Event {
    type Err = String;

    /// `add@50000` or `remove:3@80000`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (what, at) = s.split_once('@').ok_or_else(|| format!("expected add@N or remove:I@N, got {s:?}"))?;
        let at = at.parse().map_err(|_| format!("bad call index in {s:?}"))?;
        let change = match what.split_once(':') {
            None if what == "add" => Change::Add,
            Some(("remove", i)) => Change::Remove(i.parse().map_err(|_| format!("bad runner index in {s:?}"))?),
            _ => return Err(format!("expected add@N or remove:I@N, got {s:?}")),
        };
        Ok(Event { at, change })
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Runners at the start.
    pub runners: usize,
    /// Distinct keys (functions).
    pub keys: usize,
    /// Key distribution.
    pub dist: KeyDist,
    /// Calls in all.
    pub calls: usize,
    /// Calls in flight on average.
    pub concurrency: usize,
    /// Membership changes, in call order.
    pub events: Vec<Event>,
    /// Seed for keys, service times and per-call randoms.
    pub seed: u64,
    /// Keys from a recorded trace instead of `dist` (cycled if shorter than `calls`).
    pub trace_keys: Option<Vec<String>>,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            runners: 10,
            keys: 10_000,
            dist: KeyDist::Zipf(1.1),
            calls: 100_000,
            concurrency: 64,
            events: vec![Event { at: 50_000, change: Change::Add }],
            seed: 42,
            trace_keys: None,
        }
    }
}

/// A placer to compare: a label, its component and its config.
#[derive(Debug, Clone)]
pub struct Contender {
    /// Shown in reports, e.g. `consistent-hash:fn`.
    pub label: String,
    /// Component bytes.
    pub bytes: Vec<u8>,
    /// `configure` table.
    pub config: Vec<(String, String)>,
}

impl Contender {
    /// The built-ins, plus consistent-hash in Fn's variant and with bounded loads 1.25.
    pub fn defaults() -> Vec<Contender> {
        let builtin = |name: &str| crate::placer::builtin(name).map(<[u8]>::to_vec).unwrap_or_default();
        let pair = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        vec![
            Contender { label: "naive".into(), bytes: builtin("naive"), config: vec![] },
            Contender { label: "consistent-hash".into(), bytes: builtin("consistent-hash"), config: vec![] },
            Contender {
                label: "consistent-hash:fn".into(),
                bytes: builtin("consistent-hash"),
                config: pair("variant", "fn"),
            },
            Contender {
                label: "consistent-hash:bounded-1.25".into(),
                bytes: builtin("consistent-hash"),
                config: pair("max_load_factor", "1.25"),
            },
            Contender {
                label: "consistent-hash:rendezvous".into(),
                bytes: builtin("consistent-hash"),
                config: pair("hash", "rendezvous"),
            },
            Contender { label: "least-loaded".into(), bytes: builtin("least-loaded"), config: vec![] },
        ]
    }
}

/// What happened to one placer.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The contender's label.
    pub placer: String,
    /// Calls per runner (address) in the final membership phase, in runner order.
    pub per_runner: Vec<(String, u64)>,
    /// Max / average of `per_runner`.
    pub max_over_avg: f64,
    /// Coefficient of variation of `per_runner`.
    pub cv: f64,
    /// Worst in-flight max / average seen at the samples (every 100 calls).
    pub peak_inflight_ratio: f64,
    /// Share of calls that went to the same runner as the previous call of their key
    /// (strict affinity).
    pub same_runner_ratio: f64,
    /// Share of calls placed on a runner that ran the same key within the last
    /// [`WARM_WINDOW`] calls: its container would still be warm.
    pub warm_hit_ratio: f64,
    /// Per membership change: its description and the share of keys whose first choice
    /// (idle runners) moved.
    pub moved: Vec<(String, f64)>,
    /// Calls that got the native fallback order because the placer faulted.
    pub faults: u64,
}

/// How long (in calls) a runner stays warm for a key after running it.
pub const WARM_WINDOW: u64 = 1_000;

/// splitmix64: a small, good, seedable generator; no dependency.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One generated call: key index, service ticks, random.
#[derive(Debug, Clone)]
struct Planned {
    key: String,
    service: u64,
    random: u64,
}

fn plan(w: &Workload) -> Vec<Planned> {
    let mut rng = Rng(w.seed);
    let cdf: Vec<f64> = match w.dist {
        KeyDist::Uniform => Vec::new(),
        KeyDist::Zipf(s) => {
            let mut acc = 0.0;
            let mut cdf: Vec<f64> = (1..=w.keys.max(1))
                .map(|k| {
                    acc += 1.0 / (k as f64).powf(s);
                    acc
                })
                .collect();
            cdf.iter_mut().for_each(|c| *c /= acc);
            cdf
        }
    };
    let max_service = (2 * w.concurrency.max(1) - 1) as u64;
    (0..w.calls)
        .map(|i| {
            let key = match (&w.trace_keys, w.dist) {
                (Some(keys), _) if !keys.is_empty() => keys[i % keys.len()].clone(),
                (_, KeyDist::Uniform) => format!("app/fn-{}", rng.next() % w.keys.max(1) as u64),
                (_, KeyDist::Zipf(_)) => {
                    let u = rng.unit();
                    format!("app/fn-{}", cdf.partition_point(|c| *c < u))
                }
            };
            Planned { key, service: 1 + rng.next() % max_service, random: rng.next() }
        })
        .collect()
}

fn call(seq: u64, key: &str, random: u64) -> Call {
    Call {
        id: format!("sim-{seq}"),
        app_id: "app".into(),
        fn_id: key.to_string(),
        kind: CallKind::Sync,
        slot_key: key.to_string(),
        seq,
        random,
        extensions: Vec::new(),
    }
}

fn set_of(generation: u64, ids: &[usize]) -> RunnerSet {
    RunnerSet::from_addresses(generation, ids.iter().map(|id| format!("10.0.{}.{}:8080", id / 250, id % 250)))
}

/// Runs every contender over the workload.
///
/// # Errors
/// A contender that fails to load.
pub fn simulate(runtime: &PlacerRuntime, w: &Workload, contenders: &[Contender]) -> Result<Vec<Report>, LoadError> {
    let planned = plan(w);
    let mut reports = Vec::new();
    for c in contenders {
        let version = runtime.load(&c.label, PlacerSource::Admin, &c.bytes, c.config.clone())?;
        reports.push(run(&version, w, &planned, &c.label));
    }
    Ok(reports)
}

fn run(version: &Arc<PlacerVersion>, w: &Workload, planned: &[Planned], label: &str) -> Report {
    let mut ids: Vec<usize> = (0..w.runners).collect();
    let mut next_id = w.runners;
    let mut generation = 1;
    let mut set = set_of(generation, &ids);
    let mut in_flight: HashMap<usize, u32> = HashMap::new();
    let mut finishing: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut calls: HashMap<usize, u64> = HashMap::new();
    let mut last_runner: HashMap<&str, usize> = HashMap::new();
    let mut last_run_here: HashMap<(&str, usize), u64> = HashMap::new();
    let (mut hits, mut warm, mut repeats, mut faults) = (0u64, 0u64, 0u64, 0u64);
    let mut peak_ratio: f64 = 0.0;
    let mut moved = Vec::new();
    let mut events = w.events.clone();
    events.sort_by_key(|e| e.at);
    let mut events = events.into_iter().peekable();

    for (i, p) in planned.iter().enumerate() {
        let tick = i as u64;
        while finishing.peek().is_some_and(|Reverse((t, _))| *t <= tick) {
            if let Some(Reverse((_, id))) = finishing.pop()
                && let Some(n) = in_flight.get_mut(&id)
            {
                *n = n.saturating_sub(1);
            }
        }
        while events.peek().is_some_and(|e| e.at <= i) {
            let Some(e) = events.next() else { break };
            let before = set.clone();
            let description = match e.change {
                Change::Add => {
                    ids.push(next_id);
                    next_id += 1;
                    format!("add@{}", e.at)
                }
                Change::Remove(index) if index < ids.len() && ids.len() > 1 => {
                    ids.remove(index);
                    format!("remove:{index}@{}", e.at)
                }
                Change::Remove(index) => format!("remove:{index}@{} (ignored)", e.at),
            };
            generation += 1;
            set = set_of(generation, &ids);
            moved.push((description, moved_share(version, &before, &set, planned)));
            calls.clear(); // balance is measured over the final phase
        }
        let loads: Vec<RunnerLoad> = ids
            .iter()
            .map(|id| RunnerLoad {
                in_flight: in_flight.get(id).copied().unwrap_or(0),
                reported_active: 0,
                recent_refusals: 0,
                healthy: true,
                ..RunnerLoad::default()
            })
            .collect();
        let placement = match version.place(&call(tick, &p.key, p.random), &set, &loads) {
            Ok(p) => p,
            Err(_) => continue,
        };
        if matches!(placement.by, crate::placer::PlacedBy::Fallback(_)) {
            faults += 1;
        }
        let Some(&index) = placement.order.first() else { continue };
        let id = ids[index as usize];
        *in_flight.entry(id).or_default() += 1;
        *calls.entry(id).or_default() += 1;
        finishing.push(Reverse((tick + p.service, id)));
        if let Some(prev) = last_runner.insert(p.key.as_str(), id) {
            repeats += 1;
            if prev == id {
                hits += 1;
            }
            if last_run_here.get(&(p.key.as_str(), id)).is_some_and(|t| tick - t <= WARM_WINDOW) {
                warm += 1;
            }
        }
        last_run_here.insert((p.key.as_str(), id), tick);
        if i % 100 == 99 {
            let counts: Vec<f64> = ids.iter().map(|id| f64::from(in_flight.get(id).copied().unwrap_or(0))).collect();
            let avg = counts.iter().sum::<f64>() / counts.len() as f64;
            if avg >= 1.0 {
                peak_ratio = peak_ratio.max(counts.iter().copied().fold(0.0, f64::max) / avg);
            }
        }
    }

    let per_runner: Vec<(String, u64)> =
        ids.iter().zip(&set.runners).map(|(id, r)| (r.address.clone(), calls.get(id).copied().unwrap_or(0))).collect();
    let values: Vec<f64> = per_runner.iter().map(|(_, c)| *c as f64).collect();
    let avg = values.iter().sum::<f64>() / values.len().max(1) as f64;
    let max = values.iter().copied().fold(0.0, f64::max);
    let var = values.iter().map(|v| (v - avg).powi(2)).sum::<f64>() / values.len().max(1) as f64;
    Report {
        placer: label.to_string(),
        per_runner,
        max_over_avg: if avg > 0.0 { max / avg } else { 0.0 },
        cv: if avg > 0.0 { var.sqrt() / avg } else { 0.0 },
        peak_inflight_ratio: peak_ratio,
        same_runner_ratio: if repeats > 0 { hits as f64 / repeats as f64 } else { 0.0 },
        warm_hit_ratio: if repeats > 0 { warm as f64 / repeats as f64 } else { 0.0 },
        moved,
        faults,
    }
}

/// Share of the workload's distinct keys whose first choice (idle runners, the same call
/// fields) changes from `before` to `after`, compared by address.
fn moved_share(version: &PlacerVersion, before: &RunnerSet, after: &RunnerSet, planned: &[Planned]) -> f64 {
    let mut keys: Vec<&Planned> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for p in planned {
        if seen.insert(p.key.as_str()) {
            keys.push(p);
        }
        if keys.len() == 10_000 {
            break;
        }
    }
    let first = |set: &RunnerSet, p: &Planned| {
        let idle = vec![
            RunnerLoad {
                in_flight: 0,
                reported_active: 0,
                recent_refusals: 0,
                healthy: true,
                ..RunnerLoad::default()
            };
            set.len()
        ];
        version
            .place(&call(0, &p.key, p.random), set, &idle)
            .ok()
            .and_then(|pl| pl.order.first().map(|&i| set.runners[i as usize].address.clone()))
    };
    let moved = keys.iter().filter(|p| first(before, p) != first(after, p)).count();
    moved as f64 / keys.len().max(1) as f64
}

/// The slot keys of a trace written by `placerd serve --record-trace`, in call order.
///
/// # Errors
/// A line that is not JSON or has no `slot_key`, naming the line; an empty trace.
pub fn trace_keys(text: &str) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("line {}: not JSON: {e}", n + 1))?;
        let key = v["slot_key"].as_str().ok_or_else(|| format!("line {}: no slot_key", n + 1))?;
        keys.push(key.to_string());
    }
    if keys.is_empty() {
        return Err("no calls in the trace".into());
    }
    Ok(keys)
}

/// The reports as a plain-text table.
pub fn table(reports: &[Report]) -> String {
    let mut out = String::new();
    let events: Vec<String> =
        reports.first().map(|r| r.moved.iter().map(|(e, _)| e.clone()).collect()).unwrap_or_default();
    out.push_str(&format!(
        "{:<30} {:>8} {:>7} {:>9} {:>9} {:>9}",
        "placer", "max/avg", "CV", "peak i/f", "same-run", "warm-hit"
    ));
    for e in &events {
        out.push_str(&format!(" {:>16}", format!("moved {e}")));
    }
    out.push('\n');
    for r in reports {
        out.push_str(&format!(
            "{:<30} {:>8.3} {:>7.3} {:>9.2} {:>8.1}% {:>8.1}%",
            r.placer,
            r.max_over_avg,
            r.cv,
            r.peak_inflight_ratio,
            r.same_runner_ratio * 100.0,
            r.warm_hit_ratio * 100.0
        ));
        for (_, share) in &r.moved {
            out.push_str(&format!(" {:>15.1}%", share * 100.0));
        }
        if r.faults > 0 {
            out.push_str(&format!("  ({} faults)", r.faults));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse() {
        assert_eq!("add@10".parse(), Ok(Event { at: 10, change: Change::Add }));
        assert_eq!("remove:3@7".parse(), Ok(Event { at: 7, change: Change::Remove(3) }));
        assert!("drop@1".parse::<Event>().is_err());
    }

    #[test]
    fn zipf_keys_are_skewed_and_uniform_keys_are_not() {
        let zipf = plan(&Workload { calls: 20_000, keys: 1_000, ..Workload::default() });
        let hot = zipf.iter().filter(|p| p.key == "app/fn-0").count();
        assert!(hot > 20_000 / 20, "hot key only {hot}");
        let uniform = plan(&Workload { calls: 20_000, keys: 1_000, dist: KeyDist::Uniform, ..Workload::default() });
        let hot = uniform.iter().filter(|p| p.key == "app/fn-0").count();
        assert!(hot < 60, "uniform key 0 drew {hot}");
    }
}
