#!/usr/bin/env bash
# Builds placerd with profile-guided optimisation (PGO), the build docs/performance-history.md
# measures against nginx and HAProxy beside the plain `cargo build --release`.
#
#   bench/pgo.sh                  # prints the path of the optimised binary on stdout
#   PLACERD=$(bench/pgo.sh) bench/proxy.sh
#
# 1. An instrumented release build (`-Cprofile-generate`), in its own target directory.
# 2. That build serves bench/proxy.sh's load (4 nginx backends, wrk, POST over 1,000
#    functions) as naive, consistent-hash and consistent-hash with native placement, then
#    stops on SIGTERM and writes its profile; `placerd check --bench` adds placement over
#    64 and 512 runners.
# 3. The release build again with the merged profile (`-Cprofile-use`).
#
# Only the host binary is instrumented and optimised (the flags are given for the host
# target only): the built-in placers embedded in it are the same Wasm either way. Needs
# rustup's `llvm-tools` component (installed here if missing) and bench/proxy.sh's Debian
# packages (which it installs). Two release builds: ~15 minutes cold on 2 cores, ~10 after
# a source change (a new profile rebuilds every crate in step 3: rustc tracks the file).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/placerd-target}"
TRAIN_SECONDS=${TRAIN_SECONDS:-8}
host=$(rustc -vV | awk '/^host:/ {print $2}')
flags_var="CARGO_TARGET_$(echo "$host" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"

profdata="$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
  echo "pgo: installing rustup's llvm-tools (llvm-profdata)" >&2
  rustup component add llvm-tools >&2
fi

profile_dir="$CARGO_TARGET_DIR/pgo-profile"
rm -rf "$profile_dir"
mkdir -p "$profile_dir/raw"

echo "pgo: 1/3 instrumented build" >&2
env "$flags_var=-Cprofile-generate=$profile_dir/raw" \
  cargo build --release --locked -p placerd --target "$host" --target-dir "$CARGO_TARGET_DIR/pgo-generate" >&2
instrumented="$CARGO_TARGET_DIR/pgo-generate/$host/release/placerd"

echo "pgo: 2/3 training on bench/proxy.sh's load" >&2
PLACERD="$instrumented" ONLY="placerd-naive placerd-consistent-hash placerd-ch-native nginx" \
  ROUNDS=1 DURATION="$TRAIN_SECONDS" bench/proxy.sh > /dev/null
# The proxy's load places over 4 runners; `placerd check --bench` places over larger sets,
# so that the loops that grow with the set are trained too (without it, the optimised
# build's `place` at 512 runners was a third slower than the plain build's).
for placer in naive consistent-hash least-loaded; do
  for runners in 64 512; do
    "$instrumented" check "$placer" --bench --runners "$runners" > /dev/null
  done
done
# bench/proxy.sh stops each placerd with SIGTERM on exit; a placerd writes its profile as
# it exits, after draining its calls (the processes of one binary merge into one file).
for _ in $(seq 100); do
  pgrep -f "$instrumented" > /dev/null || break
  sleep 0.1
done
if [ -z "$(find "$profile_dir/raw" -name '*.profraw' -size +0)" ]; then
  echo "pgo: the instrumented placerd wrote no profile (did it exit cleanly?)" >&2
  exit 1
fi
"$profdata" merge -o "$profile_dir/merged.profdata" "$profile_dir/raw"

echo "pgo: 3/3 optimised build" >&2
env "$flags_var=-Cprofile-use=$profile_dir/merged.profdata" \
  cargo build --release --locked -p placerd --target "$host" --target-dir "$CARGO_TARGET_DIR/pgo-use" >&2
echo "$CARGO_TARGET_DIR/pgo-use/$host/release/placerd"
