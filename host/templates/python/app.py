"""{{name}}: a placerd placer in Python.

`place` gets one call, reads the live load of the runners (the columns it needs, with
`wit_world.loads`) and returns the order to try them in. Change the algorithm below.

Build: componentize-py -d wit -w placer componentize app -o {{name}}.wasm
"""

import wit_world
from componentize_py_types import Err
from wit_world.imports.types import Continuation_Stop, LoadColumn, Order, Reuse

# The columns `place` reads, in one `loads` call: n values of each, one after the other.
COLUMNS = [LoadColumn.IN_FLIGHT, LoadColumn.HEALTHY]

n = 0


class WitWorld(wit_world.WitWorld):
    def configure(self, config):
        for key, _ in config:
            raise Err(f"{{name}} takes no config, got key {key!r}")

    def set_runners(self, generation, runners):
        global n
        n = len(runners)
        # The order depends on the loads, not on the call's slot hash alone.
        return Reuse.NEVER

    def place(self, call):
        loads = wit_world.loads(COLUMNS)
        if n == 0 or len(loads) < len(COLUMNS) * n:
            return Order([], Continuation_Stop())
        in_flight, healthy = loads[:n], loads[n:2 * n]
        start = call.slot_hash % n
        # Healthy first, then fewest in flight; ties broken per function.
        runners = sorted(range(n), key=lambda i: (not healthy[i], in_flight[i], (i - start) % n))
        return Order(runners, Continuation_Stop())
