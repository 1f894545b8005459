#!/usr/bin/env bash
# Replay throughput. After a load of N orders through the whole saga, `erp replay --all
# --execute` resets every application (input offsets to the start, changelogs deleted,
# state wiped) and the restarted pipeline reprocesses every input record in journal
# order, rebuilding stores and changelogs and re-sending outputs (deduplicated
# downstream). Measured against a raw read_committed consume (no decoding, no
# processing) of the same input topics by the same client library, in the same run:
# baseline, replay, baseline. Usage: bench/replay.sh [orders]
source "$(dirname "$0")/lib.sh" replay 18093
orders=${1:-2000}
trap '[ -n "$pid" ] && kill -TERM $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$ERP_STATE_DIR"' EXIT

start_erp
echo "loading $orders orders through the saga…"
"$ERP" demo-load --orders "$orders" --products 20 --customers 50 --query-url "$URL" >/dev/null
"$ERP" inspect lag --all --follow --timeout-secs 300 >/dev/null
kill -TERM "$pid"; wait "$pid"; pid=

consume() { "$ERP" bench-consume | sed -n 's/.*records=\([0-9]*\).* seconds=\([0-9.]*\).*/\1 \2/p'; }
read -r base_records base1 < <(consume)
"$ERP" replay --all --execute --wait-secs 60 >/dev/null
t0=$(date +%s.%N)
start_erp
"$ERP" inspect lag --all --follow --timeout-secs 900 >/dev/null
replay_s=$(echo "$(date +%s.%N) - $t0" | bc)
kill -TERM "$pid"; wait "$pid"; pid=
read -r _ base2 < <(consume)
"$ERP" verify --all | tail -1

base_s=$(printf '%s\n%s\n' "$base1" "$base2" | sort -n | head -1)
printf '\n== replay throughput (%s orders, %s input records of all applications) ==\n' "$orders" "$base_records"
printf 'raw read_committed consume : %8.0f records/s  (%.2f s, %.2f s; best of two)\n' \
  "$(echo "$base_records / $base_s" | bc -l)" "$base1" "$base2"
printf 'replay (start → caught up) : %8.0f records/s  (%.2f s incl. start-up %.2f s)\n' \
  "$(echo "$base_records / $replay_s" | bc -l)" "$replay_s" "$ready"
printf 'ratio replay / raw consume : %8.3f\n' "$(echo "$base_s / $replay_s" | bc -l)"
