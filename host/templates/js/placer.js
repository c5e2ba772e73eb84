// {{name}}: a placerd placer in JavaScript.
//
// `place` gets one call, reads the live load of the runners (the columns it needs, with
// `loads`) and returns the order to try them in. Change the algorithm below.
//
// Build: npm install && npm run build   (-> {{name}}.wasm)

import loads from "loads";

// The columns `place` reads, in one `loads` call: n values of each, one after the other.
const COLUMNS = ["in-flight", "healthy"];

let n = 0;

export function configure(config) {
  for (const [key] of config) throw `{{name}} takes no config, got key "${key}"`;
}

export function setRunners(generation, runners) {
  n = runners.length;
  // The order depends on the loads, not on the call's slot hash alone.
  return "never";
}

export function place(call) {
  const view = loads(COLUMNS);
  if (n === 0 || view.length < COLUMNS.length * n) return { runners: [], then: { tag: "stop" } };
  const inFlight = view.subarray(0, n), healthy = view.subarray(n, 2 * n);
  const start = Number(BigInt.asUintN(64, call.slotHash) % BigInt(n));
  const key = (i) => [healthy[i] === 0 ? 1 : 0, inFlight[i], (i - start + n) % n];
  const order = [...Array(n).keys()];
  // Healthy first, then fewest in flight; ties broken per function.
  order.sort((a, b) => {
    const [x, y] = [key(a), key(b)];
    return x[0] - y[0] || x[1] - y[1] || x[2] - y[2];
  });
  return { runners: new Uint32Array(order), then: { tag: "stop" } };
}
