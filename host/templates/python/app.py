"""{{name}}: a placerd placer in Python.

`place` gets one call and the live load of every runner and returns the order to try
them in. Change the algorithm below.

Build: componentize-py -d wit -w placer componentize app -o {{name}}.wasm
"""

import wit_world
from componentize_py_types import Err

# Columns of `loads`, in the order of the contract's `load-column` enum.
IN_FLIGHT, REPORTED_ACTIVE, RECENT_REFUSALS, HEALTHY = 0, 1, 2, 3

n = 0


class WitWorld(wit_world.WitWorld):
    def configure(self, config):
        for key, _ in config:
            raise Err(f"{{name}} takes no config, got key {key!r}")

    def set_runners(self, generation, runners):
        global n
        n = len(runners)

    def place(self, call, loads):
        if n == 0 or len(loads) < (HEALTHY + 1) * n:
            return []
        in_flight = loads[IN_FLIGHT * n:(IN_FLIGHT + 1) * n]
        healthy = loads[HEALTHY * n:(HEALTHY + 1) * n]
        start = call.slot_hash % n
        # Healthy first, then fewest in flight; ties broken per function.
        return sorted(range(n), key=lambda i: (not healthy[i], in_flight[i], (i - start) % n))
