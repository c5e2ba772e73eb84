//! Power of two choices (Mitzenmacher) over live load, free of any Wasm or host dependency
//! so it is unit-tested natively.
//!
//! Load = calls this host has in flight on the runner + the runner's own reported active
//! count. Two distinct healthy runners are drawn with the call's `random`; the less loaded
//! goes first. The rest follow by load, ties broken by a rotation from `random` so idle
//! fleets do not pile onto index 0. P2C avoids the herd that "always the least loaded"
//! causes when many placers act on the same slightly stale loads.

/// What the algorithm needs of one runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Calls placed on it by this host and not finished.
    pub in_flight: u32,
    /// Active calls it last reported.
    pub reported_active: u32,
    /// False while down or ejected.
    pub healthy: bool,
}

impl Load {
    fn total(&self) -> u64 {
        u64::from(self.in_flight) + u64::from(self.reported_active)
    }
}

/// Orders `loads.len()` runners for a call with per-call random value `random`.
/// Unhealthy runners are left out unless all are unhealthy. `out` is cleared and filled.
pub fn order(random: u64, loads: &[Load], out: &mut Vec<u32>) {
    out.clear();
    let any_healthy = loads.iter().any(|l| l.healthy);
    out.extend((0..loads.len() as u32).filter(|&i| !any_healthy || loads[i as usize].healthy));
    let m = out.len();
    if m < 2 {
        return;
    }
    // Rotate by `random` so equal loads are spread, then sort by load (stable).
    out.rotate_left((random % m as u64) as usize);
    out.sort_by_key(|&i| loads[i as usize].total());
    // Two distinct candidates from `random`; the less loaded one goes first.
    let a = ((random >> 16) % m as u64) as usize;
    let mut b = ((random >> 40) % (m as u64 - 1)) as usize;
    if b >= a {
        b += 1;
    }
    let (ia, ib) = (out[a], out[b]);
    let first = if loads[ib as usize].total() < loads[ia as usize].total() { ib } else { ia };
    if let Some(pos) = out.iter().position(|&i| i == first) {
        out.remove(pos);
        out.insert(0, first);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn load(in_flight: u32, healthy: bool) -> Load {
        Load { in_flight, reported_active: 0, healthy }
    }

    fn order_of(random: u64, loads: &[Load]) -> Vec<u32> {
        let mut out = Vec::new();
        order(random, loads, &mut out);
        out
    }

    #[test]
    fn the_first_is_the_lighter_of_two_random_choices() {
        let loads = [load(9, true), load(0, true), load(5, true), load(7, true)];
        for r in 0..1_000u64 {
            let random = r.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let o = order_of(random, &loads);
            assert_eq!(o.len(), 4);
            // The heaviest can never win a comparison against another runner.
            assert_ne!(o[0], 0, "random {random}");
        }
    }

    #[test]
    fn the_rest_follow_by_load() {
        let loads = [load(3, true), load(1, true), load(2, true), load(0, true)];
        let o = order_of(12345, &loads);
        let rest: Vec<u64> = o[1..].iter().map(|&i| loads[i as usize].total()).collect();
        assert!(rest.windows(2).all(|w| w[0] <= w[1]), "{o:?}");
    }

    #[test]
    fn idle_runners_share_first_place_evenly() {
        let idle = [load(0, true); 8];
        let mut first = [0u32; 8];
        let mut state = 1u64;
        for _ in 0..80_000 {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            first[order_of(state, &idle)[0] as usize] += 1;
        }
        let (min, max) = (first.iter().min().copied().unwrap_or(0), first.iter().max().copied().unwrap_or(0));
        assert!(f64::from(max) / f64::from(min.max(1)) < 1.1, "{first:?}");
    }

    #[test]
    fn unhealthy_runners_are_left_out_unless_all_are() {
        let loads = [load(0, false), load(4, true), load(1, true)];
        let o = order_of(7, &loads);
        assert_eq!(o.len(), 2);
        assert!(!o.contains(&0));
        assert_eq!(order_of(7, &[load(0, false), load(1, false)]).len(), 2);
        assert_eq!(order_of(7, &[load(3, true)]), vec![0]);
        assert!(order_of(7, &[]).is_empty());
    }

    proptest! {
        #[test]
        fn output_is_always_a_valid_order(random: u64, raw in proptest::collection::vec((0u32..20, 0u32..20, any::<bool>()), 0..64)) {
            let loads: Vec<Load> = raw.into_iter().map(|(a, b, h)| Load { in_flight: a, reported_active: b, healthy: h }).collect();
            let o = order_of(random, &loads);
            let mut seen = vec![false; loads.len()];
            for &i in &o {
                prop_assert!(!seen[i as usize]);
                seen[i as usize] = true;
            }
            let healthy = loads.iter().filter(|l| l.healthy).count();
            prop_assert_eq!(o.len(), if healthy == 0 { loads.len() } else { healthy });
        }
    }
}
