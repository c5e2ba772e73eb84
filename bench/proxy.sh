#!/usr/bin/env bash
# The proxy load test (issue 7): placerd (naive, consistent-hash) beside nginx and HAProxy
# as proxies, and direct, in front of 4 nginx backends on loopback; wrk with keep-alive.
# Runs alternate between targets, ROUNDS times; prints a markdown table of medians with
# ratios versus nginx. Installs nginx, haproxy and wrk from Debian's packages if missing.
#
#   bench/proxy.sh                         # 10 s per run, 3 rounds, 64 connections, 1 worker,
#                                          # POST /t/bench/fn-N over KEYS=1000 functions
#   DURATION=20 ROUNDS=5 WORKERS=2 bench/proxy.sh
#   PLACERD_BASELINE=/tmp/placerd-old bench/proxy.sh   # also an older build, side by side
#   PLACERD=/tmp/placerd-new bench/proxy.sh            # a given binary instead of building
#   PGO=1 bench/proxy.sh                   # placerd built with profile-guided optimisation
#                                          # (bench/pgo.sh) instead of `cargo build --release`
#   LEAN=1 bench/proxy.sh                  # also bench/lean-proxy, the hyper floor (1 thread)
#   ONLY="placerd-consistent-hash placerd-ch-native nginx" ROUNDS=10 bench/proxy.sh
#                                          # just these targets (nginx is the reference): Wasm
#                                          # against native in more rounds, paired round by round
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
WORKERS=${WORKERS:-1}
KEYS=${KEYS:-1000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/placerd-target}"

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} from Debian's packages" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "need root: run  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

if [ -z "${PLACERD:-}" ] && [ -n "${PGO:-}" ]; then
  PLACERD=$(bench/pgo.sh)
elif [ -z "${PLACERD:-}" ]; then
  cargo build --release -p placerd >&2
  PLACERD="$CARGO_TARGET_DIR/release/placerd"
fi
PLACERD_BASELINE=${PLACERD_BASELINE:-}
# LEAN=1 also runs bench/lean-proxy: the same hyper and tokio doing nothing but forwarding.
LEAN=${LEAN:-}
if [ -n "$LEAN" ]; then
  cargo build --release --manifest-path bench/lean-proxy/Cargo.toml >&2
  LEAN_PROXY="$CARGO_TARGET_DIR/release/lean-proxy"
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/backends.pid" ] && kill "$(cat "$work/backends.pid")" 2>/dev/null || true
  [ -f "$work/proxy.pid" ] && kill "$(cat "$work/proxy.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

BACKENDS=(18101 18102 18103 18104)
mkdir -p "$work/tmp"
nginx_common="pid PIDFILE; error_log $work/PIDNAME.err warn; daemon on; worker_processes $WORKERS;
events { worker_connections 4096; }"
{
  echo "${nginx_common//PIDFILE/$work/backends.pid}" | sed "s/PIDNAME/backends/"
  echo "http { access_log off; client_body_temp_path $work/tmp; proxy_temp_path $work/tmp; fastcgi_temp_path $work/tmp; uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp;"
  for port in "${BACKENDS[@]}"; do
    echo "  server { listen 127.0.0.1:$port; keepalive_requests 1000000;"
    echo "    location = /v1/status { default_type application/json; return 200 '{\"active_request_count\":0}'; }"
    echo "    location / { default_type text/plain; return 200 'hello from $port\n'; } }"
  done
  echo "}"
} > "$work/backends.conf"
{
  echo "${nginx_common//PIDFILE/$work/proxy.pid}" | sed "s/PIDNAME/proxy/"
  echo "http { access_log off; client_body_temp_path $work/tmp; proxy_temp_path $work/tmp; fastcgi_temp_path $work/tmp; uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp;"
  echo "  upstream backends { hash \$request_uri consistent;"
  for port in "${BACKENDS[@]}"; do echo "    server 127.0.0.1:$port;"; done
  echo "    keepalive 64; }"
  echo "  server { listen 127.0.0.1:18301; keepalive_requests 1000000;"
  echo "    location / { proxy_pass http://backends; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
  echo "}"
} > "$work/proxy.conf"
{
  echo "global"; echo "  nbthread $WORKERS"; echo "  maxconn 4096"
  echo "defaults"; echo "  mode http"; echo "  timeout connect 1s"; echo "  timeout client 30s"; echo "  timeout server 30s"
  echo "  option http-keep-alive"; echo "  http-reuse always"
  echo "frontend fe"; echo "  bind 127.0.0.1:18401"; echo "  default_backend be"
  echo "backend be"; echo "  balance uri"; echo "  hash-type consistent"
  for port in "${BACKENDS[@]}"; do echo "  server b$port 127.0.0.1:$port"; done
} > "$work/haproxy.cfg"

"$NGINX" -c "$work/backends.conf" -p "$work" -e "$work/backends.err"
"$NGINX" -c "$work/proxy.conf" -p "$work" -e "$work/proxy.err"
"$HAPROXY" -f "$work/haproxy.cfg" 2> "$work/haproxy.err" &
pids+=($!)
runner_args=()
for port in "${BACKENDS[@]}"; do runner_args+=(--runner "127.0.0.1:$port"); done
declare -A PIDS=()
start_placerd() { # name port placer [extra args]
  local name=$1 port=$2 placer=$3 bin=$PLACERD
  shift 3
  if [ "$name" = placerd-ch-baseline ]; then bin=$PLACERD_BASELINE; fi
  RUST_LOG=warn TOKIO_WORKER_THREADS=$WORKERS "$bin" serve --listen "127.0.0.1:$port" \
    --admin-listen "127.0.0.1:$((port + 90))" --default-placer "$placer" --placers-dir "$work/placers-$name" \
    "${runner_args[@]}" "$@" 2> "$work/$name.log" &
  pids+=($!)
  PIDS[$name]=$!
}
start_placerd placerd-naive 18201 naive
start_placerd placerd-consistent-hash 18202 consistent-hash
# The same placer's algorithm called natively, outside the sandbox: the Wasm cost.
start_placerd placerd-ch-native 18203 consistent-hash --native-placement
declare -A TARGETS=([direct]=18101 [placerd-naive]=18201 [placerd-consistent-hash]=18202 [placerd-ch-native]=18203
  [nginx]=18301 [haproxy]=18401)
ORDER=(direct placerd-naive placerd-consistent-hash placerd-ch-native nginx haproxy)
if [ -n "$PLACERD_BASELINE" ]; then
  start_placerd placerd-ch-baseline 18204 consistent-hash
  TARGETS[placerd-ch-baseline]=18204
  ORDER=(direct placerd-naive placerd-consistent-hash placerd-ch-native placerd-ch-baseline nginx haproxy)
fi
if [ -n "$LEAN" ]; then
  backend_addrs=()
  for port in "${BACKENDS[@]}"; do backend_addrs+=("127.0.0.1:$port"); done
  "$LEAN_PROXY" 127.0.0.1:18501 "${backend_addrs[@]}" 2> "$work/lean-proxy.log" &
  pids+=($!)
  PIDS[lean-proxy]=$!
  TARGETS[lean-proxy]=18501
  ORDER+=(lean-proxy)
fi
if [ -n "${ONLY:-}" ]; then
  read -ra ORDER <<< "$ONLY"
fi
PIDS[haproxy]=${pids[0]}
for port in "${TARGETS[@]}"; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/t/bench/hello" && break; sleep 0.1; done
done

# CPU time of a target's processes, "user system" in clock ticks: placerd and HAProxy are
# one process each; nginx is its master and workers. "direct" has no proxy.
cpu_ticks() {
  local procs=()
  case $1 in
    direct) echo 0 0; return ;;
    nginx) procs=("$(cat "$work/proxy.pid")" $(pgrep -P "$(cat "$work/proxy.pid")")) ;;
    backends) procs=("$(cat "$work/backends.pid")" $(pgrep -P "$(cat "$work/backends.pid")")) ;;
    *) procs=("${PIDS[$1]}") ;;
  esac
  local user=0 system=0
  for pid in "${procs[@]}"; do
    read -r u s < <(awk '{print $14, $15}' "/proc/$pid/stat")
    user=$((user + u)) system=$((system + s))
  done
  echo "$user $system"
}
CLK_TCK=$(getconf CLK_TCK)
# The machine's idle and iowait time, all CPUs, in clock ticks.
idle_ticks() { awk '/^cpu / {print $5 + $6}' /proc/stat; }
# CPU seconds of this shell's finished children into $CHILD_SECONDS (read around wrk's
# run). `times` runs in this shell, not a subshell: a subshell's children are not ours.
child_seconds() {
  times > "$work/times"
  CHILD_SECONDS=$(awk 'NR == 2 {
    split($1, u, /[ms]/); split($2, s, /[ms]/); print u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$work/times")
}
# The calls: POST with a small body over KEYS functions, so hashing proxies spread them.
cat > "$work/calls.lua" <<LUA
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", "/t/bench/fn-" .. (n % $KEYS), nil, "x")
end
LUA
results="$work/results.tsv"
for round in $(seq "$ROUNDS"); do
  for name in "${ORDER[@]}"; do
    read -r user0 system0 < <(cpu_ticks "$name")
    read -r buser0 bsystem0 < <(cpu_ticks backends)
    idle0=$(idle_ticks)
    child_seconds
    wrk0=$CHILD_SECONDS
    out=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$work/calls.lua" "http://127.0.0.1:${TARGETS[$name]}")
    child_seconds
    wrk1=$CHILD_SECONDS
    idle1=$(idle_ticks)
    read -r user1 system1 < <(cpu_ticks "$name")
    read -r buser1 bsystem1 < <(cpu_ticks backends)
    requests=$(echo "$out" | awk '/requests in/ {print $1}')
    # Proxy CPU microseconds per request: total, user space, kernel.
    cpu_us=$(python3 -c "n = max($requests, 1) * $CLK_TCK / 1e6
u, s = ($user1 - $user0) / n, ($system1 - $system0) / n
b = ($buser1 - $buser0 + $bsystem1 - $bsystem0) / n
w = ($wrk1 - $wrk0) * $CLK_TCK / n
i = ($idle1 - $idle0) / n
print(f'{u + s:.2f}\t{u:.2f}\t{s:.2f}\t{b:.2f}\t{w:.2f}\t{i:.2f}')")
    rps=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
    p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
    errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
    echo -e "$name\t$round\t$rps\t$p50\t$p99\t$cpu_us\t$errors" >> "$results"
    echo "round $round $name: $rps req/s, p50 $p50, p99 $p99, $(echo "$cpu_us" | cut -f1) us CPU/request (user $(echo "$cpu_us" | cut -f2)), backends $(echo "$cpu_us" | cut -f4) us, wrk $(echo "$cpu_us" | cut -f5) us, idle $(echo "$cpu_us" | cut -f6) us $errors" >&2
  done
done

python3 - "$results" "$DURATION" "$ROUNDS" "$CONNECTIONS" "$WORKERS" "$KEYS" <<'PY'
import sys, statistics
path, duration, rounds, conns, workers, keys = sys.argv[1:]
def ms(v):
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float(v)
rows = {}
for line in open(path):
    name, _, rps, p50, p99, cpu, user, system, backends, wrk, idle, *rest = line.rstrip("\n").split("\t")
    r = rows.setdefault(name, {"rps": [], "p50": [], "p99": [], "cpu": [], "user": [], "system": [], "backends": [],
                               "wrk": [], "idle": [], "errors": []})
    r["rps"].append(float(rps)); r["p50"].append(ms(p50)); r["p99"].append(ms(p99)); r["cpu"].append(float(cpu))
    r["user"].append(float(user)); r["system"].append(float(system)); r["backends"].append(float(backends))
    r["wrk"].append(float(wrk)); r["idle"].append(float(idle))
    if rest and rest[0].strip():
        r["errors"].append(rest[0].strip())
med = {n: {k: statistics.median(v) for k, v in r.items() if k != "errors"} for n, r in rows.items()}
base = med["nginx"]
print(f"wrk -t1 -c{conns} -d{duration}s, POST over {keys} functions, {rounds} rounds alternating, {workers} worker(s) per proxy; medians")
print()
# The backends' CPU per request behind each target: a proxy that wakes its runners once per
# request costs them more than one whose requests arrive together. With wrk's own CPU and
# the machine's idle time they make up its whole budget: the CPUs' time divided by req/s.
print("| target | req/s | p50 | p99 | proxy CPU/request | user | kernel | backends CPU/request | wrk CPU/request "
      "| idle/request | req/s vs nginx | p99 vs nginx | CPU/request vs nginx |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for name in ["direct", "placerd-naive", "placerd-consistent-hash", "placerd-ch-native", "placerd-ch-baseline", "nginx", "haproxy", "lean-proxy"]:
    if name not in med:
        continue
    m = med[name]
    note = " (errors: " + "; ".join(rows[name]["errors"]) + ")" if rows[name]["errors"] else ""
    us = lambda key: f"{m[key]:.1f} us" if name != "direct" else "-"
    cpu_ratio = f"{m['cpu']/base['cpu']:.2f}x" if name != "direct" else "-"
    print(f"| {name}{note} | {m['rps']:.0f} | {m['p50']:.2f} ms | {m['p99']:.2f} ms | {us('cpu')} | {us('user')} | {us('system')} "
          f"| {m['backends']:.1f} us | {m['wrk']:.1f} us | {m['idle']:.1f} us | {m['rps']/base['rps']:.2f}x | {m['p99']/base['p99']:.2f}x | {cpu_ratio} |")
def paired(a, b, label, key="cpu"):
    """a against b round by round: the two ran back to back, so each pair shares the
    machine's phase."""
    if a not in rows or b not in rows:
        return
    pairs = sorted(x / y - 1 for x, y in zip(rows[a][key], rows[b][key]))
    print(f"{label}: medians {med[a][key]:.1f} us vs {med[b][key]:.1f} us = {(med[a][key] / med[b][key] - 1) * 100:+.1f}%; "
          f"paired by round: median {statistics.median(pairs) * 100:+.1f}% "
          f"(min {pairs[0] * 100:+.1f}%, max {pairs[-1] * 100:+.1f}%, {len(pairs)} rounds)")
print()
paired("placerd-consistent-hash", "placerd-ch-native", "Wasm placement CPU per request vs native (consistent-hash)")
# The guest call is user-space work: user time alone is less exposed to the kernel's noise.
paired("placerd-consistent-hash", "placerd-ch-native", "  user time only", key="user")
paired("placerd-consistent-hash", "placerd-ch-baseline", "CPU per request vs the baseline build (consistent-hash)")
PY
