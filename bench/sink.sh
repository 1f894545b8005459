#!/usr/bin/env bash
# Analytics sink throughput. After a load of N orders through the whole saga, the sink
# writes every event of the five event topics into PostgreSQL (rows + offsets in one
# transaction per batch of ≤ 500, from a fresh schema), measured against a plain
# read_committed consume (no decoding, no writes) of the same topics by the same client
# library, in the same run: baseline, sink, sink, baseline. Usage: bench/sink.sh [orders]
source "$(dirname "$0")/lib.sh" sink 18094
orders=${1:-2000}
export ERP_POSTGRES_SCHEMA=bench_sink
trap '[ -n "$pid" ] && kill -TERM $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$ERP_STATE_DIR"' EXIT

start_erp
echo "loading $orders orders through the saga…"
"$ERP" demo-load --orders "$orders" --products 20 --customers 50 --stock 5000 --query-url "$URL" >/dev/null
"$ERP" inspect lag --all --follow --timeout-secs 300 >/dev/null
kill -TERM "$pid"; wait "$pid"; pid=

consume() { "$ERP" bench-consume --event-topics | sed -n 's/.*records=\([0-9]*\).* seconds=\([0-9.]*\).*/\1 \2/p'; }
sink() { "$ERP" sink --fresh --until-caught-up | sed -n 's/^sink: \([0-9]*\) records.* in \([0-9.]*\)s$/\1 \2/p'; }
read -r records base1 < <(consume)
read -r rows1 sink1 < <(sink)
read -r rows2 sink2 < <(sink)
read -r _ base2 < <(consume)
[ "$rows1" = "$records" ] && [ "$rows2" = "$records" ] || { echo "the sink wrote $rows1 / $rows2 rows of $records events" >&2; exit 1; }
n=$(scripts/stack.sh psql -tAc "SELECT count(*) FROM bench_sink.event_store")
[ "$n" = "$records" ] || { echo "event_store holds $n rows, the topics $records events" >&2; exit 1; }

best() { printf '%s\n%s\n' "$1" "$2" | sort -n | head -1; }
base_s=$(best "$base1" "$base2"); sink_s=$(best "$sink1" "$sink2")
printf '\n== analytics sink (%s orders, %s events on the five event topics) ==\n' "$orders" "$records"
printf 'plain read_committed consume : %8.0f records/s  (%.2f s, %.2f s; best of two)\n' \
  "$(echo "$records / $base_s" | bc -l)" "$base1" "$base2"
printf 'sink into PostgreSQL         : %8.0f rows/s     (%.2f s, %.2f s; best of two, incl. connect, migrations, targets)\n' \
  "$(echo "$records / $sink_s" | bc -l)" "$sink1" "$sink2"
printf 'ratio sink / plain consume   : %8.3f\n' "$(echo "$base_s / $sink_s" | bc -l)"
