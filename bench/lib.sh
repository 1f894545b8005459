# Shared set-up of the bench scripts: the stack up, `erp` built, and a fresh world (topic
# prefix, state dir, HTTP address) per run. Usage: source bench/lib.sh <name> <port>.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
source scripts/env.sh
ensure_build_deps
scripts/stack.sh up >/dev/null
cargo build -q --bin erp
ERP=$CARGO_TARGET_DIR/debug/erp
export ERP_TOPIC_PREFIX=bench-$1-$(date +%s)-
export ERP_STATE_DIR=$(mktemp -d)
export ERP_HTTP_ADDR=127.0.0.1:${BENCH_PORT:-$2}
URL=http://$ERP_HTTP_ADDR
ERP_LOG=$(mktemp)
pid=

# Starts `erp run` in the background: sets $pid, and $ready (seconds to /health/ready).
start_erp() {
  if curl -s -o /dev/null "$URL/health/live"; then echo "$URL is already taken" >&2; exit 1; fi
  local t0; t0=$(date +%s.%N)
  "$ERP" run >>"$ERP_LOG" 2>&1 &
  pid=$!
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/health/ready")" = 200 ]; do
    kill -0 "$pid" 2>/dev/null || { echo "erp exited; log: $ERP_LOG" >&2; tail -20 "$ERP_LOG" >&2; exit 1; }
    sleep 0.05
  done
  ready=$(echo "$(date +%s.%N) - $t0" | bc)
}
