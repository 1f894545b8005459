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
