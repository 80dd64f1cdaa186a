#!/usr/bin/env bash
# Herald as a relay, side by side with nginx `proxy_pass` (the floor for "receive a POST,
# send a POST"): the same load (wrk, CONNECTIONS keep-alive connections posting Flagger's
# event JSON spread over CANARIES canaries), the same sink (an nginx answering 200), rounds
# alternating between the two relays. Loopback only; every run is bounded.
#
#   crates/herald-bench/relay-vs-nginx.sh            # 3 rounds each, 4 s, 32 connections, 32 canaries
#   CANARIES=10000 POLICIES=10000 crates/herald-bench/relay-vs-nginx.sh
#   HERALD_B=/tmp/herald-before crates/herald-bench/relay-vs-nginx.sh   # two builds, same run
#
# Reports per relay the median delivered events/s (what the sink counted, from the first
# request until the sink stopped receiving: a relay that queues is still delivering after the
# load ends), relay CPU per delivered event (user + system time of the relay's processes),
# the relay's RSS, and the ratios Herald/nginx. Needs nginx and wrk (Debian packages) and a
# release build of Herald (HERALD, default target/release/herald). With HERALD_B, a second
# Herald (another build, or a script that `exec`s one with other settings) takes part in every
# round too; the order of the relays rotates from round to round, and each Herald's ratios are
# also given as the median of its per-round ratios to that round's nginx, which cancels the
# machine's drift between rounds.
set -euo pipefail
cd "$(dirname "$0")/../.."

HERALD=${HERALD:-target/release/herald}
HERALD_B=${HERALD_B:-}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-4}
CONNECTIONS=${CONNECTIONS:-32}
CANARIES=${CANARIES:-32}
POLICIES=${POLICIES:-0}
for tool in nginx wrk; do
  command -v "$tool" >/dev/null || {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx wrk >/dev/null
    break
  }
done
[ -x "$HERALD" ] || cargo build --release -q -p herald

work=$(mktemp -d /tmp/herald-relay.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for conf in "$work"/*.conf; do nginx -c "$conf" -p "$work" -s stop 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
SINK_PORT=$(free_port) NGINX_PORT=$(free_port) HERALD_PORT=$(free_port) HERALD_B_PORT=$(free_port)

nginx_conf() { # name, server block
  cat >"$work/$1.conf" <<EOF
worker_processes 1;
pid $work/$1.pid;
error_log $work/$1.error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  $2
}
EOF
  nginx -c "$work/$1.conf" -p "$work"
}
nginx_conf sink "server { listen 127.0.0.1:$SINK_PORT; location = /status { stub_status; } location / { return 200; } }"
nginx_conf relay "upstream sink { server 127.0.0.1:$SINK_PORT; keepalive 64; }
  server { listen 127.0.0.1:$NGINX_PORT; location / { proxy_pass http://sink; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"

# Herald: one webhook receiver (Flagger's event JSON to the sink), queues that never refuse,
# and POLICIES policies that match no event of the load, loaded alongside.
mkdir -p "$work/policies"
cat >"$work/policies/relay.yaml" <<EOF
apiVersion: herald.dev/v1alpha1
kind: NotificationPolicy
metadata: {name: relay, namespace: default}
spec:
  receivers:
    - name: sink
      webhook: {url: "http://127.0.0.1:$SINK_PORT/events"}
EOF
python3 - "$work/policies/extra.yaml" "$POLICIES" "$SINK_PORT" <<'EOF'
import sys
path, n, port = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path, "w") as f:
    for i in range(n):
        f.write(f"---\napiVersion: herald.dev/v1alpha1\nkind: NotificationPolicy\n"
                f"metadata: {{name: other-{i}, namespace: team-{i % 100}}}\nspec:\n"
                f"  canaries: [service-{i}]\n  receivers:\n"
                f"    - name: sink\n      webhook: {{url: \"http://127.0.0.1:{port}/other\"}}\n")
EOF
start_herald() { # binary, port, log: starts it, waits until ready, sets STARTED
  "$1" serve --listen "127.0.0.1:$2" --policies "$work/policies" \
    --queue-capacity 10000000 --queue-bytes 8Gi >"$work/$3" 2>&1 &
  STARTED=$!
  pids+=("$STARTED")
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$2/readyz" >/dev/null && return; sleep 0.1; done
  echo "Herald ($1) did not become ready" >&2
  exit 1
}
start_herald "$HERALD" "$HERALD_PORT" herald.log
HERALD_PID=$STARTED
if [ -n "$HERALD_B" ]; then
  start_herald "$HERALD_B" "$HERALD_B_PORT" herald-b.log
  HERALD_B_PID=$STARTED
fi

# The load: Flagger's event JSON, byte for byte as Flagger marshals it, over CANARIES canaries.
cat >"$work/load.lua" <<EOF
local bodies = {}
for i = 1, $CANARIES do
  bodies[i] = '{"name":"podinfo-' .. i .. '","namespace":"default","phase":"Progressing","checksum":"abc123","metadata":{"eventMessage":"Advance podinfo-' .. i .. '.default canary weight 10","eventType":"Normal","timestamp":"1700000000000"}}'
end
local n = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  n = n + 1
  return wrk.format(nil, "/events", nil, bodies[(n % $CANARIES) + 1])
end
EOF

sink_count() { curl -s "http://127.0.0.1:$SINK_PORT/status" | awk 'NR == 3 { print $3 }'; }
# User + system clock ticks of a process and its children's threads (nginx: master and workers).
cpu_ticks() {
  local total=0
  for pid in "$@"; do
    for stat in /proc/"$pid"/task/*/stat; do
      total=$((total + $(awk '{ print $14 + $15 }' "$stat" 2>/dev/null || echo 0)))
    done
  done
  echo "$total"
}
rss_kib() { local t=0; for pid in "$@"; do t=$((t + $(awk '/VmRSS/ { print $2 }' /proc/"$pid"/status))); done; echo "$t"; }
nginx_relay_pids() { pgrep -f "nginx: .*$work/relay.conf" ; pgrep -P "$(cat "$work/relay.pid")"; }
TICK=$(getconf CLK_TCK)

# One round: prints "events/s µs-per-event" for the relay on PORT whose processes are PIDS.
# The sink's request count includes each status request (one per sink_count): `calls`.
round() {
  local port=$1; shift
  local before cpu0 t0 after cpu1 t1 last calls=1
  before=$(sink_count); cpu0=$(cpu_ticks "$@"); t0=$(date +%s.%N)
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" -s "$work/load.lua" "http://127.0.0.1:$port" >"$work/wrk.out"
  # Until the sink stops receiving: what the relay queued is still being delivered.
  after=$(sink_count); calls=$((calls + 1)); t1=$(date +%s.%N)
  while :; do
    last=$after; sleep 0.2
    after=$(sink_count); calls=$((calls + 1))
    [ $((after - last)) -le 1 ] && break
    t1=$(date +%s.%N)
  done
  cpu1=$(cpu_ticks "$@")
  python3 -c "
d = $after - $before - $calls + 1
print(round(d / ($t1 - $t0)), round(($cpu1 - $cpu0) / $TICK * 1e6 / max(d, 1), 1))"
}

relays=(nginx herald)
[ -n "$HERALD_B" ] && relays+=(herald_b)
nginx_results=() herald_results=() herald_b_results=()
for r in $(seq "$ROUNDS"); do
  line="round $r:"
  for i in "${!relays[@]}"; do
    relay=${relays[$(( (i + r - 1) % ${#relays[@]} ))]}
    case $relay in
      nginx) nginx_results+=("$(round "$NGINX_PORT" $(nginx_relay_pids))"); line+=" nginx ${nginx_results[-1]}" ;;
      herald) herald_results+=("$(round "$HERALD_PORT" "$HERALD_PID")"); line+=" herald ${herald_results[-1]}" ;;
      herald_b) herald_b_results+=("$(round "$HERALD_B_PORT" "$HERALD_B_PID")"); line+=" herald_b ${herald_b_results[-1]}" ;;
    esac
  done
  echo "$line" >&2
done
python3 - "$CONNECTIONS" "$CANARIES" "$POLICIES" "$(rss_kib $(nginx_relay_pids))" \
  "${nginx_results[*]}" "$(rss_kib "$HERALD_PID") ${herald_results[*]}" \
  ${HERALD_B:+"$(rss_kib "$HERALD_B_PID") ${herald_b_results[*]}"} <<'EOF'
import statistics, sys
conn, canaries, policies, nginx_rss = sys.argv[1:5]
def rounds(s):
    vals = [float(v) for v in s.split()]
    return list(zip(vals[0::2], vals[1::2]))
nginx = rounds(sys.argv[5])
heralds = []
for name, arg in zip(["Herald serve", "Herald serve (B)"], sys.argv[6:]):
    rss, rest = arg.split(" ", 1)
    heralds.append((name, int(rss), rounds(rest)))
med = statistics.median
n_rate, n_cpu = med(r for r, _ in nginx), med(c for _, c in nginx)
print(f"{conn} connections, {canaries} canaries, {policies} extra policies; medians of the rounds\n")
print("| | delivered events/s | relay CPU per delivered event | relay RSS |")
print("|---|---|---|---|")
print(f"| nginx proxy_pass | {n_rate:,.0f} | {n_cpu:.1f} µs | {int(nginx_rss) / 1024:.1f} MiB |")
for name, rss, res in heralds:
    print(f"| {name} | {med(r for r, _ in res):,.0f} | {med(c for _, c in res):.1f} µs | {rss / 1024:.1f} MiB |")
for name, rss, res in heralds:
    h_rate, h_cpu = med(r for r, _ in res), med(c for _, c in res)
    print(f"| {name} / nginx | {h_rate / n_rate:.2f}× | {h_cpu / n_cpu:.2f}× | |")
if len(nginx) > 1:
    print("\nMedian of the per-round ratios (each Herald round against the same round's nginx):\n")
    print("| | throughput | CPU per event |")
    print("|---|---|---|")
    for name, rss, res in heralds:
        t = med(h / n for (h, _), (n, _) in zip(res, nginx))
        c = med(h / n for (_, h), (_, n) in zip(res, nginx))
        print(f"| {name} / nginx | {t:.2f}× | {c:.2f}× |")
EOF
