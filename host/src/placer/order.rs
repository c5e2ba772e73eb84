//! What the host does with orders: clean a guest's output, and compute the native fallback.

use super::RunnerLoad;

/// Cleans a guest's order for a set of `n` runners in place: drops out-of-range and
/// repeated indices, keeping the first occurrence, and stops at `n` entries. Returns how
/// many entries were dropped (0 for a valid order).
pub fn sanitize(order: &mut Vec<u32>, n: usize) -> usize {
    // One byte per runner, on the stack up to 1,024 runners (no allocation per call). Bytes,
    // not bits: marking consecutive runners then touches different bytes, so one mark does
    // not wait for the one before it.
    let mut small = [false; 1024];
    let mut large = Vec::new();
    let seen: &mut [bool] = if n <= small.len() {
        &mut small[..n]
    } else {
        large.resize(n, false);
        &mut large
    };
    // Nearly every order is valid: check it in one pass that writes nothing back.
    if order.len() <= n && is_valid(order, seen) {
        return 0;
    }
    seen.fill(false);
    let original = order.len();
    let mut kept = 0;
    for i in 0..order.len() {
        if kept == n {
            break;
        }
        let idx = order[i] as usize;
        if let Some(slot) = seen.get_mut(idx)
            && !*slot
        {
            *slot = true;
            order[kept] = idx as u32;
            kept += 1;
        }
    }
    order.truncate(kept);
    original - kept
}

/// Whether every index of `order` is a runner of `seen` (one flag per runner, all clear on
/// entry) and none repeats, marking each. No branch per entry but the range check.
fn is_valid(order: &[u32], seen: &mut [bool]) -> bool {
    let mut repeated = false;
    for &idx in order {
        let Some(slot) = seen.get_mut(idx as usize) else {
            return false;
        };
        repeated |= *slot;
        *slot = true;
    }
    !repeated
}

/// The native naive order (round robin by `seq` over healthy runners), used when a placer
/// faults or is quarantined. It is the same code the `naive` guest runs.
pub fn fallback_order(seq: u64, loads: &[RunnerLoad]) -> Vec<u32> {
    let healthy: Vec<bool> = loads.iter().map(|l| l.healthy).collect();
    let mut out = Vec::with_capacity(loads.len());
    naive::order::order(seq, &healthy, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(mut v: Vec<u32>, n: usize) -> (Vec<u32>, usize) {
        let dropped = sanitize(&mut v, n);
        (v, dropped)
    }

    #[test]
    fn valid_orders_pass_untouched() {
        assert_eq!(clean(vec![2, 0, 1], 3), (vec![2, 0, 1], 0));
        assert_eq!(clean(vec![], 3), (vec![], 0));
        assert_eq!(clean(vec![1], 3), (vec![1], 0));
    }

    #[test]
    fn out_of_range_and_duplicates_are_dropped() {
        assert_eq!(clean(vec![4, u32::MAX, 0, 11, 1], 4), (vec![0, 1], 3));
        assert_eq!(clean(vec![1, 1, 0, 1, 0, 0], 4), (vec![1, 0], 4));
        // A repeat after a valid prefix, in a second word of the bitmap, at the end.
        let mut late: Vec<u32> = (0..100).collect();
        late.push(70);
        assert_eq!(clean(late, 200), ((0..100).collect(), 1));
        let over: Vec<u32> = (0..99).chain([100]).collect();
        assert_eq!(clean(over, 100), ((0..99).collect(), 1));
    }

    #[test]
    fn length_is_capped_at_the_set_size() {
        let big: Vec<u32> = (0..1_000_000).map(|i| i % 4).collect();
        assert_eq!(clean(big, 4), (vec![0, 1, 2, 3], 999_996));
        assert_eq!(clean(vec![0, 1, 2], 0), (vec![], 3));
    }

    #[test]
    fn fallback_is_round_robin_over_healthy() {
        let load = |healthy| RunnerLoad {
            in_flight: 0,
            reported_active: 0,
            recent_refusals: 0,
            healthy,
            ..RunnerLoad::default()
        };
        assert_eq!(fallback_order(4, &[load(true), load(true), load(true)]), vec![1, 2, 0]);
        assert_eq!(fallback_order(0, &[load(false), load(true), load(true)]), vec![1, 2]);
        assert!(fallback_order(0, &[]).is_empty());
    }
}
