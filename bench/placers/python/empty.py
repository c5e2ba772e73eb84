"""empty: the floor of a Python placer. `place` reads nothing and answers the ring from
runner 0; what `placerd check --bench` measures is then the language's own cost per call
(the crossing, the bindings, the interpreter's entry and exit).

Build (from this folder): componentize-py -d ../../../wit -w placer componentize empty -o empty.wasm
"""

import wit_world
from componentize_py_types import Err
from wit_world.imports.types import Continuation_Ring, Order, Reuse


class WitWorld(wit_world.WitWorld):
    def configure(self, config):
        for key, _ in config:
            raise Err(f"empty takes no config, got key {key!r}")

    def set_runners(self, generation, runners):
        # Never: the order depends on nothing, but every call is to reach `place`, whose
        # cost is what this placer is for.
        return Reuse.NEVER

    def place(self, call):
        return Order([], Continuation_Ring(0))
