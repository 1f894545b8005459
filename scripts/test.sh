#!/usr/bin/env bash
# The test command: starts the local stack if needed, then runs every test against the
# real broker, registry and RocksDB — Rust unit and integration tests, then a stock
# Python Confluent client reading the event topics.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/env.sh
ensure_build_deps
scripts/stack.sh up >/dev/null
# The crash test runs the real binary: build it before the tests.
cargo build --workspace --bins
cargo test --workspace -- --test-threads="${ERP_TEST_THREADS:-2}"
venv=$(ensure_python_env tests/python/requirements.txt)
"$venv/bin/python" -m pytest -q tests/python
