#!/usr/bin/env bash
# Runs the `place` criterion benchmark and prints the medians as a markdown table, with
# the Wasm/native ratio per size. Usage: bench/place-report.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/placerd-target}"
cargo bench -p placerd --bench place -- --noplot >&2
python3 - "$CARGO_TARGET_DIR/criterion" <<'PY'
import json, sys, pathlib
root = pathlib.Path(sys.argv[1])
def median(group, kind, name):
    p = root / group / kind / name / "new" / "estimates.json"
    return json.loads(p.read_text())["median"]["point_estimate"]
print("| runners | placer | Wasm p50 | native p50 | Wasm / native |")
print("|---:|---|---:|---:|---:|")
for n in (8, 64, 512):
    for name in ("naive", "consistent-hash"):
        w, nat = median(f"place-{n}", "wasm", name), median(f"place-{n}", "native", name)
        print(f"| {n} | {name} | {w/1000:.2f} µs | {nat/1000:.3f} µs | {w/nat:.1f}x |")
PY
