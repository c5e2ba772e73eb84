// round-robin: the built-in `naive` placer (guest-placers/naive) in JavaScript, to
// measure what the language costs: round robin over the healthy runners by the call's
// `seq`.
//
// The first choice is healthy runner number `seq % healthy` (in set order), then the ring
// from it, which the host expands (skipping unhealthy runners while any is healthy). With
// every runner healthy, or none, the ring starts at `seq % n`. Reads one column.
//
// Build (from this folder):
//   componentize-js --wit ../../../wit --world-name placer -d http fetch-event -o round-robin.wasm round-robin.js

import loads from "loads";

const HEALTHY = ["healthy"];
const STOP = { tag: "stop" };

export function configure(config) {
  for (const [key] of config) throw `round-robin takes no config, got key \`${key}\``;
}

export function setRunners(generation, runners) {
  return "never"; // the order depends on `seq` and on health
}

const ring = (start) => ({ runners: [], then: { tag: "ring", val: start } });

export function place(call) {
  const healthy = loads(HEALTHY);
  const n = healthy.length;
  if (n === 0) return { runners: [], then: STOP };
  let count = 0;
  for (let i = 0; i < n; i++) if (healthy[i]) count++;
  if (count === 0 || count === n) return ring(Number(call.seq % BigInt(n)));
  let nth = Number(call.seq % BigInt(count));
  for (let i = 0; i < n; i++) {
    if (healthy[i] && nth-- === 0) return ring(i);
  }
  return ring(0);
}
