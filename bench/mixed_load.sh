#!/usr/bin/env bash
# The issue-5 acceptance load: ≥ 10,000 orders with 10 % declined payments, 10 % out of
# stock, 5 % customer cancels (plus 2 % undeliverable addresses and 2 % failed captures,
# so every compensation runs), a simulated carrier delivering the rest. Then
# `erp check-saga` reads the event topics with read_committed and checks the saga's
# invariants: exactly one outcome per order, captured − refunded = total of completed
# orders (per order), no stock held or oversold, units sold = units of completed orders.
#
#   bench/mixed_load.sh [orders] [products]
ORDERS=${1:-10000}
PRODUCTS=${2:-40}
source "$(dirname "$0")/lib.sh" mixed 18081
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$ERP_STATE_DIR"' EXIT
start_erp
echo "== mixed load: $ORDERS orders over $PRODUCTS products (topics $ERP_TOPIC_PREFIX*) =="
# Enough stock that shortages come from the mix's sold-out SKU, not from the skew.
"$ERP" demo-load --orders "$ORDERS" --products "$PRODUCTS" --customers 200 --stock 20000 \
  --mix acceptance --timeout-secs 1800 --query-url "$URL" 2>/dev/null \
  | sed -n '/== demo summary ==/,/orders\/s end to end/p'
echo
echo "== invariants (erp check-saga, read_committed) =="
t0=$(date +%s.%N)
"$ERP" check-saga --timeout-secs 300
echo "checked in $(echo "$(date +%s.%N) - $t0" | bc | cut -c1-5)s; pipeline log: $ERP_LOG"
