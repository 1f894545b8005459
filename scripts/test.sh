#!/usr/bin/env bash
# The test command: starts the local stack if needed, then runs every test against the
# real broker, registry and RocksDB — Rust unit and integration tests, a stock Python
# Confluent client reading the event topics, then the secured stack's tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/env.sh
ensure_build_deps
scripts/stack.sh up >/dev/null
# The crash test runs the real binary: build it before the tests.
cargo build --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace -- --test-threads="${ERP_TEST_THREADS:-2}" 2>&1 | tee "$log"
venv=$(ensure_python_env tests/python/requirements.txt)
"$venv/bin/python" -m pytest -q tests/python 2>&1 | tee -a "$log"
# The secured stack (SASL SCRAM + ACLs, one principal per context) is its own broker
# mode on the same port: swap it in for its tests, then put the previous mode back.
mode=$(cat "$ERP_CACHE/run/mode" 2>/dev/null || echo single)
scripts/stack.sh down >/dev/null 2>&1
ERP_STACK=secure scripts/stack.sh up >/dev/null
secure=0
ERP_BOOTSTRAP_SERVERS=$(cat "$ERP_CACHE/run/bootstrap") cargo test --workspace --test secure -- --ignored 2>&1 | tee -a "$log" || secure=$?
scripts/stack.sh down >/dev/null 2>&1
ERP_STACK=$mode scripts/stack.sh up >/dev/null
[ "$secure" = 0 ] || { echo "secured-stack tests failed" >&2; exit "$secure"; }
# One closing line for every runner above (cargo's per-binary results + pytest).
awk '/^test result:/ { p += $4; f += $6; next }
     /(passed|failed).* in [0-9.]+s/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log" | tee "$ERP_CACHE/last-test-summary"
