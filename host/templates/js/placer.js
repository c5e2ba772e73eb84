// {{name}}: a placerd placer in JavaScript.
//
// `place` gets one call and the live load of every runner and returns the order to try
// them in. Change the algorithm below.
//
// Build: npm install && npm run build   (-> {{name}}.wasm)

// Columns of `loads`, in the order of the contract's `load-column` enum.
const IN_FLIGHT = 0, REPORTED_ACTIVE = 1, RECENT_REFUSALS = 2, HEALTHY = 3;

let n = 0;

export function configure(config) {
  for (const [key] of config) throw `{{name}} takes no config, got key "${key}"`;
}

export function setRunners(generation, runners) {
  n = runners.length;
}

export function place(call, loads) {
  if (n === 0 || loads.length < (HEALTHY + 1) * n) return [];
  const start = Number(BigInt.asUintN(64, call.slotHash) % BigInt(n));
  const key = (i) => [loads[HEALTHY * n + i] === 0 ? 1 : 0, loads[IN_FLIGHT * n + i], (i - start + n) % n];
  const order = [...Array(n).keys()];
  // Healthy first, then fewest in flight; ties broken per function.
  order.sort((a, b) => {
    const [x, y] = [key(a), key(b)];
    return x[0] - y[0] || x[1] - y[1] || x[2] - y[2];
  });
  return new Uint32Array(order);
}
