"""A placer in Python: consistent hashing with bounded loads.

Each function keeps to its own runner (its warm containers stay useful) until that runner
carries more than `max_load_factor` times the average calls in flight; then the call goes
to the next runner round the ring with room, as in "Consistent Hashing with Bounded
Loads" (Mirrokni, Thorup and Zadimoghaddam). A function's place on the ring is its jump
consistent hash (Lamping and Veach), as in the built-in consistent-hash: adding a runner
moves only the functions that now go to it. The answer is the runner chosen and "then the
ring from the function's place", which the host expands (skipping unhealthy runners while
any is healthy): the work per call does not grow with the set, but for one sum.

Build (from this folder, with componentize-py 0.25.1):

    componentize-py -d ../../wit -w placer componentize app -o python_placer.wasm
"""

import wit_world
from componentize_py_types import Err
from wit_world.imports.types import Continuation_Ring, Continuation_Stop, LoadColumn, Order, Reuse

# The columns `place` reads, in one `loads` call: n values of each, one after the other.
COLUMNS = [LoadColumn.IN_FLIGHT, LoadColumn.HEALTHY]
MASK = (1 << 64) - 1


def jump(key, buckets):
    """Jump consistent hash: the bucket in [0, buckets) of a 64-bit key."""
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & MASK
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


factor = 1.25
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
        global n
        n = len(runners)
        # The order depends on the loads, not on the function's slot hash alone.
        return Reuse.NEVER

    def place(self, call):
        loads = wit_world.loads(COLUMNS)
        if n == 0 or len(loads) < len(COLUMNS) * n:
            return Order([], Continuation_Stop())
        in_flight, healthy = loads[:n], loads[n:2 * n]
        start = jump(call.slot_hash, n)
        # The bound: factor x the average, counting this call, at least 1.
        bound = max(1.0, factor * (sum(in_flight) + 1) / n)
        # Round the ring from the function's place to the first healthy runner with room.
        for step in range(n):
            i = (start + step) % n
            if healthy[i] and in_flight[i] + 1 <= bound:
                return Order([i], Continuation_Ring(start))
        # None has room: the ring as it is.
        return Order([], Continuation_Ring(start))
