//! Round-robin ordering, free of any Wasm or host dependency so it is unit-tested natively
//! and reused by the host as its native fallback order (docs/lifecycle.md).

/// Orders `healthy.len()` runners for the call with host sequence number `seq`.
///
/// True round robin over the healthy runners: the first choice is healthy runner number
/// `seq % healthy_count` (in set order), then the other healthy runners follow in ring order.
/// When every runner is healthy this starts at `seq % n`, as Fn's naive placer does. Starting from
/// the healthy subset rather than skipping forward from `seq % n` keeps the spread even
/// while some runners are down (skipping forward would double the load of the runner just
/// after a dead one). Unhealthy runners are left out, unless all are unhealthy: then every
/// runner is offered (panic mode), because trying a runner we think is down beats refusing.
///
/// `out` is cleared and filled, so a caller can reuse its allocation.
pub fn order(seq: u64, healthy: &[bool], out: &mut Vec<u32>) {
    out.clear();
    let n = healthy.len();
    let Some((start, every)) = start(seq, healthy) else {
        return;
    };
    if every {
        out.extend((0..n).map(|i| ((start + i) % n) as u32));
    } else {
        out.extend((0..n).map(|i| (start + i) % n).filter(|&i| healthy[i]).map(|i| i as u32));
    }
}

/// Where [`order`]'s ring starts for call `seq`, and whether every runner is offered (all
/// healthy, or none); `None` for an empty set. The order is the ring from there, skipping
/// unhealthy runners unless every runner is offered: what contract 0.3's `ring`
/// continuation expands to, so the component answers with this index alone.
pub fn start(seq: u64, healthy: &[bool]) -> Option<(usize, bool)> {
    let n = healthy.len();
    if n == 0 {
        return None;
    }
    let healthy_count = healthy.iter().filter(|h| **h).count();
    if healthy_count == 0 || healthy_count == n {
        return Some(((seq % n as u64) as usize, true));
    }
    let nth = (seq % healthy_count as u64) as usize;
    Some((healthy.iter().enumerate().filter(|(_, h)| **h).nth(nth).map_or(0, |(i, _)| i), false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn order_of(seq: u64, healthy: &[bool]) -> Vec<u32> {
        let mut out = Vec::new();
        order(seq, healthy, &mut out);
        out
    }

    #[test]
    fn starts_at_seq_mod_n_then_ring_order() {
        let all = [true; 5];
        assert_eq!(order_of(0, &all), vec![0, 1, 2, 3, 4]);
        assert_eq!(order_of(7, &all), vec![2, 3, 4, 0, 1]);
        assert_eq!(order_of(u64::MAX, &all), vec![0, 1, 2, 3, 4]); // u64::MAX % 5 == 0
    }

    #[test]
    fn ten_thousand_calls_over_seven_runners_differ_by_at_most_one() {
        let all = [true; 7];
        let mut first = [0u32; 7];
        for seq in 0..10_000 {
            first[order_of(seq, &all)[0] as usize] += 1;
        }
        let (min, max) = (first.iter().min(), first.iter().max());
        assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "{first:?}");
        assert_eq!(first.iter().sum::<u32>(), 10_000);
    }

    #[test]
    fn unhealthy_runners_are_left_out_and_the_rest_stay_even() {
        let healthy = [true, false, true, true, false, true, true];
        let mut first = [0u32; 7];
        for seq in 0..10_000 {
            let o = order_of(seq, &healthy);
            assert_eq!(o.len(), 5);
            assert!(o.iter().all(|&i| healthy[i as usize]));
            first[o[0] as usize] += 1;
        }
        assert_eq!(first[1] + first[4], 0);
        let used: Vec<u32> = first.iter().copied().filter(|c| *c > 0).collect();
        assert!(used.iter().max().unwrap_or(&0) - used.iter().min().unwrap_or(&0) <= 1);
    }

    #[test]
    fn all_unhealthy_offers_everyone() {
        assert_eq!(order_of(1, &[false; 3]), vec![1, 2, 0]);
    }

    #[test]
    fn empty_set_gives_empty_order() {
        assert!(order_of(3, &[]).is_empty());
    }

    proptest! {
        #[test]
        fn output_is_a_valid_order(seq: u64, healthy in proptest::collection::vec(any::<bool>(), 0..40)) {
            let o = order_of(seq, &healthy);
            let mut seen = vec![false; healthy.len()];
            for &i in &o {
                prop_assert!((i as usize) < healthy.len());
                prop_assert!(!seen[i as usize], "duplicate {}", i);
                seen[i as usize] = true;
            }
            let healthy_count = healthy.iter().filter(|h| **h).count();
            let expected = if healthy_count == 0 { healthy.len() } else { healthy_count };
            prop_assert_eq!(o.len(), expected);
        }
    }
}
