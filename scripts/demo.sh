#!/usr/bin/env bash
# The demo: provisions and starts Kafka + the schema registry + PostgreSQL, builds and starts the
# pipeline (`erp run`: the five processors and the query API), registers customers and
# products, runs a mixed load of orders (declines, out of stock, cancels, undeliverable
# addresses, failed captures) with a simulated carrier, checks the saga's invariants on
# the committed topics, runs the analytics sink into PostgreSQL and README's queries,
# prints a summary and the URLs to query. The pipeline keeps
# running afterwards; `scripts/demo.sh stop` stops it and the stack.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/env.sh
RUN=$ERP_CACHE/run
PIDFILE=$RUN/erp-demo.pid
LOG=$RUN/erp-demo.log
export ERP_STATE_DIR=${ERP_STATE_DIR:-$ERP_CACHE/demo-state}
export ERP_HTTP_ADDR=${ERP_HTTP_ADDR:-127.0.0.1:8080}
export ERP_GRPC_ADDR=${ERP_GRPC_ADDR:-127.0.0.1:9090}
URL=http://$ERP_HTTP_ADDR

stop_pipeline() {
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    kill -TERM "$(cat "$PIDFILE")"
    for _ in $(seq 1 60); do kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break; sleep 0.5; done
  fi
  rm -f "$PIDFILE"
}

if [ "${1:-}" = "stop" ]; then
  stop_pipeline
  scripts/stack.sh down
  exit 0
fi

ensure_build_deps
scripts/stack.sh up >/dev/null
echo "[demo] building erp"
cargo build --bin erp
stop_pipeline
mkdir -p "$RUN"
# Each demo run is its own world: fresh topics (prefix) and fresh state.
export ERP_TOPIC_PREFIX=${ERP_TOPIC_PREFIX:-demo-$(date +%s)-}
rm -rf "$ERP_STATE_DIR"
echo "[demo] starting the pipeline (log: $LOG)"
nohup "$CARGO_TARGET_DIR/debug/erp" run >"$LOG" 2>&1 &
echo $! >"$PIDFILE"
for i in $(seq 1 120); do
  if [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/health/ready")" = "200" ]; then break; fi
  kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { echo "[demo] erp exited; see $LOG" >&2; tail -20 "$LOG" >&2; exit 1; }
  [ "$i" = 120 ] && { echo "[demo] erp not ready after 60 s; see $LOG" >&2; exit 1; }
  sleep 0.5
done
echo "[demo] pipeline ready; loading ${DEMO_PRODUCTS:-20} products and ${DEMO_ORDERS:-300} orders"
"$CARGO_TARGET_DIR/debug/erp" demo-load --products "${DEMO_PRODUCTS:-20}" --orders "${DEMO_ORDERS:-300}" \
  --rate "${DEMO_RATE:-30}" --query-url "$URL"
echo
echo "[demo] checking the saga's invariants on the committed event topics"
"$CARGO_TARGET_DIR/debug/erp" check-saga --timeout-secs 120
echo
echo "[demo] analytics: the event topics into PostgreSQL, exactly once (erp sink)"
RUST_LOG=warn "$CARGO_TARGET_DIR/debug/erp" sink --fresh --until-caught-up
# README's analytics queries, as they are written there.
awk '/^```sql/ { f = 1; next } /^```/ { f = 0 } f && /^-- / { print "\\echo " substr($0, 4); next } f' README.md | scripts/stack.sh psql -q -P pager=off
echo
echo "Where to look:"
echo "  curl -s '$URL/api/v1/orders?limit=5'            # newest orders (all instances)"
echo "  curl -s $URL/api/v1/orders/<id>/timeline       # one order's saga, step by step"
echo "  curl -s $URL/api/v1/inventory                  # low-stock products"
echo "  curl -s $URL/openapi.json                      # the whole API (OpenAPI 3)"
echo "  curl -s $URL/metrics | grep ^erp_              # Prometheus metrics"
echo "  gRPC inventory service on $ERP_GRPC_ADDR (schemas/proto/inventory.proto)"
echo "  scripts/stack.sh psql                         # the analytics tables (README: Connectors)"
echo "  $CARGO_TARGET_DIR/debug/erp tail ${ERP_TOPIC_PREFIX}order-events --last 3   # decoded events"
echo "The pipeline is still running (pid $(cat "$PIDFILE"), topics prefixed '$ERP_TOPIC_PREFIX')."
echo "Stop everything with: scripts/demo.sh stop"
