"""A placer in Python: consistent hashing with bounded loads.

Each function keeps to its runner on a hash ring (its warm containers stay useful) until
that runner carries more than `max_load_factor` times the average calls in flight; then
the call walks on to the next runner on the ring with room (Mirrokni, Thorup and
Zadimoghaddam, "Consistent Hashing with Bounded Loads"). Unhealthy runners go last.

Build (from this folder, with componentize-py 0.25.1):

    componentize-py -d ../../wit -w placer componentize app -o python_placer.wasm
"""

import wit_world
from componentize_py_types import Err

# Columns of `loads`, in the order of the contract's `load-column` enum.
IN_FLIGHT, REPORTED_ACTIVE, RECENT_REFUSALS, HEALTHY = 0, 1, 2, 3

# Virtual points per runner on the ring: more points, smoother shares.
POINTS = 40
MASK = (1 << 64) - 1


def mix(x):
    """SplitMix64's finaliser: a well-spread 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def text_hash(text):
    """FNV-1a over the UTF-8 bytes, then mixed."""
    h = 0xCBF29CE484222325
    for b in text.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK
    return mix(h)


factor = 1.25
ring = []  # sorted (point, runner index)
n = 0


class WitWorld(wit_world.WitWorld):
    def configure(self, config):
        global factor
        for key, value in config:
            if key != "max_load_factor":
                raise Err(f"unknown config key {key!r} (this placer takes max_load_factor)")
            try:
                factor = float(value)
            except ValueError:
                raise Err(f"max_load_factor: expected a number, got {value!r}")
            if not factor >= 1.0:
                raise Err(f"max_load_factor: must be at least 1.0, got {value}")

    def set_runners(self, generation, runners):
        # Points come from the runner's address, so a runner keeps its arcs of the ring
        # when others join or leave.
        global ring, n
        n = len(runners)
        ring = sorted(
            (mix(text_hash(r.address) ^ p), i) for i, r in enumerate(runners) for p in range(POINTS)
        )

    def place(self, call, loads):
        if n == 0 or len(loads) < (HEALTHY + 1) * n:
            return []
        in_flight = loads[IN_FLIGHT * n:(IN_FLIGHT + 1) * n]
        healthy = loads[HEALTHY * n:(HEALTHY + 1) * n]
        # The bound: factor x the average, counting this call, at least 1.
        bound = max(1.0, factor * (sum(in_flight) + 1) / n)
        start = first_point(call.slot_hash)
        order, seen, over = [], set(), []
        for k in range(len(ring)):
            runner = ring[(start + k) % len(ring)][1]
            if runner in seen:
                continue
            seen.add(runner)
            if healthy[runner] and in_flight[runner] + 1 <= bound:
                order.append(runner)
            else:
                over.append(runner)
            if len(seen) == n:
                break
        # Over the bound or unhealthy: still tried, after every runner with room; healthy
        # ones first.
        order += [r for r in over if healthy[r]] + [r for r in over if not healthy[r]]
        return order


def first_point(key_hash):
    """Index of the first ring point at or after `key_hash` (binary search)."""
    lo, hi = 0, len(ring)
    while lo < hi:
        mid = (lo + hi) // 2
        if ring[mid][0] < key_hash:
            lo = mid + 1
        else:
            hi = mid
    return lo % len(ring)
