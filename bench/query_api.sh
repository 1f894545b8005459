#!/usr/bin/env bash
# Query API lookup benchmark: GET /api/v1/orders/{id} of the real service (RocksDB store
# read, routing check, correlation id, JSON) versus a bare axum handler answering the
# same route with the same bytes, measured in the same run on the same machine.
#
#   1. saturation: wrk (2 threads, 32 connections, $DURATION s) rotating over real order
#      ids → requests/s of each; ratio = ours / baseline (goal ≥ 0.8);
#   2. latency at half of each one's saturation rate: hey, rate-limited (open loop per
#      worker) → p50 / p99 (goal for ours: p99 < 1 ms).
#
#   bench/query_api.sh [orders] [seconds]
ORDERS=${1:-300}
DURATION=${2:-10}
source "$(dirname "$0")/lib.sh" query 18082
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v hey >/dev/null || need+=(hey)
if ((${#need[@]})); then
  echo "[setup] installing Debian packages: ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
BASE_ADDR=127.0.0.1:${BENCH_BASE_PORT:-18083}
work=$(mktemp -d)
base_pid=
trap 'kill -TERM $pid $base_pid 2>/dev/null; wait $pid $base_pid 2>/dev/null; rm -rf "$ERP_STATE_DIR" "$work"' EXIT
start_erp
echo "== loading $ORDERS orders (topics $ERP_TOPIC_PREFIX*) =="
"$ERP" demo-load --orders "$ORDERS" --products 20 --customers 50 --mix none \
  --query-url "$URL" 2>/dev/null | grep -E "completed|orders/s" || true
curl -sf "$URL/api/v1/orders?limit=100" | python3 -c '
import json, sys
ids = [o["id"] for o in json.load(sys.stdin)["orders"]]
assert ids, "no orders listed"
print("\n".join(ids))' >"$work/ids"
first=$(head -1 "$work/ids")
curl -sf "$URL/api/v1/orders/$first" >"$work/body.json"
echo "$(wc -l <"$work/ids") order ids; body $(wc -c <"$work/body.json") bytes"
"$ERP" bench-http-baseline --addr "$BASE_ADDR" --body-file "$work/body.json" 2>/dev/null &
base_pid=$!
until curl -sf -o /dev/null "http://$BASE_ADDR/api/v1/orders/$first"; do
  kill -0 "$base_pid" 2>/dev/null || { echo "baseline exited" >&2; exit 1; }
  sleep 0.1
done
# wrk script: every request asks for the next order id.
{
  echo 'local ids = {}'
  while read -r id; do echo "table.insert(ids, \"$id\")"; done <"$work/ids"
  echo 'local i = 0'
  echo 'request = function() i = i % #ids + 1; return wrk.format("GET", "/api/v1/orders/" .. ids[i]) end'
} >"$work/rotate.lua"

saturate() { # url → requests/s
  wrk -t2 -c32 -d"${DURATION}s" -s "$work/rotate.lua" "$1" | awk '/^Requests\/sec/ {print int($2)}'
}
latency() { # url rate → "p50_ms p99_ms"
  local per_worker=$(( $2 / 8 ))
  ((per_worker > 0)) || per_worker=1
  hey -z "${DURATION}s" -c 8 -q "$per_worker" "$1" | awk '
    /50%+ in/ {p50 = $3 * 1000} /99%+ in/ {p99 = $3 * 1000}
    END {printf "%.3f %.3f", p50, p99}'
}
echo
echo "== saturation (wrk -t2 -c32, ${DURATION}s each; baseline, ours, ours, baseline) =="
b1=$(saturate "http://$BASE_ADDR"); o1=$(saturate "$URL"); o2=$(saturate "$URL"); b2=$(saturate "http://$BASE_ADDR")
base_rps=$(( (b1 + b2) / 2 )); ours_rps=$(( (o1 + o2) / 2 ))
printf "baseline: %d, %d req/s\nours:     %d, %d req/s\n" "$b1" "$b2" "$o1" "$o2"
ratio=$(echo "scale=3; $ours_rps / $base_rps" | bc)
echo
echo "== latency at half of saturation (hey -c8, open loop, ${DURATION}s; one order id) =="
read -r bp50 bp99 <<<"$(latency "http://$BASE_ADDR/api/v1/orders/$first" $((base_rps / 2)))"
read -r op50 op99 <<<"$(latency "$URL/api/v1/orders/$first" $((ours_rps / 2)))"
printf "baseline at %d req/s: p50 %s ms, p99 %s ms\n" $((base_rps / 2)) "$bp50" "$bp99"
printf "ours     at %d req/s: p50 %s ms, p99 %s ms\n" $((ours_rps / 2)) "$op50" "$op99"
echo
echo "== result =="
printf "throughput ratio ours/baseline: %s (goal >= 0.8): %s\n" "$ratio" \
  "$( [ "$(echo "$ratio >= 0.8" | bc)" = 1 ] && echo met || echo NOT met)"
printf "ours p99 at half saturation: %s ms (goal < 1 ms): %s\n" "$op99" \
  "$( [ "$(echo "$op99 < 1" | bc)" = 1 ] && echo met || echo NOT met)"
