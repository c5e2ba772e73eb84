#!/usr/bin/env bash
# Reload under load: wrk drives placerd while the config file is rewritten and placerd is
# sent SIGHUP every RELOAD_EVERY seconds, cycling runners (3 -> 2 -> 3 reference runners),
# routes, the default placer and a placer config. Prints wrk's totals (any non-2xx answer
# or socket error is a failed call), the reloads placerd counted, and its RSS before and
# after. Installs wrk from Debian's packages if missing.
#
#   bench/reload.sh                          # release build, 20 s, a reload every 2 s
#   DURATION=60 RELOAD_EVERY=1 PLACERD=target/debug/placerd bench/reload.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
DURATION=${DURATION:-20}
RELOAD_EVERY=${RELOAD_EVERY:-2}
CONNECTIONS=${CONNECTIONS:-32}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/placerd-target}"

command -v wrk >/dev/null || install_packages wrk
if [ -z "${PLACERD:-}" ]; then
  cargo build --release -p placerd >&2
  PLACERD="$CARGO_TARGET_DIR/release/placerd"
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

RUNNERS=(18201 18202 18203)
for port in "${RUNNERS[@]}"; do
  "$PLACERD" runner --listen "127.0.0.1:$port" --max-concurrency 256 --name "r$port" 2>/dev/null &
  pids+=($!)
done
LISTEN=18280
ADMIN=18290

# Two configs to alternate between: every reloadable part differs.
write_config() {
  local variant=$1
  local runners default factor routes
  if [ "$variant" = a ]; then
    runners="\"127.0.0.1:${RUNNERS[0]}\", \"127.0.0.1:${RUNNERS[1]}\", \"127.0.0.1:${RUNNERS[2]}\""
    default=consistent-hash; factor=1.25
    routes=$'[[routes]]\napp = "bench"\nplacer = "least-loaded"'
  else
    runners="\"127.0.0.1:${RUNNERS[0]}\", \"127.0.0.1:${RUNNERS[1]}\""
    default=naive; factor=2.0
    routes=$'[[routes]]\napp = "bench"\nplacer = "consistent-hash"\nshadow = "naive"'
  fi
  cat > "$work/placerd.toml.tmp" <<TOML
listen = "127.0.0.1:$LISTEN"
admin_listen = "127.0.0.1:$ADMIN"
placers_dir = "$work/placers"
cache_dir = "off"
default_placer = "$default"
[runners]
static = [$runners]
[placers.consistent-hash.config]
max_load_factor = "$factor"
$routes
TOML
  mv "$work/placerd.toml.tmp" "$work/placerd.toml"
}

write_config a
RUST_LOG=warn "$PLACERD" serve --config "$work/placerd.toml" 2>"$work/placerd.log" &
placerd=$!
pids+=($placerd)
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$ADMIN/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
rss() { awk '/VmRSS/ {print $2 " kB"}' "/proc/$placerd/status"; }
rss_before=$(rss)

wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" "http://127.0.0.1:$LISTEN/t/bench/hello" > "$work/wrk.out" &
wrk=$!
reloads=0
variant=b
end=$((SECONDS + DURATION - 1))
while [ $SECONDS -lt $end ]; do
  sleep "$RELOAD_EVERY"
  write_config $variant
  kill -HUP "$placerd"
  reloads=$((reloads + 1))
  if [ $variant = a ]; then variant=b; else variant=a; fi
done
wait $wrk
cat "$work/wrk.out"
echo "SIGHUPs sent: $reloads"
curl -s "http://127.0.0.1:$ADMIN/metrics" | grep -E '^placerd_config_reloads_total|^placerd_requests_total\{status="(200|502|503)"\}|^placerd_shadow_calls_total'
echo "placerd RSS: $rss_before before, $(rss) after"
kill -0 "$placerd" && echo "placerd still running"
grep -c "config reload refused" "$work/placerd.log" | sed 's/^/refused reloads in the log: /' || true
