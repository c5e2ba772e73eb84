// empty: the floor of a JavaScript placer. `place` reads nothing and answers the ring
// from runner 0; what `placerd check --bench` measures is then the language's own cost
// per call (the crossing, the bindings, the engine's entry and exit).
//
// Build (from this folder):
//   componentize-js --wit ../../../wit --world-name placer -d http fetch-event -o empty.wasm empty.js

const ORDER = { runners: [], then: { tag: "ring", val: 0 } };

export function configure(config) {
  for (const [key] of config) throw `empty takes no config, got key "${key}"`;
}

export function setRunners(generation, runners) {
  // Never: the order depends on nothing, but every call is to reach `place`, whose cost
  // is what this placer is for.
  return "never";
}

export function place(call) {
  return ORDER;
}
