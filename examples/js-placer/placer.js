// A placer in JavaScript: power of two choices.
//
// For each call, two runners are picked from the call's own `random` value (so the same
// call gets the same order in `placerd simulate` and in production), and the less loaded
// of the two goes first, then the other, then the rest from least to most loaded. Load is
// calls in flight from this host plus what the runner reports, plus a penalty for recent
// busy refusals; unhealthy runners go last. Two random choices spread load nearly as well
// as looking at every runner, at a fraction of the cost (Mitzenmacher, "The Power of Two
// Choices in Randomized Load Balancing").
//
// Its interpreter's heap grows to whatever the cap allows before it collects: serve it
// with placer_memory_limit_bytes = 134217728 (128 MiB); see docs/placers.md.
//
// Build (from this folder, with componentize-js 0.23.0):
//
//   componentize-js --wit ../../wit/v0.2 --world-name placer -d http fetch-event -o js_placer.wasm placer.js

// Columns of `loads`, in the order of the contract's `load-column` enum.
const IN_FLIGHT = 0, REPORTED_ACTIVE = 1, RECENT_REFUSALS = 2, HEALTHY = 3;

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
}

export function place(call, loads) {
  if (n === 0 || loads.length < (HEALTHY + 1) * n) return new Uint32Array(0);
  // One score per runner, computed once: unhealthy runners score past every healthy one,
  // and the index breaks ties.
  const score = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const load = loads[IN_FLIGHT * n + i] + loads[REPORTED_ACTIVE * n + i] + refusalPenalty * loads[RECENT_REFUSALS * n + i];
    score[i] = (loads[HEALTHY * n + i] === 0 ? 2 ** 40 : 0) + load * n + i;
  }
  // Two distinct runners from the call's random value (a BigInt: u64).
  const r = BigInt.asUintN(64, call.random);
  const a = Number(r % BigInt(n));
  let b = Number((r >> 32n) % BigInt(n));
  if (n > 1 && b === a) b = (a + 1) % n;
  const order = new Uint32Array(n);
  let k = 0;
  if (n > 1 && score[b] < score[a]) {
    order[k++] = b;
    order[k++] = a;
  } else {
    order[k++] = a;
    if (n > 1) order[k++] = b;
  }
  // The rest, least loaded first.
  const rest = new Uint32Array(n - k);
  for (let i = 0, j = 0; i < n; i++) if (i !== a && (n === 1 || i !== b)) rest[j++] = i;
  rest.sort((x, y) => score[x] - score[y]);
  order.set(rest, k);
  return order;
}
