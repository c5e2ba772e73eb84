//! Consistent-hash ordering (docs/placers.md), free of any Wasm or host dependency so it is
//! unit-tested natively.
//!
//! `slot-key` → SipHash-2-4 (Fn's keys) → jump consistent hash (Lamping & Veach 2014) →
//! that runner first, then the following runners in ring order. Optional bounded loads
//! (Mirrokni et al. 2018) move runners already above `max_load_factor` × average to the
//! back, keeping affinity for every key whose runner has room.

use core::hash::Hasher;
use siphasher::sip::SipHasher24;

/// SipHash key half `k0` used by Fn's consistent-hash placer.
pub const K0: u64 = 0;
/// SipHash key half `k1` used by Fn's consistent-hash placer ("LaryBoat").
pub const K1: u64 = 0x4c61_7279_426f_6174;

/// Which jump-hash arithmetic to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// The paper's floating-point step: balanced, minimal movement.
    #[default]
    Paper,
    /// Fn's Go code: the step uses integer division. Never picks index 1 first and loads
    /// some runners ~3x the average, but it is what a running Fn LB does.
    Fn,
}

/// How a key picks its runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Hash {
    /// Jump consistent hash over runner *indices*. Adding a runner at the end
    /// moves 1/n of the keys; removing one from the middle renumbers the runners after it.
    #[default]
    Jump,
    /// Rendezvous (highest random weight) hashing over runner *addresses*: a key ranks every
    /// runner by a hash of (key, address). Adding or removing any runner moves only the keys
    /// that rank it first. O(n) per call. For DNS-discovered sets, where runners leave from
    /// anywhere in the sorted order.
    Rendezvous,
}

/// The placer's `config` table, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Config {
    /// `hash = "jump" | "rendezvous"`.
    pub hash: Hash,
    /// Jump-hash arithmetic; `variant = "paper" | "fn"`.
    pub variant: Variant,
    /// Bounded loads: `max_load_factor = "1.25"`. `None` means plain consistent hashing.
    pub max_load_factor: Option<f64>,
}

impl Config {
    /// Parses the `config` table handed to `configure`.
    ///
    /// # Errors
    /// A message naming the key for an unknown key or a bad value.
    pub fn parse<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, String> {
        let mut config = Config::default();
        for (key, value) in pairs {
            match key {
                "variant" => {
                    config.variant = match value {
                        "paper" => Variant::Paper,
                        "fn" => Variant::Fn,
                        _ => return Err(format!("variant: expected \"paper\" or \"fn\", got {value:?}")),
                    }
                }
                "hash" => {
                    config.hash = match value {
                        "jump" => Hash::Jump,
                        "rendezvous" => Hash::Rendezvous,
                        _ => return Err(format!("hash: expected \"jump\" or \"rendezvous\", got {value:?}")),
                    }
                }
                "max_load_factor" => {
                    let factor: f64 = value
                        .trim()
                        .parse()
                        .map_err(|_| format!("max_load_factor: expected a number, got {value:?}"))?;
                    if !factor.is_finite() || factor < 1.0 {
                        return Err(format!("max_load_factor: must be a number >= 1.0, got {value:?}"));
                    }
                    config.max_load_factor = Some(factor);
                }
                _ => {
                    return Err(format!(
                        "unknown key `{key}` (consistent-hash takes `hash`, `variant` and `max_load_factor`)"
                    ));
                }
            }
        }
        if config.hash == Hash::Rendezvous && config.variant == Variant::Fn {
            return Err("variant: \"fn\" is a jump-hash variant; it cannot be used with hash = \"rendezvous\"".into());
        }
        Ok(config)
    }
}

/// What the algorithm needs to know of one runner's live state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Calls this host has placed on the runner and not finished.
    pub in_flight: u32,
    /// False while the runner is down or ejected.
    pub healthy: bool,
}

/// The live state the algorithm reads, one entry per runner: a slice of [`Load`], or the
/// host's load columns read in place ([`Columns`]).
pub trait Loads {
    /// Number of runners.
    fn len(&self) -> usize;
    /// Whether runner `i` is healthy.
    fn healthy(&self, i: usize) -> bool;
    /// Runner `i`'s in-flight calls.
    fn in_flight(&self, i: usize) -> u32;
    /// True when there are no runners.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Loads for [Load] {
    fn len(&self) -> usize {
        <[Load]>::len(self)
    }
    fn healthy(&self, i: usize) -> bool {
        self[i].healthy
    }
    fn in_flight(&self, i: usize) -> u32 {
        self[i].in_flight
    }
}

/// Two columns of the contract's load view, read where they lie (nonzero `healthy` means
/// healthy). The runners are the first `min` of both lengths.
#[derive(Debug, Clone, Copy)]
pub struct Columns<'a> {
    /// The in-flight column.
    pub in_flight: &'a [u32],
    /// The healthy column.
    pub healthy: &'a [u32],
}

impl Loads for Columns<'_> {
    fn len(&self) -> usize {
        self.in_flight.len().min(self.healthy.len())
    }
    fn healthy(&self, i: usize) -> bool {
        self.healthy[i] != 0
    }
    fn in_flight(&self, i: usize) -> u32 {
        self.in_flight[i]
    }
}

/// SipHash-2-4 of `key` with Fn's keys.
pub fn key_hash(key: &[u8]) -> u64 {
    let mut hasher = SipHasher24::new_with_keys(K0, K1);
    hasher.write(key);
    hasher.finish()
}

/// Jump consistent hash: the bucket in `0..buckets` for `key` (0 when `buckets` is 0).
pub fn jump(mut key: u64, buckets: u32, variant: Variant) -> u32 {
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < i64::from(buckets) {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = match variant {
            Variant::Paper => ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64,
            // Go: `(b + 1) * int64((1<<31)/(key>>33)+1)`. Go panics when key>>33 == 0
            // (p = 2^-31); we take the divisor as 1 instead, which ends the loop at `b`.
            Variant::Fn => {
                let step = (1u64 << 31).checked_div(key >> 33).unwrap_or(1u64 << 31) + 1;
                (b + 1).saturating_mul(step as i64)
            }
        };
    }
    b.max(0) as u32
}

/// Orders the runners for one call whose affinity key hashes to `hash` ([`key_hash`] of
/// the key: the host's `slot-hash`).
///
/// `addresses` holds [`key_hash`] of each runner's address, in set order; only
/// `hash = "rendezvous"` reads it. Unhealthy runners are left out unless all are unhealthy
/// (then all are offered).
///
/// Plain jump: the jump bucket, then the following runners in ring order. Plain
/// rendezvous: every runner by its rank for this key.
///
/// With `max_load_factor`, a runner whose in-flight count would exceed
/// `ceil(factor × (total + 1) / n)` goes behind the runners that have room. The runners
/// with room keep the key's own spill order: for jump, its jump bucket, then a second
/// bucket chosen by a second jump hash of the key over the other runners, then ring order
/// from there; for rendezvous, its ranking. A hot runner's keys therefore overflow to many
/// different neighbours, each key always to the same one, instead of all onto the next
/// runner clockwise (which then overflows onto its own neighbour, and so on): fewer keys
/// lose their runner and each spilled key finds its second runner warm.
///
/// `out` is cleared and filled, so a caller can reuse its allocation.
pub fn order<L: Loads + ?Sized>(config: &Config, hash: u64, loads: &L, addresses: &[u64], out: &mut Vec<u32>) {
    out.clear();
    let n = loads.len();
    if n == 0 {
        return;
    }
    match (config.hash, config.max_load_factor) {
        (Hash::Jump, None) => {
            let first = jump(hash, n as u32, config.variant) as usize;
            let healthy = (0..n).filter(|&i| loads.healthy(i)).count();
            if healthy == n || healthy == 0 {
                // Every runner is offered (the usual case): two plain ranges, no filter.
                out.extend(first as u32..n as u32);
                out.extend(0..first as u32);
            } else {
                emit(out, (first..n).chain(0..first), loads, None);
            }
        }
        (Hash::Jump, factor) => {
            let first = jump(hash, n as u32, config.variant) as usize;
            emit(out, spill_order(hash, first, n), loads, factor);
        }
        (Hash::Rendezvous, factor) => emit(out, rendezvous_ranking(hash, addresses, n), loads, factor),
    }
}

/// Appends `preference` (every runner index once, most preferred first) to `out`, leaving
/// out unhealthy runners unless all are unhealthy; with `factor`, runners at the bounded-load
/// cap go behind the others, each group in preference order.
fn emit<L: Loads + ?Sized>(
    out: &mut Vec<u32>,
    preference: impl Iterator<Item = usize> + Clone,
    loads: &L,
    factor: Option<f64>,
) {
    let n = loads.len();
    let any_healthy = (0..n).any(|i| loads.healthy(i));
    let usable = move |i: &usize| !any_healthy || loads.healthy(*i);
    let preference = preference.filter(usable);
    let Some(factor) = factor else {
        out.extend(preference.map(|i| i as u32));
        return;
    };
    let (count, total) =
        (0..n).filter(usable).fold((0u64, 0u64), |(c, t), i| (c + 1, t + u64::from(loads.in_flight(i))));
    let cap = (factor * (total + 1) as f64 / count as f64).ceil() as u64;
    let has_room = |i: &usize| u64::from(loads.in_flight(*i)) < cap;
    out.extend(preference.clone().filter(has_room).map(|i| i as u32));
    out.extend(preference.filter(|i| !has_room(i)).map(|i| i as u32));
}

/// Runner indices `0..n` by descending rendezvous weight `remix(key ^ address)`; ties (only
/// for equal address hashes) by index. Missing address hashes count as 0.
fn rendezvous_ranking(key: u64, addresses: &[u64], n: usize) -> impl Iterator<Item = usize> + Clone {
    let mut weights: Vec<(u64, usize)> =
        (0..n).map(|i| (remix(key ^ addresses.get(i).copied().unwrap_or(0)), i)).collect();
    weights.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    weights.into_iter().map(|(_, i)| i)
}

/// Every index in `0..n` once: `first`, then the key's second bucket (a jump hash of the
/// remixed key over the `n - 1` other runners), then the rest in ring order after it.
fn spill_order(hash: u64, first: usize, n: usize) -> impl Iterator<Item = usize> + Clone {
    let second = if n > 1 {
        let s = jump(remix(hash), (n - 1) as u32, Variant::Paper) as usize;
        if s >= first { s + 1 } else { s }
    } else {
        first
    };
    core::iter::once(first).chain((0..n).map(move |k| (second + k) % n).filter(move |&i| i != first))
}

/// SplitMix64's finaliser: an independent-looking second hash of the same key.
fn remix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn first(key: &str, n: u32, variant: Variant) -> u32 {
        jump(key_hash(key.as_bytes()), n, variant)
    }

    fn idle(n: usize) -> Vec<Load> {
        vec![Load { in_flight: 0, healthy: true }; n]
    }

    fn order_of(config: &Config, key: &str, loads: &[Load]) -> Vec<u32> {
        let mut out = Vec::new();
        order(config, key_hash(key.as_bytes()), loads, &[], &mut out);
        out
    }

    #[test]
    fn golden_vectors_paper() {
        assert_eq!(first("fn-0000", 10, Variant::Paper), 5);
        assert_eq!(first("my-app/hello", 3, Variant::Paper), 1);
        assert_eq!(first("", 8, Variant::Paper), 6);
        assert_eq!(first("fn", 2, Variant::Paper), 1);
    }

    #[test]
    fn golden_vectors_fn() {
        assert_eq!(first("fn-0000", 10, Variant::Fn), 9);
        assert_eq!(first("my-app/hello", 3, Variant::Fn), 2);
        assert_eq!(first("", 8, Variant::Fn), 6);
        assert_eq!(first("fn", 2, Variant::Fn), 0);
    }

    #[test]
    fn siphash_matches_the_reference_vector() {
        // SipHash-2-4 paper, appendix A: key 00..0f, message 00..0e.
        let mut h = SipHasher24::new_with_keys(0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
        h.write(&(0u8..15).collect::<Vec<_>>());
        assert_eq!(h.finish(), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn fn_variant_never_picks_index_one_first() {
        for n in 2..12 {
            for k in 0..2_000 {
                assert_ne!(first(&format!("fn-{k:04}"), n, Variant::Fn), 1, "n={n} k={k}");
            }
        }
    }

    #[test]
    fn every_key_maps_to_zero_in_fn_variant_with_two_runners() {
        for k in 0..1_000 {
            assert_eq!(first(&format!("key-{k}"), 2, Variant::Fn), 0);
        }
    }

    #[test]
    fn order_is_the_jump_bucket_then_ring_order() {
        let o = order_of(&Config::default(), "fn-0000", &idle(10));
        assert_eq!(o, vec![5, 6, 7, 8, 9, 0, 1, 2, 3, 4]);
    }

    #[test]
    fn hundred_thousand_keys_over_ten_runners_are_balanced() {
        let mut counts = [0u32; 10];
        for k in 0..100_000 {
            counts[first(&format!("app-{k}/fn"), 10, Variant::Paper) as usize] += 1;
        }
        let max = f64::from(*counts.iter().max().unwrap_or(&0));
        assert!(max / 10_000.0 <= 1.05, "max/avg = {} {counts:?}", max / 10_000.0);
    }

    #[test]
    fn fn_variant_is_visibly_unbalanced() {
        let mut counts = [0u32; 10];
        for k in 0..100_000 {
            counts[first(&format!("app-{k}/fn"), 10, Variant::Fn) as usize] += 1;
        }
        let max = f64::from(*counts.iter().max().unwrap_or(&0));
        assert!(max / 10_000.0 > 2.0, "{counts:?}");
        assert_eq!(counts[1], 0);
    }

    #[test]
    fn growing_ten_to_eleven_moves_few_keys_and_only_to_the_new_runner() {
        let keys = 100_000;
        let mut moved = 0;
        for k in 0..keys {
            let key = format!("app-{k}/fn");
            let (before, after) = (first(&key, 10, Variant::Paper), first(&key, 11, Variant::Paper));
            if before != after {
                assert_eq!(after, 10, "key {key} moved {before} -> {after}");
                moved += 1;
            }
        }
        let share = f64::from(moved) / f64::from(keys);
        assert!(share <= 1.0 / 11.0 + 0.01, "moved {share}");
        assert!(share > 0.05, "the new runner got almost nothing: {share}");
    }

    #[test]
    fn bounded_loads_skip_a_runner_above_factor_times_average() {
        let config = Config { max_load_factor: Some(1.25), ..Config::default() };
        let mut loads = idle(10);
        assert_eq!(order_of(&config, "fn-0000", &loads)[0], 5);
        // 10 in flight on runner 5, average 1.1 after this call: 5 is pushed to the back.
        loads[5].in_flight = 10;
        let o = order_of(&config, "fn-0000", &loads);
        // The others in the key's spill order (its second bucket, then ring order), 5 last.
        let second = o[0];
        assert_ne!(second, 5);
        let ring_from_second: Vec<u32> = (0..10).map(|k| (second + k) % 10).filter(|&i| i != 5).collect();
        assert_eq!(o[..9], ring_from_second[..]);
        assert_eq!(o[9], 5);
        assert_eq!(o, order_of(&config, "fn-0000", &loads), "the spill target is a function of the key");
        // Everyone equally busy: nobody is over the bound, affinity holds.
        let even = vec![Load { in_flight: 4, healthy: true }; 10];
        assert_eq!(order_of(&config, "fn-0000", &even)[0], 5);
        // Without the factor, load is ignored.
        assert_eq!(order_of(&Config::default(), "fn-0000", &loads)[0], 5);
    }

    #[test]
    fn a_hot_runners_keys_spill_to_many_neighbours_each_always_to_the_same_one() {
        let config = Config { max_load_factor: Some(1.25), ..Config::default() };
        let mut loads = idle(10);
        loads[3].in_flight = 20;
        let homed_on_3: Vec<String> =
            (0..5_000).map(|k| format!("fn-{k}")).filter(|k| first(k, 10, Variant::Paper) == 3).collect();
        assert!(homed_on_3.len() > 400);
        let mut spilled_to = [0usize; 10];
        for key in &homed_on_3 {
            let o = order_of(&config, key, &loads);
            assert_ne!(o[0], 3);
            assert_eq!(o, order_of(&config, key, &loads));
            spilled_to[o[0] as usize] += 1;
        }
        // Ring order would send all of them to runner 4; the second hash spreads them
        // evenly over the other nine (expected ~1/9 each).
        let expected = homed_on_3.len() / 9;
        for (i, &count) in spilled_to.iter().enumerate().filter(|&(i, _)| i != 3) {
            assert!(
                count > expected * 2 / 3 && count < expected * 4 / 3,
                "runner {i}: {count} of {}",
                homed_on_3.len()
            );
        }
    }

    fn addresses(n: usize) -> (Vec<String>, Vec<u64>) {
        let names: Vec<String> = (0..n).map(|i| format!("10.1.{}.{}:8080", i / 200, i % 200)).collect();
        let hashes = names.iter().map(|a| key_hash(a.as_bytes())).collect();
        (names, hashes)
    }

    fn rendezvous_first(key: &str, addresses: &[u64]) -> u32 {
        let config = Config { hash: Hash::Rendezvous, ..Config::default() };
        let mut out = Vec::new();
        order(&config, key_hash(key.as_bytes()), idle(addresses.len()).as_slice(), addresses, &mut out);
        out[0]
    }

    #[test]
    fn rendezvous_removing_any_runner_moves_only_its_keys_and_adding_one_moves_keys_only_to_it() {
        let (names, hashes) = addresses(10);
        let keys: Vec<String> = (0..20_000).map(|k| format!("app/fn-{k}")).collect();
        let before: Vec<&String> = keys.iter().map(|k| &names[rendezvous_first(k, &hashes) as usize]).collect();
        // Balance: each runner gets ~1/10.
        for name in &names {
            let share = before.iter().filter(|n| **n == name).count() as f64 / keys.len() as f64;
            assert!((0.085..0.115).contains(&share), "{name}: {share}");
        }
        // Remove runner 3 (middle of the sorted set): only its keys move.
        let (kept_names, kept_hashes): (Vec<String>, Vec<u64>) =
            names.iter().cloned().zip(hashes.iter().copied()).filter(|(n, _)| *n != names[3]).unzip();
        let mut moved = 0;
        for (k, key) in keys.iter().enumerate() {
            let after = &kept_names[rendezvous_first(key, &kept_hashes) as usize];
            if after != before[k] {
                assert_eq!(before[k], &names[3], "{key} moved off a runner that stayed");
                moved += 1;
            }
        }
        assert_eq!(moved, before.iter().filter(|n| ***n == names[3]).count());
        // Add an 11th: keys move only onto it, ~1/11 of them.
        let (more_names, more_hashes) = addresses(11);
        let mut onto_new = 0;
        for (k, key) in keys.iter().enumerate() {
            let after = &more_names[rendezvous_first(key, &more_hashes) as usize];
            if after != before[k] {
                assert_eq!(after, &more_names[10]);
                onto_new += 1;
            }
        }
        let share = onto_new as f64 / keys.len() as f64;
        assert!((0.075..0.107).contains(&share), "{share}");
    }

    #[test]
    fn rendezvous_bounded_loads_spill_along_the_keys_ranking() {
        let (_, hashes) = addresses(10);
        let config = Config { hash: Hash::Rendezvous, max_load_factor: Some(1.25), ..Config::default() };
        let mut loads = idle(10);
        let mut plain = Vec::new();
        order(
            &Config { hash: Hash::Rendezvous, ..Config::default() },
            key_hash(b"fn-0000"),
            loads.as_slice(),
            &hashes,
            &mut plain,
        );
        loads[plain[0] as usize].in_flight = 10;
        let mut bounded = Vec::new();
        order(&config, key_hash(b"fn-0000"), loads.as_slice(), &hashes, &mut bounded);
        assert_eq!(bounded[..9], plain[1..], "the key's next-ranked runners, in rank order");
        assert_eq!(bounded[9], plain[0], "the full runner last");
    }

    #[test]
    fn unhealthy_runners_are_left_out_unless_all_are() {
        let mut loads = idle(4);
        loads[1].healthy = false;
        let o = order_of(&Config::default(), "my-app/hello", &loads[..3]);
        assert_eq!(o, vec![2, 0]);
        let down = vec![Load { in_flight: 0, healthy: false }; 3];
        assert_eq!(order_of(&Config::default(), "my-app/hello", &down), vec![1, 2, 0]);
    }

    #[test]
    fn config_parsing_names_the_bad_key() {
        assert_eq!(
            Config::parse([("variant", "fn"), ("max_load_factor", "1.5")]),
            Ok(Config { variant: Variant::Fn, max_load_factor: Some(1.5), ..Config::default() })
        );
        assert_eq!(Config::parse([("hash", "rendezvous")]), Ok(Config { hash: Hash::Rendezvous, ..Config::default() }));
        assert!(Config::parse([("hash", "ring")]).is_err_and(|e| e.contains("hash")));
        assert!(Config::parse([("hash", "rendezvous"), ("variant", "fn")]).is_err_and(|e| e.contains("variant")));
        assert!(Config::parse([("variant", "ring")]).is_err_and(|e| e.contains("variant")));
        assert!(Config::parse([("max_load_factor", "0.5")]).is_err_and(|e| e.contains("max_load_factor")));
        assert!(Config::parse([("max_load_factor", "NaN")]).is_err());
        assert!(Config::parse([("replicas", "3")]).is_err_and(|e| e.contains("replicas")));
    }

    proptest! {
        #[test]
        fn removing_the_last_runner_remaps_only_its_keys(key: Vec<u8>, n in 2u32..200) {
            let h = key_hash(&key);
            let (before, after) = (jump(h, n, Variant::Paper), jump(h, n - 1, Variant::Paper));
            if before != n - 1 {
                prop_assert_eq!(before, after);
            }
        }

        #[test]
        fn the_host_columns_give_the_same_order_as_load_records(
            key: Vec<u8>,
            loads in proptest::collection::vec((0u32..50, any::<bool>()), 0..64),
            factor in proptest::option::of(1.0f64..4.0),
        ) {
            let records: Vec<Load> = loads.iter().map(|&(in_flight, healthy)| Load { in_flight, healthy }).collect();
            let in_flight: Vec<u32> = loads.iter().map(|l| l.0).collect();
            let healthy: Vec<u32> = loads.iter().map(|l| u32::from(l.1)).collect();
            let config = Config { max_load_factor: factor, ..Config::default() };
            let (mut from_records, mut from_columns) = (Vec::new(), Vec::new());
            order(&config, key_hash(&key), records.as_slice(), &[], &mut from_records);
            order(&config, key_hash(&key), &Columns { in_flight: &in_flight, healthy: &healthy }, &[], &mut from_columns);
            prop_assert_eq!(from_records, from_columns);
        }

        #[test]
        fn output_is_always_a_valid_order(
            key: Vec<u8>,
            loads in proptest::collection::vec((0u32..50, any::<bool>()), 0..64),
            factor in proptest::option::of(1.0f64..4.0),
            fn_variant: bool,
            rendezvous: bool,
        ) {
            let loads: Vec<Load> = loads.into_iter().map(|(in_flight, healthy)| Load { in_flight, healthy }).collect();
            let config = Config {
                hash: if rendezvous { Hash::Rendezvous } else { Hash::Jump },
                variant: if fn_variant && !rendezvous { Variant::Fn } else { Variant::Paper },
                max_load_factor: factor,
            };
            let addresses: Vec<u64> = (0..loads.len()).map(|i| key_hash(format!("10.0.0.{i}:80").as_bytes())).collect();
            let mut out = Vec::new();
            order(&config, key_hash(&key), loads.as_slice(), &addresses, &mut out);
            let mut seen = vec![false; loads.len()];
            for &i in &out {
                prop_assert!((i as usize) < loads.len());
                prop_assert!(!seen[i as usize]);
                seen[i as usize] = true;
            }
            let healthy = loads.iter().filter(|l| l.healthy).count();
            prop_assert_eq!(out.len(), if healthy == 0 { loads.len() } else { healthy });
        }
    }
}
