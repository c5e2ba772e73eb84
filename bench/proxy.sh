#!/usr/bin/env bash
# The proxy load test (issue 7): placerd (naive, consistent-hash) beside nginx and HAProxy
# as proxies, and direct, in front of 4 nginx backends on loopback; wrk with keep-alive.
# Runs alternate between targets, ROUNDS times; prints a markdown table of medians with
# ratios versus nginx. Installs nginx, haproxy and wrk from Debian's packages if missing.
#
#   bench/proxy.sh                         # 10 s per run, 3 rounds, 64 connections, 1 worker,
#                                          # POST /t/bench/fn-N over KEYS=1000 functions
#   DURATION=20 ROUNDS=5 WORKERS=2 bench/proxy.sh
#   WORKERS="1 2" bench/proxy.sh           # each proxy at 1 and at 2 workers in one run
#                                          # (targets named NAME@W), with the 2-worker ÷
#                                          # 1-worker requests/s of each
#   PLACERD_BASELINE=/tmp/placerd-old bench/proxy.sh   # also an older build, side by side
#   PLACERD=/tmp/placerd-new bench/proxy.sh            # a given binary instead of building
#   PGO=1 bench/proxy.sh                   # placerd built with profile-guided optimisation
#                                          # (bench/pgo.sh) instead of `cargo build --release`
#   LEAN=1 bench/proxy.sh                  # also bench/lean-proxy, the hyper floor (1 thread)
#   PLACER_FILES="/tmp/p2c.wasm /tmp/bounded.wasm" bench/proxy.sh
#                                          # also placerd with each of these placers (from its
#                                          # placers_dir) as the default placer, target
#                                          # placerd-NAME; their faults and recycles are printed
#   ONLY="placerd-consistent-hash placerd-ch-native nginx" ROUNDS=10 bench/proxy.sh
#                                          # just these targets (nginx is the reference): Wasm
#                                          # against native in more rounds, paired round by round
#   TLS=1 WORKERS="1 2" bench/proxy.sh     # every proxy terminates TLS (1.2/1.3) on its port,
#                                          # all with one self-signed ECDSA P-256 certificate
#                                          # made per run (placerd reads it from a --config
#                                          # TOML file's [tls]; so must PLACERD_BASELINE's);
#                                          # wrk sends to https:// URLs. The backends stay plain
#                                          # HTTP, so does "direct"; LEAN's lean-proxy is skipped
#   TLS=1 NEW_CONNECTIONS=1 bench/proxy.sh # wrk sends Connection: close on every request: each
#                                          # is a new (TLS) connection, the figure is new
#                                          # connections/s (works without TLS=1 too). wrk keeps
#                                          # the TLS session of each of its -c connections: after
#                                          # its first, full, handshake each new one resumes it
#                                          # (TLS 1.3 ticket, with a new key exchange)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
WORKERS=${WORKERS:-1}
read -ra WORKER_COUNTS <<< "$WORKERS"
MAX_WORKERS=$(printf '%s\n' "${WORKER_COUNTS[@]}" | sort -n | tail -1)
KEYS=${KEYS:-1000}
TLS=${TLS:-}
NEW_CONNECTIONS=${NEW_CONNECTIONS:-}
# What wrk's figure counts: with Connection: close, every request is a new connection.
RATE="req/s"
if [ -n "$NEW_CONNECTIONS" ]; then RATE="new connections/s"; fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/placerd-target}"

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ -n "$TLS" ]; then command -v openssl >/dev/null || missing+=(openssl); fi
install_packages "${missing[@]}"
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
if [ -n "$LEAN" ] && [ -n "$TLS" ]; then
  echo "TLS=1: lean-proxy has no TLS; it is skipped" >&2
  LEAN=
fi
if [ -n "$LEAN" ]; then
  cargo build --release --manifest-path bench/lean-proxy/Cargo.toml >&2
  LEAN_PROXY="$CARGO_TARGET_DIR/release/lean-proxy"
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/backends.pid" ] && kill "$(cat "$work/backends.pid")" 2>/dev/null || true
  for f in "$work"/proxy*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

BACKENDS=(18101 18102 18103 18104)
mkdir -p "$work/tmp"
# TLS=1: one certificate for every proxy, self-signed ECDSA P-256 for localhost and 127.0.0.1;
# HAProxy takes it and its key in one file, placerd from a config file's [tls] (the rest of
# its options stay flags, which win over the file).
placerd_config=()
if [ -n "$TLS" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2> "$work/openssl.err" || { cat "$work/openssl.err" >&2; exit 1; }
  cat "$work/cert.pem" "$work/key.pem" > "$work/combined.pem"
  printf '[tls]\ncert_file = "%s"\nkey_file = "%s"\n' "$work/cert.pem" "$work/key.pem" > "$work/placerd-tls.toml"
  placerd_config=(--config "$work/placerd-tls.toml")
fi
# A target's URL: TLS=1 gives https to every proxy; "direct" is a backend, plain HTTP.
url() {
  if [ -n "$TLS" ] && [ "$1" != direct ]; then echo "https://127.0.0.1:${TARGETS[$1]}"
  else echo "http://127.0.0.1:${TARGETS[$1]}"; fi
}
nginx_common="pid PIDFILE; error_log $work/PIDNAME.err warn; daemon on; worker_processes NWORKERS;
events { worker_connections 4096; }"
{
  echo "${nginx_common//PIDFILE/$work/backends.pid}" | sed "s/PIDNAME/backends/; s/NWORKERS/$MAX_WORKERS/"
  echo "http { access_log off; client_body_temp_path $work/tmp; proxy_temp_path $work/tmp; fastcgi_temp_path $work/tmp; uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp;"
  for port in "${BACKENDS[@]}"; do
    echo "  server { listen 127.0.0.1:$port; keepalive_requests 1000000;"
    echo "    location = /v1/status { default_type application/json; return 200 '{\"active_request_count\":0}'; }"
    echo "    location / { default_type text/plain; return 200 'hello from $port\n'; } }"
  done
  echo "}"
} > "$work/backends.conf"
# Each proxy once per worker count W, on ports offset by 1000 × its place in WORKERS.
suffix() { if [ ${#WORKER_COUNTS[@]} -gt 1 ]; then echo "@$1"; fi; }
for k in "${!WORKER_COUNTS[@]}"; do
  w=${WORKER_COUNTS[$k]} off=$((k * 1000))
  {
    echo "${nginx_common//PIDFILE/$work/proxy$w.pid}" | sed "s/PIDNAME/proxy$w/; s/NWORKERS/$w/"
    echo "http { access_log off; client_body_temp_path $work/tmp; proxy_temp_path $work/tmp; fastcgi_temp_path $work/tmp; uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp;"
    echo "  upstream backends { hash \$request_uri consistent;"
    for port in "${BACKENDS[@]}"; do echo "    server 127.0.0.1:$port;"; done
    echo "    keepalive 64; }"
    echo "  server { listen 127.0.0.1:$((18301 + off))${TLS:+ ssl}; keepalive_requests 1000000;"
    if [ -n "$TLS" ]; then
      echo "    ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem;"
      echo "    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m; ssl_session_timeout 10m;"
    fi
    echo "    location / { proxy_pass http://backends; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
    echo "}"
  } > "$work/proxy$w.conf"
  {
    echo "global"; echo "  nbthread $w"; echo "  maxconn 4096"
    echo "defaults"; echo "  mode http"; echo "  timeout connect 1s"; echo "  timeout client 30s"; echo "  timeout server 30s"
    echo "  option http-keep-alive"; echo "  http-reuse always"
    # TLS=1: HAProxy's session cache is on by default (tune.ssl.cachesize 20000).
    echo "frontend fe"; echo "  bind 127.0.0.1:$((18401 + off))${TLS:+ ssl crt $work/combined.pem alpn http/1.1 ssl-min-ver TLSv1.2}"
    echo "  default_backend be"
    echo "backend be"; echo "  balance uri"; echo "  hash-type consistent"
    for port in "${BACKENDS[@]}"; do echo "  server b$port 127.0.0.1:$port"; done
  } > "$work/haproxy$w.cfg"
done

"$NGINX" -c "$work/backends.conf" -p "$work" -e "$work/backends.err"
runner_args=()
for port in "${BACKENDS[@]}"; do runner_args+=(--runner "127.0.0.1:$port"); done
declare -A PIDS=() TARGETS=()
start_placerd() { # name port placer workers [extra args]
  local name=$1 port=$2 placer=$3 w=$4 bin=$PLACERD
  shift 4
  if [[ "$name" == placerd-ch-baseline* ]]; then bin=$PLACERD_BASELINE; fi
  # TOKIO_WORKER_THREADS too: builds from before `workers` read only that.
  RUST_LOG=warn PLACERD_WORKERS=$w TOKIO_WORKER_THREADS=$w "$bin" serve "${placerd_config[@]}" --listen "127.0.0.1:$port" \
    --admin-listen "127.0.0.1:$((port + 90))" --default-placer "$placer" --placers-dir "$work/placers-$name" \
    "${runner_args[@]}" "$@" 2> "$work/$name.log" &
  pids+=($!)
  PIDS[$name]=$!
}
ORDER=()
TARGETS[direct]=18101
for k in "${!WORKER_COUNTS[@]}"; do
  w=${WORKER_COUNTS[$k]} off=$((k * 1000)) s=$(suffix "${WORKER_COUNTS[$k]}")
  "$NGINX" -c "$work/proxy$w.conf" -p "$work" -e "$work/proxy$w.err"
  "$HAPROXY" -f "$work/haproxy$w.cfg" 2> "$work/haproxy$w.err" &
  pids+=($!)
  PIDS[haproxy$s]=$!
  PIDS[nginx$s]="nginx:$work/proxy$w.pid"
  start_placerd "placerd-naive$s" $((18201 + off)) naive "$w"
  start_placerd "placerd-consistent-hash$s" $((18202 + off)) consistent-hash "$w"
  # The same placer's algorithm called natively, outside the sandbox: the Wasm cost.
  start_placerd "placerd-ch-native$s" $((18203 + off)) consistent-hash "$w" --native-placement
  TARGETS[placerd-naive$s]=$((18201 + off)) TARGETS[placerd-consistent-hash$s]=$((18202 + off))
  TARGETS[placerd-ch-native$s]=$((18203 + off)) TARGETS[nginx$s]=$((18301 + off)) TARGETS[haproxy$s]=$((18401 + off))
  ORDER+=("placerd-naive$s" "placerd-consistent-hash$s" "placerd-ch-native$s")
  if [ -n "$PLACERD_BASELINE" ]; then
    start_placerd "placerd-ch-baseline$s" $((18204 + off)) consistent-hash "$w"
    TARGETS[placerd-ch-baseline$s]=$((18204 + off))
    ORDER+=("placerd-ch-baseline$s")
  fi
  p=0
  for file in ${PLACER_FILES:-}; do
    placer=$(basename "$file" .wasm)
    mkdir -p "$work/placers-placerd-$placer$s"
    cp "$file" "$work/placers-placerd-$placer$s/"
    # Admin ports are 90 above: clear of nginx (18301) and HAProxy (18401).
    start_placerd "placerd-$placer$s" $((18250 + p + off)) "$placer" "$w"
    TARGETS[placerd-$placer$s]=$((18250 + p + off))
    ORDER+=("placerd-$placer$s")
    p=$((p + 1))
  done
  ORDER+=("nginx$s" "haproxy$s")
done
ORDER=(direct "${ORDER[@]}")
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
  # ONLY names targets without the @W suffix: each is run at every worker count.
  read -ra only <<< "$ONLY"
  ORDER=()
  for k in "${!WORKER_COUNTS[@]}"; do
    for name in "${only[@]}"; do
      if [ "$name" = direct ] || [ "$name" = lean-proxy ]; then
        [ "$k" -eq 0 ] && ORDER+=("$name")
      else
        ORDER+=("$name$(suffix "${WORKER_COUNTS[$k]}")")
      fi
    done
  done
fi
# The targets that run (ONLY may leave some out), each up to a minute: a placer from
# PLACER_FILES compiles first (seconds for a Python or JavaScript runtime, unless cache_dir
# has it).
declare -A CLOSE_NOTE=()
for name in "${ORDER[@]}"; do
  for _ in $(seq 600); do curl -sk -o /dev/null "$(url "$name")/t/bench/hello" && break; sleep 0.1; done
  # NEW_CONNECTIONS=1 counts new connections only if the target closes after its answer and
  # says so: wrk keeps a connection whose answer lacks Connection: close.
  if [ -n "$NEW_CONNECTIONS" ] && ! curl -sk -o /dev/null -D - -H "Connection: close" -d x \
       "$(url "$name")/t/bench/fn-0" | grep -qi '^connection: *close'; then
    echo "$name: no Connection: close in its answer to one: wrk keeps its connections open" >&2
    CLOSE_NOTE[$name]="answers without Connection: close"
  fi
done
wrk_headers=()
if [ -n "$NEW_CONNECTIONS" ]; then wrk_headers=(-H "Connection: close"); fi

# CPU time of a target's processes, "user system" in clock ticks: placerd and HAProxy are
# one process each; nginx is its master and workers. "direct" has no proxy.
cpu_ticks() {
  local procs=()
  case $1 in
    direct) echo 0 0; return ;;
    nginx*) local pidfile=${PIDS[$1]#nginx:}; procs=("$(cat "$pidfile")" $(pgrep -P "$(cat "$pidfile")")) ;;
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
    # placerd's open connections per worker, read halfway through the run.
    rm -f "$work/spread"
    scrape=
    if [[ "$name" == placerd* ]]; then
      (sleep "$(python3 -c "print($DURATION / 2)")"
       curl -s "http://127.0.0.1:$((${TARGETS[$name]} + 90))/metrics" |
         awk '/^placerd_worker_connections/ {printf "%s%s", sep, $2; sep = "/"}' > "$work/spread") &
      scrape=$!
    fi
    out=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "${wrk_headers[@]}" -s "$work/calls.lua" "$(url "$name")")
    if [ -n "$scrape" ]; then wait "$scrape" || true; fi
    spread=$(cat "$work/spread" 2>/dev/null || true)
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
    errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')${CLOSE_NOTE[$name]:-}
    echo -e "$name\t$round\t$rps\t$p50\t$p99\t$cpu_us\t${spread:--}\t$errors" >> "$results"
    echo "round $round $name: $rps $RATE, p50 $p50, p99 $p99, $(echo "$cpu_us" | cut -f1) us CPU/request (user $(echo "$cpu_us" | cut -f2)), backends $(echo "$cpu_us" | cut -f4) us, wrk $(echo "$cpu_us" | cut -f5) us, idle $(echo "$cpu_us" | cut -f6) us${spread:+, connections per worker $spread} $errors" >&2
  done
done

# The placers of PLACER_FILES: faults (calls placed by the fallback) and recycles over
# every round.
for name in "${ORDER[@]}"; do
  [ -n "${PLACER_FILES:-}" ] || break
  placer=${name#placerd-}
  placer=${placer%@*}
  case " ${PLACER_FILES} " in *"/$placer.wasm "*|*" $placer.wasm "*) ;; *) continue ;; esac
  metrics=$(curl -s "http://127.0.0.1:$((${TARGETS[$name]} + 90))/metrics")
  sum() { echo "$metrics" | awk -v m="$1" -v p="placer=\"$placer\"" 'index($0, m "{") == 1 && index($0, p) {n += $2} END {print n + 0}'; }
  echo "$name: placer $placer faults $(sum placerd_placer_faults_total), recycles $(sum placerd_placer_recycles_total), calls placed by it $(curl -s "http://127.0.0.1:$((${TARGETS[$name]} + 90))/admin/placers" | python3 -c "import json, sys; print(sum(p['calls'] for p in json.load(sys.stdin) if p['name'] == '$placer'))")" >> "$work/placer-faults"
done

python3 - "$results" "$DURATION" "$ROUNDS" "$CONNECTIONS" "$WORKERS" "$KEYS" "$TLS" "$NEW_CONNECTIONS" <<'PY'
import sys, statistics
path, duration, rounds, conns, workers, keys, tls, new_conns = sys.argv[1:]
counts = workers.split()
# NEW_CONNECTIONS=1: Connection: close on every request, so wrk's requests/s is new connections/s.
rate = "new connections/s" if new_conns else "req/s"
mode = (", TLS on every proxy (one ECDSA P-256 certificate; direct is plain HTTP)" if tls else "") + (
    ", Connection: close on every request (a new connection each)" if new_conns else "")
def ms(v):
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float(v)
rows = {}
for line in open(path):
    name, _, rps, p50, p99, cpu, user, system, backends, wrk, idle, spread, *rest = line.rstrip("\n").split("\t")
    r = rows.setdefault(name, {"rps": [], "p50": [], "p99": [], "cpu": [], "user": [], "system": [], "backends": [],
                               "wrk": [], "idle": [], "errors": [], "spread": []})
    r["rps"].append(float(rps)); r["p50"].append(ms(p50)); r["p99"].append(ms(p99)); r["cpu"].append(float(cpu))
    r["user"].append(float(user)); r["system"].append(float(system)); r["backends"].append(float(backends))
    r["wrk"].append(float(wrk)); r["idle"].append(float(idle))
    if spread != "-":
        r["spread"].append(spread)
    if rest and rest[0].strip():
        r["errors"].append(rest[0].strip())
med = {n: {k: statistics.median(v) for k, v in r.items() if k not in ("errors", "spread")} for n, r in rows.items()}
NAMES = ["direct", "placerd-naive", "placerd-consistent-hash", "placerd-ch-native", "placerd-ch-baseline", "nginx", "haproxy", "lean-proxy"]
NAMES[4:4] = sorted({n.split("@")[0] for n in rows} - set(NAMES))
def paired(a, b, label, key="cpu"):
    """a against b round by round: the two ran back to back, so each pair shares the
    machine's phase."""
    if a not in rows or b not in rows:
        return
    pairs = sorted(x / y - 1 for x, y in zip(rows[a][key], rows[b][key]))
    unit = f" {rate}" if key == "rps" else " us"
    print(f"{label}: medians {med[a][key]:.1f}{unit} vs {med[b][key]:.1f}{unit} = {(med[a][key] / med[b][key] - 1) * 100:+.1f}%; "
          f"paired by round: median {statistics.median(pairs) * 100:+.1f}% "
          f"(min {pairs[0] * 100:+.1f}%, max {pairs[-1] * 100:+.1f}%, {len(pairs)} rounds)")
for w in counts:
    s = f"@{w}" if len(counts) > 1 else ""
    base = med.get("nginx" + s)
    if base is None:
        continue
    print(f"wrk -t1 -c{conns} -d{duration}s, POST over {keys} functions, {rounds} rounds alternating, {w} worker(s) per proxy{mode}; medians")
    print()
    # The backends' CPU per request behind each target: a proxy that wakes its runners once per
    # request costs them more than one whose requests arrive together. With wrk's own CPU and
    # the machine's idle time they make up its whole budget: the CPUs' time divided by req/s.
    print(f"| target | {rate} | p50 | p99 | proxy CPU/request | user | kernel | backends CPU/request | wrk CPU/request "
          f"| idle/request | {rate} vs nginx | p99 vs nginx | CPU/request vs nginx | connections per worker |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for plain in NAMES:
        name = plain if plain in ("direct", "lean-proxy") else plain + s
        if name not in med:
            continue
        m = med[name]
        note = " (errors: " + "; ".join(rows[name]["errors"]) + ")" if rows[name]["errors"] else ""
        us = lambda key: f"{m[key]:.1f} us" if plain != "direct" else "-"
        cpu_ratio = f"{m['cpu']/base['cpu']:.2f}x" if plain != "direct" else "-"
        spreads = rows[name]["spread"]
        spread = statistics.median_low(spreads) if spreads else "-"
        print(f"| {plain}{note} | {m['rps']:.0f} | {m['p50']:.2f} ms | {m['p99']:.2f} ms | {us('cpu')} | {us('user')} | {us('system')} "
              f"| {m['backends']:.1f} us | {m['wrk']:.1f} us | {m['idle']:.1f} us | {m['rps']/base['rps']:.2f}x | {m['p99']/base['p99']:.2f}x | {cpu_ratio} | {spread} |")
    print()
    paired("placerd-consistent-hash" + s, "placerd-ch-native" + s, "Wasm placement CPU per request vs native (consistent-hash)")
    # The guest call is user-space work: user time alone is less exposed to the kernel's noise.
    paired("placerd-consistent-hash" + s, "placerd-ch-native" + s, "  user time only", key="user")
    paired("placerd-consistent-hash" + s, "placerd-ch-baseline" + s, "CPU per request vs the baseline build (consistent-hash)")
    paired("placerd-consistent-hash" + s, "placerd-ch-baseline" + s, f"{rate} vs the baseline build (consistent-hash)", key="rps")
    paired("placerd-consistent-hash" + s, "nginx" + s, f"{rate} vs nginx (consistent-hash)", key="rps")
    paired("placerd-consistent-hash" + s, "haproxy" + s, f"{rate} vs HAProxy (consistent-hash)", key="rps")
    print()
if len(counts) > 1:
    lo, hi = counts[0], counts[-1]
    print(f"Scaling: {rate} at {hi} workers / {rate} at {lo}, medians (and the median of round-by-round ratios)")
    print()
    print(f"| target | {rate} at {lo} | {rate} at {hi} | ratio | paired |")
    print("|---|---:|---:|---:|---:|")
    for plain in NAMES:
        a, b = f"{plain}@{hi}", f"{plain}@{lo}"
        if a in med and b in med:
            pairs = [x / y for x, y in zip(rows[a]["rps"], rows[b]["rps"])]
            print(f"| {plain} | {med[b]['rps']:.0f} | {med[a]['rps']:.0f} | {med[a]['rps'] / med[b]['rps']:.2f} | {statistics.median(pairs):.2f} |")
PY
if [ -f "$work/placer-faults" ]; then echo; cat "$work/placer-faults"; fi
