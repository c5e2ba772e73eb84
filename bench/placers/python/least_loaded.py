"""least-loaded: the built-in `least-loaded` placer (guest-placers/least-loaded) in
Python, to measure what the language costs: power of two choices over live load.

Load = in-flight + reported-active. Unhealthy runners are left out unless all are. The
runners are rotated by `random % m` (so idle fleets spread), sorted by load (stable); two
distinct candidates drawn from `random` (bits 16 and 40 up), and the less loaded one
moves to the front. Reads three columns in one `loads` call; lists every runner it offers.

Build (from this folder): componentize-py -d ../../../wit -w placer componentize least_loaded -o least-loaded.wasm
"""

import wit_world
from componentize_py_types import Err
from wit_world.imports.types import Continuation_Stop, LoadColumn, Order, Reuse

COLUMNS = [LoadColumn.IN_FLIGHT, LoadColumn.REPORTED_ACTIVE, LoadColumn.HEALTHY]

n = 0


class WitWorld(wit_world.WitWorld):
    def configure(self, config):
        for key, _ in config:
            raise Err(f"least-loaded takes no config, got key `{key}`")

    def set_runners(self, generation, runners):
        global n
        n = len(runners)
        return Reuse.NEVER  # the order depends on `random` and the loads

    def place(self, call):
        loads = wit_world.loads(COLUMNS)
        if len(loads) < len(COLUMNS) * n:
            return Order([], Continuation_Stop())
        total = [a + b for a, b in zip(loads[:n], loads[n:2 * n])]
        healthy = loads[2 * n:3 * n]
        out = [i for i in range(n) if healthy[i]] if any(healthy) else list(range(n))
        m = len(out)
        if m < 2:
            return Order(out, Continuation_Stop())
        r = call.random
        k = r % m
        out = out[k:] + out[:k]
        out.sort(key=total.__getitem__)  # stable
        a = (r >> 16) % m
        b = (r >> 40) % (m - 1)
        if b >= a:
            b += 1
        ia, ib = out[a], out[b]
        first = ib if total[ib] < total[ia] else ia
        out.remove(first)
        out.insert(0, first)
        return Order(out, Continuation_Stop())
