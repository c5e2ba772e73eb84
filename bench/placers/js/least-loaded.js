// least-loaded: the built-in `least-loaded` placer (guest-placers/least-loaded) in
// JavaScript, to measure what the language costs: power of two choices over live load.
//
// Load = in-flight + reported-active. Unhealthy runners are left out unless all are. The
// runners are rotated by `random % m` (so idle fleets spread), sorted by load (stable);
// two distinct candidates drawn from `random` (bits 16 and 40 up), and the less loaded
// one moves to the front. Reads three columns in one `loads` call; lists every runner it
// offers.
//
// Build (from this folder):
//   componentize-js --wit ../../../wit --world-name placer -d http fetch-event -o least-loaded.wasm least-loaded.js

import loads from "loads";

// The columns read, in one `loads` call: n values of each, one after the other.
const COLUMNS = ["in-flight", "reported-active", "healthy"];
const STOP = { tag: "stop" };

let n = 0;

export function configure(config) {
  for (const [key] of config) throw `least-loaded takes no config, got key \`${key}\``;
}

export function setRunners(generation, runners) {
  n = runners.length;
  return "never"; // the order depends on `random` and the loads
}

export function place(call) {
  const view = loads(COLUMNS);
  if (view.length < COLUMNS.length * n) return { runners: [], then: STOP };
  const total = (i) => view[i] + view[n + i];
  let anyHealthy = false;
  for (let i = 0; i < n && !anyHealthy; i++) anyHealthy = view[2 * n + i] !== 0;
  const offered = new Uint32Array(n);
  let m = 0;
  for (let i = 0; i < n; i++) if (!anyHealthy || view[2 * n + i]) offered[m++] = i;
  if (m < 2) return { runners: offered.subarray(0, m), then: STOP };
  const r = BigInt.asUintN(64, call.random);
  const k = Number(r % BigInt(m));
  // Rotated by `random`, then sorted by load, stably: one number per runner, load * m +
  // its place p in the rotation, sorted as numbers (no comparator for the interpreter to
  // call m log m times), gives runner offered[(p + k) % m] back.
  const keys = new Float64Array(m);
  for (let p = 0; p < m; p++) {
    const i = offered[(p + k) % m];
    keys[p] = (view[i] + view[n + i]) * m + p;
  }
  keys.sort();
  const out = new Uint32Array(m);
  for (let p = 0; p < m; p++) out[p] = offered[((keys[p] % m) + k) % m];
  // Two distinct candidates from `random`; the less loaded one goes first.
  const a = Number((r >> 16n) % BigInt(m));
  let b = Number((r >> 40n) % BigInt(m - 1));
  if (b >= a) b++;
  const first = total(out[b]) < total(out[a]) ? out[b] : out[a];
  out.copyWithin(1, 0, out.indexOf(first));
  out[0] = first;
  return { runners: out, then: STOP };
}
