#!/usr/bin/env bash
# The dashboard from a real run: starts the local stack, two `erp run` instances and a
# Prometheus (Debian package) scraping them, runs an open-loop load with 1 % poison and
# the carrier, kills one instance with -9 halfway and restarts it (so restore, aborts,
# lag and dead letters have something to show), then draws every panel of
# deploy/grafana/dashboards/erp-saga.json from Prometheus into docs/dashboard.png.
#
#   scripts/dashboard.sh                 # ~4 min; ORDERS=… RATE=… to change the load
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/env.sh
ensure_build_deps
ORDERS=${ORDERS:-4000}
RATE=${RATE:-25}
OUT=${OUT:-docs/dashboard.png}
PROM_PORT=${ERP_PROMETHEUS_PORT:-9095}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
log() { printf '[dashboard] %s\n' "$*" >&2; }

if ! command -v prometheus >/dev/null 2>&1; then
  log "installing Prometheus (Debian package)"
  apt-get update -qq
  # Only the binary is wanted: no service started by the package.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi
tools=$(ensure_python_env scripts/rust-tools.txt rust-tools)
"$tools/bin/python" -c 'import matplotlib' 2>/dev/null || "$tools/bin/pip" install -q matplotlib

scripts/stack.sh up >/dev/null
cargo build -q --bin erp
ERP="$CARGO_TARGET_DIR/debug/erp"
export ERP_TOPIC_PREFIX="dash-$(date +%s)-" ERP_PARTITIONS=4 RUST_LOG=warn

start_instance() { # id port
  ERP_INSTANCE_ID=$1 ERP_HTTP_ADDR=127.0.0.1:$2 ERP_STATE_DIR=$work/state-$1 \
    "$ERP" run >>"$work/$1.log" 2>&1 &
  echo $!
}
wait_ready() { # port
  for _ in $(seq 1 120); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/health/ready")" = 200 ] && return
    sleep 1
  done
  log "instance on :$1 not ready"; exit 1
}

"$ERP" setup >/dev/null
a=$(start_instance a 8180); pids+=("$a")
b=$(start_instance b 8190); pids+=("$b")
wait_ready 8180; wait_ready 8190

cat >"$work/prometheus.yml" <<EOF
global: {scrape_interval: 2s}
scrape_configs:
  - job_name: erp
    static_configs: [{targets: ["127.0.0.1:8180", "127.0.0.1:8190"]}]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$work/prometheus.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 30); do curl -fs "http://127.0.0.1:$PROM_PORT/-/ready" >/dev/null && break; sleep 1; done
start=$(date +%s)
log "load: $ORDERS orders at $RATE/s with 1 % poison, the carrier, one kill -9 halfway"
"$ERP" carrier >"$work/carrier.log" 2>&1 &
pids+=($!)
"$ERP" generate --orders "$ORDERS" --rate "$RATE" --poison-pct 1 --query-url http://127.0.0.1:8180 \
  >"$work/generate.log" 2>&1 &
gen=$!
sleep $((ORDERS / RATE / 2))
log "kill -9 instance b, restart it on the same state"
kill -KILL "$b"; sleep 5
b=$(start_instance b 8190); pids+=("$b")
wait "$gen"
# The saga finishes what the load started (and the checker says whether it is right).
"$ERP" check --settle-secs 300 >"$work/check.txt" || { cat "$work/check.txt"; exit 1; }
sleep 10
end=$(date +%s)
"$tools/bin/python" deploy/grafana/render.py --prometheus "http://127.0.0.1:$PROM_PORT" --start "$start" --end "$end" \
  --out "$OUT" --note "$ORDERS orders at $RATE/s, 2 instances, kill -9 of one at half time; erp check: $(grep -c holds "$work/check.txt") invariants hold."
tail -3 "$work/check.txt"
"$ERP" bench drop-topics --prefix "$ERP_TOPIC_PREFIX" >/dev/null 2>&1 || true
