//! Least in-flight first; among equally loaded runners, a per-key rotation so that idle
//! runners still give each function a stable favourite (warm caches) instead of all calls
//! piling onto runner 0.

/// FNV-1a, 64 bit: a small, stable hash for the tie-break.
pub fn fnv1a(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// Orders runners by `in_flight + reported_active` (healthy first), ties by the key's
/// rotation: runner `(hash + k) % n` ranks before `(hash + k + 1) % n`.
pub fn order(slot_key: &[u8], loads: &[(u32, bool)]) -> Vec<u32> {
    let n = loads.len();
    if n == 0 {
        return Vec::new();
    }
    let start = (fnv1a(slot_key) % n as u64) as usize;
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
        let first = order(b"app/fn", &idle)[0];
        assert_eq!(order(b"app/fn", &idle)[0], first);
        assert_eq!(order(b"app/fn", &idle).len(), 4);
    }

    #[test]
    fn the_least_loaded_healthy_runner_wins() {
        let loads = [(3, true), (1, true), (0, false), (2, true)];
        assert_eq!(order(b"k", &loads)[..3], [1, 3, 0]);
        assert_eq!(order(b"k", &loads)[3], 2);
    }
}
