#!/usr/bin/env bash
# What a placer's language costs: the same three placers in Rust, Python and JavaScript
# (bench/placers/), each timed by `placerd check FILE --bench --runners N` (place p50 and
# p99 through the sandbox, memory per instance) at N = 4, 64 and 512 runners; one
# markdown table. The placers:
#
#   empty         reads nothing, answers the ring from runner 0: the language's floor
#                 (Rust: bench/placers/rust-empty, on the placerd-placer SDK)
#   round-robin   the built-in `naive` (guest-placers/naive): reads one column, answers a ring
#   least-loaded  the built-in `least-loaded`: reads three columns, lists every runner
#
# The Rust round-robin and least-loaded are the built-ins themselves (`check` takes them by
# name). componentize-py 0.25.1 and componentize-js 0.23.0 are installed on first use as
# tests/languages.rs installs them (a venv and an npm prefix) into PLACER_TOOLCHAINS;
# python3's venv module and npm come from Debian's packages if missing.
#
#   bench/placer-cost.sh
#   RUNNERS="8 1024" bench/placer-cost.sh                   # other set sizes
#   PLACERD=/tmp/placerd-new bench/placer-cost.sh           # a given binary instead of building
#   PLACER_TOOLCHAINS=/path/to/placer-toolchains bench/placer-cost.sh
#                                                           # toolchains already installed
#                                                           # (tests/languages.rs keeps its own
#                                                           # under its target's tmp/)
#   MEMORY_LIMIT=16777216 BUDGET_MS=5 bench/placer-cost.sh  # the sandbox limits (these are
#                                                           # placerd's defaults; instances are
#                                                           # recycled at 75% of the cap)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
RUNNERS=${RUNNERS:-4 64 512}
read -ra SIZES <<< "$RUNNERS"
MEMORY_LIMIT=${MEMORY_LIMIT:-16777216}
BUDGET_MS=${BUDGET_MS:-5}
PLACER_TOOLCHAINS=${PLACER_TOOLCHAINS:-$HOME/.cache/placerd-toolchains}
COMPONENTIZE_PY=0.25.1
COMPONENTIZE_JS=0.23.0
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/placerd-target}"
# The Rust floor is a project of its own (not in placerd's workspace), built apart.
RUST_EMPTY_TARGET=${RUST_EMPTY_TARGET:-/tmp/placerd-bench-rust-empty}

missing=()
python3 -c "import ensurepip, venv" 2>/dev/null || missing+=(python3 python3-venv)
command -v npm >/dev/null || missing+=(npm)
install_packages "${missing[@]}"

venv="$PLACER_TOOLCHAINS/componentize-py-$COMPONENTIZE_PY"
PY="$venv/bin/componentize-py"
if [ ! -x "$PY" ]; then
  echo "installing componentize-py $COMPONENTIZE_PY into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "componentize-py==$COMPONENTIZE_PY" >&2
fi
prefix="$PLACER_TOOLCHAINS/componentize-js-$COMPONENTIZE_JS"
JS="$prefix/node_modules/.bin/componentize-js"
if [ ! -x "$JS" ]; then
  echo "installing componentize-js $COMPONENTIZE_JS into $prefix" >&2
  rm -rf "$prefix"
  mkdir -p "$prefix"
  npm install --silent --no-audit --no-fund --prefix "$prefix" "@bytecodealliance/componentize-js@$COMPONENTIZE_JS" >&2
fi

if [ -z "${PLACERD:-}" ]; then
  cargo build --release -p placerd >&2
  PLACERD="$CARGO_TARGET_DIR/release/placerd"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The components, against the repository's contract (wit/placer.wit).
echo "building bench/placers/rust-empty" >&2
# The outer build's settings are for the host and must not leak in (as tests/languages.rs).
(cd bench/placers/rust-empty &&
  env -u RUSTC_WORKSPACE_WRAPPER -u RUSTC_WRAPPER -u RUSTFLAGS -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_TARGET \
    CARGO_TARGET_DIR="$RUST_EMPTY_TARGET" cargo build --release --quiet) >&2
cp "$RUST_EMPTY_TARGET/wasm32-wasip2/release/rust_empty.wasm" "$work/rust-empty.wasm"
for placer in empty round-robin least-loaded; do
  echo "building bench/placers/python/${placer//-/_}.py and bench/placers/js/$placer.js" >&2
  (cd bench/placers/python &&
    PYTHONDONTWRITEBYTECODE=1 "$PY" -d ../../../wit -w placer componentize "${placer//-/_}" -o "$work/py-$placer.wasm") >&2
  (cd bench/placers/js &&
    "$JS" --wit ../../../wit --world-name placer -d http fetch-event -o "$work/js-$placer.wasm" "$placer.js") >&2
done

# placer, language, what `check` takes: a component or a built-in's name.
ROWS=(
  "empty rust $work/rust-empty.wasm"
  "empty python $work/py-empty.wasm"
  "empty javascript $work/js-empty.wasm"
  "round-robin rust naive"
  "round-robin python $work/py-round-robin.wasm"
  "round-robin javascript $work/js-round-robin.wasm"
  "least-loaded rust least-loaded"
  "least-loaded python $work/py-least-loaded.wasm"
  "least-loaded javascript $work/js-least-loaded.wasm"
)
results="$work/results.tsv"
for row in "${ROWS[@]}"; do
  read -r placer language file <<< "$row"
  for n in "${SIZES[@]}"; do
    out=$("$PLACERD" check "$file" --bench --runners "$n" --memory-limit-bytes "$MEMORY_LIMIT" --budget-ms "$BUDGET_MS" 2>&1) || {
      echo "$placer ($language) at $n runners failed: $(echo "$out" | tail -1)" >&2
      echo -e "$placer\t$language\t$n\tfailed\t-\t-\t$(echo "$out" | tail -1)\t-" >> "$results"
      continue
    }
    p50=$(echo "$out" | sed -n 's/^place p50=\([^ ]*\) .*/\1/p')
    p99=$(echo "$out" | sed -n 's/^place p50=[^ ]* p99=\([^ ]*\) .*/\1/p')
    memory=$(echo "$out" | sed -n 's/^memory \([0-9]*\) KiB per instance.*/\1/p')
    over=$(echo "$out" | sed -n 's/^memory .*, \([0-9]*\) over the budget left out.*/\1/p')
    # Instances recycled per 100,000 calls, and what a replacement took to build.
    recycles=$(echo "$out" | sed -n 's/^recycled \([0-9]*\) instances in \([0-9]*\) calls.* took \([^ ]*\) to build.*/\1 \2 \3/p')
    if [ -n "$recycles" ]; then
      read -r count calls build <<< "$recycles"
      recycles="$((count * 100000 / calls)) ($build each)"
    else
      recycles=0
    fi
    echo "$placer ($language) at $n runners: p50 $p50, p99 $p99, $memory KiB per instance, $over over the budget, recycles per 100k calls $recycles" >&2
    echo -e "$placer\t$language\t$n\t$p50\t$p99\t$memory\t$over\t$recycles" >> "$results"
  done
done

python3 - "$results" "$("$PLACERD" --version | head -2 | paste -sd " ")" "$MEMORY_LIMIT" "$BUDGET_MS" <<'PY'
import sys
path, version, limit, budget = sys.argv[1:]
print(f"`placerd check FILE --bench --runners N` ({version}; 20000 calls timed after as many warm-up calls; "
      f"memory cap {int(limit) >> 20} MiB, budget {budget} ms)")
print()
print("| placer | language | runners | p50 | p99 | memory per instance | calls over the budget | recycles per 100k calls |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for line in open(path):
    placer, language, n, p50, p99, memory, over, recycles = line.rstrip("\n").split("\t")
    memory = f"{int(memory) / 1024:.1f} MiB" if memory.isdigit() else memory
    print(f"| {placer} | {language} | {n} | {p50} | {p99} | {memory} | {over} | {recycles} |")
PY
