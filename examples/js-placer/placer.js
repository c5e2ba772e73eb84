// A placer in JavaScript: power of two choices.
//
// For each call, two runners are picked from the call's own `random` value (so the same
// call gets the same order in `placerd simulate` and in production), and the less loaded
// of the two goes first, then the other (an unhealthy one is left out), then "the ring
// from the first", which the host expands (skipping unhealthy runners while any is
// healthy). Load is calls in flight from this host plus what the runner reports, plus a
// penalty for recent busy refusals. Two random choices spread load nearly as well as
// looking at every runner, at a fraction of the cost (Mitzenmacher, "The Power of Two
// Choices in Randomized Load Balancing"), and the work per call does not grow with the
// set, but for the one copy of the load columns.
//
// Build (from this folder, with componentize-js 0.23.0):
//
//   componentize-js --wit ../../wit --world-name placer -d http fetch-event -o js_placer.wasm placer.js

import loads from "loads";

// The columns `place` reads, in one `loads` call: n values of each, one after the other,
// column k of runner i at k * n + i.
const COLUMNS = ["in-flight", "reported-active", "recent-refusals", "healthy"];
const IN_FLIGHT = 0, REPORTED_ACTIVE = 1, RECENT_REFUSALS = 2, HEALTHY = 3; // k in COLUMNS
const STOP = { tag: "stop" };

let n = 0;
let refusalPenalty = 4;

export function configure(config) {
  for (const [key, value] of config) {
    if (key !== "refusal_penalty") {
      throw `unknown config key "${key}" (this placer takes refusal_penalty)`;
    }
    const parsed = Number(value);
    if (!Number.isInteger(parsed) || parsed < 0) {
      throw `refusal_penalty: expected a whole number >= 0, got "${value}"`;
    }
    refusalPenalty = parsed;
  }
}

export function setRunners(generation, runners) {
  n = runners.length;
  // The order depends on the call's random value and the loads, not on its slot hash.
  return "never";
}

export function place(call) {
  const view = loads(COLUMNS);
  if (n === 0 || view.length < COLUMNS.length * n) return { runners: new Uint32Array(0), then: STOP };
  const score = (i) =>
    view[IN_FLIGHT * n + i] + view[REPORTED_ACTIVE * n + i] + refusalPenalty * view[RECENT_REFUSALS * n + i];
  const healthy = (i) => view[HEALTHY * n + i] !== 0;
  // Two distinct runners from the call's random value (a BigInt: u64).
  const r = BigInt.asUintN(64, call.random);
  const a = Number(r % BigInt(n));
  let b = Number((r >> 32n) % BigInt(n));
  if (n > 1 && b === a) b = (a + 1) % n;
  // The less loaded first (the first drawn on a tie); unhealthy ones are left to the ring.
  const [first, second] = n > 1 && score(b) < score(a) ? [b, a] : [a, b];
  const listed = [];
  if (healthy(first)) listed.push(first);
  if (n > 1 && healthy(second)) listed.push(second);
  return { runners: new Uint32Array(listed), then: { tag: "ring", val: first } };
}
