"""round-robin: the built-in `naive` placer (guest-placers/naive) in Python, to measure
what the language costs: round robin over the healthy runners by the call's `seq`.

The first choice is healthy runner number `seq % healthy` (in set order), then the ring
from it, which the host expands (skipping unhealthy runners while any is healthy). With
every runner healthy, or none, the ring starts at `seq % n`. Reads one column.

Build (from this folder): componentize-py -d ../../../wit -w placer componentize round_robin -o round-robin.wasm
"""

import wit_world
from componentize_py_types import Err
from wit_world.imports.types import Continuation_Ring, Continuation_Stop, LoadColumn, Order, Reuse

HEALTHY = [LoadColumn.HEALTHY]


class WitWorld(wit_world.WitWorld):
    def configure(self, config):
        for key, _ in config:
            raise Err(f"round-robin takes no config, got key `{key}`")

    def set_runners(self, generation, runners):
        return Reuse.NEVER  # the order depends on `seq` and on health

    def place(self, call):
        healthy = wit_world.loads(HEALTHY)
        n = len(healthy)
        if n == 0:
            return Order([], Continuation_Stop())
        count = n - healthy.count(0)
        if count == 0 or count == n:
            return Order([], Continuation_Ring(call.seq % n))
        nth = call.seq % count
        for i, h in enumerate(healthy):
            if h:
                if nth == 0:
                    return Order([], Continuation_Ring(i))
                nth -= 1
        return Order([], Continuation_Ring(0))
