"""A placer in Python: rendezvous hashing with bounded loads.

Each function keeps to its own runner (its warm containers stay useful) until that runner
carries more than `max_load_factor` times the average calls in flight; then the call goes
to the function's next runner with room. A function's runners are ranked by rendezvous
(highest random weight) hashing, so adding or removing a runner moves only the functions
whose first choice it is; the load bound is the one of "Consistent Hashing with Bounded
Loads" (Mirrokni, Thorup and Zadimoghaddam). Unhealthy runners go last.

Build (from this folder, with componentize-py 0.25.1):

    componentize-py -d ../../wit/v0.2 -w placer componentize app -o python_placer.wasm
"""

import wit_world
from componentize_py_types import Err

# Columns of `loads`, in the order of the contract's `load-column` enum.
IN_FLIGHT, REPORTED_ACTIVE, RECENT_REFUSALS, HEALTHY = 0, 1, 2, 3
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
runner_hashes = []  # one per runner, from its address: stable across set changes
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
        global runner_hashes, n
        n = len(runners)
        runner_hashes = [text_hash(r.address) for r in runners]

    def place(self, call, loads):
        if n == 0 or len(loads) < (HEALTHY + 1) * n:
            return []
        in_flight = loads[IN_FLIGHT * n:(IN_FLIGHT + 1) * n]
        healthy = loads[HEALTHY * n:(HEALTHY + 1) * n]
        # The function's runners, best first: highest weight of (function, runner).
        key = call.slot_hash
        weights = [((key ^ h) * 0x9E3779B97F4A7C15) & MASK for h in runner_hashes]
        ranked = sorted(range(n), key=weights.__getitem__, reverse=True)
        # The bound: factor x the average, counting this call, at least 1.
        bound = max(1.0, factor * (sum(in_flight) + 1) / n)
        room = [i for i in ranked if healthy[i] and in_flight[i] + 1 <= bound]
        # Over the bound or unhealthy: still tried, after every runner with room; healthy
        # ones first.
        full = [i for i in ranked if healthy[i] and in_flight[i] + 1 > bound]
        sick = [i for i in ranked if not healthy[i]]
        return room + full + sick
