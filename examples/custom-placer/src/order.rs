//! Least in-flight first; among equally loaded runners, a per-key rotation so that idle
//! runners still give each function a stable favourite (warm caches) instead of all calls
//! piling onto runner 0.

/// Orders runners by `in_flight + reported_active` (healthy first), ties by the key's
/// rotation: runner `(key_hash + k) % n` ranks before `(key_hash + k + 1) % n`. `key_hash`
/// is any stable hash of the call's affinity key (the component gets the host's
/// `slot-hash`).
pub fn order(key_hash: u64, loads: &[(u32, bool)]) -> Vec<u32> {
    let n = loads.len();
    if n == 0 {
        return Vec::new();
    }
    let start = (key_hash % n as u64) as usize;
    let mut ranked: Vec<u32> = (0..n).map(|k| ((start + k) % n) as u32).collect();
    // Stable sort: equal loads keep the rotation order.
    ranked.sort_by_key(|&i| {
        let (load, healthy) = loads[i as usize];
        (!healthy, load)
    });
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_runners_give_each_key_a_stable_favourite() {
        let idle = [(0, true); 4];
        let first = order(7, &idle)[0];
        assert_eq!(order(7, &idle)[0], first);
        assert_eq!(order(7, &idle).len(), 4);
    }

    #[test]
    fn the_least_loaded_healthy_runner_wins() {
        let loads = [(3, true), (1, true), (0, false), (2, true)];
        assert_eq!(order(3, &loads)[..3], [1, 3, 0]);
        assert_eq!(order(3, &loads)[3], 2);
    }
}
