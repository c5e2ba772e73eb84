#!/usr/bin/env bash
# `placerd check PLACER --bench --runners N` for one or more placerd builds, nine runs of
# each, alternating, and the median (min-max) of their p50s. This machine's speed drifts
# over seconds to minutes, so single runs of two builds are not comparable.
#
#   bench/place-check.sh 64 consistent-hash /path/to/placerd-a /path/to/placerd-b
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 RUNNERS PLACER PLACERD..." >&2
    exit 2
fi
runners=$1 placer=$2
shift 2
RUNS=${RUNS:-9}
declare -A p50s
for _ in $(seq "$RUNS"); do
    for bin in "$@"; do
        p50=$("$bin" check "$placer" --bench --runners "$runners" | sed -n 's/^place p50=\([^ ]*\) .*/\1/p')
        p50s[$bin]="${p50s[$bin]:-} $p50"
    done
done
for bin in "$@"; do
    # shellcheck disable=SC2086 # the p50s are one word each
    python3 - "$bin" "$runners" "$placer" ${p50s[$bin]} <<'PY'
import sys
bin, runners, placer, *values = sys.argv[1:]
units = {"ns": 1e-3, "µs": 1.0, "ms": 1e3}
us = sorted(float(v[:-2]) * units[v[-2:]] for v in values)
print(f"{bin}: {placer} at {runners} runners, p50 median {us[len(us) // 2]:.2f} µs ({us[0]:.2f}-{us[-1]:.2f}) over {len(us)} runs")
PY
done
