#!/usr/bin/env bash
# Crash-recovery benchmark: how much state a restart restores, and how long until ready,
# after `kill -9` — ours (checkpointed RocksDB, restore only the changelog tail) against
# the Kafka Streams EOS baseline (unclean shutdown wipes the local state, full restore),
# measured in the same run on the same data.
#
#   bench/crash_recovery.sh [orders] [products]
ORDERS=${1:-5000}
PRODUCTS=${2:-50}
source "$(dirname "$0")/lib.sh" crash 18080
export ERP_INSTANCE_ID=bench-1
metric() { curl -s "$URL/metrics" | awk -v n="$1" '$1 ~ "^"n"({|$)" { s += $2 } END { printf "%d", s }'; }
kill9() { kill -9 "$pid"; wait "$pid" 2>/dev/null || true; }
trap 'kill -9 $pid 2>/dev/null || true; rm -rf "$ERP_STATE_DIR"' EXIT

echo "loading $ORDERS orders over $PRODUCTS products (prefix $ERP_TOPIC_PREFIX)" >&2
start_erp
"$ERP" demo-load --orders "$ORDERS" --products "$PRODUCTS" --stock 1000 --query-url "$URL" 2>/dev/null | grep -E '^(completed|cancelled|all outcomes)' >&2
kill9

start_erp; ours_ready=$ready
ours_restored=$(metric erp_records_restored_total)
kill9

rm -rf "$ERP_STATE_DIR"   # what Kafka Streams does with EOS state after an unclean shutdown
start_erp; wipe_ready=$ready
wipe_restored=$(metric erp_records_restored_total)
kill9

printf '\n%-34s %16s %18s\n' "after kill -9" "records restored" "restart-to-ready s"
printf '%-34s %16d %18.2f\n' "checkpointed state (ours)" "$ours_restored" "$ours_ready"
printf '%-34s %16d %18.2f\n' "wiped state (Kafka Streams EOS)" "$wipe_restored" "$wipe_ready"
printf 'store size (changelog records a full restore reads): %d\n' "$wipe_restored"
printf 'ratio restored ours/baseline: %s   ready time ours/baseline: %s\n' \
  "$(echo "scale=4; $ours_restored / $wipe_restored" | bc)" "$(echo "scale=3; $ours_ready / $wipe_ready" | bc)"
