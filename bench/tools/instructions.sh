#!/usr/bin/env bash
# bench/tools/instructions.sh: user-space instructions per proxied request, under callgrind.
#
#   bench/tools/instructions.sh [h1|h2c|mirror] [requests] [strangler binary]
#
# Deterministic where CPU time on a shared machine is not: docs/performance.md ("What moved the
# figures") quotes it for changes too small to see in bench/run. Starts an nginx `return 200`
# upstream and strangler (workers: 1, no access log) under `valgrind --tool=callgrind
# --instr-atstart=no`, sends 2,000 warm-up requests, switches instrumentation on, sends the
# measured requests (h2load --h1 -c64, or h2load -c16 -m10 for h2c), and prints the total
# instructions divided by the requests. `mirror` is h1 with every request mirrored to a second
# nginx `return 200` (the mirror-fast scenario of bench/run): its figure minus h1's is what a
# shadow costs in user space. Needs valgrind, nginx and h2load (nghttp2-client).
# Ports 18180-18182 on 127.0.0.1. Every process it starts is stopped by PID.
# INSTR_KEEP=FILE keeps the callgrind dump there (for callgrind_annotate --inclusive=yes FILE).
set -euo pipefail

KIND="${1:-h1}"
N="${2:-20000}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
BIN="${3:-$ROOT/build-bench/strangler}"
[[ "$KIND" == h1 || "$KIND" == h2c || "$KIND" == mirror ]] ||
    { echo "usage: $0 [h1|h2c|mirror] [requests] [binary]" >&2; exit 2; }
for tool in valgrind callgrind_control callgrind_annotate nginx h2load; do
    command -v "$tool" >/dev/null || { echo "$0: $tool not found" >&2; exit 2; }
done
[[ -x "$BIN" ]] || { echo "$0: no strangler binary at $BIN (run bench/run once, or pass one)" >&2; exit 2; }

TMP="$(mktemp -d)"
UP_PID="" SG_PID=""
cleanup() {
    [[ -n "$SG_PID" ]] && kill "$SG_PID" 2>/dev/null && wait "$SG_PID" 2>/dev/null
    [[ -n "$UP_PID" ]] && kill "$UP_PID" 2>/dev/null && wait "$UP_PID" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

cat > "$TMP/up.conf" <<EOF
worker_processes 1; daemon off; master_process off; pid $TMP/up.pid; error_log $TMP/up.err;
events {}
http { access_log off; keepalive_requests 10000000;
       client_body_temp_path $TMP; proxy_temp_path $TMP; fastcgi_temp_path $TMP;
       uwsgi_temp_path $TMP; scgi_temp_path $TMP;
       server { listen 127.0.0.1:18181; location / { return 200 "hello world\n"; } }
       server { listen 127.0.0.1:18182; location / { return 200 "hello world\n"; } } }
EOF
cat > "$TMP/sg.yaml" <<EOF
workers: 1
listeners: [{ name: public, address: 127.0.0.1:18180 }]
admin: { address: 127.0.0.1:0 }
access_log: { enabled: false }
limits: { idle_timeout: 300s }
upstreams: { app: { endpoints: [127.0.0.1:18181] }, shadow: { endpoints: [127.0.0.1:18182] } }
EOF
if [[ "$KIND" == mirror ]]; then
    echo "routes: [{ name: default, destinations: [{ upstream: app }], mirror: [{ upstream: shadow }] }]"
else
    echo "routes: [{ name: default, destinations: [{ upstream: app }] }]"
fi >> "$TMP/sg.yaml"

nginx -p "$TMP" -c "$TMP/up.conf" 2>/dev/null &
UP_PID=$!
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$TMP/cg.out.%p" \
    "$BIN" --config "$TMP/sg.yaml" >"$TMP/sg.log" 2>&1 &
SG_PID=$!
load() {
    if [[ "$KIND" != h2c ]]; then h2load --h1 -t1 -c64 -n "$1" http://127.0.0.1:18180/
    else h2load -t1 -c16 -m10 -n "$1" http://127.0.0.1:18180/; fi
}
for _ in $(seq 100); do
    h2load --h1 -n1 -c1 http://127.0.0.1:18180/ > "$TMP/probe.out" 2>&1 || true
    grep -q "1 succeeded" "$TMP/probe.out" && break
    sleep 0.2
done
load 2000 >/dev/null
callgrind_control -i on "$SG_PID" >/dev/null 2>&1
load "$N" > "$TMP/load.out"
done_n="$(awk '/^requests:/ {print $8}' "$TMP/load.out")"
callgrind_control -d "$SG_PID" >/dev/null 2>&1
# the dump is the largest output file (the first one holds only the start-up)
dump="" size=0
for f in "$TMP"/cg.out.*; do
    s="$(stat -c %s "$f")"
    if (( s > size )); then dump="$f" size="$s"; fi
done
callgrind_annotate "$dump" > "$TMP/annotate.out" 2>/dev/null
[[ -n "${INSTR_KEEP:-}" ]] && cp "$dump" "$INSTR_KEEP"
total="$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}' "$TMP/annotate.out")"
[[ -n "$done_n" && "$done_n" -gt 0 && -n "$total" ]] || { echo "$0: no measurement" >&2; exit 1; }
echo "$KIND: $done_n requests, $total instructions, $((total / done_n)) per request ($BIN)"
